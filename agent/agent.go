// Package agent runs a Flume agent's components on Sluice's stores:
// sources with their interceptor chains and channel selectors, sinks with
// their sink processors (default, failover, load_balance), all built from
// the component tree of a properties file (config.Config's Sources, Sinks
// and SinkGroups) with a Registry of component types.
//
//	source ─▶ interceptors ─▶ selector ─▶ one put txn per store ─▶ store
//	store ─▶ take txn ─▶ sink processor ─▶ sink ─▶ external system
//
// The components are clients of channel.Store: the agent process passes
// the router over its open stores, the same one the gRPC server serves, so
// an agent is also a server. Lifecycle (Start): the stores are open
// already; sinks start, then sources. Stop: sources first, each finishing
// or rolling back the transaction it is in, then sinks, each finishing its
// current take. A component that fails (an error or a panic) is run again
// after a backoff and counted; it never takes the process down.
//
// docs/components.md describes the interfaces for component authors.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
)

// Options configure an Agent. Zero fields take the defaults shown.
type Options struct {
	Registry *Registry    // component types (required): builtin.Registry() for Sluice's own
	Log      *slog.Logger // slog.Default()
	// RestartMin and RestartMax bound the backoff before a failed
	// component runs again: RestartMin, doubling up to RestartMax.
	RestartMin time.Duration // 1 s
	RestartMax time.Duration // 30 s
	// IdleWait is how long a sink's take waits on an empty channel before
	// it reports BACKOFF (it wakes as soon as events arrive).
	IdleWait time.Duration // 1 s
	// StopGrace is how long, once Stop began, a transaction already begun
	// may take to finish (a source's commit, a sink's write and commit).
	StopGrace time.Duration // 10 s
	// Now is the clock of the sink processors' cool-downs (time.Now).
	Now func() time.Time
}

func (o *Options) ensureDefaults() {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.RestartMin <= 0 {
		o.RestartMin = time.Second
	}
	if o.RestartMax <= 0 {
		o.RestartMax = 30 * time.Second
	}
	o.RestartMax = max(o.RestartMax, o.RestartMin)
	if o.IdleWait <= 0 {
		o.IdleWait = time.Second
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Agent is a built agent: Start runs it, Stop stops it.
type Agent struct {
	opts     Options
	sources  []*sourceUnit
	runners  []*sinkUnit
	checks   []batchCheck
	groups   []group
	warnings []string

	mu      sync.Mutex
	started bool
	stopped bool
	srcStop context.CancelFunc
	snkStop context.CancelFunc
	srcWG   sync.WaitGroup
	snkWG   sync.WaitGroup
}

type sourceUnit struct {
	name string
	src  Source
	proc *ChannelProcessor
	rc   *RunCounters
	ics  []Interceptor
}

type sinkUnit struct {
	name    string // the sink's, or "sink group g1"
	proc    sinkProcessor
	members []*member
	rc      *RunCounters
}

// Warnings lists what Build warned about (and logged): keys no component
// reads.
func (a *Agent) Warnings() []string { return a.warnings }

// Empty reports whether the configuration has neither sources nor sinks:
// the agent is then a plain server.
func (a *Agent) Empty() bool { return len(a.sources) == 0 && len(a.runners) == 0 }

// Build builds every component of cfg with opts.Registry, checking every
// key it reads; it opens nothing (so `sluice agent --check` runs it too).
// The error lists every problem found, each naming FILE:LINE and the key.
func Build(cfg *config.Config, opts Options) (*Agent, error) {
	opts.ensureDefaults()
	if opts.Registry == nil {
		return nil, errors.New("agent: Options.Registry is required")
	}
	a := &Agent{opts: opts}
	limits := map[string]channel.ChannelConfig{}
	for _, ch := range cfg.Channels {
		limits[ch.Name] = ch.Config
	}
	storeOf := map[string]int{}
	for i, st := range cfg.Stores() {
		for _, ch := range st.Channels {
			storeOf[ch] = i
		}
	}
	var errs []error
	fail := func(err error) { errs = append(errs, err) }

	// Sinks, then the groups that run them.
	members := map[string]*member{}
	sinkCounters := map[string]*SinkCounters{}
	for _, c := range cfg.Sinks {
		s := a.setup(c, config.KindSink, c.Channels, limits)
		s.Sink = &SinkCounters{}
		dead, err := readDeadLetter(s, c.Channels[0], limits, storeOf)
		if err != nil {
			fail(err)
			continue
		}
		s.deadLetter = dead.Channel
		f, ok := opts.Registry.sinks[lookupKey(c.Type)]
		if !ok {
			fail(s.Conf.Errorf("type", "%s", opts.Registry.unknownType(config.KindSink, c.Type)))
			continue
		}
		var sink Sink
		err = safely("sink factory "+c.Type, func() (err error) { sink, err = f(s); return err })
		if err != nil {
			fail(err)
			continue
		}
		a.unread(c, s.Conf)
		sinkCounters[c.Name] = s.Sink
		members[c.Name] = &member{name: c.Name, sink: sink, log: s.Log,
			in: &Input{channel: c.Channels[0], sink: c.Name, c: s.Sink, idle: opts.IdleWait, grace: opts.StopGrace,
				dead: dead, log: s.Log, now: opts.Now}}
	}
	grouped := map[string]bool{}
	for _, g := range cfg.SinkGroups {
		var ms []*member
		for _, k := range g.Sinks {
			grouped[k] = true
			if m := members[k]; m != nil {
				ms = append(ms, m)
			}
		}
		if len(ms) != len(g.Sinks) {
			continue // a sink failed to build: reported above
		}
		p, err := buildProcessor(g, ms, opts.Now)
		if err != nil {
			fail(err)
			continue
		}
		a.unread(g.Processor, g.Processor.View())
		a.unread(g, g.View())
		rc := &RunCounters{}
		a.runners = append(a.runners, &sinkUnit{name: "sink group " + g.Name, proc: p, members: ms, rc: rc})
		a.groups = append(a.groups, group{typ: "SINKGROUP", name: g.Name, metrics: runMetrics(rc), run: rc})
	}
	for _, c := range cfg.Sinks {
		m := members[c.Name]
		if m == nil {
			continue
		}
		g := group{typ: "SINK", name: c.Name, metrics: sinkMetrics(sinkCounters[c.Name])}
		if !grouped[c.Name] {
			rc := &RunCounters{}
			a.runners = append(a.runners, &sinkUnit{name: c.Name, proc: &defaultProcessor{m: m}, members: []*member{m}, rc: rc})
			g.metrics, g.run = append(g.metrics, runMetrics(rc)...), rc
		}
		a.groups = append(a.groups, g)
	}

	// Sources, each with its interceptors and selector.
	for _, c := range cfg.Sources {
		u := &sourceUnit{name: c.Name, rc: &RunCounters{}}
		ok := true
		for _, ic := range c.Interceptors {
			s := a.setup(ic, config.KindInterceptor, c.Channels, limits)
			f, found := opts.Registry.interceptors[lookupKey(ic.Type)]
			if !found {
				fail(s.Conf.Errorf("type", "%s", opts.Registry.unknownType(config.KindInterceptor, ic.Type)))
				ok = false
				continue
			}
			var it Interceptor
			err := safely("interceptor factory "+ic.Type, func() (err error) { it, err = f(s); return err })
			if err != nil {
				fail(err)
				ok = false
				continue
			}
			a.unread(ic, s.Conf)
			u.ics = append(u.ics, it)
		}
		sel, err := buildSelector(c.Selector, c.Channels)
		if err != nil {
			fail(err)
			ok = false
		} else {
			a.unread(c.Selector, c.Selector.View())
		}
		s := a.setup(c, config.KindSource, c.Channels, limits)
		s.Source = &SourceCounters{}
		f, found := opts.Registry.sources[lookupKey(c.Type)]
		if !found {
			fail(s.Conf.Errorf("type", "%s", opts.Registry.unknownType(config.KindSource, c.Type)))
			continue
		}
		err = safely("source factory "+c.Type, func() (err error) { u.src, err = f(s); return err })
		if err != nil {
			fail(err)
			continue
		}
		a.unread(c, s.Conf)
		if !ok {
			continue
		}
		u.proc = &ChannelProcessor{source: c.Name, channels: c.Channels, selector: sel, storeOf: storeOf,
			c: s.Source, log: s.Log, grace: opts.StopGrace}
		for i, it := range u.ics {
			u.proc.interceptors = append(u.proc.interceptors, namedInterceptor{name: c.Interceptors[i].Name, Interceptor: it})
		}
		a.sources = append(a.sources, u)
		a.groups = append(a.groups, group{typ: "SOURCE", name: c.Name, metrics: sourceMetrics(s.Source, u.rc), run: u.rc})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

// readDeadLetter reads a sink's deadLetter.* keys: the channel must be
// another channel of the agent in the store of the sink's channel (the
// move commits with the take).
func readDeadLetter(s *Setup, from string, limits map[string]channel.ChannelConfig, storeOf map[string]int) (DeadLetter, error) {
	var d DeadLetter
	d.Channel = s.Conf.String("deadLetter.channel", "")
	n, err := s.Conf.Int("deadLetter.maxAttempts", 0, 0, 1_000_000)
	if err != nil {
		return d, err
	}
	d.MaxAttempts = int(n)
	switch {
	case d.Channel == "" && d.MaxAttempts > 0:
		return d, s.Conf.Errorf("deadLetter.maxAttempts", "deadLetter.maxAttempts needs deadLetter.channel: where would the events go?")
	case d.Channel == "":
		return d, nil
	case d.Channel == from:
		return d, s.Conf.Errorf("deadLetter.channel", "the dead-letter channel %s is the sink's own channel: a refused event would come straight back; name another channel", d.Channel)
	}
	if _, ok := limits[d.Channel]; !ok {
		names := make([]string, 0, len(limits))
		for n := range limits {
			names = append(names, n)
		}
		slices.Sort(names)
		return d, s.Conf.Errorf("deadLetter.channel", "dead-letter channel %q is not a channel of this agent (channels: %v)", d.Channel, names)
	}
	if storeOf[d.Channel] != storeOf[from] {
		return d, s.Conf.Errorf("deadLetter.channel", "dead-letter channel %s is in another store than the sink's channel %s: the move commits with the take, in one store; "+
			"give both file channels the same dataDirs and checkpointDir (or make both memory channels)", d.Channel, from)
	}
	return d, nil
}

func (a *Agent) setup(c *config.Component, kind string, channels []string, limits map[string]channel.ChannelConfig) *Setup {
	return &Setup{Kind: kind, Name: c.Name, Type: c.Type, Conf: c.View(), Log: a.opts.Log.With(kind, c.Name),
		Channels: channels, limits: limits, checks: &a.checks}
}

// unread warns about the properties of c nobody read.
func (a *Agent) unread(c *config.Component, v *config.View) {
	for _, pr := range v.Unread() {
		prop := pr.Key[len(c.Prefix):]
		what := c.Kind
		if c.Name != "" {
			what += " " + c.Name
		}
		msg := fmt.Sprintf("unknown property of %s (type %s), ignored", what, c.Type)
		if near := v.Suggest(prop); near != "" {
			msg += "; did you mean " + near + "?"
		}
		a.warnings = append(a.warnings, fmt.Sprintf("%s:%d: key %s: %s", c.File, pr.Line, pr.Key, msg))
		a.opts.Log.Warn("config: "+msg, "at", fmt.Sprintf("%s:%d", c.File, pr.Line), "key", pr.Key)
	}
}

// Start runs the agent on store (the router over the open stores): it
// checks every batch size against the channels' transactionCapacity as the
// store reports it, opens the components that need it (sinks first), and
// starts the sinks, then the sources. On an error nothing keeps running.
func (a *Agent) Start(ctx context.Context, store channel.Store) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.started {
		return errors.New("agent: already started")
	}
	for _, ck := range a.checks {
		for _, ch := range ck.channels {
			st, err := store.Stats(ctx, ch)
			if err != nil {
				return fmt.Errorf("agent: %s %s: channel %s: %w", ck.kind, ck.name, ch, err)
			}
			if st.TransactionCapacity > 0 && ck.size > st.TransactionCapacity {
				return ck.err(ch, st.TransactionCapacity)
			}
		}
	}
	var opened []any
	closeOpened := func() {
		for _, c := range slices.Backward(opened) {
			closeComponent(c, a.opts.Log)
		}
	}
	open := func(c any, what string) error {
		if o, ok := c.(Opener); ok {
			if err := o.Open(ctx); err != nil {
				return fmt.Errorf("agent: open %s: %w", what, err)
			}
		}
		opened = append(opened, c)
		return nil
	}
	for _, r := range a.runners {
		for _, m := range r.members {
			m.in.store = store
			if err := open(m.sink, "sink "+m.name); err != nil {
				closeOpened()
				return err
			}
		}
	}
	for _, u := range a.sources {
		u.proc.store = store
		for _, it := range u.ics {
			if err := open(it, "an interceptor of source "+u.name); err != nil {
				closeOpened()
				return err
			}
		}
		if err := open(u.src, "source "+u.name); err != nil {
			closeOpened()
			return err
		}
	}
	a.started = true
	bo := backoff{min: a.opts.RestartMin, max: a.opts.RestartMax}
	snkCtx, snkStop := context.WithCancel(context.WithoutCancel(ctx))
	srcCtx, srcStop := context.WithCancel(context.WithoutCancel(ctx))
	a.snkStop, a.srcStop = snkStop, srcStop
	for _, r := range a.runners {
		a.snkWG.Go(func() { runSinks(snkCtx, r.name, r.proc, r.rc, bo, a.opts.IdleWait, a.opts.Log) })
	}
	for _, u := range a.sources {
		a.srcWG.Go(func() { runSource(srcCtx, u.name, u.src, u.proc, u.rc, bo, a.opts.Log) })
	}
	if len(a.sources)+len(a.runners) > 0 {
		a.opts.Log.Info("agent started", "sources", len(a.sources), "sink runners", len(a.runners))
	}
	return nil
}

// Stop stops the sources (each finishes or rolls back the transaction it
// is in), then the sinks (each finishes its current take), and closes the
// components. It waits at most StopGrace (plus a second) for each stage;
// a component still running then is left behind with an error in the log.
func (a *Agent) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.started || a.stopped {
		return
	}
	a.stopped = true
	a.srcStop()
	a.wait(&a.srcWG, "sources")
	for _, u := range a.sources {
		closeComponent(u.src, a.opts.Log)
		for _, it := range u.ics {
			closeComponent(it, a.opts.Log)
		}
	}
	a.snkStop()
	a.wait(&a.snkWG, "sinks")
	for _, r := range a.runners {
		for _, m := range r.members {
			closeComponent(m.sink, a.opts.Log)
		}
	}
}

func (a *Agent) wait(wg *sync.WaitGroup, what string) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(a.opts.StopGrace + time.Second):
		a.opts.Log.Error("agent: "+what+" did not stop in time; leaving them behind", "waited", a.opts.StopGrace+time.Second)
	}
}

func closeComponent(c any, log *slog.Logger) {
	if cl, ok := c.(Closer); ok {
		if err := cl.Close(); err != nil {
			log.Warn("agent: closing a component", "err", err)
		}
	}
}

// Addrs lists the addresses the sources listen on (sources with an
// Addr() net.Addr method, once started), by source name.
func (a *Agent) Addrs() map[string]string {
	out := map[string]string{}
	for _, u := range a.sources {
		if l, ok := u.src.(interface{ Addr() net.Addr }); ok {
			if ad := l.Addr(); ad != nil {
				out[u.name] = ad.String()
			}
		}
	}
	return out
}
