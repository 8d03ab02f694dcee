package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// SchemaVersion of the JSON report; bumped when a field changes meaning
// or is removed (adding fields does not bump it).
const SchemaVersion = 1

// Report is a whole run: `sluice bench --json` prints it.
type Report struct {
	Schema   int       `json:"schema"`
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Settings Settings  `json:"settings"`
	Results  []Result  `json:"cases"`
}

// Settings are the run-wide settings that shape every number.
type Settings struct {
	DurationSec  float64 `json:"duration_s"`
	WarmupSec    float64 `json:"warmup_s"`
	Repeat       int     `json:"repeat"`
	BudgetBytes  int64   `json:"budget_bytes"`
	RawFileBytes int64   `json:"raw_file_bytes"`
	SegmentBytes int64   `json:"segment_bytes"`
}

func settingsOf(c Config) Settings {
	return Settings{
		DurationSec: c.Duration.Seconds(), WarmupSec: c.Warmup.Seconds(), Repeat: c.Repeat,
		BudgetBytes: c.BudgetBytes, RawFileBytes: c.RawFileBytes, SegmentBytes: c.SegmentBytes,
	}
}

// Result is one case's numbers: medians over its repeats. Field names are
// the stable JSON schema documented in docs/benchmarks.md.
type Result struct {
	Kind           string `json:"kind"`
	Op             string `json:"op,omitempty"`
	EventSize      int    `json:"event_size"`
	Batch          int    `json:"batch"`
	Clients        int    `json:"clients"`
	DataDir        string `json:"data_dir,omitempty"`
	BytesPerCommit int    `json:"bytes_per_commit"`
	Repeats        int    `json:"repeats"`

	Events          int64   `json:"events"`
	DurationSec     float64 `json:"duration_s"`
	EventsPerSec    float64 `json:"events_per_s"`
	EventsPerSecMin float64 `json:"events_per_s_min"`
	EventsPerSecMax float64 `json:"events_per_s_max"`
	SpreadPct       float64 `json:"spread_pct"`
	MBPerSec        float64 `json:"mb_per_s"`

	P50Us  float64 `json:"p50_us"`
	P99Us  float64 `json:"p99_us"`
	P999Us float64 `json:"p999_us"`
	MaxUs  float64 `json:"max_us"`

	DiskLimitEventsPerSec float64 `json:"disk_limit_events_per_s"`
	RatioToDiskLimit      float64 `json:"ratio_to_disk_limit"`
	CPUUsPerEvent         float64 `json:"cpu_us_per_event"`

	Stopped string `json:"stopped,omitempty"`
	Error   string `json:"error,omitempty"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the machine facts and one line per case.
func (r *Report) WriteTable(w io.Writer) error {
	m := r.Machine
	fmt.Fprintf(w, "machine: %d cores (GOMAXPROCS %d), %s %s/%s", m.Cores, m.GOMAXPROCS, m.GoVersion, m.OS, m.Arch)
	if m.CPUModel != "" {
		fmt.Fprintf(w, ", %s", m.CPUModel)
	}
	if m.Kernel != "" {
		fmt.Fprintf(w, ", kernel %s", m.Kernel)
	}
	fmt.Fprintln(w)
	for _, d := range m.DataDirs {
		fmt.Fprintf(w, "data dir: %s (%s", d.Path, d.FSType)
		if d.Device != "" {
			fmt.Fprintf(w, " on %s", d.Device)
		}
		if d.Disk != "" {
			fmt.Fprintf(w, ", disk %s", d.Disk)
		}
		if d.Rotational != nil {
			if *d.Rotational {
				fmt.Fprint(w, ", rotational")
			} else {
				fmt.Fprint(w, ", non-rotational")
			}
		}
		fmt.Fprintln(w, ")")
	}
	s := r.Settings
	fmt.Fprintf(w, "duration %gs, warm-up %gs, repeat %d (median; spread = (max-min)/median of events/s)\n\n",
		s.DurationSec, s.WarmupSec, s.Repeat)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\top\tsize\tbatch\tclients\tevents/s\tspread\tMB/s\tp50 µs\tp99 µs\tp99.9 µs\t×disk\tCPU µs/ev\tnote\t")
	for _, x := range r.Results {
		note := x.Stopped
		if x.Error != "" {
			note = "error: " + x.Error
		}
		op := x.Op
		if op == "" {
			op = "-"
		}
		ratio := "-"
		if x.RatioToDiskLimit > 0 && x.Kind != string(RawPreallocated) {
			ratio = fmt.Sprintf("%.2f", x.RatioToDiskLimit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%.0f%%\t%.1f\t%s\t%s\t%s\t%s\t%.2f\t%s\t\n",
			x.Kind, op, x.EventSize, x.Batch, x.Clients, si(x.EventsPerSec), x.SpreadPct, x.MBPerSec,
			num(x.P50Us), num(x.P99Us), num(x.P999Us), ratio, x.CPUUsPerEvent, strings.TrimSpace(note))
	}
	return tw.Flush()
}

// si formats n with a k/M suffix.
func si(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

func num(us float64) string {
	if us >= 100 {
		return fmt.Sprintf("%.0f", us)
	}
	return fmt.Sprintf("%.1f", us)
}
