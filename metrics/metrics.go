// Package metrics exposes a channel.Store's statistics over HTTP:
//
//   - /metrics: Prometheus text format, from a registry private to the
//     Metrics value (nothing is registered globally);
//   - /metrics.json: Flume-style JSON, one object per channel keyed
//     "CHANNEL.<name>", with Flume's counter names; as in Flume every value
//     is a string (fill percentage and ages as decimals);
//   - /healthz: 200 "ok", or 503 with the reason.
//
// Store-wide figures (checkpoints, replay, damaged ranges, WAL bytes per
// data directory) are added when the channel also implements
// StoreStatser, as the file channel does.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
)

// StoreStatser is implemented by stores that report store-wide figures.
type StoreStatser interface {
	StoreStats() filestore.StoreStats
}

// Metrics collects one store's metrics. Its zero value is not usable; call
// New.
type Metrics struct {
	ch      channel.Store
	reg     *prometheus.Registry
	rpcs    *prometheus.CounterVec
	mux     *http.ServeMux
	mu      sync.Mutex
	healthy func() error
	groups  []func() map[string]map[string]string
}

// New returns the metrics of ch with a fresh registry holding the channel
// collector, the Go runtime and process collectors.
func New(ch channel.Store) *Metrics {
	m := &Metrics{ch: ch, reg: prometheus.NewRegistry()}
	m.rpcs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_grpc_requests_total",
		Help: "gRPC requests handled, by method and status code.",
	}, []string{"method", "code"})
	m.reg.MustRegister(m.rpcs, &collector{ch: ch},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.mux = http.NewServeMux()
	m.mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	m.mux.HandleFunc("/metrics.json", m.serveJSON)
	m.mux.HandleFunc("/healthz", m.serveHealth)
	return m
}

// Registry is the private registry, for registering more collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetHealthy sets the function /healthz consults (nil: always healthy
// unless the channel reports ErrClosed).
func (m *Metrics) SetHealthy(f func() error) {
	m.mu.Lock()
	m.healthy = f
	m.mu.Unlock()
}

// RPC counts one handled gRPC request.
func (m *Metrics) RPC(method string, err error) {
	m.rpcs.WithLabelValues(method, status.Code(err).String()).Inc()
}

// ServeHTTP serves /metrics, /metrics.json and /healthz.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

func (m *Metrics) serveHealth(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	f := m.healthy
	m.mu.Unlock()
	var err error
	if f != nil {
		err = f()
	}
	if err == nil {
		for _, n := range m.ch.Channels() {
			if _, e := m.ch.Stats(context.Background(), n); errors.Is(e, channel.ErrClosed) {
				err = e
				break
			}
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(err.Error() + "\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func fill(st channel.Stats) float64 {
	if st.Capacity <= 0 {
		return 0
	}
	return 100 * float64(st.Size+st.InFlightTakes) / float64(st.Capacity)
}

// JSON returns the Flume-style document served at /metrics.json.
func (m *Metrics) JSON() map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, n := range m.ch.Channels() {
		st, err := m.ch.Stats(context.Background(), n)
		if err != nil {
			continue
		}
		out["CHANNEL."+n] = map[string]string{
			"Type":                      "CHANNEL",
			"ChannelSize":               fmtInt(st.Size),
			"ChannelFillPercentage":     fmtFloat(fill(st)),
			"ChannelCapacity":           fmtInt(st.Capacity),
			"ChannelBytes":              fmtInt(st.Bytes),
			"ChannelMaxBytes":           fmtInt(st.MaxBytes),
			"InFlightTakeCount":         fmtInt(st.InFlightTakes),
			"EventPutAttemptCount":      fmtInt(st.PutAttempts),
			"EventPutSuccessCount":      fmtInt(st.PutSuccesses),
			"EventTakeAttemptCount":     fmtInt(st.TakeAttempts),
			"EventTakeSuccessCount":     fmtInt(st.TakeSuccesses),
			"OldestEventAgeSeconds":     fmtFloat(st.OldestEventAge.Seconds()),
			"CorruptEventsSkippedCount": fmtInt(st.CorruptEventsSkipped),
		}
	}
	if ss, ok := m.ch.(StoreStatser); ok {
		s := ss.StoreStats()
		store := map[string]string{
			"Type":                       "STORE",
			"CheckpointCount":            fmtInt(s.Checkpoints),
			"LastCheckpointSeconds":      fmtFloat(s.LastCheckpoint.Seconds()),
			"LastReplaySeconds":          fmtFloat(s.LastReplay.Seconds()),
			"DamagedRangeCount":          fmtInt(s.DamagedRanges),
			"DamagedRecordEstimateCount": fmtInt(s.DamagedRecordsEstimate),
			"CheckpointFailureCount":     fmtInt(s.CheckpointFailures),
			"TornTransactionCount":       fmtInt(s.TornTxns),
			"TornEventDroppedCount":      fmtInt(s.TornEventsDropped),
		}
		var total int64
		for i, b := range s.DiskUsage {
			store["DiskUsageBytes."+strconv.Itoa(i)] = fmtInt(b)
			total += b
		}
		store["DiskUsageBytes"] = fmtInt(total)
		out["STORE"] = store
	}
	m.mu.Lock()
	groups := m.groups
	m.mu.Unlock()
	for _, f := range groups {
		maps.Copy(out, f())
	}
	return out
}

// AddGroups adds the groups f returns (an agent's "SOURCE.s1", "SINK.k1")
// to /metrics.json; f is called for every request. Their Prometheus
// series are a collector registered on Registry.
func (m *Metrics) AddGroups(f func() map[string]map[string]string) {
	m.mu.Lock()
	m.groups = append(m.groups, f)
	m.mu.Unlock()
}

func (m *Metrics) serveJSON(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(m.JSON())
}

// collector turns channel.Stats (and StoreStats) into Prometheus metrics at
// scrape time.
type collector struct{ ch channel.Store }

var (
	lbl     = []string{"channel"}
	dSize   = prometheus.NewDesc("sluice_channel_size", "Queued events (excluding those held by open take transactions).", lbl, nil)
	dInFl   = prometheus.NewDesc("sluice_channel_in_flight_takes", "Events held by open take transactions.", lbl, nil)
	dBytes  = prometheus.NewDesc("sluice_channel_bytes", "Bytes of queued events.", lbl, nil)
	dCap    = prometheus.NewDesc("sluice_channel_capacity", "Channel capacity in events.", lbl, nil)
	dMaxB   = prometheus.NewDesc("sluice_channel_max_bytes", "Channel byte limit (0: unbounded).", lbl, nil)
	dFill   = prometheus.NewDesc("sluice_channel_fill_ratio", "(size + in-flight takes) / capacity.", lbl, nil)
	dPutA   = prometheus.NewDesc("sluice_channel_put_attempts_total", "EventPutAttemptCount.", lbl, nil)
	dPutS   = prometheus.NewDesc("sluice_channel_put_successes_total", "EventPutSuccessCount.", lbl, nil)
	dTakeA  = prometheus.NewDesc("sluice_channel_take_attempts_total", "EventTakeAttemptCount.", lbl, nil)
	dTakeS  = prometheus.NewDesc("sluice_channel_take_successes_total", "EventTakeSuccessCount.", lbl, nil)
	dAge    = prometheus.NewDesc("sluice_channel_oldest_event_age_seconds", "Age of the oldest queued event.", lbl, nil)
	dCorr   = prometheus.NewDesc("sluice_channel_corrupt_events_skipped_total", "Events skipped because their record was damaged.", lbl, nil)
	dCkpt   = prometheus.NewDesc("sluice_store_checkpoints_total", "Checkpoints written.", nil, nil)
	dCkptD  = prometheus.NewDesc("sluice_store_last_checkpoint_seconds", "Duration of the last checkpoint.", nil, nil)
	dReplay = prometheus.NewDesc("sluice_store_last_replay_seconds", "Duration of the recovery replay at open.", nil, nil)
	dDamR   = prometheus.NewDesc("sluice_store_damaged_ranges_total", "Damaged WAL ranges found.", nil, nil)
	dDamE   = prometheus.NewDesc("sluice_store_damaged_records_estimate_total", "Estimated records lost in damaged ranges.", nil, nil)
	dCkptF  = prometheus.NewDesc("sluice_store_checkpoint_failures_total", "Background checkpoints that failed (WAL segments are not collected until one succeeds).", nil, nil)
	dTornT  = prometheus.NewDesc("sluice_store_torn_transactions_total", "Unacknowledged transactions recovery found torn by a crash and dropped whole.", nil, nil)
	dTornE  = prometheus.NewDesc("sluice_store_torn_events_dropped_total", "Events of torn (never acknowledged) put transactions recovery dropped.", nil, nil)
	dDisk   = prometheus.NewDesc("sluice_store_disk_usage_bytes", "WAL bytes per data directory.", []string{"dir"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dSize, dInFl, dBytes, dCap, dMaxB, dFill, dPutA, dPutS, dTakeA, dTakeS, dAge, dCorr} {
		ch <- d
	}
	if _, ok := c.ch.(StoreStatser); ok {
		for _, d := range []*prometheus.Desc{dCkpt, dCkptD, dReplay, dDamR, dDamE, dCkptF, dTornT, dTornE, dDisk} {
			ch <- d
		}
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	cnt := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	for _, n := range c.ch.Channels() {
		st, err := c.ch.Stats(context.Background(), n)
		if err != nil {
			continue
		}
		g(dSize, float64(st.Size), n)
		g(dInFl, float64(st.InFlightTakes), n)
		g(dBytes, float64(st.Bytes), n)
		g(dCap, float64(st.Capacity), n)
		g(dMaxB, float64(st.MaxBytes), n)
		g(dFill, fill(st)/100, n)
		cnt(dPutA, float64(st.PutAttempts), n)
		cnt(dPutS, float64(st.PutSuccesses), n)
		cnt(dTakeA, float64(st.TakeAttempts), n)
		cnt(dTakeS, float64(st.TakeSuccesses), n)
		g(dAge, st.OldestEventAge.Seconds(), n)
		cnt(dCorr, float64(st.CorruptEventsSkipped), n)
	}
	if ss, ok := c.ch.(StoreStatser); ok {
		s := ss.StoreStats()
		cnt(dCkpt, float64(s.Checkpoints))
		g(dCkptD, s.LastCheckpoint.Seconds())
		g(dReplay, s.LastReplay.Seconds())
		cnt(dDamR, float64(s.DamagedRanges))
		cnt(dDamE, float64(s.DamagedRecordsEstimate))
		cnt(dCkptF, float64(s.CheckpointFailures))
		cnt(dTornT, float64(s.TornTxns))
		cnt(dTornE, float64(s.TornEventsDropped))
		for i, b := range s.DiskUsage {
			g(dDisk, float64(b), strconv.Itoa(i))
		}
	}
}
