package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// Input is a sink's channel: take transactions on it and the sink's
// counters. One sink runner uses it at a time.
type Input struct {
	store   channel.Store
	channel string
	sink    string
	c       *SinkCounters
	idle    time.Duration
	grace   time.Duration
	dead    DeadLetter
	dl      deadLetterState
	log     *slog.Logger
	now     func() time.Time
}

// Channel is the name of the sink's channel.
func (in *Input) Channel() string { return in.channel }

// Counters are the sink's counters (a sink counts its connections itself).
func (in *Input) Counters() *SinkCounters { return in.c }

// Begin opens a take transaction on the sink's channel, for a sink that
// runs its transactions itself (most use Drain). A failure counts as
// ChannelReadFail.
func (in *Input) Begin(ctx context.Context) (channel.TakeTxn, error) {
	txn, err := in.store.BeginTake(ctx, in.channel)
	if err != nil {
		in.c.ChannelReadFail.Add(1)
		return nil, fmt.Errorf("take from %s: %w", in.channel, err)
	}
	return txn, nil
}

// Drain runs one take transaction of up to max events, Flume's sink
// pattern: it takes (waiting up to the idle wait, Options.IdleWait, when
// the channel is empty, and waking as soon as events arrive), calls write
// with the events, and commits the take only after write returned nil. On
// any error the take is rolled back: the same events are taken again by
// the next call (at-least-once). An empty channel is Backoff.
//
// A write that refuses events for good (a RejectedError, or an error
// marked Permanent) has them moved to the sink's dead-letter channel in
// the take's commit, when it has one (see deadletter.go); a Permanent error
// of a batch of several events first isolates the event at fault by taking
// the batch's events one at a time.
//
// Once events are taken, write and the commit run on a context that ends
// only a grace period (Options.StopGrace) after ctx: a stopping agent lets
// each sink finish its current batch.
func (in *Input) Drain(ctx context.Context, max int, write func(ctx context.Context, events []channel.Event) error) (Status, error) {
	txn, err := in.Begin(ctx)
	if err != nil {
		return Backoff, err
	}
	if in.dl.isolate > 0 {
		max = 1
	}
	wctx, wcancel := context.WithTimeout(ctx, in.idle)
	evs, err := txn.Take(wctx, max)
	wcancel()
	if err != nil && len(evs) == 0 && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = nil // waited, nothing came
	}
	if err != nil {
		in.c.ChannelReadFail.Add(1)
		return Backoff, errors.Join(fmt.Errorf("take from %s: %w", in.channel, err), txn.Rollback())
	}
	if len(evs) == 0 {
		in.c.BatchEmpty.Add(1)
		return Backoff, txn.Rollback()
	}
	n := int64(len(evs))
	in.c.EventDrainAttempt.Add(n)
	if len(evs) < max {
		in.c.BatchUnderflow.Add(1)
	} else {
		in.c.BatchComplete.Add(1)
	}
	gctx, cancel := graceContext(ctx, in.grace)
	defer cancel()
	var dead int // events moved to the dead-letter channel by this commit
	if werr := write(gctx, evs); werr != nil {
		in.c.EventWriteFail.Add(1)
		refused, isolate, ferr := in.judge(werr, evs)
		if ferr == nil && refused != nil {
			attempts := 1
			if in.dl.failHead == evs[0].Offset && in.dl.failCount > 1 {
				attempts = in.dl.failCount
			}
			ferr = in.moveDead(txn, evs, refused, attempts)
		}
		if ferr != nil || refused == nil {
			rerr := txn.Rollback()
			if isolate {
				in.dl.isolate = len(evs)
				in.log.Warn("sink refused a batch for good: taking its events one at a time to find the one at fault",
					"sink", in.sink, "channel", in.channel, "events", len(evs), "first_offset", evs[0].Offset, "err", werr)
				return Ready, rerr
			}
			return Backoff, errors.Join(ferr, rerr)
		}
		dead = len(refused)
	}
	if err := txn.Commit(gctx); err != nil {
		in.c.ChannelReadFail.Add(1)
		return Backoff, errors.Join(fmt.Errorf("commit take from %s: %w", in.channel, err), txn.Rollback())
	}
	in.dl.done(len(evs))
	if dead > 0 {
		in.c.EventDeadLetter.Add(int64(dead))
		in.log.Warn("events moved to the dead-letter channel", "sink", in.sink, "channel", in.channel,
			"dead_letter_channel", in.dead.Channel, "events", dead)
	}
	in.c.EventDrainSuccess.Add(n - int64(dead))
	return Ready, nil
}

// judge decides what a failed write means: the events to dead-letter
// (index → reason; nil: none), whether to isolate the batch (take its
// events one at a time), or the error to fail with (the take is then
// rolled back and retried).
func (in *Input) judge(werr error, evs []channel.Event) (refused map[int]error, isolate bool, err error) {
	var rej *RejectedError
	switch {
	case in.dead.Channel == "":
		if errors.As(werr, &rej) || IsPermanent(werr) {
			in.log.Error("sink refused events for good and has no dead-letter channel: they are retried and block the channel (set deadLetter.channel)",
				"sink", in.sink, "channel", in.channel, "first_offset", evs[0].Offset, "err", werr)
		}
		return nil, false, werr
	case errors.As(werr, &rej) && len(rej.Events) > 0:
		return rej.Events, false, nil
	case IsPermanent(werr) && len(evs) == 1:
		return map[int]error{0: werr}, false, nil
	case IsPermanent(werr):
		return nil, true, nil
	}
	// Transient.
	k := in.dl.failed(evs[0].Offset)
	if in.dead.MaxAttempts <= 0 || k < in.dead.MaxAttempts {
		return nil, false, werr
	}
	if len(evs) > 1 {
		in.dl.failCount = 0
		in.dl.isolate = len(evs)
		in.log.Warn("a batch failed deadLetter.maxAttempts times: taking its events one at a time", "sink", in.sink,
			"channel", in.channel, "events", len(evs), "attempts", k, "err", werr)
		return nil, false, werr
	}
	return map[int]error{0: fmt.Errorf("%d attempts failed, the last: %w", k, werr)}, false, nil
}
