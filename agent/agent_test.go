package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/builtin"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/internal/router"
)

var quiet = slog.New(slog.DiscardHandler)

// harness holds the test component types: the collect sink (records the
// bodies it wrote, fails while its flag is set), the flaky source (panics,
// then fails, then delivers) and the hold source (hands its channel
// processor to the test).
type harness struct {
	mu      sync.Mutex
	got     map[string][]string
	failing map[string]*atomic.Bool
	proc    chan *agent.ChannelProcessor
	release chan struct{} // closed: collect writes proceed (nil: never block)
	flakyN  int
	runs    atomic.Int64
	extra   func(r *agent.Registry) // more test types (deadletter_test.go)
}

func newHarness() *harness {
	return &harness{got: map[string][]string{}, failing: map[string]*atomic.Bool{}, proc: make(chan *agent.ChannelProcessor, 1)}
}

func (h *harness) flag(sink string) *atomic.Bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing[sink] == nil {
		h.failing[sink] = &atomic.Bool{}
	}
	return h.failing[sink]
}

func (h *harness) bodies(sink string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got[sink])
}

func (h *harness) registry() *agent.Registry {
	r := builtin.Registry()
	r.Sink(func(s *agent.Setup) (agent.Sink, error) {
		b, err := s.BatchSize("batchSize", 10)
		return &collect{h: h, name: s.Name, batch: b, failing: h.flag(s.Name)}, err
	}, "collect")
	r.Source(func(s *agent.Setup) (agent.Source, error) {
		n, err := s.Conf.Int("events", 10, 1, 1000)
		h.flakyN = int(n)
		return &flaky{h: h}, err
	}, "flaky")
	r.Source(func(s *agent.Setup) (agent.Source, error) { return &hold{h: h}, nil }, "hold")
	if h.extra != nil {
		h.extra(r)
	}
	return r
}

type collect struct {
	h       *harness
	name    string
	batch   int
	failing *atomic.Bool
}

func (c *collect) Process(ctx context.Context, in *agent.Input) (agent.Status, error) {
	return in.Drain(ctx, c.batch, func(ctx context.Context, evs []channel.Event) error {
		if c.h.release != nil {
			<-c.h.release
		}
		if c.failing.Load() {
			return errors.New("collect: failing on purpose")
		}
		c.h.mu.Lock()
		defer c.h.mu.Unlock()
		for _, e := range evs {
			c.h.got[c.name] = append(c.h.got[c.name], string(e.Body))
		}
		return nil
	})
}

type flaky struct{ h *harness }

func (f *flaky) Run(ctx context.Context, out *agent.ChannelProcessor) error {
	switch f.h.runs.Add(1) {
	case 1:
		panic("flaky: first run panics")
	case 2:
		return errors.New("flaky: second run fails")
	}
	evs := make([]channel.Event, f.h.flakyN)
	for i := range evs {
		evs[i].Body = []byte(strconv.Itoa(i))
	}
	return out.Deliver(ctx, evs, channel.PutOptions{})
}

type hold struct{ h *harness }

func (s *hold) Run(ctx context.Context, out *agent.ChannelProcessor) error {
	s.h.proc <- out
	<-ctx.Done()
	return nil
}

// running is an agent started on real stores opened from its configuration
// (file channels under a temporary directory: DIR in the text).
type running struct {
	ag    *agent.Agent
	store channel.Store
}

func start(t *testing.T, h *harness, text string, opts agent.Options) *running {
	t.Helper()
	text = strings.ReplaceAll(text, "DIR", t.TempDir())
	cfg, err := config.Parse("t.properties", text, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	opts.Registry = h.registry()
	if opts.Log == nil {
		opts.Log = quiet
	}
	if opts.RestartMin == 0 {
		opts.RestartMin, opts.RestartMax = 5*time.Millisecond, 20*time.Millisecond
	}
	if opts.IdleWait == 0 {
		opts.IdleWait = 20 * time.Millisecond
	}
	ag, err := agent.Build(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	stores := cfg.Stores()
	var groups [][]string
	var descr []string
	var opened []channel.Store
	for _, st := range stores {
		groups, descr = append(groups, st.Channels), append(descr, st.Type)
		var s channel.Store
		if st.Type == config.TypeMemory {
			s, err = memstore.New(st.Memory)
		} else {
			o := st.File
			o.MinFreeBytes = -1
			o.Logger = quiet
			s, err = filestore.Open(o)
		}
		if err != nil {
			t.Fatal(err)
		}
		opened = append(opened, s)
	}
	rt, err := router.New(groups, descr)
	if err != nil {
		t.Fatal(err)
	}
	rt.SetStores(opened)
	if err := ag.Start(context.Background(), rt); err != nil {
		rt.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ag.Stop()
		if err := rt.Close(); err != nil {
			t.Error(err)
		}
	})
	return &running{ag: ag, store: rt}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *running) metric(group, name string) int64 {
	v, _ := strconv.ParseInt(r.ag.JSON()[group][name], 10, 64)
	return v
}

func (r *running) size(t *testing.T, ch string) int64 {
	st, err := r.store.Stats(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size
}

func put(t *testing.T, s channel.Store, ch string, from, n int) {
	t.Helper()
	txn, err := s.BeginPut(context.Background(), channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < from+n; i++ {
		if err := txn.Put(ch, channel.Event{Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := txn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// exactlyOnce checks that got holds 0..n-1, each once.
func exactlyOnce(t *testing.T, got []string, n int) {
	t.Helper()
	seen := map[string]int{}
	for _, b := range got {
		seen[b]++
	}
	for i := range n {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Errorf("event %d delivered %d times", i, c)
		}
	}
	if len(got) != n {
		t.Errorf("%d deliveries, want %d", len(got), n)
	}
}

const memChannel = `a.channels = c1
a.channels.c1.type = memory
a.channels.c1.capacity = 10000
a.channels.c1.transactionCapacity = 100
`

// A source that panics, then fails, is run again after each (with the
// backoff) and counted; then it delivers, and every event reaches the sink
// once. The sink runs on a file channel here.
func TestRestartFailingSource(t *testing.T) {
	h := newHarness()
	r := start(t, h, `a.channels = f1
a.channels.f1.type = file
a.channels.f1.dataDirs = DIR/data
a.channels.f1.checkpointDir = DIR/cp
a.channels.f1.maxFileSize = 4194304
a.sources = s1
a.sources.s1.type = flaky
a.sources.s1.events = 50
a.sources.s1.channels = f1
a.sinks = k1
a.sinks.k1.type = collect
a.sinks.k1.channel = f1
`, agent.Options{})
	waitFor(t, "50 events at the sink", func() bool { return len(h.bodies("k1")) >= 50 })
	exactlyOnce(t, h.bodies("k1"), 50)
	if f, rs := r.metric("SOURCE.s1", "ComponentFailureCount"), r.metric("SOURCE.s1", "ComponentRestartCount"); f != 2 || rs != 2 {
		t.Errorf("failures %d restarts %d, want 2 and 2", f, rs)
	}
	waitFor(t, "drain counters", func() bool { return r.metric("SINK.k1", "EventDrainSuccessCount") == 50 })
	// A source counts its batch after the commit returns, which may be
	// after the sink drained it.
	waitFor(t, "source counters", func() bool { return r.metric("SOURCE.s1", "EventAcceptedCount") == 50 })
	if r.metric("SOURCE.s1", "EventAcceptedCount") != 50 || r.metric("SOURCE.s1", "AppendBatchAcceptedCount") != 1 {
		t.Errorf("source counters %v", r.ag.JSON()["SOURCE.s1"])
	}
	if h.runs.Load() != 3 {
		t.Errorf("%d runs, want 3 (a finished source is not run again)", h.runs.Load())
	}
}

// A failing sink of a failover group hands over to the next priority at
// once, its events are rolled back and delivered by the other sink exactly
// once; when it heals it takes over again after its cool-down.
func TestFailoverGroup(t *testing.T) {
	h := newHarness()
	h.flag("k1").Store(true)
	r := start(t, h, memChannel+`a.sources = s1
a.sources.s1.type = seq
a.sources.s1.totalEvents = 200
a.sources.s1.batchSize = 10
a.sources.s1.channels = c1
a.sinks = k1 k2
a.sinks.k1.type = collect
a.sinks.k1.channel = c1
a.sinks.k2.type = collect
a.sinks.k2.channel = c1
a.sinkgroups = g1
a.sinkgroups.g1.sinks = k1 k2
a.sinkgroups.g1.processor.type = failover
a.sinkgroups.g1.processor.priority.k1 = 10
a.sinkgroups.g1.processor.priority.k2 = 5
a.sinkgroups.g1.processor.maxpenalty = 30
`, agent.Options{})
	waitFor(t, "200 events at k2", func() bool { return len(h.bodies("k2")) >= 200 })
	exactlyOnce(t, h.bodies("k2"), 200)
	if len(h.bodies("k1")) != 0 {
		t.Errorf("failing k1 delivered %d", len(h.bodies("k1")))
	}
	if r.metric("SINK.k1", "SinkProcessFailCount") == 0 || r.metric("SINK.k1", "EventWriteFail") == 0 {
		t.Errorf("k1's failures not counted: %v", r.ag.JSON()["SINK.k1"])
	}
	if r.metric("SINKGROUP.g1", "ComponentFailureCount") != 0 {
		t.Errorf("the group failed although k2 was there: %v", r.ag.JSON()["SINKGROUP.g1"])
	}
	h.flag("k1").Store(false)
	time.Sleep(40 * time.Millisecond) // past k1's cool-down (maxpenalty 30 ms)
	for i := range 10 {
		put(t, r.store, "c1", 1000+10*i, 10)
		time.Sleep(5 * time.Millisecond)
	}
	waitFor(t, "the 100 new events", func() bool { return len(h.bodies("k1"))+len(h.bodies("k2")) >= 300 })
	if n := len(h.bodies("k1")); n < 90 {
		t.Errorf("healed k1 (higher priority) delivered only %d of 100", n)
	}
}

// A load_balance group spreads batches round robin; with backoff a failing
// sink is left out and the other delivers everything exactly once.
func TestLoadBalanceGroup(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		k1Fails     bool
	}{
		{"round_robin", "", false},
		{"random with backoff and a failing sink", "a.sinkgroups.g1.processor.selector = random\na.sinkgroups.g1.processor.backoff = true\na.sinkgroups.g1.processor.selector.maxTimeOut = 10000\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness()
			h.flag("k1").Store(tc.k1Fails)
			r := start(t, h, memChannel+`a.sinks = k1 k2
a.sinks.k1.type = collect
a.sinks.k1.channel = c1
a.sinks.k2.type = collect
a.sinks.k2.channel = c1
a.sinkgroups = g1
a.sinkgroups.g1.sinks = k1 k2
a.sinkgroups.g1.processor.type = load_balance
`+tc.extra, agent.Options{})
			for i := range 50 {
				put(t, r.store, "c1", 10*i, 10)
			}
			waitFor(t, "500 events", func() bool { return len(h.bodies("k1"))+len(h.bodies("k2")) >= 500 })
			time.Sleep(20 * time.Millisecond)
			exactlyOnce(t, append(h.bodies("k1"), h.bodies("k2")...), 500)
			if tc.k1Fails {
				if len(h.bodies("k1")) != 0 || r.metric("SINK.k1", "SinkProcessFailCount") == 0 {
					t.Errorf("k1 %d events, %v", len(h.bodies("k1")), r.ag.JSON()["SINK.k1"])
				}
				if f := r.metric("SINK.k1", "SinkProcessFailCount"); f > 3 {
					t.Errorf("k1 tried %d times: backoff should leave it out for 2 s after a failure", f)
				}
			} else if len(h.bodies("k1")) == 0 || len(h.bodies("k2")) == 0 {
				t.Errorf("round robin: k1 %d k2 %d", len(h.bodies("k1")), len(h.bodies("k2")))
			}
		})
	}
}

// Required channels of one store commit in one transaction: a full one
// fails the batch and neither channel has any of it. An optional channel
// that is full is skipped, logged and counted. Channels of two stores get
// a transaction each.
func TestDeliverTransactions(t *testing.T) {
	base := `a.channels = c1 c2 f1
a.channels.c1.type = memory
a.channels.c1.transactionCapacity = 100
a.channels.c2.type = memory
a.channels.c2.capacity = 5
a.channels.c2.transactionCapacity = 5
a.channels.f1.type = file
a.channels.f1.dataDirs = DIR/data
a.channels.f1.checkpointDir = DIR/cp
a.channels.f1.maxFileSize = 4194304
a.sources = s1
a.sources.s1.type = hold
`
	events := func(n int) []channel.Event {
		evs := make([]channel.Event, n)
		for i := range evs {
			evs[i] = channel.Event{Body: []byte(strconv.Itoa(i)), Headers: map[string]string{"kind": []string{"a", "b"}[i%2]}}
		}
		return evs
	}
	ctx := context.Background()
	t.Run("required all or nothing", func(t *testing.T) {
		h := newHarness()
		r := start(t, h, base+"a.sources.s1.channels = c1 c2\n", agent.Options{})
		p := <-h.proc
		put(t, r.store, "c2", 100, 3)
		err := p.Deliver(ctx, events(4), channel.PutOptions{})
		if !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("Deliver: %v, want ErrChannelFull", err)
		}
		if r.size(t, "c1") != 0 || r.size(t, "c2") != 3 {
			t.Errorf("a failed put left events: c1 %d c2 %d", r.size(t, "c1"), r.size(t, "c2"))
		}
		if r.metric("SOURCE.s1", "ChannelWriteFail") != 1 || r.metric("SOURCE.s1", "EventAcceptedCount") != 0 || r.metric("SOURCE.s1", "EventReceivedCount") != 4 {
			t.Errorf("counters %v", r.ag.JSON()["SOURCE.s1"])
		}
	})
	t.Run("optional full is skipped", func(t *testing.T) {
		h := newHarness()
		r := start(t, h, base+"a.sources.s1.channels = c1 c2\na.sources.s1.selector.optional = c2\n", agent.Options{})
		p := <-h.proc
		put(t, r.store, "c2", 100, 3)
		if err := p.Deliver(ctx, events(4), channel.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if r.size(t, "c1") != 4 || r.size(t, "c2") != 3 || r.metric("SOURCE.s1", "OptionalChannelWriteFail") != 1 {
			t.Errorf("c1 %d c2 %d %v", r.size(t, "c1"), r.size(t, "c2"), r.ag.JSON()["SOURCE.s1"])
		}
		if err := p.Deliver(ctx, events(2), channel.PutOptions{}); err != nil || r.size(t, "c2") != 5 {
			t.Errorf("optional with room: %v, c2 %d", err, r.size(t, "c2"))
		}
	})
	t.Run("two stores", func(t *testing.T) {
		h := newHarness()
		r := start(t, h, base+"a.sources.s1.channels = c1 f1\n", agent.Options{})
		p := <-h.proc
		if err := p.Deliver(ctx, events(7), channel.PutOptions{ProducerID: "s1", Sequence: 1}); err != nil {
			t.Fatal(err)
		}
		// The retry of the same batch is deduplicated in each store.
		if err := p.Deliver(ctx, events(7), channel.PutOptions{ProducerID: "s1", Sequence: 1}); err != nil {
			t.Fatal(err)
		}
		if r.size(t, "c1") != 7 || r.size(t, "f1") != 7 {
			t.Errorf("c1 %d f1 %d, want 7 and 7", r.size(t, "c1"), r.size(t, "f1"))
		}
	})
	t.Run("multiplexing", func(t *testing.T) {
		h := newHarness()
		r := start(t, h, base+`a.sources.s1.channels = c1 c2 f1
a.sources.s1.selector.type = multiplexing
a.sources.s1.selector.header = kind
a.sources.s1.selector.mapping.a = c1
a.sources.s1.selector.optional.a = c2
a.sources.s1.selector.default = f1
`, agent.Options{})
		p := <-h.proc
		if err := p.Deliver(ctx, events(6), channel.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if r.size(t, "c1") != 3 || r.size(t, "c2") != 3 || r.size(t, "f1") != 3 {
			t.Errorf("c1 %d c2 %d f1 %d, want 3 each", r.size(t, "c1"), r.size(t, "c2"), r.size(t, "f1"))
		}
	})
}

// Stop lets a sink finish the take it is writing: the batch commits and
// nothing is delivered twice.
func TestStopFinishesCurrentTake(t *testing.T) {
	h := newHarness()
	h.release = make(chan struct{})
	r := start(t, h, memChannel+`a.sinks = k1
a.sinks.k1.type = collect
a.sinks.k1.channel = c1
a.sinks.k1.batchSize = 5
`, agent.Options{})
	put(t, r.store, "c1", 0, 5)
	waitFor(t, "the take", func() bool { return r.metric("SINK.k1", "EventDrainAttemptCount") == 5 })
	done := make(chan struct{})
	go func() { r.ag.Stop(); close(done) }()
	time.Sleep(30 * time.Millisecond)
	select {
	case <-done:
		t.Fatal("Stop returned while the sink was still writing")
	default:
	}
	close(h.release)
	<-done
	exactlyOnce(t, h.bodies("k1"), 5)
	if r.size(t, "c1") != 0 {
		t.Errorf("the take was not committed: %d events back", r.size(t, "c1"))
	}
}

// Every problem of a configuration is listed, each with FILE:LINE, the key
// and the fix; a key nobody reads is a warning with a suggestion.
func TestBuildErrors(t *testing.T) {
	text := memChannel + `a.sources = s1 s2 s3
a.sources.s1.type = seq
a.sources.s1.batchSize = 500
a.sources.s1.channels = c1
a.sources.s2.type = org.example.MySource
a.sources.s2.channels = c1
a.sources.s3.type = seq
a.sources.s3.channels = c1
a.sources.s3.selector.optional = c9
a.sinks = k1 k2 k3
a.sinks.k1.type = null
a.sinks.k1.channel = c1
a.sinks.k2.type = null
a.sinks.k2.channel = c1
a.sinks.k3.type = org.apache.flume.sink.NullSink
a.sinks.k3.channel = c1
a.sinks.k3.batchSise = 10
a.sinkgroups = g1
a.sinkgroups.g1.sinks = k1 k2
a.sinkgroups.g1.processor.type = failover
a.sinkgroups.g1.processor.priority.k1 = 5
a.sinkgroups.g1.processor.priority.k2 = 5
`
	cfg, err := config.Parse("t.properties", text, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: quiet})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`t.properties:7: key a.sources.s1.batchSize: source s1's batch size 500 is above the transactionCapacity 100 of channel c1: one transaction could never hold a batch (set a.sources.s1.batchSize to at most 100, or raise transactionCapacity of channel c1; Flume would silently drop the source)`,
		`t.properties:9: key a.sources.s2.type: unknown source type "org.example.MySource" (known: seq, netcat); Sluice does not load Java classes`,
		`t.properties:13: key a.sources.s3.selector.optional: channel "c9" is not one of the source's channels (c1)`,
		`t.properties:26: key a.sinkgroups.g1.processor.priority.k2: sinks k1 and k2 of sink group g1 have the same priority 5; priorities must differ (Flume would silently leave k2 out of the group)`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing\n  %s\nin\n%v", want, err)
		}
	}
	// Without the errors the misspelt key is a warning with a suggestion.
	cfg, err = config.Parse("t.properties", memChannel+"a.sinks = k3\na.sinks.k3.type = null\na.sinks.k3.channel = c1\na.sinks.k3.batchSise = 10\n", "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(ag.Warnings(), "\n"); w != "t.properties:8: key a.sinks.k3.batchSise: unknown property of sink k3 (type null), ignored; did you mean batchSize?" {
		t.Errorf("warnings: %q", w)
	}
}

// Processor and selector errors.
func TestGroupAndSelectorErrors(t *testing.T) {
	sinks := memChannel + "a.sinks = k1 k2\na.sinks.k1.type = null\na.sinks.k1.channel = c1\na.sinks.k2.type = null\na.sinks.k2.channel = c1\na.sinkgroups = g1\na.sinkgroups.g1.sinks = k1 k2\n"
	src := memChannel + "a.sources = s1\na.sources.s1.type = seq\na.sources.s1.channels = c1\n"
	for _, tc := range []struct{ text, want string }{
		{sinks, `key a.sinkgroups.g1.processor.type: the default sink processor runs one sink; sink group g1 has 2`},
		{sinks + "a.sinkgroups.g1.processor.type = round_robin\n", `t.properties:12: key a.sinkgroups.g1.processor.type: unknown sink processor type "round_robin"`},
		{sinks + "a.sinkgroups.g1.processor.type = load_balance\na.sinkgroups.g1.processor.selector = weighted\n", `t.properties:13: key a.sinkgroups.g1.processor.selector: unknown sink selector "weighted"`},
		{sinks + "a.sinkgroups.g1.processor.type = failover\na.sinkgroups.g1.processor.priority.k9 = 1\n", `t.properties:13: key a.sinkgroups.g1.processor.priority.k9: sink "k9" is not in sink group g1`},
		{sinks + "a.sinkgroups.g1.processor.type = failover\na.sinkgroups.g1.processor.maxpenalty = 2s\n", `t.properties:13: key a.sinkgroups.g1.processor.maxpenalty: "2s" is not an integer (the key takes a whole number of milliseconds`},
		{src + "a.sources.s1.selector.type = multiplexing\n", `key a.sources.s1.selector.mapping: a multiplexing selector needs`},
		{src + "a.sources.s1.selector.type = multiplexing\na.sources.s1.selector.mapping.x = c1 c1\n", `t.properties:9: key a.sources.s1.selector.mapping.x: channel "c1" is listed twice`},
		{src + "a.sources.s1.selector.type = load_balancing\n", `not supported yet`},
		{src + "a.sources.s1.selector.type = fancy\n", `t.properties:8: key a.sources.s1.selector.type: unknown channel selector type "fancy"`},
		{memChannel + "a.sources = s1\na.sources.s1.type = netcat\na.sources.s1.channels = c1\na.sources.s1.bind = 127.0.0.1\n", `key a.sources.s1.port: missing: required for source s1`},
	} {
		cfg, err := config.Parse("t.properties", tc.text, "a", quiet)
		if err != nil {
			t.Fatal(err)
		}
		_, err = agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: quiet})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got  %v\nwant …%s…", err, tc.want)
		}
	}
}

// The counters are Prometheus series too.
func TestPrometheusSeries(t *testing.T) {
	h := newHarness()
	r := start(t, h, memChannel+`a.sources = s1
a.sources.s1.type = seq
a.sources.s1.totalEvents = 30
a.sources.s1.batchSize = 10
a.sources.s1.channels = c1
a.sinks = k1
a.sinks.k1.type = null
a.sinks.k1.channel = c1
`, agent.Options{})
	waitFor(t, "30 drained", func() bool { return r.metric("SINK.k1", "EventDrainSuccessCount") == 30 })
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.ag.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			got[fmt.Sprintf("%s{%s}", mf.GetName(), m.GetLabel()[0].GetValue())] = v
		}
	}
	for k, want := range map[string]float64{
		"sluice_source_event_accepted_total{s1}":        30,
		"sluice_source_append_batch_accepted_total{s1}": 3,
		"sluice_sink_event_drain_success_total{k1}":     30,
		"sluice_sink_failures_total{k1}":                0,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// Every properties block of README.md and docs/*.md builds with the
// built-in components, without errors or warnings: users paste them.
func TestDocBlocksBuild(t *testing.T) {
	files, _ := filepath.Glob("../docs/*.md")
	files = append([]string{"../README.md"}, files...)
	blocks := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) != "```properties" {
				continue
			}
			start := i + 1
			var b strings.Builder
			b.WriteString(strings.Repeat("\n", start-1))
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				b.WriteString(lines[i] + "\n")
			}
			text := b.String()
			agentName := "agent"
			if strings.Contains(text, "\na1.channels") {
				agentName = "a1"
			}
			cfg, err := config.Parse(filepath.Base(f), text, agentName, quiet)
			if err != nil {
				t.Errorf("%s:%d: %v", f, start, err)
				continue
			}
			ag, err := agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: quiet})
			if err != nil {
				t.Errorf("%s:%d does not build: %v", f, start, err)
				continue
			}
			if len(ag.Warnings()) > 0 {
				t.Errorf("%s:%d builds with warnings:\n%s", f, start, strings.Join(ag.Warnings(), "\n"))
			}
			blocks++
		}
	}
	if blocks < 2 {
		t.Fatalf("%d blocks", blocks)
	}
}
