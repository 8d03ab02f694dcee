package agent

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
)

// Source produces events and hands them to its channel processor. The agent
// calls Run in a goroutine of its own once the sinks run; a Run that returns
// an error (or panics) is run again after a backoff (1 s doubling to 30 s),
// and the failure is counted. Run returns nil when ctx is done (the agent is
// stopping) or when the source has nothing more to produce (seq after
// totalEvents); it is then not run again.
//
// Stopping cancels ctx. A Deliver in progress finishes its transaction
// (commit, or fail and roll back) before it returns; Run then returns
// without reading more input.
type Source interface {
	Run(ctx context.Context, out *ChannelProcessor) error
}

// Status is what a sink's Process reports, Flume's Sink.Status.
type Status int

const (
	// Ready: the sink delivered events (or may have more to do): call
	// Process again at once.
	Ready Status = iota
	// Backoff: nothing was there to deliver; the runner waits before it
	// calls Process again (a take on an empty channel already waited, and
	// woke as soon as events arrived).
	Backoff
)

func (s Status) String() string {
	if s == Backoff {
		return "BACKOFF"
	}
	return "READY"
}

// Sink delivers events from its channel to an external system. Process is
// Flume's Sink.process(): one take transaction from in, the write, and the
// commit only after the write succeeded (Input.Drain does exactly this); on
// any error the take is rolled back and the events are taken again later.
// An error makes the sink processor try another sink of its group (failover,
// load_balance) and the runner back off; it is counted, never fatal.
// Process is called from one goroutine at a time.
type Sink interface {
	Process(ctx context.Context, in *Input) (Status, error)
}

// Interceptor transforms a batch before the selector routes it: it may
// change headers and bodies in place, drop events (return fewer) or fail
// the batch (Deliver then fails and the source's sender sees the error).
// It is called from the source's goroutines, possibly several at once (a
// netcat source runs one per connection): it must be safe for concurrent
// use.
type Interceptor interface {
	Intercept(events []channel.Event) ([]channel.Event, error)
}

// Opener is implemented by components that acquire something once, before
// the agent runs them (a source's listening socket, a sink's connection
// pool). An Open error stops the agent from starting.
type Opener interface {
	Open(ctx context.Context) error
}

// Closer is implemented by components that release something after their
// last Run or Process.
type Closer interface {
	Close() error
}

// Factories build a component from its Setup. They only read and check
// configuration (they also run for `sluice agent --check`): sockets, files
// and connections belong in Open or Run.
type (
	SourceFactory      func(s *Setup) (Source, error)
	SinkFactory        func(s *Setup) (Sink, error)
	InterceptorFactory func(s *Setup) (Interceptor, error)
)

// Setup is what a factory gets: the component's name and configuration,
// its channels and their limits, a logger and its counters.
type Setup struct {
	Kind string // config.KindSource, KindSink or KindInterceptor
	Name string
	Type string // as configured (an alias or a Flume class name)
	// Conf reads the component's properties; keys it never reads are
	// warned about after the factory returns.
	Conf *config.View
	Log  *slog.Logger
	// Channels: a source's channels (an interceptor's: its source's), a
	// sink's one channel.
	Channels []string
	// Source is set for sources, Sink for sinks: the component's counters
	// (Flume's SOURCE.<name> / SINK.<name> groups).
	Source *SourceCounters
	Sink   *SinkCounters

	limits map[string]channel.ChannelConfig
	checks *[]batchCheck
	// deadLetter is a sink's dead-letter channel (deadLetter.channel):
	// its batches move there, so BatchSize checks it too.
	deadLetter string
}

// checked are the channels a batch size is checked against.
func (s *Setup) checked() []string {
	if s.deadLetter == "" {
		return s.Channels
	}
	return append(slices.Clone(s.Channels), s.deadLetter)
}

// batchCheck is a batch size to check against a channel's
// transactionCapacity again when the stores are open (Stats).
type batchCheck struct {
	kind, name, prop string
	size             int
	channels         []string
	err              func(ch string, txnCap int) error
}

// TransactionCapacity is the smallest transactionCapacity of the
// component's channels: the most events one transaction may hold.
func (s *Setup) TransactionCapacity() int {
	n := 0
	for _, ch := range s.Channels {
		if c, ok := s.limits[ch]; ok && (n == 0 || c.TransactionCapacity < n) {
			n = c.TransactionCapacity
		}
	}
	if n == 0 {
		n = channel.DefaultTransactionCapacity
	}
	return n
}

// BatchSize reads prop, a batch size in [1, 1e9] (def when unset), and
// checks it against the transactionCapacity of every channel of the
// component: Flume drops a component whose batch is larger, Sluice refuses
// to start, naming the key and the fix. The check runs again against the
// open stores' Stats when the agent starts.
func (s *Setup) BatchSize(prop string, def int64) (int, error) {
	n, err := s.Conf.Int(prop, def, 1, 1_000_000_000)
	if err != nil {
		return 0, err
	}
	kind := s.Kind
	errFor := func(ch string, txnCap int) error {
		return s.Conf.Errorf(prop, "%s %s's batch size %d is above the transactionCapacity %d of channel %s: one transaction could never hold a batch "+
			"(set %s to at most %d, or raise transactionCapacity of channel %s; Flume would silently drop the %s)",
			kind, s.Name, n, txnCap, ch, s.Conf.Key(prop), txnCap, ch, kind)
	}
	for _, ch := range s.checked() {
		if c, ok := s.limits[ch]; ok && int64(c.TransactionCapacity) < n {
			return 0, errFor(ch, c.TransactionCapacity)
		}
	}
	if s.checks != nil {
		*s.checks = append(*s.checks, batchCheck{kind: kind, name: s.Name, prop: prop, size: int(n), channels: s.checked(), err: errFor})
	}
	return int(n), nil
}

// lookupKey normalises a type for the registry: Flume matches its aliases
// case-insensitively.
func lookupKey(t string) string { return strings.ToLower(strings.TrimSpace(t)) }

// Registry maps component types (aliases and Flume class names) to
// factories. It is a value: the agent gets one in its Options (the built-in
// components come from package builtin), and a custom binary adds its own.
type Registry struct {
	sources      map[string]SourceFactory
	sinks        map[string]SinkFactory
	interceptors map[string]InterceptorFactory
	refused      map[string]string // kind + "/" + type -> why
	names        map[string][]string
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{sources: map[string]SourceFactory{}, sinks: map[string]SinkFactory{},
		interceptors: map[string]InterceptorFactory{}, refused: map[string]string{}, names: map[string][]string{}}
}

// Source registers a source type under every name (the first is the one
// messages show).
func (r *Registry) Source(f SourceFactory, names ...string) {
	for _, n := range names {
		r.sources[lookupKey(n)] = f
	}
	r.names[config.KindSource] = append(r.names[config.KindSource], names[0])
}

// Sink registers a sink type under every name.
func (r *Registry) Sink(f SinkFactory, names ...string) {
	for _, n := range names {
		r.sinks[lookupKey(n)] = f
	}
	r.names[config.KindSink] = append(r.names[config.KindSink], names[0])
}

// Interceptor registers an interceptor type under every name.
func (r *Registry) Interceptor(f InterceptorFactory, names ...string) {
	for _, n := range names {
		r.interceptors[lookupKey(n)] = f
	}
	r.names[config.KindInterceptor] = append(r.names[config.KindInterceptor], names[0])
}

// Refuse makes a type of kind an error with reason (a Flume type Sluice
// deliberately does not run, such as morphline).
func (r *Registry) Refuse(kind, reason string, names ...string) {
	for _, n := range names {
		r.refused[kind+"/"+lookupKey(n)] = reason
	}
}

// unknownType explains a type the registry does not have.
func (r *Registry) unknownType(kind, typ string) string {
	if why, ok := r.refused[kind+"/"+lookupKey(typ)]; ok {
		return fmt.Sprintf("%s type %q is not supported: %s", kind, typ, why)
	}
	msg := fmt.Sprintf("unknown %s type %q (known: %s)", kind, typ, strings.Join(r.names[kind], ", "))
	if strings.Count(typ, ".") >= 2 {
		msg += "; Sluice does not load Java classes: a class name works only for the built-in types it names"
	}
	return msg
}

// BuildInterceptor builds one configured interceptor (a component of kind
// config.KindInterceptor from a source's Interceptors) of a source with
// channels, with r's types: for tests of interceptors and for tools that
// run a chain outside an agent.
func BuildInterceptor(r *Registry, c *config.Component, channels []string, log *slog.Logger) (Interceptor, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Setup{Kind: config.KindInterceptor, Name: c.Name, Type: c.Type, Conf: c.View(), Log: log.With("interceptor", c.Name), Channels: channels}
	f, ok := r.interceptors[lookupKey(c.Type)]
	if !ok {
		return nil, s.Conf.Errorf("type", "%s", r.unknownType(config.KindInterceptor, c.Type))
	}
	var it Interceptor
	err := safely("interceptor factory "+c.Type, func() (err error) { it, err = f(s); return err })
	return it, err
}
