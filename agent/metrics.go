package agent

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SourceCounters are Flume's SOURCE.<name> counters. The channel processor
// maintains the event, batch and ChannelWriteFail counts; a source itself
// OpenConnections (a gauge: connections open now) and EventReadFail (input
// it could not turn into an event, such as a netcat line over
// max-line-length).
type SourceCounters struct {
	EventReceived       atomic.Int64 // events handed to Deliver (before interceptors)
	EventAccepted       atomic.Int64 // of those, events whose Deliver committed (filtered ones included, as in Flume)
	AppendBatchReceived atomic.Int64 // Deliver calls
	AppendBatchAccepted atomic.Int64 // Deliver calls that committed
	OpenConnections     atomic.Int64
	ChannelWriteFail    atomic.Int64 // Deliver calls whose required put failed
	EventReadFail       atomic.Int64
	// OptionalWriteFail counts failed puts into optional channels (logged,
	// never failing the source). Not a Flume counter.
	OptionalWriteFail atomic.Int64
	// InterceptorFail counts batches an interceptor refused. Not a Flume
	// counter.
	InterceptorFail atomic.Int64
}

// SinkCounters are Flume's SINK.<name> counters. Input.Drain maintains the
// event and batch counts, ChannelReadFail and EventWriteFail; a sink that
// connects to something counts ConnectionCreated and ConnectionFailed.
type SinkCounters struct {
	EventDrainAttempt atomic.Int64 // events taken
	EventDrainSuccess atomic.Int64 // events whose take committed after the write
	BatchComplete     atomic.Int64 // takes that filled the batch
	BatchEmpty        atomic.Int64 // takes that found the channel empty
	BatchUnderflow    atomic.Int64 // takes of fewer events than the batch
	ConnectionCreated atomic.Int64
	ConnectionClosed  atomic.Int64
	ConnectionFailed  atomic.Int64
	ChannelReadFail   atomic.Int64 // take or commit errors
	EventWriteFail    atomic.Int64 // failed writes (one per failed batch)
	EventDeadLetter   atomic.Int64 // events moved to the dead-letter channel (Sluice)
	ProcessFailures   atomic.Int64 // Process calls that failed or panicked (Sluice)
}

// RunCounters are a runner's (a source's, an ungrouped sink's or a sink
// group's): how often the component failed and was run again.
type RunCounters struct {
	Failures atomic.Int64 // Run or Process returned an error or panicked
	Restarts atomic.Int64 // runs after a failure, after the backoff
	start    atomic.Int64 // unix ms
	stop     atomic.Int64
}

func (r *RunCounters) started() { r.start.Store(time.Now().UnixMilli()); r.stop.Store(0) }
func (r *RunCounters) stopped() { r.stop.Store(time.Now().UnixMilli()) }

type metric struct {
	flume, prom, help string
	gauge             bool
	v                 func() int64
}

func sourceMetrics(c *SourceCounters, r *RunCounters) []metric {
	return []metric{
		{"EventReceivedCount", "event_received_total", "Events a source handed to its channel processor (before interceptors).", false, c.EventReceived.Load},
		{"EventAcceptedCount", "event_accepted_total", "Events whose put committed.", false, c.EventAccepted.Load},
		{"AppendBatchReceivedCount", "append_batch_received_total", "Batches a source delivered.", false, c.AppendBatchReceived.Load},
		{"AppendBatchAcceptedCount", "append_batch_accepted_total", "Batches whose put committed.", false, c.AppendBatchAccepted.Load},
		{"OpenConnectionCount", "open_connections", "Connections open now.", true, c.OpenConnections.Load},
		{"ChannelWriteFail", "channel_write_fail_total", "Batches whose put into a required channel failed.", false, c.ChannelWriteFail.Load},
		{"EventReadFail", "event_read_fail_total", "Input a source could not turn into an event.", false, c.EventReadFail.Load},
		{"OptionalChannelWriteFail", "optional_channel_write_fail_total", "Failed puts into optional channels (logged, not failing the source).", false, c.OptionalWriteFail.Load},
		{"InterceptorFailCount", "interceptor_fail_total", "Batches an interceptor refused.", false, c.InterceptorFail.Load},
		{"ComponentFailureCount", "failures_total", "Runs that returned an error or panicked.", false, r.Failures.Load},
		{"ComponentRestartCount", "restarts_total", "Runs started again after a failure.", false, r.Restarts.Load},
	}
}

func sinkMetrics(c *SinkCounters) []metric {
	return []metric{
		{"EventDrainAttemptCount", "event_drain_attempt_total", "Events taken from the channel.", false, c.EventDrainAttempt.Load},
		{"EventDrainSuccessCount", "event_drain_success_total", "Events written and committed.", false, c.EventDrainSuccess.Load},
		{"BatchCompleteCount", "batch_complete_total", "Takes that filled the batch.", false, c.BatchComplete.Load},
		{"BatchEmptyCount", "batch_empty_total", "Takes that found the channel empty.", false, c.BatchEmpty.Load},
		{"BatchUnderflowCount", "batch_underflow_total", "Takes of fewer events than the batch.", false, c.BatchUnderflow.Load},
		{"ConnectionCreatedCount", "connection_created_total", "Connections created.", false, c.ConnectionCreated.Load},
		{"ConnectionClosedCount", "connection_closed_total", "Connections closed.", false, c.ConnectionClosed.Load},
		{"ConnectionFailedCount", "connection_failed_total", "Connections that failed.", false, c.ConnectionFailed.Load},
		{"ChannelReadFail", "channel_read_fail_total", "Take or commit errors.", false, c.ChannelReadFail.Load},
		{"EventWriteFail", "event_write_fail_total", "Failed writes (one per failed batch).", false, c.EventWriteFail.Load},
		{"SinkProcessFailCount", "process_fail_total", "Process calls that failed or panicked.", false, c.ProcessFailures.Load},
		{"EventDeadLetterCount", "event_dead_letter_total", "Events moved to the dead-letter channel.", false, c.EventDeadLetter.Load},
	}
}

func runMetrics(r *RunCounters) []metric {
	return []metric{
		{"ComponentFailureCount", "failures_total", "Runs that returned an error or panicked.", false, r.Failures.Load},
		{"ComponentRestartCount", "restarts_total", "Runs started again after a failure.", false, r.Restarts.Load},
	}
}

// group is one JSON group (SOURCE.s1, SINK.k1, SINKGROUP.g1) and its
// Prometheus label.
type group struct {
	typ, name string // SOURCE, SINK, SINKGROUP
	metrics   []metric
	run       *RunCounters
}

func (g group) json() map[string]string {
	m := map[string]string{"Type": g.typ}
	for _, x := range g.metrics {
		m[x.flume] = strconv.FormatInt(x.v(), 10)
	}
	if g.run != nil {
		m["StartTime"] = strconv.FormatInt(g.run.start.Load(), 10)
		m["StopTime"] = strconv.FormatInt(g.run.stop.Load(), 10)
	}
	return m
}

// JSON returns the agent's groups in Flume's /metrics layout
// ("SOURCE.s1": {"EventReceivedCount": "12", …}, every value a string).
func (a *Agent) JSON() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, g := range a.groups {
		out[g.typ+"."+g.name] = g.json()
	}
	return out
}

// Collector returns the agent's counters as Prometheus series:
// sluice_source_<name>{source="s1"}, sluice_sink_<name>{sink="k1"},
// sluice_sinkgroup_<name>{sinkgroup="g1"}.
func (a *Agent) Collector() prometheus.Collector { return &collector{a: a} }

type collector struct{ a *Agent }

func (c *collector) desc(g group, m metric) *prometheus.Desc {
	kind := map[string]string{"SOURCE": "source", "SINK": "sink", "SINKGROUP": "sinkgroup"}[g.typ]
	return prometheus.NewDesc("sluice_"+kind+"_"+m.prom, m.help+" (Flume: "+m.flume+")", []string{kind}, nil)
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	seen := map[string]bool{}
	for _, g := range c.a.groups {
		for _, m := range g.metrics {
			d := c.desc(g, m)
			if !seen[d.String()] {
				seen[d.String()] = true
				ch <- d
			}
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.a.groups {
		for _, m := range g.metrics {
			t := prometheus.CounterValue
			if m.gauge {
				t = prometheus.GaugeValue
			}
			ch <- prometheus.MustNewConstMetric(c.desc(g, m), t, float64(m.v()), g.name)
		}
	}
}
