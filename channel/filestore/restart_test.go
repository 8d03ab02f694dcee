package filestore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/wal"
)

// killClone is what a kill -9 leaves: every write the process made (the
// page cache survives), but no Close and no final checkpoint.
func killClone(fs *vfs.MemFS) *vfs.MemFS {
	return fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 2))})
}

func flipByte(t *testing.T, fs vfs.FS, path string, off int64) {
	t.Helper()
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// storeWith writes events [0,n) in batches of 10 and crashes or closes.
func storeWith(t *testing.T, dirs, n int, closeClean bool) (*vfs.MemFS, Options) {
	t.Helper()
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, dirs)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, n/2, 10)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", n/2, n, 10)
	if closeClean {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return fs, o
	}
	clone := killClone(fs)
	s.Close()
	o.FS = clone
	return clone, o
}

func expectAll(t *testing.T, o Options, want []int) *Store {
	t.Helper()
	s := mustOpen(t, o)
	got := drain(t, s, "c1")
	if !slices.Equal(got, want) {
		t.Fatalf("got %d events (first %v), want %d", len(got), got[:min(len(got), 8)], len(want))
	}
	return s
}

func TestFileRestartScenarios(t *testing.T) {
	const n = 600
	cases := []struct {
		name  string
		clean bool
		// damage breaks the stored state before reopening.
		damage func(t *testing.T, fs vfs.FS, o Options)
	}{
		{"clean close", true, nil},
		{"close without checkpoint", false, nil},
		{"both checkpoints deleted", false, func(t *testing.T, fs vfs.FS, o Options) {
			fs.Remove("/ckpt/checkpoint.A")
			fs.Remove("/ckpt-backup/checkpoint.B")
		}},
		{"newest checkpoint corrupted", true, func(t *testing.T, fs vfs.FS, o Options) {
			newest := checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, nil)[0].Path
			flipByte(t, fs, newest, 20)
		}},
		{"both checkpoints corrupted", false, func(t *testing.T, fs vfs.FS, o Options) {
			flipByte(t, fs, "/ckpt/checkpoint.A", 20)
			flipByte(t, fs, "/ckpt-backup/checkpoint.B", 20)
		}},
		{"queue file of newest checkpoint corrupted", true, func(t *testing.T, fs vfs.FS, o Options) {
			cp := checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, nil)[0].Checkpoint
			dir, suffix := "/ckpt", "A"
			if cp.Channels[0].Gen == 1 {
				dir, suffix = "/ckpt-backup", "B"
			}
			names, _ := fs.List(dir)
			flipped := 0
			for _, name := range names {
				if strings.HasPrefix(name, "queue-") && strings.HasSuffix(name, "."+suffix) {
					flipByte(t, fs, dir+"/"+name, 4096+8*int64(cp.Channels[0].Head%cp.Channels[0].Capacity))
					flipped++
				}
			}
			if flipped != 1 || cp.Channels[0].Size == 0 {
				t.Fatalf("flipped %d queue files of a %d-event queue", flipped, cp.Channels[0].Size)
			}
		}},
	}
	for _, c := range cases {
		for _, dirs := range []int{1, 2} {
			t.Run(c.name, func(t *testing.T) {
				fs, o := storeWith(t, dirs, n, c.clean)
				if c.damage != nil {
					c.damage(t, fs, o)
					// The damage is real: some checkpoint no longer loads
					// with its queues (or is gone).
					s, err := Open(o)
					if err != nil {
						t.Fatal(err)
					}
					ss := s.StoreStats()
					s.Close()
					if ss.CheckpointFallbacks == 0 {
						t.Fatal("damage did not make recovery fall back")
					}
					fs.Remove(o.CheckpointDir + "/checkpoint.A.tmp")
					storeFS, o2 := storeWith(t, dirs, n, c.clean)
					c.damage(t, storeFS, o2)
					fs, o = storeFS, o2
				}
				s := expectAll(t, o, seq(0, n))
				s.Close()
			})
		}
	}
}

func TestFileChangedDirectoryOrder(t *testing.T) {
	_, o := storeWith(t, 3, 500, false)
	slices.Reverse(o.DataDirs)
	expectAll(t, o, seq(0, 500)).Close()
	// And with a clean close in between.
	_, o = storeWith(t, 3, 500, true)
	o.DataDirs = []string{o.DataDirs[1], o.DataDirs[2], o.DataDirs[0]}
	expectAll(t, o, seq(0, 500)).Close()
}

func TestFileChangedCapacity(t *testing.T) {
	for _, clean := range []bool{true, false} {
		_, o := storeWith(t, 1, 800, clean)
		// Shrink below the queued count: nothing is lost, puts are refused.
		o.Channels = []channel.ChannelConfig{{Name: "c1", Capacity: 300, TransactionCapacity: 100}}
		s := mustOpen(t, o)
		st, _ := s.Stats(context.Background(), "c1")
		if st.Size != 800 || st.Capacity != 300 {
			t.Fatalf("after shrink: size %d capacity %d", st.Size, st.Capacity)
		}
		p, _ := s.BeginPut(context.Background(), channel.PutOptions{})
		p.Put("c1", ev(9999))
		if err := p.Commit(context.Background()); !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("put into over-full channel: %v", err)
		}
		s.Close()
		// Grow: everything still there, in order, and room for more.
		o.Channels = []channel.ChannelConfig{{Name: "c1", Capacity: 5000, TransactionCapacity: 100}}
		s = mustOpen(t, o)
		putRange(t, s, "c1", 800, 1000, 50)
		s.Close()
		s = mustOpen(t, o)
		if got := drain(t, s, "c1"); !slices.Equal(got, seq(0, 1000)) {
			t.Fatalf("after grow: %d events", len(got))
		}
		s.Close()
	}
}

func TestFileTruncatedWALTail(t *testing.T) {
	fs, o := storeWith(t, 1, 300, false)
	// Cut the active segment in the middle of its last record: the txn of
	// that record is lost, everything before it survives.
	var last string
	var lastID uint32
	w, err := wal.Open(wal.Options{FS: fs, Dirs: o.DataDirs, SegmentSize: o.SegmentSize})
	if err != nil {
		t.Fatal(err)
	}
	var lastPut wal.Pointer
	w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		if rec.Type == wal.RecordPut {
			lastPut = ptr
		}
		return nil
	}, nil)
	for _, sg := range w.Segments() {
		if sg.ID == lastPut.Segment() {
			last, lastID = sg.Path, sg.ID
		}
	}
	w.Close()
	_ = lastID
	// Zero from the middle of the last put record to the end of the file.
	f, err := fs.OpenReadWrite(last, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	off := int64(lastPut.Offset()) + 20
	f.WriteAt(make([]byte, st.Size()-off), off)
	f.Sync()
	f.Close()
	s := mustOpen(t, o)
	got := drain(t, s, "c1")
	if !slices.Equal(got, seq(0, 290)) {
		t.Fatalf("after torn tail got %d events, last %v", len(got), got[max(0, len(got)-3):])
	}
	s.Close()
}

func TestFileBitFlipMidSegment(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 200, 10)
	s.Close()
	// Find the put record of event 57 and flip a byte of its body.
	w, err := wal.Open(wal.Options{FS: fs, Dirs: o.DataDirs, SegmentSize: o.SegmentSize})
	if err != nil {
		t.Fatal(err)
	}
	var target wal.Pointer
	var path string
	w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		if rec.Type == wal.RecordPut && bytes.HasSuffix(rec.Payload, []byte("event-57")) {
			target = ptr
		}
		return nil
	}, nil)
	for _, sg := range w.Segments() {
		if sg.ID == target.Segment() {
			path = sg.Path
		}
	}
	w.Close()
	if path == "" {
		t.Fatal("record of event 57 not found")
	}
	flipByte(t, fs, path, int64(target.Offset())+40)

	// The clean-close checkpoint points at the record: a take reports and
	// skips it, never returns garbage.
	s = mustOpen(t, o)
	got := drain(t, s, "c1")
	want := append(seq(0, 57), seq(58, 200)...)
	if !slices.Equal(got, want) {
		t.Fatalf("got %d events", len(got))
	}
	if st, _ := s.Stats(context.Background(), "c1"); st.CorruptEventsSkipped != 1 {
		t.Fatalf("corrupt events skipped = %d, want 1", st.CorruptEventsSkipped)
	}
	s.Close()

	// Without a checkpoint the damaged range is found by replay, reported,
	// and the records after it are still replayed.
	fs2 := vfs.NewCrashableMem()
	o2 := testFileOptions(fs2, 1)
	s2 := mustOpen(t, o2)
	putRange(t, s2, "c1", 0, 200, 10)
	clone := killClone(fs2)
	s2.Close()
	o2.FS = clone
	for _, name := range []string{"/ckpt/checkpoint.A", "/ckpt-backup/checkpoint.B"} {
		clone.Remove(name)
	}
	w, _ = wal.Open(wal.Options{FS: clone, Dirs: o2.DataDirs, SegmentSize: o2.SegmentSize})
	w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		if rec.Type == wal.RecordPut && bytes.HasSuffix(rec.Payload, []byte("event-57")) {
			target = ptr
		}
		return nil
	}, nil)
	for _, sg := range w.Segments() {
		if sg.ID == target.Segment() {
			path = sg.Path
		}
	}
	w.Close()
	flipByte(t, clone, path, int64(target.Offset())+40)
	s2 = mustOpen(t, o2)
	got = drain(t, s2, "c1")
	// Event 57's txn (events 50-59) lost its put record: the commit is for
	// a txn with a missing record, so only event 57 is lost.
	if slices.Contains(got, 57) || len(got) < 190 || !slices.Contains(got, 199) {
		t.Fatalf("after mid-segment damage got %d events", len(got))
	}
	if ss := s2.StoreStats(); ss.DamagedRanges < 1 {
		t.Fatalf("damaged ranges = %d, want ≥ 1", ss.DamagedRanges)
	}
	s2.Close()
}

func TestFileUnconfiguredChannelWithEventsRefused(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1, channel.ChannelConfig{Name: "a"}, channel.ChannelConfig{Name: "b"})
	s := mustOpen(t, o)
	putRange(t, s, "b", 0, 10, 5)
	s.Close()
	o.Channels = []channel.ChannelConfig{{Name: "a"}}
	_, err := Open(o)
	if err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("opening without a channel that holds events: %v", err)
	}
	// Nothing was lost: with the channel back, the events are there.
	o.Channels = []channel.ChannelConfig{{Name: "a"}, {Name: "b"}}
	s = mustOpen(t, o)
	if got := drain(t, s, "b"); !slices.Equal(got, seq(0, 10)) {
		t.Fatalf("got %v", got)
	}
	s.Close()
}
