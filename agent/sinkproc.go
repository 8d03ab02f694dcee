package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/config"
)

// Flume's sink processor class names, aliases of the built-in types.
const (
	FlumeDefaultProcessor      = "org.apache.flume.sink.DefaultSinkProcessor"
	FlumeFailoverProcessor     = "org.apache.flume.sink.FailoverSinkProcessor"
	FlumeLoadBalanceProcessor  = "org.apache.flume.sink.LoadBalancingSinkProcessor"
	defaultMaxPenalty          = 30 * time.Second
	failurePenalty             = time.Second
	sequentialFailureRange     = time.Hour // load_balance: a failure within this of the last backoff's end doubles the next
	maxSequentialFailureCount  = 16
	defaultSelectorMaxTimeout  = 30 * time.Second
	maxConfigurableMillisValue = 24 * time.Hour
)

// member is one sink of a group, with its channel.
type member struct {
	name string
	sink Sink
	in   *Input
	log  *slog.Logger
}

// process runs the sink once; a panic is an error. Failures are counted
// on the sink.
func (m *member) process(ctx context.Context) (st Status, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("sink %s panicked: %v", m.name, r)
		}
		if err != nil {
			m.in.c.ProcessFailures.Add(1)
		}
	}()
	st, err = m.sink.Process(ctx, m.in)
	if err != nil {
		err = fmt.Errorf("sink %s: %w", m.name, err)
	}
	return st, err
}

// sinkProcessor is Flume's SinkProcessor: which sink of a group runs next.
type sinkProcessor interface {
	Process(ctx context.Context) (Status, error)
}

// defaultProcessor runs its one sink.
type defaultProcessor struct{ m *member }

func (d *defaultProcessor) Process(ctx context.Context) (Status, error) { return d.m.process(ctx) }

func buildProcessor(g *config.Component, members []*member, now func() time.Time) (sinkProcessor, error) {
	p := g.Processor
	v := p.View()
	switch lookupKey(p.Type) {
	case "default", lookupKey(FlumeDefaultProcessor):
		if len(members) != 1 {
			return nil, v.Errorf("type", "the default sink processor runs one sink; sink group %s has %d (use failover or load_balance, or list one sink)", g.Name, len(members))
		}
		return &defaultProcessor{m: members[0]}, nil
	case "failover", lookupKey(FlumeFailoverProcessor):
		return newFailover(v, g, members, now)
	case "load_balance", lookupKey(FlumeLoadBalanceProcessor):
		return newLoadBalance(v, g, members, now)
	}
	return nil, v.Errorf("type", "unknown sink processor type %q (known: default, failover, load_balance; Flume supports no custom processors either)", p.Type)
}

// failover runs the live sink of the highest priority; a sink that fails
// goes to the failed list with a cool-down of min(maxpenalty, 2^n s) after
// its n-th consecutive failure (2 s, 4 s, 8 s …), and the next live sink
// takes over at once. A failed sink whose cool-down passed is tried first:
// READY brings it back to the live set, BACKOFF leaves it where it is
// unpenalised, a failure doubles its cool-down (Flume's
// FailoverSinkProcessor).
type failover struct {
	name       string
	maxPenalty time.Duration
	now        func() time.Time
	mu         sync.Mutex
	live       []*prioritised // highest priority first
	failed     []*prioritised // by refresh time
}

type prioritised struct {
	*member
	priority int64
	fails    int
	refresh  time.Time
}

func newFailover(v *config.View, g *config.Component, members []*member, now func() time.Time) (sinkProcessor, error) {
	f := &failover{name: g.Name, now: now}
	var err error
	if f.maxPenalty, err = v.Millis("maxpenalty", defaultMaxPenalty, maxConfigurableMillisValue); err != nil {
		return nil, err
	}
	byPrio := map[int64]string{}
	next := int64(0)
	for _, m := range members {
		prop := "priority." + m.name
		var prio int64
		if v.Has(prop) {
			if prio, err = v.Int(prop, 0, -1<<31, 1<<31-1); err != nil {
				return nil, err
			}
		} else {
			// Flume: sinks without a priority rank below the others, in the
			// order listed.
			next--
			prio = next
		}
		if other, dup := byPrio[prio]; dup {
			return nil, v.Errorf(prop, "sinks %s and %s of sink group %s have the same priority %d; priorities must differ (Flume would silently leave %s out of the group)",
				other, m.name, g.Name, prio, m.name)
		}
		byPrio[prio] = m.name
		f.live = append(f.live, &prioritised{member: m, priority: prio})
	}
	for prop := range v.Prefixed("priority.") {
		if !slices.ContainsFunc(members, func(m *member) bool { return m.name == prop }) {
			return nil, v.Errorf("priority."+prop, "sink %q is not in sink group %s (%s)", prop, g.Name, g.Key("sinks"))
		}
	}
	slices.SortFunc(f.live, func(a, b *prioritised) int { return int(b.priority - a.priority) })
	return f, nil
}

func (f *failover) penalty(fails int) time.Duration {
	if fails > 30 {
		return f.maxPenalty
	}
	return min(f.maxPenalty, time.Duration(1<<fails)*failurePenalty)
}

func (f *failover) fail(p *prioritised) {
	p.fails++
	p.refresh = f.now().Add(f.penalty(p.fails))
	f.failed = append(f.failed, p)
	slices.SortStableFunc(f.failed, func(a, b *prioritised) int { return a.refresh.Compare(b.refresh) })
}

func (f *failover) Process(ctx context.Context) (Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	var errs []error
	for len(f.failed) > 0 && !f.failed[0].refresh.After(now) {
		cur := f.failed[0]
		f.failed = f.failed[1:]
		st, err := cur.process(ctx)
		if err != nil {
			errs = append(errs, err)
			cur.log.Warn("sink still failing; cool-down doubled", "sinkgroup", f.name, "sink", cur.name, "err", err)
			f.fail(cur)
			continue
		}
		if st == Ready {
			cur.fails = 0
			f.live = append(f.live, cur)
			slices.SortFunc(f.live, func(a, b *prioritised) int { return int(b.priority - a.priority) })
			cur.log.Info("sink recovered from the failover list", "sinkgroup", f.name, "sink", cur.name)
		} else {
			f.failed = append(f.failed, cur) // BACKOFF: not penalised
			slices.SortStableFunc(f.failed, func(a, b *prioritised) int { return a.refresh.Compare(b.refresh) })
		}
		return st, nil
	}
	for len(f.live) > 0 {
		cur := f.live[0]
		st, err := cur.process(ctx)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
		f.live = f.live[1:]
		f.fail(cur)
		cur.log.Warn("sink failed and was moved to the failover list", "sinkgroup", f.name, "sink", cur.name,
			"cooldown", f.penalty(cur.fails), "err", err)
	}
	return Backoff, fmt.Errorf("sink group %s: every sink failed, none left to fail over to: %w", f.name, errors.Join(errs...))
}

// loadBalance spreads Process calls over its sinks, round_robin or random;
// a failing sink is skipped for this call (the next one is tried) and, with
// backoff, left out for min(maxTimeOut, 2^n s) after its n-th failure in a
// row (Flume's LoadBalancingSinkProcessor and its OrderSelector).
type loadBalance struct {
	name       string
	random     bool
	backoff    bool
	maxTimeout time.Duration
	now        func() time.Time
	mu         sync.Mutex
	members    []*member
	next       int
	state      []lbState
	rnd        *rand.Rand
}

type lbState struct {
	fails    int
	lastFail time.Time
	restore  time.Time
}

func newLoadBalance(v *config.View, g *config.Component, members []*member, now func() time.Time) (sinkProcessor, error) {
	lb := &loadBalance{name: g.Name, members: members, state: make([]lbState, len(members)), now: now,
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	var err error
	if lb.backoff, err = v.Bool("backoff", false); err != nil {
		return nil, err
	}
	switch sel := v.String("selector", "round_robin"); lookupKey(sel) {
	case "round_robin":
	case "random":
		lb.random = true
	default:
		return nil, v.Errorf("selector", "unknown sink selector %q (known: round_robin, random; Sluice loads no Java selector classes)", sel)
	}
	if lb.maxTimeout, err = v.Millis("selector.maxTimeOut", defaultSelectorMaxTimeout, maxConfigurableMillisValue); err != nil {
		return nil, err
	}
	return lb, nil
}

func (lb *loadBalance) timeout(fails int) time.Duration {
	if fails > 30 {
		return lb.maxTimeout
	}
	return min(lb.maxTimeout, time.Duration(1<<fails)*failurePenalty)
}

// order is the sinks to try for one call.
func (lb *loadBalance) order() []int {
	now := lb.now()
	var idx []int
	for i := range lb.members {
		if !lb.backoff || !lb.state[i].restore.After(now) {
			idx = append(idx, i)
		}
	}
	if lb.random {
		lb.rnd.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		return idx
	}
	// Round robin: start after the sink the previous call started with.
	if len(idx) > 0 {
		start := 0
		for k, i := range idx {
			if i >= lb.next {
				start = k
				break
			}
		}
		idx = append(idx[start:], idx[:start]...)
		lb.next = idx[0] + 1
	}
	return idx
}

func (lb *loadBalance) failed(i int) {
	s := &lb.state[i]
	now := lb.now()
	if now.Sub(s.lastFail) < lb.timeout(s.fails)+sequentialFailureRange {
		if s.fails < maxSequentialFailureCount {
			s.fails++
		}
	} else {
		s.fails = 1
	}
	s.lastFail = now
	s.restore = now.Add(lb.timeout(s.fails))
}

func (lb *loadBalance) Process(ctx context.Context) (Status, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	var errs []error
	for _, i := range lb.order() {
		m := lb.members[i]
		st, err := m.process(ctx)
		if err == nil {
			return st, nil
		}
		errs = append(errs, err)
		lb.failed(i)
		m.log.Warn("sink failed; trying the next sink of the group", "sinkgroup", lb.name, "sink", m.name, "err", err)
	}
	if len(errs) == 0 {
		return Backoff, fmt.Errorf("sink group %s: every sink is backing off after failures", lb.name)
	}
	return Backoff, fmt.Errorf("sink group %s: every sink failed: %w", lb.name, errors.Join(errs...))
}
