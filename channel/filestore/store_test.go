package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel"
)

// testFileOptions are small-segment options on fs for tests.
func testFileOptions(fs vfs.FS, dirs int, cfgs ...channel.ChannelConfig) Options {
	if len(cfgs) == 0 {
		cfgs = []channel.ChannelConfig{{Name: "c1", Capacity: 10_000, TransactionCapacity: 1000}}
	}
	o := Options{
		FS:                  fs,
		CheckpointDir:       "/ckpt",
		BackupCheckpointDir: "/ckpt-backup",
		Channels:            cfgs,
		SegmentSize:         64 << 10,
		MaxEventSize:        16 << 10,
		CheckpointInterval:  -1,
		MinFreeBytes:        -1,
		Logger:              testLogger(),
	}
	for i := range dirs {
		o.DataDirs = append(o.DataDirs, fmt.Sprintf("/data%d", i))
	}
	return o
}

func mustOpen(t testing.TB, o Options) *Store {
	t.Helper()
	s, err := Open(o)
	if err != nil {
		t.Fatalf("OpenFile: %v", err)
	}
	return s
}

func ev(id int) channel.Event {
	return channel.Event{Headers: map[string]string{"id": strconv.Itoa(id)}, Body: []byte("event-" + strconv.Itoa(id))}
}

// evPlain is event id without headers: the put path's templated encoding.
func evPlain(id int) channel.Event { return channel.Event{Body: []byte("plain-" + strconv.Itoa(id))} }

// bodyID is the id in the body of an ev or evPlain event (-1 if none).
func bodyID(body []byte) int {
	_, n, _ := strings.Cut(string(body), "-")
	id, err := strconv.Atoi(n)
	if err != nil {
		return -1
	}
	return id
}

func evID(t testing.TB, e channel.Event) int {
	t.Helper()
	if rest, ok := strings.CutPrefix(string(e.Body), "plain-"); ok {
		id, err := strconv.Atoi(rest)
		if err != nil || e.Headers != nil {
			t.Fatalf("unexpected event %q %v", e.Body, e.Headers)
		}
		return id
	}
	id, err := strconv.Atoi(strings.TrimPrefix(string(e.Body), "event-"))
	if err != nil || e.Headers["id"] != strconv.Itoa(id) {
		t.Fatalf("unexpected event %q %v", e.Body, e.Headers)
	}
	return id
}

// putRange commits events [from, to) to ch in batches.
func putRange(t testing.TB, s channel.Store, ch string, from, to, batch int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < to; i += batch {
		tx, err := s.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for j := i; j < min(i+batch, to); j++ {
			if err := tx.Put(ch, ev(j)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("commit [%d,%d): %v", i, min(i+batch, to), err)
		}
	}
}

// drain takes and commits everything queued in ch, returning event ids in
// order. The events' offsets must increase strictly (offsets.go).
func drain(t testing.TB, s channel.Store, ch string) []int {
	t.Helper()
	ids, _ := drainOffsets(t, s, ch)
	return ids
}

// drainOffsets is drain that also returns each event's offset.
func drainOffsets(t testing.TB, s channel.Store, ch string) ([]int, []uint64) {
	t.Helper()
	var ids []int
	var offs []uint64
	for _, e := range drainEvents(t, s, ch) {
		ids = append(ids, evID(t, e))
		offs = append(offs, e.Offset)
	}
	return ids, offs
}

// drainEvents takes and commits everything queued in ch and returns the
// events in order, checking that their offsets increase strictly.
func drainEvents(t testing.TB, s channel.Store, ch string) []channel.Event {
	t.Helper()
	var out []channel.Event
	for {
		tx, err := s.BeginTake(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		evs, err := tx.Take(ctx, 500)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		for _, e := range evs {
			if n := len(out); e.Offset == 0 || (n > 0 && e.Offset <= out[n-1].Offset) {
				t.Fatalf("event %.40q has offset %d after %d events", e.Body, e.Offset, n)
			}
			out = append(out, e)
		}
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestFileCleanRestart(t *testing.T) {
	for _, dirs := range []int{1, 3} {
		t.Run(fmt.Sprintf("dirs=%d", dirs), func(t *testing.T) {
			fs := vfs.NewMem()
			o := testFileOptions(fs, dirs)
			s := mustOpen(t, o)
			putRange(t, s, "c1", 0, 3000, 37) // spans many 64 KiB segments
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, o)
			got := drain(t, s, "c1")
			if !slices.Equal(got, seq(0, 3000)) {
				t.Fatalf("after restart got %d events, first %v", len(got), got[:min(10, len(got))])
			}
			s.Close()
			s = mustOpen(t, o)
			if got := drain(t, s, "c1"); len(got) != 0 {
				t.Fatalf("committed takes delivered again: %v", got[:min(10, len(got))])
			}
			s.Close()
		})
	}
}

func TestFileSecondOpenFails(t *testing.T) {
	dir := t.TempDir()
	o := testFileOptions(vfs.Default, 1)
	o.DataDirs = []string{dir + "/data"}
	o.CheckpointDir = dir + "/ckpt"
	o.BackupCheckpointDir = ""
	s := mustOpen(t, o)
	defer s.Close()
	if _, err := Open(o); err == nil {
		t.Fatal("second open of the same store succeeded")
	}
}

// crashRestart simulates power loss (only synced data survives) and reopens.
func crashClone(fs *vfs.MemFS) *vfs.MemFS { return fs.CrashClone(vfs.CrashCloneCfg{}) }

func TestFileCrashWithoutCheckpoint(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 2)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 500, 10)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", 500, 1000, 10)
	// Take 100 and commit, take 50 and leave them in flight.
	tx, _ := s.BeginTake(context.Background(), "c1")
	evs, err := tx.Take(context.Background(), 100)
	if err != nil || len(evs) != 100 {
		t.Fatalf("take: %d %v", len(evs), err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	open, _ := s.BeginTake(context.Background(), "c1")
	if evs, _ := open.Take(context.Background(), 50); len(evs) != 50 {
		t.Fatal("take 50")
	}
	// An uncommitted put with records flushed to the WAL.
	p, _ := s.BeginPut(context.Background(), channel.PutOptions{})
	for i := 5000; i < 5400; i++ {
		p.Put("c1", channel.Event{Body: []byte("event-" + strconv.Itoa(i)), Headers: map[string]string{"id": strconv.Itoa(i), "pad": strings.Repeat("x", 1000)}})
	}
	crashed := crashClone(fs)
	o.FS = crashed
	s2 := mustOpen(t, o)
	got := drain(t, s2, "c1")
	if !slices.Equal(got, seq(100, 1000)) {
		t.Fatalf("after crash got %d events %v...", len(got), got[:min(10, len(got))])
	}
	s2.Close()
}

func TestFileCheckpointStraddlingTxns(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	ctx := context.Background()
	putRange(t, s, "c1", 0, 20, 5)
	// A put with records written before the checkpoint, committed after it.
	p, _ := s.BeginPut(ctx, channel.PutOptions{})
	for i := 100; i < 400; i++ {
		p.Put("c1", channel.Event{Body: []byte("event-" + strconv.Itoa(i)), Headers: map[string]string{"id": strconv.Itoa(i), "pad": strings.Repeat("y", 1000)}})
	}
	// A take straddling the checkpoint that commits, and one that does not.
	t1, _ := s.BeginTake(ctx, "c1")
	if evs, _ := t1.Take(ctx, 5); len(evs) != 5 {
		t.Fatal("take 5")
	}
	t2, _ := s.BeginTake(ctx, "c1")
	if evs, _ := t2.Take(ctx, 5); len(evs) != 5 {
		t.Fatal("take 5")
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	crashed := crashClone(fs)
	o.FS = crashed
	s2 := mustOpen(t, o)
	got := drain(t, s2, "c1")
	want := append(seq(5, 20), seq(100, 400)...)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	s2.Close()
}

// TestFileCheckpointMidPutAcrossChannels: checkpoints taken between the Put
// calls of a txn whose records alternate between two channels (flushed in
// several pieces, some pieces spanning both) record the in-flight entries
// with the right channels; after a crash the committed txn's events are in
// their channels in order and an uncommitted one's are nowhere.
func TestFileCheckpointMidPutAcrossChannels(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 2,
		channel.ChannelConfig{Name: "c1", Capacity: 10_000, TransactionCapacity: 3000},
		channel.ChannelConfig{Name: "c2", Capacity: 10_000, TransactionCapacity: 3000})
	s := mustOpen(t, o)
	ctx := context.Background()
	put := func(tx channel.PutTxn, ch string, from, to int) {
		t.Helper()
		var evs []channel.Event
		for i := from; i < to; i++ {
			e := evPlain(i)
			if i%3 == 0 {
				e = ev(i)
			}
			evs = append(evs, e)
		}
		if err := tx.Put(ch, evs...); err != nil {
			t.Fatal(err)
		}
	}
	committed, _ := s.BeginPut(ctx, channel.PutOptions{})
	abandoned, _ := s.BeginPut(ctx, channel.PutOptions{})
	var want1, want2 []int
	for k := range 6 {
		ch, from := "c1", 1000*k
		if k%2 == 1 {
			ch = "c2"
		}
		put(committed, ch, from, from+700)
		put(abandoned, ch, 100_000+from, 100_000+from+700)
		if ch == "c1" {
			want1 = append(want1, seq(from, from+700)...)
		} else {
			want2 = append(want2, seq(from, from+700)...)
		}
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if len(committed.(*filePut).ptrs) == 0 || len(abandoned.(*filePut).ptrs) == 0 {
		t.Fatal("no records flushed before commit; the test needs more events")
	}
	if err := committed.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	o.FS = crashClone(fs)
	s2 := mustOpen(t, o)
	defer s2.Close()
	for ch, want := range map[string][]int{"c1": want1, "c2": want2} {
		if got := drain(t, s2, ch); !slices.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Fatalf("%s after crash: %d events, want %d; first difference at index %d", ch, len(got), len(want), i)
		}
	}
}

func TestFileProducerDedupSurvivesRestart(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	ctx := context.Background()
	put := func(s *Store, seq uint64, id int) bool {
		p, _ := s.BeginPut(ctx, channel.PutOptions{ProducerID: "prod", Sequence: seq})
		p.Put("c1", ev(id))
		if err := p.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return p.Deduplicated()
	}
	if put(s, 1, 1) || put(s, 2, 2) || !put(s, 2, 2) {
		t.Fatal("dedup before restart wrong")
	}
	o.FS = crashClone(fs)
	s2 := mustOpen(t, o)
	if !put(s2, 2, 2) || !put(s2, 1, 1) || put(s2, 3, 3) {
		t.Fatal("dedup after crash wrong")
	}
	if got := drain(t, s2, "c1"); !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("got %v", got)
	}
	s2.Close()
}

func TestFileTakeWaitsAndCloseWakes(t *testing.T) {
	s := mustOpen(t, testFileOptions(vfs.NewMem(), 1))
	tx, _ := s.BeginTake(context.Background(), "c1")
	done := make(chan error, 1)
	go func() {
		_, err := tx.Take(context.Background(), 1)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, channel.ErrClosed) {
			t.Fatalf("blocked take after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake a blocked Take")
	}
}

func testLogger() *slog.Logger {
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
