package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// ChannelProcessor is a source's way into its channels (Flume's
// ChannelProcessor): Deliver runs the interceptor chain, asks the selector
// where each event goes and commits the put.
//
// Transactions: the events bound for required channels of one store commit
// in ONE put transaction, so a batch is in all of them or in none (Flume
// commits one transaction per channel and duplicates on a partial
// failure). Required channels in different stores take one transaction per
// store, committed in the order of the source's channels: a failure after
// the first commit leaves the batch in the stores that committed, and the
// retry puts it there again (at-least-once; with a producer id in the
// PutOptions each store deduplicates the retry). Optional channels get a
// transaction of their own per store after the required ones committed,
// without the producer id; its failure is logged and counted
// (OptionalChannelWriteFail) and never fails Deliver.
type ChannelProcessor struct {
	source       string
	channels     []string
	interceptors []namedInterceptor
	selector     Selector
	storeOf      map[string]int
	store        channel.Store
	c            *SourceCounters
	log          *slog.Logger
	grace        time.Duration
}

type namedInterceptor struct {
	name string
	Interceptor
}

// Channels are the source's channels, in the order configured.
func (p *ChannelProcessor) Channels() []string { return p.channels }

// Store is the store the processor puts into (a replayable source reads
// its position back with ProducerSequence).
func (p *ChannelProcessor) Store() channel.Store { return p.store }

// Deliver puts events into the source's channels: the interceptors run in
// order, the selector routes each event, and Deliver returns once the put
// into every required channel committed (for a file channel: fdatasync'd),
// so a push source answers its sender only after Deliver returned nil.
// errors.Is(err, channel.ErrChannelFull) reports a full channel: the
// source should push back (stop reading, answer "busy") and retry, never
// drop. opts.ProducerID makes the put idempotent (see channel.PutOptions).
//
// Once its transaction began, Deliver finishes it even when ctx is done:
// the commit gets a grace period (Options.StopGrace) after ctx ends, so a
// stopping agent commits or rolls back what its sources read, never half.
// Deliver is safe for concurrent use; the events are the caller's again
// when it returns (interceptors may have changed their headers).
func (p *ChannelProcessor) Deliver(ctx context.Context, events []channel.Event, opts channel.PutOptions) error {
	n := int64(len(events))
	p.c.EventReceived.Add(n)
	p.c.AppendBatchReceived.Add(1)
	evs := events
	for _, ic := range p.interceptors {
		out, err := ic.Intercept(evs)
		if err != nil {
			p.c.InterceptorFail.Add(1)
			return fmt.Errorf("source %s: interceptor %s: %w", p.source, ic.name, err)
		}
		evs = out
	}
	tctx, cancel := graceContext(ctx, p.grace)
	defer cancel()

	required, optional := p.route(evs)
	if len(required) == 0 && opts.ProducerID != "" {
		// Nothing to store, but the position is: an empty put records
		// (or refreshes) the producer's sequence in each store.
		required = p.emptyPuts()
	}
	for _, b := range required {
		if err := p.commit(tctx, b, opts); err != nil {
			p.c.ChannelWriteFail.Add(1)
			return fmt.Errorf("source %s: %w", p.source, err)
		}
	}
	for _, b := range optional {
		if err := p.commit(tctx, b, channel.PutOptions{}); err != nil {
			p.c.OptionalWriteFail.Add(1)
			p.log.Warn("put into optional channels failed; the required channels have the events", "source", p.source,
				"channels", b.order, "err", err)
		}
	}
	p.c.EventAccepted.Add(n)
	p.c.AppendBatchAccepted.Add(1)
	return nil
}

// batch is the events of one put transaction: by channel, in the order the
// channels were first named.
type batch struct {
	store  int
	order  []string
	events map[string][]channel.Event
}

func (b *batch) add(ch string, ev channel.Event) {
	if _, ok := b.events[ch]; !ok {
		b.order = append(b.order, ch)
	}
	b.events[ch] = append(b.events[ch], ev)
}

// route groups the events by store, required and optional apart; stores in
// the order of the source's channels.
func (p *ChannelProcessor) route(evs []channel.Event) (required, optional []*batch) {
	get := func(list *[]*batch, ch string) *batch {
		s := p.storeOf[ch]
		for _, b := range *list {
			if b.store == s {
				return b
			}
		}
		b := &batch{store: s, events: map[string][]channel.Event{}}
		*list = append(*list, b)
		return b
	}
	for _, ev := range evs {
		req, opt := p.selector.Select(ev)
		for _, ch := range req {
			get(&required, ch).add(ch, ev)
		}
		for _, ch := range opt {
			if !slices.Contains(req, ch) {
				get(&optional, ch).add(ch, ev)
			}
		}
	}
	order := func(a, b *batch) int { return a.store - b.store }
	slices.SortStableFunc(required, order)
	slices.SortStableFunc(optional, order)
	return required, optional
}

// emptyPuts is one empty put per store of the source's channels.
func (p *ChannelProcessor) emptyPuts() []*batch {
	var out []*batch
	seen := map[int]bool{}
	for _, ch := range p.channels {
		if s := p.storeOf[ch]; !seen[s] {
			seen[s] = true
			out = append(out, &batch{store: s, order: []string{ch}, events: map[string][]channel.Event{ch: nil}})
		}
	}
	return out
}

func (p *ChannelProcessor) commit(ctx context.Context, b *batch, opts channel.PutOptions) error {
	txn, err := p.store.BeginPut(ctx, opts)
	if err != nil {
		return fmt.Errorf("put into %v: %w", b.order, err)
	}
	for _, ch := range b.order {
		if err := txn.Put(ch, b.events[ch]...); err != nil {
			return errors.Join(fmt.Errorf("put into %s: %w", ch, err), txn.Rollback())
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("commit into %v: %w", b.order, err)
	}
	return nil
}

// graceContext returns a context that ends grace after ctx ends (or at
// once when grace is 0): what a transaction already begun uses to finish.
func graceContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	out, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancel)
		context.AfterFunc(out, func() { t.Stop() })
	})
	return out, func() { stop(); cancel() }
}
