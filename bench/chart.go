package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// WriteCharts writes PNG charts of the report into dir, per op:
// throughput vs batch (one line per kind × event size, at the fewest
// clients, with the raw disk limits), p99 latency vs batch (same lines),
// and throughput vs clients (at the smallest batch). It returns the files.
func (r *Report) WriteCharts(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var ops []string
	var clients, batches []int
	for _, x := range r.Results {
		if x.Error != "" {
			continue
		}
		if x.Op != "" && !slices.Contains(ops, x.Op) {
			ops = append(ops, x.Op)
		}
		if x.Op != "" && !slices.Contains(clients, x.Clients) {
			clients = append(clients, x.Clients)
		}
		if !slices.Contains(batches, x.Batch) {
			batches = append(batches, x.Batch)
		}
	}
	if len(ops) == 0 && len(r.Results) > 0 {
		ops = []string{""} // raw only
	}
	slices.Sort(clients)
	slices.Sort(batches)
	minClients := 1
	if len(clients) > 0 {
		minClients = clients[0]
	}
	var files []string
	for _, op := range ops {
		label := op
		if label == "" {
			label = "raw"
		}
		// lines keyed by kind+size; raw kinds join every op's batch charts.
		batchLine := func(x Result) (string, bool) {
			if x.Error != "" {
				return "", false
			}
			if x.Op == "" {
				return fmt.Sprintf("%s %dB", x.Kind, x.EventSize), true
			}
			return fmt.Sprintf("%s %dB", x.Kind, x.EventSize), x.Op == op && x.Clients == minClients
		}
		tp := series(r.Results, batchLine, func(x Result) (float64, float64) { return float64(x.Batch), x.EventsPerSec })
		lat := series(r.Results, batchLine, func(x Result) (float64, float64) { return float64(x.Batch), x.P99Us })
		charts := []struct {
			name, title, x, y string
			s                 []line
		}{
			{"throughput_vs_batch_" + label, fmt.Sprintf("%s: throughput vs batch (%d client(s))", label, minClients), "batch (events per commit)", "events/s", tp},
			{"latency_vs_batch_" + label, fmt.Sprintf("%s: p99 commit latency vs batch (%d client(s))", label, minClients), "batch (events per commit)", "p99 latency (µs)", lat},
		}
		if op != "" && len(batches) > 0 {
			b0 := batches[0]
			sc := series(r.Results, func(x Result) (string, bool) {
				return fmt.Sprintf("%s %dB", x.Kind, x.EventSize), x.Error == "" && x.Op == op && x.Batch == b0
			}, func(x Result) (float64, float64) { return float64(x.Clients), x.EventsPerSec })
			charts = append(charts, struct {
				name, title, x, y string
				s                 []line
			}{"scaling_with_clients_" + label, fmt.Sprintf("%s: throughput vs clients (batch %d)", label, b0), "clients", "events/s", sc})
		}
		for _, c := range charts {
			if len(c.s) == 0 {
				continue
			}
			path := filepath.Join(dir, c.name+".png")
			if err := saveChart(path, c.title, c.x, c.y, c.s); err != nil {
				return files, err
			}
			files = append(files, path)
		}
	}
	return files, nil
}

type line struct {
	name string
	xy   plotter.XYs
}

func series(rs []Result, key func(Result) (string, bool), val func(Result) (float64, float64)) []line {
	var out []line
	idx := map[string]int{}
	for _, x := range rs {
		k, ok := key(x)
		if !ok {
			continue
		}
		i, seen := idx[k]
		if !seen {
			i = len(out)
			idx[k] = i
			out = append(out, line{name: k})
		}
		a, b := val(x)
		out[i].xy = append(out[i].xy, plotter.XY{X: a, Y: b})
	}
	for i := range out {
		slices.SortFunc(out[i].xy, func(a, b plotter.XY) int {
			switch {
			case a.X < b.X:
				return -1
			case a.X > b.X:
				return 1
			}
			return 0
		})
	}
	return out
}

// logOK reports whether values (all > 0, spanning more than one value) suit
// a log axis.
func logOK(v []float64) bool {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range v {
		if x <= 0 {
			return false
		}
		lo, hi = min(lo, x), max(hi, x)
	}
	return len(v) > 0 && hi > lo
}

func saveChart(path, title, xl, yl string, ls []line) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xl
	p.Y.Label.Text = yl
	p.Legend.Top = true
	p.Legend.Left = true
	var xs, ys []float64
	var args []any
	for _, l := range ls {
		for _, pt := range l.xy {
			xs, ys = append(xs, pt.X), append(ys, pt.Y)
		}
		args = append(args, l.name, l.xy)
	}
	if logOK(xs) {
		p.X.Scale = plot.LogScale{}
	}
	// Label every batch size / client count measured.
	var ticks []plot.Tick
	for _, x := range xs {
		if !slices.ContainsFunc(ticks, func(t plot.Tick) bool { return t.Value == x }) {
			ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'g', -1, 64)})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	if logOK(ys) {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		// A log axis cannot show zero (an empty or failed point): keep linear.
		for _, l := range ls {
			for i := range l.xy {
				if l.xy[i].Y < 0 {
					l.xy[i].Y = 0
				}
			}
		}
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return err
	}
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}
