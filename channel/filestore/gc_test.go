package filestore

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel"
)

// A stalled channel pins only the segments that hold its own live events:
// traffic through another channel must not make the WAL grow without bound.
func TestFileGCStalledChannelPinsOnlyItsSegments(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1,
		channel.ChannelConfig{Name: "stalled", Capacity: 1000, TransactionCapacity: 100},
		channel.ChannelConfig{Name: "busy", Capacity: 1000, TransactionCapacity: 100})
	s := mustOpen(t, o)
	putRange(t, s, "stalled", 0, 5, 5) // never taken
	ctx := context.Background()
	maxSegs := 0
	for round := range 200 {
		putRange(t, s, "busy", round*100, round*100+100, 50) // ~16 KiB a round
		if got := drain(t, s, "busy"); len(got) != 100 {
			t.Fatalf("round %d: drained %d", round, len(got))
		}
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		maxSegs = max(maxSegs, len(s.wal.Segments()))
	}
	// 200 rounds wrote ~25 segments of 64 KiB; GC keeps only the stalled
	// channel's segment, the active ones and the ones the checkpoints need.
	if n := len(s.wal.Segments()); n > 6 {
		t.Fatalf("%d WAL segments after GC (max seen %d): GC is not reclaiming", n, maxSegs)
	}
	// The stalled events are intact after all that, and after a restart.
	s.Close()
	s = mustOpen(t, o)
	if got := drain(t, s, "stalled"); !slices.Equal(got, seq(0, 5)) {
		t.Fatalf("stalled channel lost events: %v", got)
	}
	tx, _ := s.BeginPut(ctx, channel.PutOptions{})
	tx.Put("busy", ev(1))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
}

func TestFileMinFreeSpace(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.MinFreeBytes = 10 << 20
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 100 << 20, TotalBytes: 1 << 30})
	s := mustOpen(t, o)
	defer s.Close()
	putRange(t, s, "c1", 0, 10, 10)
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 5 << 20, TotalBytes: 1 << 30})
	s.diskMu.Lock()
	s.diskChecked = s.diskChecked.AddDate(0, 0, -1) // expire the cached answer
	s.diskMu.Unlock()
	tx, _ := s.BeginPut(context.Background(), channel.PutOptions{})
	tx.Put("c1", ev(10))
	if err := tx.Commit(context.Background()); !errors.Is(err, channel.ErrDiskSpace) {
		t.Fatalf("put below minimum free space: %v", err)
	}
	// Takes still work, and nothing was lost.
	if got := drain(t, s, "c1"); !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("got %v", got)
	}
}

// Segment ids are never reused, even when every segment file is gone: a
// pointer the backup checkpoint still holds must not alias a new record.
func TestFileSegmentIDsNeverReused(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 2)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 300, 30)
	var maxID uint32
	for _, sg := range s.wal.Segments() {
		if sg.MaxWOID > 0 { // holds records (prepared spares hold none)
			maxID = max(maxID, sg.ID)
		}
	}
	s.Close()
	for _, d := range o.DataDirs {
		names, _ := fs.List(d)
		for _, n := range names {
			if n != "LOCK" {
				fs.Remove(d + "/" + n)
			}
		}
	}
	s = mustOpen(t, o)
	defer s.Close()
	for _, sg := range s.wal.Segments() {
		if sg.ID <= maxID {
			t.Fatalf("new segment id %d reuses an id ≤ %d", sg.ID, maxID)
		}
	}
}
