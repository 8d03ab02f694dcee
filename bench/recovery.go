package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
)

// RecoveryConfig is a `sluice bench recovery` run.
type RecoveryConfig struct {
	// Dir is the store's directory (data/ and ckpt/ under it); it must be
	// empty or absent.
	Dir       string
	Events    int64
	EventSize int
	// Batch is the events per fill transaction (default 1000).
	Batch int
	// Child returns the command that runs FillAndWait(dir, events, size,
	// batch, stdout) in another process (sluice re-executes itself with a
	// hidden subcommand; tests re-execute the test binary).
	Child func(dir string, events int64, size, batch int) *exec.Cmd
}

// RecoveryResult is what `sluice bench recovery` reports.
type RecoveryResult struct {
	Events    int64 `json:"events"`
	EventSize int   `json:"event_size"`
	// WALBytes estimates the WAL written: Events × (EventSize +
	// RecordOverhead). DataDirBytes is the data directory's size on disk,
	// which includes the unused part of preallocated segments.
	WALBytes         int64   `json:"wal_bytes"`
	DataDirBytes     int64   `json:"data_dir_bytes"`
	FillSec          float64 `json:"fill_s"`
	FillEventsPerSec float64 `json:"fill_events_per_s"`
	// CrashOpenSec is filestore.Open after kill -9 of the filling process, with
	// no checkpoint since the fill began: the whole WAL is replayed.
	CrashOpenSec float64 `json:"crash_open_s"`
	// ReplayMBPerSec is WALBytes / CrashOpenSec.
	ReplayMBPerSec float64 `json:"replay_mb_per_s"`
	// CleanOpenSec is filestore.Open after a clean Close (from the checkpoint).
	CleanOpenSec float64 `json:"clean_open_s"`
	// Recovered is the channel size after each open (must equal Events).
	CrashRecovered int64 `json:"crash_recovered_events"`
	CleanRecovered int64 `json:"clean_recovered_events"`
}

func recoveryOptions(dir string, events int64, batch int) filestore.Options {
	return filestore.Options{
		DataDirs:      []string{filepath.Join(dir, "data")},
		CheckpointDir: filepath.Join(dir, "ckpt"),
		Channels: []channel.ChannelConfig{{
			Name: chanName, Capacity: max(events, int64(max(batch, 10_000))), TransactionCapacity: max(batch, 10_000),
		}},
		SegmentSize: 256 << 20,
		// No checkpoint while filling: a crash replays the whole WAL.
		CheckpointInterval: -1,
		CheckpointBytes:    1 << 60,
		MinFreeBytes:       -1,
		Logger:             discard,
	}
}

// FillAndWait fills a new store in dir with events of size bytes, writes
// "ready <seconds>\n" to w and blocks forever (until killed). It is the
// child side of Recovery.
func FillAndWait(dir string, events int64, size, batch int, w io.Writer) error {
	if batch <= 0 {
		batch = 1000
	}
	s, err := filestore.Open(recoveryOptions(dir, events, batch))
	if err != nil {
		return err
	}
	ctx := context.Background()
	b := body(size)
	evs := make([]channel.Event, batch)
	for i := range evs {
		evs[i] = channel.Event{Body: b}
	}
	t0 := time.Now()
	for put := int64(0); put < events; {
		k := min(int64(batch), events-put)
		tx, err := s.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			return err
		}
		if err := tx.Put(chanName, evs[:k]...); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		put += k
	}
	if _, err := fmt.Fprintf(w, "ready %g\n", time.Since(t0).Seconds()); err != nil {
		return err
	}
	select {}
}

// Recovery fills a store to cfg.Events in a child process, kills it with
// SIGKILL, times the open that replays the WAL, closes cleanly and times
// the open from the checkpoint.
func Recovery(ctx context.Context, cfg RecoveryConfig) (*RecoveryResult, error) {
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	res := &RecoveryResult{Events: cfg.Events, EventSize: cfg.EventSize}
	cmd := cfg.Child(cfg.Dir, cfg.Events, cfg.EventSize, cfg.Batch)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("fill child: %v (no ready line)", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 || f[0] != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("fill child: unexpected %q", line)
	}
	res.FillSec, _ = strconv.ParseFloat(f[1], 64)
	if res.FillSec > 0 {
		res.FillEventsPerSec = float64(cfg.Events) / res.FillSec
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL on Unix
		return nil, err
	}
	cmd.Wait()
	res.DataDirBytes = dirSize(filepath.Join(cfg.Dir, "data"))
	res.WALBytes = cfg.Events * int64(cfg.EventSize+RecordOverhead)

	o := recoveryOptions(cfg.Dir, cfg.Events, cfg.Batch)
	open := func() (time.Duration, int64, error) {
		t0 := time.Now()
		s, err := filestore.Open(o)
		if err != nil {
			return 0, 0, err
		}
		d := time.Since(t0)
		st, err := s.Stats(context.Background(), chanName)
		if cerr := s.Close(); err == nil {
			err = cerr
		}
		return d, st.Size, err
	}
	d, n, err := open()
	if err != nil {
		return nil, fmt.Errorf("open after kill -9: %w", err)
	}
	res.CrashOpenSec, res.CrashRecovered = d.Seconds(), n
	if d > 0 {
		res.ReplayMBPerSec = float64(res.WALBytes) / 1e6 / d.Seconds()
	}
	d, n, err = open()
	if err != nil {
		return nil, fmt.Errorf("open after clean close: %w", err)
	}
	res.CleanOpenSec, res.CleanRecovered = d.Seconds(), n
	return res, nil
}

func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// WriteText writes r as a few human lines.
func (r *RecoveryResult) WriteText(w io.Writer) {
	fmt.Fprintf(w, "filled %d events × %d B (~%.1f MB of WAL) in %.2fs (%s events/s)\n",
		r.Events, r.EventSize, float64(r.WALBytes)/1e6, r.FillSec, si(r.FillEventsPerSec))
	fmt.Fprintf(w, "open after kill -9:   %.3fs, replay %.1f MB/s, %d events recovered\n", r.CrashOpenSec, r.ReplayMBPerSec, r.CrashRecovered)
	fmt.Fprintf(w, "open after clean close: %.3fs, %d events recovered\n", r.CleanOpenSec, r.CleanRecovered)
}
