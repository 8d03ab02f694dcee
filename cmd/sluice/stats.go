package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// statsJSON is one channel in `sluice stats --json`.
type statsJSON struct {
	Name                 string  `json:"name"`
	Size                 int64   `json:"size"`
	InFlightTakes        int64   `json:"inFlightTakes"`
	Bytes                int64   `json:"bytes"`
	Capacity             int64   `json:"capacity"`
	MaxBytes             int64   `json:"maxBytes"`
	FillPercentage       float64 `json:"fillPercentage"`
	PutAttempts          int64   `json:"putAttempts"`
	PutSuccesses         int64   `json:"putSuccesses"`
	TakeAttempts         int64   `json:"takeAttempts"`
	TakeSuccesses        int64   `json:"takeSuccesses"`
	OldestEventAgeMillis int64   `json:"oldestEventAgeMillis"`
	CorruptEventsSkipped int64   `json:"corruptEventsSkipped"`
}

func fill(st channel.Stats) float64 {
	if st.Capacity <= 0 {
		return 0
	}
	return 100 * float64(st.Size+st.InFlightTakes) / float64(st.Capacity)
}

func runStats(args []string) int {
	fs := newFlagSet("stats", "[--addr ADDR] [--channel C] [--json]")
	var cf clientFlags
	cf.register(fs)
	var asJSON bool
	var only string
	fs.BoolVar(&asJSON, "json", false, "print JSON (an array with one object per channel)")
	fs.StringVar(&only, "channel", "", "only this channel")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if err := stats(&cf, only, asJSON); err != nil {
		fmt.Fprintf(os.Stderr, "sluice stats: %v\n", err)
		return 1
	}
	return 0
}

func stats(cf *clientFlags, only string, asJSON bool) error {
	opts, err := cf.options()
	if err != nil {
		return err
	}
	cl, err := cf.dial(context.Background(), opts)
	if err != nil {
		return err
	}
	defer cl.Close()
	names := cl.Channels()
	if only != "" {
		if err := checkChannels(cl, []string{only}); err != nil {
			return err
		}
		names = []string{only}
	}
	var all []channel.Stats
	for _, n := range names {
		st, err := cl.Stats(context.Background(), n)
		if err != nil {
			return fmt.Errorf("channel %s: %w", n, err)
		}
		all = append(all, st)
	}
	if asJSON {
		out := make([]statsJSON, 0, len(all))
		for _, st := range all {
			out = append(out, statsJSON{
				Name: st.Name, Size: st.Size, InFlightTakes: st.InFlightTakes, Bytes: st.Bytes,
				Capacity: st.Capacity, MaxBytes: st.MaxBytes, FillPercentage: fill(st),
				PutAttempts: st.PutAttempts, PutSuccesses: st.PutSuccesses,
				TakeAttempts: st.TakeAttempts, TakeSuccesses: st.TakeSuccesses,
				OldestEventAgeMillis: st.OldestEventAge.Milliseconds(), CorruptEventsSkipped: st.CorruptEventsSkipped,
			})
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "CHANNEL\tSIZE\tIN-FLIGHT\tBYTES\tCAPACITY\tFILL%\tPUT OK\tTAKE OK\tOLDEST\t")
	for _, st := range all {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.1f\t%d\t%d\t%s\t\n", st.Name, st.Size, st.InFlightTakes, st.Bytes,
			st.Capacity, fill(st), st.PutSuccesses, st.TakeSuccesses, st.OldestEventAge.Round(time.Millisecond))
	}
	return tw.Flush()
}
