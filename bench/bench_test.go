package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The child side of TestRecovery: the test binary re-executed.
	if dir := os.Getenv("SLUICE_BENCH_FILL_DIR"); dir != "" {
		n, _ := strconv.ParseInt(os.Getenv("SLUICE_BENCH_FILL_EVENTS"), 10, 64)
		if err := FillAndWait(dir, n, 100, 1000, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

func TestHistogramExactSmall(t *testing.T) {
	var h Histogram
	for v := 1; v <= 100; v++ {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50}, {0.99, 99}, {0.999, 100}, {1, 100}, {0.01, 1}, {0, 1}} {
		if got := h.Percentile(c.q); got != c.want {
			t.Errorf("p%g = %d, want %d", c.q*100, got, c.want)
		}
	}
	if h.Count() != 100 || h.Max() != 100 || h.Mean() != 50 {
		t.Errorf("count %d max %d mean %d", h.Count(), h.Max(), h.Mean())
	}
	var empty Histogram
	if empty.Percentile(0.5) != 0 {
		t.Error("empty histogram percentile not 0")
	}
}

func TestHistogramRelativeError(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	vals := make([]int64, 200_000)
	var h, a, b Histogram
	for i := range vals {
		// log-uniform from 1 µs to 10 s
		v := int64(math.Exp(rng.Float64()*math.Log(1e7)) * 1e3)
		vals[i] = v
		h.Record(time.Duration(v))
		if i%2 == 0 {
			a.Record(time.Duration(v))
		} else {
			b.Record(time.Duration(v))
		}
	}
	a.Merge(&b)
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 0.9999} {
		exact := float64(vals[int(math.Ceil(q*float64(len(vals))))-1])
		for name, hh := range map[string]*Histogram{"direct": &h, "merged": &a} {
			got := float64(hh.Percentile(q))
			if rel := math.Abs(got-exact) / exact; rel > 1.0/64 {
				t.Errorf("%s p%g = %g, exact %g (error %.2f%%)", name, q*100, got, exact, rel*100)
			}
		}
	}
	if h.Percentile(1) != time.Duration(vals[len(vals)-1]) {
		t.Errorf("p100 %d, max %d", h.Percentile(1), vals[len(vals)-1])
	}
}

func TestHistogramBuckets(t *testing.T) {
	prev := -1
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, 1<<40 + 12345, math.MaxInt64} {
		i := histIndex(v)
		if i < prev || i >= histBuckets {
			t.Fatalf("index(%d) = %d after %d (of %d)", v, i, prev, histBuckets)
		}
		prev = i
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("%d outside its bucket [%d, %d]", v, lo, hi)
		}
	}
	// Buckets tile the line: each starts one past the previous one's end.
	for i := 1; i < histBuckets; i++ {
		_, hi := histBounds(i - 1)
		lo, _ := histBounds(i)
		if lo != hi+1 {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, hi)
		}
	}
}

func TestMedianSpreadRatio(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %g", m)
	}
	if m := Median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %g", m)
	}
	if s := Spread([]float64{90, 100, 110}); s != 20 {
		t.Errorf("spread = %g", s)
	}
	if r := Ratio(80_000, 100_000); r != 0.8 {
		t.Errorf("ratio = %g", r)
	}
	if r := Ratio(5, 0); r != 0 {
		t.Errorf("ratio with no limit = %g", r)
	}
	c := Case{EventSize: 1024, Batch: 100}
	if c.BytesPerCommit() != 100*(1024+RecordOverhead) {
		t.Errorf("bytes per commit %d", c.BytesPerCommit())
	}
}

// jsonKeys returns the JSON object keys v marshals to.
func jsonKeys(t *testing.T, v any) []string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// The JSON field names are a stable interface, documented in
// docs/benchmarks.md: changing one must be deliberate.
func TestJSONSchema(t *testing.T) {
	want := []string{
		"batch", "bytes_per_commit", "clients", "cpu_us_per_event", "data_dir", "disk_limit_events_per_s",
		"duration_s", "error", "event_size", "events", "events_per_s", "events_per_s_max", "events_per_s_min",
		"kind", "max_us", "mb_per_s", "op", "p50_us", "p999_us", "p99_us", "ratio_to_disk_limit", "repeats",
		"spread_pct", "stopped",
	}
	full := Result{Op: "put", DataDir: "d", Stopped: "full", Error: "e"}
	if got := jsonKeys(t, full); !slices.Equal(got, want) {
		t.Errorf("case fields:\n got %q\nwant %q", got, want)
	}
	if got, want := jsonKeys(t, Report{}), []string{"cases", "machine", "schema", "settings", "started"}; !slices.Equal(got, want) {
		t.Errorf("report fields: got %q want %q", got, want)
	}
	if got, want := jsonKeys(t, Machine{}), []string{"arch", "cores", "data_dirs", "go_version", "gomaxprocs", "os"}; !slices.Equal(got, want) {
		t.Errorf("machine fields: got %q want %q", got, want)
	}
	doc, err := os.ReadFile("../docs/benchmarks.md")
	if err != nil {
		t.Fatal(err)
	}
	rec := jsonKeys(t, RecoveryResult{})
	for _, k := range slices.Concat(want, rec, []string{"fs_type", "cores", "go_version"}) {
		if !strings.Contains(string(doc), "`"+k+"`") {
			t.Errorf("docs/benchmarks.md does not document field `%s`", k)
		}
	}
}

// A tiny run produces every case, a ratio for each, and readable PNGs.
func TestTinyRun(t *testing.T) {
	if testing.Short() {
		t.Skip("writes to disk")
	}
	dir := t.TempDir()
	cfg := Config{
		EventSizes: []int{256}, Batches: []int{10}, Clients: []int{1},
		Kinds:    []Kind{Memory, File, FileZstd, FileS2, MemoryGRPC, FileGRPC},
		Ops:      AllOps,
		DataDirs: []string{dir},
		Duration: 100 * time.Millisecond, Warmup: 10 * time.Millisecond, Repeat: 1,
		BudgetBytes: 8 << 20, RawFileBytes: 4 << 20, SegmentBytes: 4 << 20,
	}
	var calls int
	cfg.Progress = func(done, total int, c Case, rep int) { calls++ }
	rep, err := NewRunner(cfg).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := 2 + len(cfg.Kinds)*len(cfg.Ops)
	if len(rep.Results) != want {
		t.Fatalf("%d results, want %d", len(rep.Results), want)
	}
	if calls != want+1 {
		t.Errorf("progress called %d times, want %d", calls, want+1)
	}
	seen := map[string]bool{}
	var limit float64
	for _, x := range rep.Results {
		seen[x.Kind+"/"+x.Op] = true
		if x.Error != "" {
			t.Errorf("%s %s: %s", x.Kind, x.Op, x.Error)
			continue
		}
		if x.Events <= 0 || x.EventsPerSec <= 0 || x.P50Us <= 0 || x.P99Us < x.P50Us || x.P999Us < x.P99Us {
			t.Errorf("%s %s: implausible %+v", x.Kind, x.Op, x)
		}
		if x.Kind == string(RawPreallocated) {
			limit = x.EventsPerSec
		}
		if limit <= 0 || x.DiskLimitEventsPerSec != limit || math.Abs(x.RatioToDiskLimit-x.EventsPerSec/limit) > 1e-9 {
			t.Errorf("%s %s: ratio %g, limit %g (raw %g)", x.Kind, x.Op, x.RatioToDiskLimit, x.DiskLimitEventsPerSec, limit)
		}
	}
	for _, k := range []string{"raw-preallocated/", "raw-append/"} {
		if !seen[k] {
			t.Errorf("no %s case", k)
		}
	}
	for _, k := range cfg.Kinds {
		for _, op := range cfg.Ops {
			if !seen[string(k)+"/"+string(op)] {
				t.Errorf("no %s %s case", k, op)
			}
		}
	}
	if len(rep.Machine.DataDirs) != 1 || rep.Machine.DataDirs[0].FSType == "" || rep.Machine.Cores <= 0 {
		t.Errorf("machine facts %+v", rep.Machine)
	}
	var sb strings.Builder
	if err := rep.WriteTable(&sb); err != nil || !strings.Contains(sb.String(), "file+grpc") {
		t.Errorf("table: %v\n%s", err, sb.String())
	}
	files, err := rep.WriteCharts(filepath.Join(dir, "charts"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3*len(cfg.Ops) {
		t.Errorf("%d charts: %q", len(files), files)
	}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Errorf("%s: %v", f, err)
		} else if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
			t.Errorf("%s: %v", f, b)
		}
	}
}

func TestRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	res, err := Recovery(context.Background(), RecoveryConfig{
		Dir: t.TempDir(), Events: n, EventSize: 100,
		Child: func(dir string, events int64, size, batch int) *exec.Cmd {
			cmd := exec.Command(exe, "-test.run=^$")
			cmd.Env = append(os.Environ(), "SLUICE_BENCH_FILL_DIR="+dir, "SLUICE_BENCH_FILL_EVENTS="+strconv.FormatInt(events, 10))
			return cmd
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.CrashRecovered != n || res.CleanRecovered != n {
		t.Errorf("recovered %d after kill, %d after clean close, want %d", res.CrashRecovered, res.CleanRecovered, n)
	}
	if res.CrashOpenSec <= 0 || res.CleanOpenSec <= 0 || res.ReplayMBPerSec <= 0 || res.FillSec <= 0 {
		t.Errorf("implausible %+v", res)
	}
}
