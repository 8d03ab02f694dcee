package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/bench"
)

// runBench is `sluice bench [flags]`, `sluice bench recovery [flags]` and
// the hidden `sluice bench _fill` (the child that recovery kills).
func runBench(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "recovery":
			return runBenchRecovery(args[1:])
		case "_fill":
			return runBenchFill(args[1:])
		}
	}
	fs := newFlagSet("bench", "[flags] | recovery [flags]\n\n"+
		"Measures the raw disk limit and each channel kind (see docs/benchmarks.md).")
	var (
		sizes, batches, clients intList
		dirs                    stringList
		chans, ops              string
		asJSON, quick, noRaw    bool
		out                     string
		duration, warmup        time.Duration
		repeat                  int
		budget, segment         int64
	)
	def := bench.DefaultConfig()
	sizes, batches, clients = def.EventSizes, def.Batches, def.Clients
	fs.Var(&sizes, "event-size", "event body sizes in bytes, comma-separated (default 100,1024,16384)")
	fs.Var(&batches, "batch", "events per transaction, comma-separated (default 1,10,100,1000)")
	fs.Var(&clients, "clients", "concurrent producers / consumers, comma-separated (default 1,4,16,64)")
	fs.Var(&dirs, "data-dir", "directory for the file stores and the raw disk files (repeatable; default the temp dir)")
	fs.StringVar(&chans, "channels", "memory,file,grpc", "kinds: memory, file, grpc (= memory+grpc and file+grpc for the listed ones), memory+grpc, file+grpc, file+zstd, file+s2")
	fs.StringVar(&ops, "ops", "put,take,putTake", "workloads: put, take, putTake")
	fs.DurationVar(&duration, "duration", def.Duration, "timed run of each case")
	fs.DurationVar(&warmup, "warmup", 0, "warm-up before each timed run (default duration/5, at most 1s)")
	fs.IntVar(&repeat, "repeat", def.Repeat, "timed runs per case (the median is reported)")
	fs.Int64Var(&budget, "budget-bytes", 0, "queued bytes per case at most (default 1 GiB; --quick 64 MiB)")
	fs.Int64Var(&segment, "segment-bytes", 0, "WAL segment size of the file kinds (default 64 MiB; --quick 16 MiB)")
	fs.BoolVar(&noRaw, "no-raw", false, "skip the raw disk limit cases")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON (one object per case under \"cases\")")
	fs.StringVar(&out, "out", "", "write PNG charts and report.json into this directory")
	fs.BoolVar(&quick, "quick", false, "small matrix (1 KiB events, batch 1,100, clients 1,4, 300ms, repeat 1): under a minute\n(explicit flags override its settings)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	cfg := def
	if quick {
		cfg = bench.QuickConfig()
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["event-size"] {
		cfg.EventSizes = sizes
	}
	if set["batch"] {
		cfg.Batches = batches
	}
	if set["clients"] {
		cfg.Clients = clients
	}
	if set["duration"] {
		cfg.Duration = duration
		if !set["warmup"] && quick {
			cfg.Warmup = 0
		}
	}
	if set["warmup"] {
		cfg.Warmup = warmup
	}
	if set["repeat"] {
		cfg.Repeat = repeat
	}
	if set["budget-bytes"] {
		cfg.BudgetBytes = budget
	}
	if set["segment-bytes"] {
		cfg.SegmentBytes = segment
	}
	cfg.NoRaw = noRaw
	cfg.DataDirs = dirs
	var err error
	if cfg.Kinds, err = parseKinds(chans); err != nil {
		return benchUsage(fs, err)
	}
	if cfg.Ops, err = parseOps(ops); err != nil {
		return benchUsage(fs, err)
	}
	for _, n := range append(append(append([]int(nil), cfg.EventSizes...), cfg.Batches...), cfg.Clients...) {
		if n <= 0 {
			return benchUsage(fs, errors.New("sizes, batches and clients must be positive"))
		}
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "sluice bench: %v\n", err)
			return 1
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	progress := newProgress(time.Now())
	cfg.Progress = progress.update
	r := bench.NewRunner(cfg)
	cfg = r.Config() // with defaults
	ncases := len(cfg.Cases())
	est := time.Duration(ncases*cfg.Repeat) * (cfg.Duration + cfg.Warmup + 100*time.Millisecond)
	fmt.Fprintf(os.Stderr, "sluice bench: %d cases × %d repeats, about %s\n", ncases, cfg.Repeat, est.Round(time.Second))
	rep, err := r.Run(ctx)
	progress.finish()
	if rep == nil {
		fmt.Fprintf(os.Stderr, "sluice bench: %v\n", err)
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice bench: stopped: %v (partial report follows)\n", err)
	}
	if asJSON {
		if werr := rep.WriteJSON(os.Stdout); werr != nil {
			fmt.Fprintf(os.Stderr, "sluice bench: %v\n", werr)
			return 1
		}
	} else {
		rep.WriteTable(os.Stdout)
	}
	if out != "" {
		files, werr := rep.WriteCharts(out)
		if werr == nil {
			var f *os.File
			if f, werr = os.Create(filepath.Join(out, "report.json")); werr == nil {
				werr = rep.WriteJSON(f)
				if cerr := f.Close(); werr == nil {
					werr = cerr
				}
				files = append(files, f.Name())
			}
		}
		if werr != nil {
			fmt.Fprintf(os.Stderr, "sluice bench: writing %s: %v\n", out, werr)
			return 1
		}
		fmt.Fprintf(os.Stderr, "sluice bench: wrote %s\n", strings.Join(files, ", "))
	}
	if err != nil {
		return 1
	}
	for _, x := range rep.Results {
		if x.Error != "" {
			return 1
		}
	}
	return 0
}

func benchUsage(fs *flag.FlagSet, err error) int {
	fmt.Fprintf(os.Stderr, "sluice bench: %v\n", err)
	fs.Usage()
	return 2
}

func writeBenchJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// progress is the one-line progress report on stderr (rewritten in place
// on a terminal, a line per case otherwise).
type progress struct {
	start time.Time
	tty   bool
	width int
}

func newProgress(start time.Time) *progress {
	p := &progress{start: start}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		p.tty = true
	}
	return p
}

func (p *progress) update(done, total int, c bench.Case, rep int) {
	if done >= total {
		return
	}
	pct := 100 * done / max(total, 1)
	eta := "?"
	if done > 0 {
		el := time.Since(p.start)
		eta = (el * time.Duration(total-done) / time.Duration(done)).Round(time.Second).String()
	}
	const barW = 20
	bar := strings.Repeat("#", barW*done/max(total, 1)) + strings.Repeat(".", barW-barW*done/max(total, 1))
	line := fmt.Sprintf("[%s] %3d%% %d/%d  %s  rep %d  eta %s", bar, pct, done+1, total, c, rep, eta)
	if !p.tty {
		fmt.Fprintln(os.Stderr, line)
		return
	}
	pad := max(p.width-len(line), 0)
	p.width = len(line)
	fmt.Fprintf(os.Stderr, "\r%s%s", line, strings.Repeat(" ", pad))
}

func (p *progress) finish() {
	if p.tty && p.width > 0 {
		fmt.Fprintln(os.Stderr)
	}
	fmt.Fprintf(os.Stderr, "sluice bench: done in %s\n", time.Since(p.start).Round(100*time.Millisecond))
}

func parseKinds(s string) ([]bench.Kind, error) {
	var base []bench.Kind
	grpc := false
	var out []bench.Kind
	add := func(k bench.Kind) {
		for _, x := range out {
			if x == k {
				return
			}
		}
		out = append(out, k)
	}
	for _, t := range strings.Split(s, ",") {
		switch t = strings.TrimSpace(t); t {
		case "":
		case "grpc":
			grpc = true
		case "memory", "file":
			base = append(base, bench.Kind(t))
			add(bench.Kind(t))
		case "memory+grpc", "file+grpc", "file+zstd", "file+s2", "file+aes":
			add(bench.Kind(t))
		case "raw":
			// the raw cases always run unless --no-raw
		default:
			return nil, fmt.Errorf("unknown channel kind %q", t)
		}
	}
	if grpc {
		if len(base) == 0 {
			base = []bench.Kind{bench.Memory, bench.File}
		}
		for _, k := range base {
			add(k + "+grpc")
		}
	}
	// Report order: bench.AllKinds.
	var sorted []bench.Kind
	for _, k := range bench.AllKinds {
		for _, x := range out {
			if x == k {
				sorted = append(sorted, k)
			}
		}
	}
	return sorted, nil
}

func parseOps(s string) ([]bench.Op, error) {
	var out []bench.Op
	for _, t := range strings.Split(s, ",") {
		switch t = strings.TrimSpace(t); bench.Op(t) {
		case bench.Put, bench.Take, bench.PutTake:
			out = append(out, bench.Op(t))
		case "":
		default:
			return nil, fmt.Errorf("unknown op %q (put, take, putTake)", t)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no ops")
	}
	return out, nil
}

// intList is a comma-separated flag of positive integers.
type intList []int

func (l *intList) String() string {
	var s []string
	for _, n := range *l {
		s = append(s, strconv.Itoa(n))
	}
	return strings.Join(s, ",")
}

func (l *intList) Set(v string) error {
	*l = nil
	for _, t := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(t))
		if err != nil {
			return err
		}
		*l = append(*l, n)
	}
	return nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runBenchRecovery(args []string) int {
	fs := newFlagSet("bench recovery", "[--events N] [--event-size B] [--dir D] [--json]\n\n"+
		"Fills a file store in a child process, kills it (SIGKILL), times the open that replays\n"+
		"the WAL, then closes cleanly and times the open from the checkpoint.")
	var (
		events int64
		size   int
		dir    string
		asJSON bool
	)
	fs.Int64Var(&events, "events", 1_000_000, "events to fill")
	fs.IntVar(&size, "event-size", 100, "event body size in bytes")
	fs.StringVar(&dir, "data-dir", "", "parent directory of the store (default the temp dir)")
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if events <= 0 || size <= 0 {
		fmt.Fprintln(os.Stderr, "sluice bench recovery: --events and --event-size must be positive")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice bench recovery: %v\n", err)
		return 1
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "sluice bench recovery: %v\n", err)
			return 1
		}
	}
	store, err := os.MkdirTemp(dir, "sluice-bench-recovery-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice bench recovery: %v\n", err)
		return 1
	}
	defer os.RemoveAll(store)
	fmt.Fprintf(os.Stderr, "sluice bench recovery: filling %d events of %d B in a child process…\n", events, size)
	res, err := bench.Recovery(context.Background(), bench.RecoveryConfig{
		Dir: store, Events: events, EventSize: size,
		Child: func(d string, n int64, sz, batch int) *exec.Cmd {
			return exec.Command(exe, "bench", "_fill", "--dir", d,
				"--events", strconv.FormatInt(n, 10), "--event-size", strconv.Itoa(sz), "--batch", strconv.Itoa(batch))
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice bench recovery: %v\n", err)
		return 1
	}
	if asJSON {
		if err := writeBenchJSON(res); err != nil {
			fmt.Fprintf(os.Stderr, "sluice bench recovery: %v\n", err)
			return 1
		}
	} else {
		res.WriteText(os.Stdout)
	}
	if res.CrashRecovered != events || res.CleanRecovered != events {
		fmt.Fprintf(os.Stderr, "sluice bench recovery: recovered %d / %d events, want %d\n", res.CrashRecovered, res.CleanRecovered, events)
		return 1
	}
	return 0
}

func runBenchFill(args []string) int {
	fs := newFlagSet("bench _fill", "(internal: the child process of bench recovery)")
	var (
		events      int64
		size, batch int
		dir         string
	)
	fs.Int64Var(&events, "events", 0, "")
	fs.IntVar(&size, "event-size", 100, "")
	fs.IntVar(&batch, "batch", 1000, "")
	fs.StringVar(&dir, "dir", "", "")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if err := bench.FillAndWait(dir, events, size, batch, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "sluice bench _fill: %v\n", err)
		return 1
	}
	return 0
}
