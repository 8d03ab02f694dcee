package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// Input is a sink's channel: take transactions on it and the sink's
// counters.
type Input struct {
	store   channel.Store
	channel string
	c       *SinkCounters
	idle    time.Duration
	grace   time.Duration
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
// Once events are taken, write and the commit run on a context that ends
// only a grace period (Options.StopGrace) after ctx: a stopping agent lets
// each sink finish its current batch.
func (in *Input) Drain(ctx context.Context, max int, write func(ctx context.Context, events []channel.Event) error) (Status, error) {
	txn, err := in.Begin(ctx)
	if err != nil {
		return Backoff, err
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
	if err := write(gctx, evs); err != nil {
		in.c.EventWriteFail.Add(1)
		return Backoff, errors.Join(err, txn.Rollback())
	}
	if err := txn.Commit(gctx); err != nil {
		in.c.ChannelReadFail.Add(1)
		return Backoff, errors.Join(fmt.Errorf("commit take from %s: %w", in.channel, err), txn.Rollback())
	}
	in.c.EventDrainSuccess.Add(n)
	return Ready, nil
}
