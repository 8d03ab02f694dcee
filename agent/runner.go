package agent

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// backoff is the restart schedule of a failing component: min, doubling to
// max; it starts over once a run lasted longer than max.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// safely runs f, turning a panic into an error carrying the stack.
func safely(what string, f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s panicked: %v\n%s", what, r, debug.Stack())
		}
	}()
	return f()
}

// runSource runs a source until ctx is done or it finishes, restarting it
// after failures.
func runSource(ctx context.Context, name string, src Source, out *ChannelProcessor, rc *RunCounters, bo backoff, log *slog.Logger) {
	rc.started()
	defer rc.stopped()
	for {
		start := time.Now()
		err := safely("source "+name, func() error { return src.Run(ctx, out) })
		if ctx.Err() != nil {
			if err != nil {
				log.Debug("source stopped", "source", name, "err", err)
			}
			return
		}
		if err == nil {
			log.Info("source finished", "source", name)
			return
		}
		rc.Failures.Add(1)
		if time.Since(start) > bo.max {
			bo.reset()
		}
		d := bo.next()
		log.Error("source failed; restarting after a backoff", "source", name, "backoff", d, "failures", rc.Failures.Load(), "err", err)
		if !sleep(ctx, d) {
			return
		}
		rc.Restarts.Add(1)
	}
}

// runSinks drives a sink processor (a group, or one ungrouped sink) like
// Flume's SinkRunner: Process again at once after READY; after BACKOFF wait
// what remains of the idle wait (a Drain on an empty channel already
// waited); after an error back off (doubling to the restart maximum) and
// count the failure.
func runSinks(ctx context.Context, name string, p sinkProcessor, rc *RunCounters, bo backoff, idle time.Duration, log *slog.Logger) {
	rc.started()
	defer rc.stopped()
	for ctx.Err() == nil {
		start := time.Now()
		var st Status
		err := safely(name, func() error {
			var err error
			st, err = p.Process(ctx)
			return err
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			rc.Failures.Add(1)
			d := bo.next()
			log.Error("sink delivery failed; the take was rolled back and is retried after a backoff", "sink", name, "backoff", d,
				"failures", rc.Failures.Load(), "err", err)
			if !sleep(ctx, d) {
				return
			}
			rc.Restarts.Add(1)
			continue
		}
		bo.reset()
		if st == Backoff {
			sleep(ctx, idle-time.Since(start))
		}
	}
}
