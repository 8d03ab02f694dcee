package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// sample is one timed run of a case.
type sample struct {
	events  int64
	elapsed time.Duration
	cpu     time.Duration
	hist    Histogram
	stopped string
}

func (s *sample) eventsPerSec() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.events) / s.elapsed.Seconds()
}

// Runner runs a Config's cases.
type Runner struct {
	cfg Config
	raw map[string]*rawFile // preallocated raw file per data dir
}

// NewRunner returns a Runner for cfg (zero fields take defaults).
func NewRunner(cfg Config) *Runner {
	cfg.ensureDefaults()
	return &Runner{cfg: cfg, raw: map[string]*rawFile{}}
}

// Config is the runner's configuration with defaults applied.
func (r *Runner) Config() Config { return r.cfg }

// Run runs every case and returns the report. A case that fails is
// reported with its Error and the run goes on.
func (r *Runner) Run(ctx context.Context) (*Report, error) {
	defer r.closeRaw()
	cases := r.cfg.Cases()
	rep := &Report{Schema: SchemaVersion, Machine: Facts(r.cfg.DataDirs), Started: time.Now().UTC()}
	rep.Settings = settingsOf(r.cfg)
	total := len(cases) * r.cfg.Repeat
	done := 0
	limits := map[string]float64{} // dir|size|batch → raw-preallocated events/s
	for _, c := range cases {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		var samples []*sample
		var runErr error
		for i := range r.cfg.Repeat {
			if r.cfg.Progress != nil {
				r.cfg.Progress(done, total, c, i+1)
			}
			s, err := r.runOnce(ctx, c)
			done++
			if err != nil {
				runErr = err
				done += r.cfg.Repeat - 1 - i
				break
			}
			samples = append(samples, s)
		}
		res := summarize(c, samples)
		if runErr != nil {
			res.Error = runErr.Error()
		}
		key := fmt.Sprintf("%s|%d|%d", c.DataDir, c.EventSize, c.Batch)
		if c.Kind == RawPreallocated {
			limits[key] = res.EventsPerSec
		}
		if lim := limits[key]; lim > 0 {
			res.DiskLimitEventsPerSec = lim
			res.RatioToDiskLimit = Ratio(res.EventsPerSec, lim)
		}
		rep.Results = append(rep.Results, res)
	}
	if r.cfg.Progress != nil {
		r.cfg.Progress(total, total, Case{}, 0)
	}
	return rep, nil
}

// Ratio is a case's throughput over the disk limit's for the same bytes
// per commit (0 when the limit is unknown). Both are events per second of
// the same event size, so it is also the ratio of their MB/s.
func Ratio(eventsPerSec, limitEventsPerSec float64) float64 {
	if limitEventsPerSec <= 0 {
		return 0
	}
	return eventsPerSec / limitEventsPerSec
}

func (r *Runner) runOnce(ctx context.Context, c Case) (*sample, error) {
	if c.Kind.Raw() {
		return r.runRaw(ctx, c)
	}
	nworkers := c.Clients
	if c.Op == PutTake {
		nworkers = 2 * c.Clients
	}
	e, err := openEnv(ctx, c, r.cfg.BudgetBytes, r.cfg.SegmentBytes, nworkers)
	if err != nil {
		return nil, err
	}
	defer e.close()
	if c.Op == Take {
		if err := prefill(ctx, e.store, c, r.cfg.BudgetBytes); err != nil {
			return nil, fmt.Errorf("prefill: %w", err)
		}
	}
	if r.cfg.Warmup > 0 {
		if _, err := drive(ctx, e, c, r.cfg.Warmup); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		if c.Op == Put { // start the timed run from an empty channel
			if err := drain(ctx, e.store, c); err != nil {
				return nil, fmt.Errorf("drain after warm-up: %w", err)
			}
		}
		if c.Op == Take { // top up what the warm-up took
			if err := prefill(ctx, e.store, c, r.cfg.BudgetBytes); err != nil {
				return nil, fmt.Errorf("prefill: %w", err)
			}
		}
	}
	u0 := cpuTime()
	s, err := drive(ctx, e, c, r.cfg.Duration)
	if err != nil {
		return nil, err
	}
	s.cpu = cpuTime() - u0
	return s, nil
}

// body returns event bodies of n random bytes (incompressible, so the
// compressed kinds show their worst case).
func body(n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 42))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// maxPrefillEvents bounds a take case's prefill (memory use of the memory
// kinds, time of the file kinds).
const maxPrefillEvents = 2_000_000

// prefill puts events until the channel holds the prefill target.
func prefill(ctx context.Context, ch channel.Store, c Case, budget int64) error {
	n := min(budget/int64(c.EventSize+RecordOverhead+128), maxPrefillEvents, capacity(c, budget))
	st, err := ch.Stats(context.Background(), chanName)
	if err != nil {
		return err
	}
	n -= st.Size
	b := body(c.EventSize)
	chunk := make([]channel.Event, min(10_000, txnCapacity(c)))
	for i := range chunk {
		chunk[i] = channel.Event{Body: b}
	}
	for put := int64(0); put < n; {
		k := min(int64(len(chunk)), n-put)
		tx, err := ch.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			return err
		}
		if err := tx.Put(chanName, chunk[:k]...); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			if errors.Is(err, channel.ErrChannelFull) {
				return nil
			}
			return err
		}
		put += k
	}
	return nil
}

// drain takes and commits everything queued, in large transactions.
func drain(ctx context.Context, ch channel.Store, c Case) error {
	for {
		tx, err := ch.BeginTake(ctx, chanName)
		if err != nil {
			return err
		}
		tctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		evs, _ := tx.Take(tctx, txnCapacity(c))
		cancel()
		if len(evs) == 0 {
			return tx.Rollback()
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
}

// worker's share of a run.
type workerResult struct {
	events int64
	hist   Histogram
	last   time.Time
	err    error
}

// drive runs the case's workers on e for d and merges their results.
func drive(ctx context.Context, e *env, c Case, d time.Duration) (*sample, error) {
	var stop atomic.Bool
	var stopReason atomic.Value
	halt := func(why string) {
		if stop.CompareAndSwap(false, true) {
			stopReason.Store(why)
		}
	}
	start := time.Now()
	deadline := start.Add(d)
	running := func() bool { return !stop.Load() && time.Now().Before(deadline) && ctx.Err() == nil }
	b := body(c.EventSize)
	results := make([]workerResult, len(e.workers))
	var wg sync.WaitGroup
	for i, ch := range e.workers {
		producer := c.Op == Put || c.Op == PutTake && i < c.Clients
		wg.Add(1)
		go func() {
			defer wg.Done()
			wr := &results[i]
			if producer {
				wr.err = produce(ctx, ch, c, b, running, halt, wr)
			} else {
				wr.err = consume(ctx, ch, c, running, halt, wr)
			}
			if wr.err != nil {
				halt("error")
			}
		}()
	}
	wg.Wait()
	end := time.Now()
	s := &sample{}
	if v := stopReason.Load(); v != nil {
		s.stopped = v.(string)
	}
	var last time.Time
	for i := range results {
		wr := &results[i]
		if wr.err != nil {
			return nil, wr.err
		}
		// putTake counts delivered (taken) events; latency is the put's.
		producer := c.Op == Put || c.Op == PutTake && i < c.Clients
		if c.Op != PutTake || !producer {
			s.events += wr.events
		}
		if c.Op != PutTake || producer {
			s.hist.Merge(&wr.hist)
		}
		if wr.last.After(last) {
			last = wr.last
		}
	}
	s.elapsed = end.Sub(start)
	if s.stopped != "" && !last.IsZero() {
		// Ended early (full or drained): count up to the last commit.
		s.elapsed = last.Sub(start)
	}
	return s, nil
}

func produce(ctx context.Context, ch channel.Store, c Case, b []byte, running func() bool, halt func(string), wr *workerResult) error {
	events := make([]channel.Event, c.Batch)
	for i := range events {
		events[i] = channel.Event{Body: b}
	}
	for running() {
		t0 := time.Now()
		tx, err := ch.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			return err
		}
		if err := tx.Put(chanName, events...); err != nil {
			tx.Rollback()
			return err
		}
		err = tx.Commit(ctx)
		if errors.Is(err, channel.ErrChannelFull) {
			if c.Op == Put {
				halt("full")
				return nil
			}
			time.Sleep(200 * time.Microsecond) // consumers are behind
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		wr.hist.Record(now.Sub(t0))
		wr.events += int64(c.Batch)
		wr.last = now
	}
	return nil
}

// takeWait is how long a take waits for events before a take-only case
// counts the channel as drained.
const takeWait = 50 * time.Millisecond

func consume(ctx context.Context, ch channel.Store, c Case, running func() bool, halt func(string), wr *workerResult) error {
	for running() {
		t0 := time.Now()
		tx, err := ch.BeginTake(ctx, chanName)
		if err != nil {
			return err
		}
		tctx, cancel := context.WithTimeout(ctx, takeWait)
		evs, err := tx.Take(tctx, c.Batch)
		cancel()
		if len(evs) == 0 {
			tx.Rollback()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && !isDeadline(err) {
				return err
			}
			if c.Op == Take {
				halt("drained")
				return nil
			}
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		wr.hist.Record(now.Sub(t0))
		wr.events += int64(len(evs))
		wr.last = now
	}
	return nil
}

// summarize turns a case's samples into its Result: medians of each
// metric, and the spread of events/s.
func summarize(c Case, ss []*sample) Result {
	res := Result{
		Kind: string(c.Kind), Op: string(c.Op), EventSize: c.EventSize, Batch: c.Batch,
		Clients: c.Clients, DataDir: c.DataDir, BytesPerCommit: c.BytesPerCommit(), Repeats: len(ss),
	}
	if c.Kind.Raw() {
		res.Op = ""
	}
	if len(ss) == 0 {
		return res
	}
	med := func(f func(*sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		return Median(v)
	}
	eps := make([]float64, len(ss))
	for i, s := range ss {
		eps[i] = s.eventsPerSec()
		res.Events += s.events
		if s.stopped != "" {
			res.Stopped = s.stopped
		}
	}
	res.EventsPerSec = Median(eps)
	res.EventsPerSecMin, res.EventsPerSecMax = minMax(eps)
	res.SpreadPct = Spread(eps)
	res.MBPerSec = res.EventsPerSec * float64(c.EventSize) / 1e6
	res.DurationSec = med(func(s *sample) float64 { return s.elapsed.Seconds() })
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	res.P50Us = med(func(s *sample) float64 { return us(s.hist.Percentile(0.50)) })
	res.P99Us = med(func(s *sample) float64 { return us(s.hist.Percentile(0.99)) })
	res.P999Us = med(func(s *sample) float64 { return us(s.hist.Percentile(0.999)) })
	res.MaxUs = med(func(s *sample) float64 { return us(s.hist.Max()) })
	res.CPUUsPerEvent = med(func(s *sample) float64 {
		if s.events == 0 {
			return 0
		}
		return us(s.cpu) / float64(s.events)
	})
	return res
}

// Median of v (the mean of the middle two for an even count).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(v []float64) (lo, hi float64) {
	for i, x := range v {
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi
}

// Spread is (max − min) / median of v, in percent.
func Spread(v []float64) float64 {
	m := Median(v)
	if m == 0 {
		return 0
	}
	lo, hi := minMax(v)
	return (hi - lo) / m * 100
}
