package filestore

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
)

func TestOffList(t *testing.T) {
	var l offList
	l.reset(100)
	l.pushBack(1, 5) // positions 100..104 -> 1..5
	l.pushBack(6, 3) // continues: one run
	if len(l.live()) != 1 {
		t.Fatalf("runs %v, want one", l.live())
	}
	l.pushBack(20, 2) // a gap (a skipped commit): positions 108, 109 -> 20, 21
	want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 20, 21}
	if got := l.appendOffsets(nil, 100, 10); !slices.Equal(got, want) {
		t.Fatalf("offsets %v, want %v", got, want)
	}
	// Take four (positions 100..103), put back the first and third.
	var taken []uint64
	for p := uint64(100); p < 104; p++ {
		taken = append(taken, l.popFront(p))
	}
	if !slices.Equal(taken, want[:4]) {
		t.Fatalf("popped %v", taken)
	}
	l.pushFront(102, []uint64{1, 3})
	want = []uint64{1, 3, 5, 6, 7, 8, 20, 21}
	if got := l.appendOffsets(nil, 102, 8); !slices.Equal(got, want) {
		t.Fatalf("after rollback %v, want %v (runs %v)", got, want, l.live())
	}
	// Pop everything, then push again after the last offset.
	for p := uint64(102); p < 110; p++ {
		l.popFront(p)
	}
	l.pushBack(22, 1)
	if got := l.at(110); got != 22 {
		t.Fatalf("offset at 110 = %d", got)
	}
	// Rollback into an empty queue.
	var e offList
	e.reset(5)
	e.pushFront(3, []uint64{7, 8})
	if got := e.appendOffsets(nil, 3, 2); !slices.Equal(got, []uint64{7, 8}) || e.tail != 5 {
		t.Fatalf("into empty: %v tail %d", got, e.tail)
	}
}

// Offsets survive a restart: events in the queue (from the checkpoint),
// events committed after it (replayed), a take in flight at the final
// checkpoint and events a rollback put back ahead of it all come back with
// the offsets they had, in increasing order; new events continue above.
func TestOffsetsSurviveRestart(t *testing.T) {
	for _, clean := range []bool{true, false} {
		name := "clean close"
		if !clean {
			name = "crash"
		}
		t.Run(name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			o := testFileOptions(fs, 2)
			o.CheckpointBytes = 1 << 40 // checkpoints only when asked
			s := mustOpen(t, o)
			ctx := context.Background()
			putRange(t, s, "c1", 0, 40, 10)
			if err := s.Checkpoint(); err != nil {
				t.Fatal(err)
			}
			putRange(t, s, "c1", 40, 60, 7) // only in the WAL
			before := map[int]uint64{}
			note := func(evs []channel.Event) {
				for _, e := range evs {
					before[evID(t, e)] = e.Offset
				}
			}
			a, _ := s.BeginTake(ctx, "c1")
			b, _ := s.BeginTake(ctx, "c1")
			ea, _ := a.Take(ctx, 5)
			eb, _ := b.Take(ctx, 5)
			note(ea)
			note(eb)
			if err := a.Rollback(); err != nil { // back ahead of b's
				t.Fatal(err)
			}
			c, _ := s.BeginTake(ctx, "c1")
			ec, _ := c.Take(ctx, 3) // commits: 0..2 gone
			if err := c.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			rest, _ := s.BeginTake(ctx, "c1")
			er, _ := rest.Take(ctx, 100)
			note(er)
			rest.Rollback()
			var clone *vfs.MemFS
			if clean {
				// b is still open: the final checkpoint keeps it in flight.
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := s.wal.SyncAll(ctx); err != nil {
					t.Fatal(err)
				}
				clone = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
				s.Close()
				o.FS = clone
			}
			s = mustOpen(t, o)
			defer s.Close()
			ids, offs := drainOffsets(t, s, "c1") // checks they increase
			if len(ids) != 60-len(ec) {
				t.Fatalf("%d events after restart, want %d", len(ids), 60-len(ec))
			}
			for i, id := range ids {
				if before[id] != offs[i] {
					t.Fatalf("event %d: offset %d after restart, %d before", id, offs[i], before[id])
				}
			}
			putRange(t, s, "c1", 60, 61, 1)
			_, newer := drainOffsets(t, s, "c1")
			if newer[0] <= slices.Max(offs) {
				t.Fatalf("new event got offset %d, not above %d", newer[0], slices.Max(offs))
			}
		})
	}
}

// A checkpoint written by a newer build (a format version this build does
// not read) makes the open fail closed: no fallback to the older checkpoint
// or a full replay, which would deliver events again.
func TestNewerCheckpointRefused(t *testing.T) {
	fs := vfs.NewMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 5, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	var newest string
	for _, name := range []string{"checkpoint.A", "checkpoint.B"} {
		p := fs.PathJoin(o.CheckpointDir, name)
		if _, err := fs.Stat(p); err == nil {
			newest = p
		}
	}
	b := readAll(t, fs, newest)
	b[7] = 99 // the version byte
	writeFile(t, fs, newest, b)
	_, err := Open(o)
	if err == nil || !strings.Contains(err.Error(), "newer build") {
		t.Fatalf("open with a version-99 checkpoint: %v", err)
	}
}

// appendOffsets (tests) appends the offsets of queue positions [from, from+n) to dst.
func (l *offList) appendOffsets(dst []uint64, from uint64, n int) []uint64 {
	for i := range n {
		dst = append(dst, l.at(from+uint64(i)))
	}
	return dst
}
