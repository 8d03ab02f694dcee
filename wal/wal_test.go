package wal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

func testOpts(fs vfs.FS, dirs ...string) Options {
	return Options{FS: fs, Dirs: dirs, SegmentSize: 64 << 10, ZeroChunk: 16 << 10, Logger: quietLogger}
}

func mustOpen(t testing.TB, opts Options) *WAL {
	t.Helper()
	w, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func payloadFor(i int, size int) []byte {
	p := make([]byte, size)
	for j := range p {
		p[j] = byte(i*31 + j)
	}
	copy(p, fmt.Sprintf("rec-%d-", i))
	return p
}

type written struct {
	ptr     Pointer
	txn     uint64
	payload []byte
}

// writeRecords writes n single-record batches round robin over the dirs and
// syncs each one.
func writeRecords(t testing.TB, w *WAL, first, n int, rng *rand.Rand) []written {
	t.Helper()
	var out []written
	var b Batch
	for i := first; i < first+n; i++ {
		b.Reset()
		p := payloadFor(i, 1+rng.IntN(600))
		b.Add(RecordPut, uint64(i), p)
		ptrs, tok, err := w.Write(i%w.NumDirs(), &b, nil)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if err := w.Sync(context.Background(), tok); err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		out = append(out, written{ptr: ptrs[0], txn: uint64(i), payload: p})
	}
	return out
}

type replayed struct {
	rec Record
	ptr Pointer
}

func replayAll(t testing.TB, w *WAL, from []Position) ([]replayed, ReplayStats) {
	t.Helper()
	var out []replayed
	stats, err := w.Replay(from, func(rec Record, ptr Pointer) error {
		rec.Payload = bytes.Clone(rec.Payload)
		out = append(out, replayed{rec, ptr})
		return nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(out); i++ {
		if out[i].rec.WOID <= out[i-1].rec.WOID {
			t.Fatalf("replay out of WOID order at %d: %d after %d", i, out[i].rec.WOID, out[i-1].rec.WOID)
		}
	}
	return out, stats
}

func checkReplay(t *testing.T, got []replayed, want []written) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	byPtr := map[Pointer]written{}
	for _, w := range want {
		byPtr[w.ptr] = w
	}
	for _, g := range got {
		w, ok := byPtr[g.ptr]
		if !ok {
			t.Fatalf("replayed unexpected record at %v", g.ptr)
		}
		if g.rec.TxnID != w.txn || !bytes.Equal(g.rec.Payload, w.payload) || g.rec.Type != RecordPut {
			t.Fatalf("record at %v differs", g.ptr)
		}
	}
}

func TestRoundTripRotationMultiDir(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/d0", "/d1", "/d2")
	w := mustOpen(t, opts)
	if _, err := w.Replay(nil, func(Record, Pointer) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	recs := writeRecords(t, w, 0, 1500, rng)
	var buf []byte
	for _, r := range recs {
		rec, err := w.ReadRecord(r.ptr, buf)
		if err != nil {
			t.Fatalf("read %v: %v", r.ptr, err)
		}
		if !bytes.Equal(rec.Payload, r.payload) || rec.TxnID != r.txn {
			t.Fatalf("read %v: mismatch", r.ptr)
		}
		buf = rec.Payload[:0]
	}
	segs := w.Segments()
	if len(segs) < 9 {
		t.Fatalf("expected rotations, got %d segments", len(segs))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second close:", err)
	}

	w = mustOpen(t, opts)
	defer w.Close()
	got, stats := replayAll(t, w, nil)
	checkReplay(t, got, recs)
	if len(stats.Damaged) != 0 {
		t.Fatalf("damage: %+v", stats.Damaged)
	}
	// WOIDs of one directory increase with pointer order too.
	last := map[uint32]uint64{}
	for _, g := range got {
		if g.rec.WOID <= last[g.ptr.Segment()] {
			t.Fatal("WOID not increasing within segment")
		}
		last[g.ptr.Segment()] = g.rec.WOID
	}
	if err := w.Start(stats.MaxWOID + 1); err != nil {
		t.Fatal(err)
	}
	more := writeRecords(t, w, 1500, 10, rng)
	for _, m := range more {
		rec, err := w.ReadRecord(m.ptr, nil)
		if err != nil || rec.WOID <= stats.MaxWOID {
			t.Fatalf("new record %v: woid %d err %v", m.ptr, rec.WOID, err)
		}
	}
}

func TestReplayMergesDirsByWOID(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/a", "/b")
	w := mustOpen(t, opts)
	w.Start(1)
	// Uneven interleaving: several writes to a, then b, then a.
	var b Batch
	var want []uint64
	for i, dir := range []int{0, 0, 0, 1, 1, 0, 1, 1, 1, 0} {
		b.Reset()
		b.Add(RecordPut, uint64(i), []byte{byte(i)})
		b.Add(RecordCommit, uint64(i), nil)
		if _, _, err := w.Write(dir, &b, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, uint64(i), uint64(i))
	}
	w.Close()
	w = mustOpen(t, opts)
	defer w.Close()
	got, _ := replayAll(t, w, nil)
	var txns []uint64
	for _, g := range got {
		txns = append(txns, g.rec.TxnID)
	}
	if fmt.Sprint(txns) != fmt.Sprint(want) {
		t.Fatalf("replay txn order %v, want %v", txns, want)
	}
}

func TestReplayFromFrontier(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/a", "/b")
	w := mustOpen(t, opts)
	w.Start(1)
	rng := rand.New(rand.NewPCG(3, 4))
	writeRecords(t, w, 0, 400, rng)
	front, lastWOID := w.Frontier()
	after := writeRecords(t, w, 400, 300, rng)
	w.Close()

	w = mustOpen(t, opts)
	defer w.Close()
	got, stats := replayAll(t, w, front)
	checkReplay(t, got, after)
	for _, g := range got {
		if g.rec.WOID <= lastWOID {
			t.Fatalf("record before frontier replayed: woid %d <= %d", g.rec.WOID, lastWOID)
		}
	}
	if stats.Records != int64(len(after)) || stats.MaxTxnID != 699 {
		t.Fatalf("stats %+v", stats)
	}
	// Only one of the two frontiers given: the other directory is read whole.
	got, _ = replayAll(t, w, front[:1])
	if len(got) <= len(after) {
		t.Fatalf("partial frontier replayed %d", len(got))
	}
}

// countingFS counts SyncData calls on segment files and makes each take a
// little while, like a disk.
type countingFS struct {
	vfs.FS
	syncs atomic.Int64
	delay time.Duration
	// gate, when set, blocks every SyncData until it is closed.
	gate atomic.Pointer[chan struct{}]
}

type countingFile struct {
	vfs.File
	fs *countingFS
}

func (f countingFile) SyncData() error {
	f.fs.syncs.Add(1)
	time.Sleep(f.fs.delay)
	if g := f.fs.gate.Load(); g != nil {
		<-*g
	}
	return f.File.SyncData()
}

func (fs *countingFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return countingFile{f, fs}, nil
}

func (fs *countingFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, o...)
	if err != nil {
		return nil, err
	}
	return countingFile{f, fs}, nil
}

func TestGroupCommit(t *testing.T) {
	mem := vfs.NewCrashableMem()
	cfs := &countingFS{FS: mem, delay: 200 * time.Microsecond}
	opts := testOpts(cfs, "/g")
	opts.SegmentSize = 256 << 10
	opts.ZeroChunk = 256 << 10
	w := mustOpen(t, opts)
	w.Start(1)
	const workers, perWorker = 32, 40
	var mu sync.Mutex
	var acked []written
	var wg sync.WaitGroup
	before := cfs.syncs.Load()
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b Batch
			for i := range perWorker {
				id := g*perWorker + i
				b.Reset()
				p := payloadFor(id, 100)
				b.Add(RecordPut, uint64(id), p)
				b.Add(RecordCommit, uint64(id), nil)
				ptrs, tok, err := w.Write(0, &b, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if err := w.Sync(context.Background(), tok); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, written{ptr: ptrs[0], txn: uint64(id), payload: p})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	syncs := cfs.syncs.Load() - before
	commits := int64(workers * perWorker)
	t.Logf("%d commits, %d fdatasyncs", commits, syncs)
	if syncs >= commits/2 {
		t.Fatalf("group commit ineffective: %d syncs for %d commits", syncs, commits)
	}
	// Everything acknowledged survives a crash that drops unsynced data.
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	w.Close()
	w2 := mustOpen(t, testOpts(crashed, "/g"))
	defer w2.Close()
	got, stats := replayAll(t, w2, nil)
	if len(stats.Damaged) != 0 {
		t.Fatalf("damage %+v", stats.Damaged)
	}
	present := map[Pointer]bool{}
	for _, g := range got {
		present[g.ptr] = true
	}
	for _, a := range acked {
		if !present[a.ptr] {
			t.Fatalf("acknowledged record %v lost", a.ptr)
		}
	}
}

func TestCrashDropsUnsynced(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			opts := testOpts(fs, "/x", "/y")
			w := mustOpen(t, opts)
			w.Start(1)
			rng := rand.New(rand.NewPCG(seed, 9))
			synced := writeRecords(t, w, 0, 200+rng.IntN(200), rng)
			var b Batch
			for i := range 50 { // unsynced
				b.Reset()
				b.Add(RecordPut, 10_000+uint64(i), payloadFor(i, 300))
				if _, _, err := w.Write(i%2, &b, nil); err != nil {
					t.Fatal(err)
				}
			}
			crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, 1))})
			w.Close()

			w2 := mustOpen(t, testOpts(crashed, "/x", "/y"))
			got, _ := replayAll(t, w2, nil)
			present := map[Pointer][]byte{}
			for _, g := range got {
				present[g.ptr] = g.rec.Payload
			}
			for _, s := range synced {
				if !bytes.Equal(present[s.ptr], s.payload) {
					t.Fatalf("synced record %v lost", s.ptr)
				}
			}
			// The reopened log is writable and its new records replay after.
			if err := w2.Start(1); err != nil {
				t.Fatal(err)
			}
			writeRecords(t, w2, 20_000, 20, rng)
			w2.Close()
			w3 := mustOpen(t, testOpts(crashed, "/x", "/y"))
			got3, _ := replayAll(t, w3, nil)
			if len(got3) != len(got)+20 {
				t.Fatalf("after reopen: %d records, want %d", len(got3), len(got)+20)
			}
			w3.Close()
		})
	}
}

// patchFile overwrites bytes of a file in place.
func patchFile(t *testing.T, fs vfs.FS, path string, off int64, fn func(b []byte)) {
	t.Helper()
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	fn(b)
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func segPath(w *WAL, id uint32) string {
	for _, s := range w.Segments() {
		if s.ID == id {
			return s.Path
		}
	}
	return ""
}

func TestTornTail(t *testing.T) {
	for _, mode := range []string{"garble", "truncate"} {
		t.Run(mode, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			opts := testOpts(fs, "/t")
			w := mustOpen(t, opts)
			w.Start(1)
			recs := writeRecords(t, w, 0, 30, rand.New(rand.NewPCG(5, 5)))
			crashed := fs.CrashClone(vfs.CrashCloneCfg{}) // no seal: the tail is the end
			w.Close()
			last := recs[len(recs)-1].ptr
			w = mustOpen(t, testOpts(crashed, "/t"))
			path := segPath(w, last.Segment())
			w.Close()
			switch mode {
			case "garble":
				patchFile(t, crashed, path, int64(last.Offset())+recordHeaderSize, func(b []byte) { b[0] ^= 0xff })
			case "truncate":
				f, _ := crashed.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
				fi, _ := f.Stat()
				f.Close()
				// Rewrite the file without its last record's payload.
				data := make([]byte, fi.Size())
				rf, _ := crashed.Open(path)
				rf.ReadAt(data, 0)
				rf.Close()
				nf, _ := crashed.Create(path, vfs.WriteCategoryUnspecified)
				nf.Write(data[:int64(last.Offset())+recordHeaderSize+3])
				nf.Close()
			}
			w = mustOpen(t, testOpts(crashed, "/t"))
			defer w.Close()
			got, stats := replayAll(t, w, nil)
			checkReplay(t, got, recs[:len(recs)-1])
			if len(stats.Damaged) != 0 {
				t.Fatalf("torn tail reported as damage: %+v", stats.Damaged)
			}
		})
	}
}

func TestBitFlipMidSegment(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/m")
	w := mustOpen(t, opts)
	w.Start(1)
	recs := writeRecords(t, w, 0, 40, rand.New(rand.NewPCG(6, 6)))
	w.Close()
	// Flip a bit in a record whose segment holds later records.
	victim := -1
	for i := 10; i < len(recs)-1; i++ {
		if recs[i+1].ptr.Segment() == recs[i].ptr.Segment() {
			victim = i
			break
		}
	}
	w = mustOpen(t, opts)
	path := segPath(w, recs[victim].ptr.Segment())
	w.Close()
	patchFile(t, fs, path, int64(recs[victim].ptr.Offset())+recordHeaderSize, func(b []byte) { b[1] ^= 0x10 })

	w = mustOpen(t, opts)
	defer w.Close()
	got, stats := replayAll(t, w, nil)
	want := append(append([]written{}, recs[:victim]...), recs[victim+1:]...)
	checkReplay(t, got, want)
	if len(stats.Damaged) != 1 {
		t.Fatalf("damage %+v", stats.Damaged)
	}
	d := stats.Damaged[0]
	if d.File != path || d.Start != int64(recs[victim].ptr.Offset()) || d.End != int64(recs[victim+1].ptr.Offset()) || d.EstimatedRecords != 1 {
		t.Fatalf("damage %+v, want %s [%d, %d)", d, path, recs[victim].ptr.Offset(), recs[victim+1].ptr.Offset())
	}
	_, err := w.ReadRecord(recs[victim].ptr, nil)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.File != path || ce.Offset != int64(recs[victim].ptr.Offset()) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadRecord on corrupt record: %v", err)
	}
	if _, err := w.ReadRecord(recs[victim+1].ptr, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadRecord(MakePointer(9999, 32), nil); err == nil {
		t.Fatal("unknown segment read succeeded")
	}
}

func TestRecycledSegmentNotReplayed(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/r")
	w := mustOpen(t, opts)
	w.Start(1)
	rng := rand.New(rand.NewPCG(7, 7))
	old := writeRecords(t, w, 0, 800, rng) // several segments
	var removed []uint32
	for _, s := range w.Segments() {
		if !s.Active {
			if err := w.Remove(s.ID); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, s.ID)
		}
	}
	if len(removed) < 2 {
		t.Fatalf("need removed segments, have %v", removed)
	}
	for _, s := range w.Segments() {
		if s.Active {
			if err := w.Remove(s.ID); err == nil {
				t.Fatal("removed the active segment")
			}
		}
	}
	// Write a few small records: they land in recycled files whose stale
	// records follow them.
	var kept []written
	for _, o := range old {
		if !containsID(removed, o.ptr.Segment()) {
			kept = append(kept, o)
		}
	}
	var b Batch
	for i := range 4 { // each forces a rotation; the later ones use spares
		b.Reset()
		b.Add(RecordPut, uint64(i+1), make([]byte, 40_000))
		if _, _, err := w.Write(0, &b, nil); err != nil {
			t.Fatal(err)
		}
	}
	fresh := writeRecords(t, w, 1000, 3, rng)
	names, _ := fs.List("/r")
	for _, n := range names {
		if strings.HasSuffix(n, spareSuffix) {
			t.Fatalf("spare %s was not recycled (files %v)", n, names)
		}
	}
	w.Close()

	w = mustOpen(t, opts)
	defer w.Close()
	got, stats := replayAll(t, w, nil)
	if len(stats.Damaged) != 0 {
		t.Fatalf("stale records reported as damage: %+v", stats.Damaged)
	}
	if len(got) != len(kept)+4+len(fresh) {
		t.Fatalf("replayed %d records, want %d", len(got), len(kept)+4+len(fresh))
	}
	for _, g := range got {
		if g.rec.TxnID < 1000 && g.rec.TxnID > 4 && containsID(removed, g.ptr.Segment()) {
			t.Fatalf("stale record %v replayed", g.ptr)
		}
	}
}

func containsID(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func TestLocked(t *testing.T) {
	for _, name := range []string{"mem", "disk"} {
		t.Run(name, func(t *testing.T) {
			var opts Options
			if name == "mem" {
				opts = testOpts(vfs.NewMem(), "/l1", "/l2")
			} else {
				opts = testOpts(vfs.Default, t.TempDir(), t.TempDir())
			}
			w := mustOpen(t, opts)
			_, err := Open(opts)
			if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), opts.Dirs[0]) {
				t.Fatalf("second open: %v", err)
			}
			// Partially overlapping: the first dir is free only after close.
			w.Close()
			w2, err := Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			w2.Close()
		})
	}
}

func TestSyncErrorPoisonsSegment(t *testing.T) {
	mem := vfs.NewCrashableMem()
	var failing atomic.Bool
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		if failing.Load() && op.Kind == errorfs.OpFileSyncData {
			return errorfs.ErrInjected
		}
		return nil
	})
	efs := errorfs.Wrap(mem, inj)
	opts := testOpts(efs, "/e")
	opts.ZeroChunk = 64 << 10 // zeroing finishes at once, so only commits sync
	w := mustOpen(t, opts)
	defer w.Close()
	w.Start(1)
	var b Batch
	b.Add(RecordPut, 1, []byte("ok"))
	_, tok0, err := w.Write(0, &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background(), tok0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // let the allocator finish the next segment
	failing.Store(true)
	var toks []SyncToken
	for i := range 8 {
		b.Reset()
		b.Add(RecordPut, uint64(i), []byte("doomed"))
		_, tok, err := w.Write(0, &b, nil)
		if err != nil {
			t.Fatal(err)
		}
		toks = append(toks, tok)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(toks))
	for i, tok := range toks {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = w.Sync(context.Background(), tok) }()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("waiter %d: %v", i, err)
		}
	}
	failing.Store(false)
	b.Reset()
	b.Add(RecordPut, 99, []byte("after"))
	_, tok, err := w.Write(0, &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Segment() == toks[0].Segment() {
		t.Fatalf("write after failed sync went to the poisoned segment %d", tok.Segment())
	}
	if err := w.Sync(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	// A sync already covered before the failure stays fine.
	if err := w.Sync(context.Background(), tok0); err != nil {
		t.Fatal(err)
	}
}

func TestSyncContextCancel(t *testing.T) {
	mem := vfs.NewCrashableMem()
	cfs := &countingFS{FS: mem}
	opts := testOpts(cfs, "/c")
	w := mustOpen(t, opts)
	defer w.Close()
	w.Start(1)
	var b Batch
	b.Add(RecordPut, 1, []byte("x"))
	_, tok0, err := w.Write(0, &b, nil) // waits for the first zeroed chunk
	if err != nil || w.Sync(context.Background(), tok0) != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	cfs.gate.Store(&gate)
	_, tok, err := w.Write(0, &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := w.Sync(ctx, tok); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	close(gate)
	if err := w.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
}

func TestBatchTooLargeAndOptions(t *testing.T) {
	fs := vfs.NewMem()
	w := mustOpen(t, testOpts(fs, "/o"))
	defer w.Close()
	w.Start(1)
	var b Batch
	b.Add(RecordPut, 1, make([]byte, 64<<10))
	if _, _, err := w.Write(0, &b, nil); !errors.Is(err, ErrBatchTooLarge) {
		t.Fatalf("got %v", err)
	}
	if _, _, err := w.Write(5, &b, nil); err == nil {
		t.Fatal("bad dir index accepted")
	}
	bad := []struct {
		mutate func(*Options)
		field  string
	}{
		{func(o *Options) { o.Dirs = nil }, "Dirs"},
		{func(o *Options) { o.SegmentSize = 1000 }, "SegmentSize"},
		{func(o *Options) { o.SegmentSize = 2 << 30 }, "SegmentSize"},
		{func(o *Options) { o.MinFreeBytes = -1 }, "MinFreeBytes"},
		{func(o *Options) { o.ZeroChunk = 1 }, "ZeroChunk"},
		{func(o *Options) { o.Dirs = []string{"/a", "/a"} }, "Dirs"},
	}
	for _, c := range bad {
		o := testOpts(vfs.NewMem(), "/v")
		c.mutate(&o)
		if _, err := Open(o); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Fatalf("want error naming %s, got %v", c.field, err)
		}
	}
}

func TestMinFreeBytes(t *testing.T) {
	fs := vfs.NewMem()
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 100 << 10, TotalBytes: 1 << 30})
	opts := testOpts(fs, "/f")
	opts.MinFreeBytes = 1 << 20
	w := mustOpen(t, opts)
	defer w.Close()
	err := w.Start(1)
	if !errors.Is(err, ErrDiskSpace) || !strings.Contains(err.Error(), "/f") {
		t.Fatalf("start: %v", err)
	}
	var b Batch
	b.Add(RecordPut, 1, []byte("x"))
	if _, _, err := w.Write(0, &b, nil); !errors.Is(err, ErrDiskSpace) {
		t.Fatalf("write: %v", err)
	}
	fs.TestingSetDiskUsage(vfs.DiskUsage{AvailBytes: 1 << 30, TotalBytes: 1 << 30})
	if _, _, err := w.Write(0, &b, nil); err != nil {
		t.Fatalf("write after space freed: %v", err)
	}
}

func TestDefaultFSRoundTrip(t *testing.T) {
	opts := testOpts(nil, t.TempDir()+"/a", t.TempDir()+"/b")
	opts.FS = nil
	w := mustOpen(t, opts)
	w.Start(1)
	recs := writeRecords(t, w, 0, 300, rand.New(rand.NewPCG(8, 8)))
	usage := w.DiskUsage()
	if usage[0] == 0 || usage[1] == 0 {
		t.Fatalf("disk usage %v", usage)
	}
	w.Close()
	w = mustOpen(t, opts)
	defer w.Close()
	got, _ := replayAll(t, w, nil)
	checkReplay(t, got, recs)
}

// xorCodec is a toy Codec exercising the flags/key id seam.
type xorCodec struct{}

func (xorCodec) Encode(dst, p []byte) ([]byte, uint8, uint16, error) {
	for _, c := range p {
		dst = append(dst, c^0x5a)
	}
	return dst, 1, 7, nil
}

func (xorCodec) Decode(dst, p []byte, flags uint8, key uint16) ([]byte, error) {
	if flags != 1 || key != 7 {
		return nil, fmt.Errorf("bad flags %d key %d", flags, key)
	}
	for _, c := range p {
		dst = append(dst, c^0x5a)
	}
	return dst, nil
}

func TestCodecSeam(t *testing.T) {
	fs := vfs.NewMem()
	opts := testOpts(fs, "/k")
	opts.Codec = xorCodec{}
	w := mustOpen(t, opts)
	w.Start(1)
	recs := writeRecords(t, w, 0, 50, rand.New(rand.NewPCG(9, 9)))
	rec, err := w.ReadRecord(recs[3].ptr, nil)
	if err != nil || !bytes.Equal(rec.Payload, recs[3].payload) || rec.Flags != 1 || rec.KeyID != 7 {
		t.Fatalf("read via codec: %v", err)
	}
	w.Close()
	w = mustOpen(t, opts)
	got, _ := replayAll(t, w, nil)
	checkReplay(t, got, recs)
	w.Close()
	opts.Codec = nil
	w = mustOpen(t, opts)
	defer w.Close()
	if _, err := w.Replay(nil, func(Record, Pointer) error { return nil }, nil); err == nil {
		t.Fatal("encoded records replayed without a codec")
	}
}

// TestWriterOvertakesZeroing: when appends reach the part of a new segment
// the allocator has not zeroed yet, the writer does not wait for it: zeroing
// of that segment stops and the appends (synced) survive a crash.
func TestWriterOvertakesZeroing(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/z")
	gate := make(chan struct{})
	opts.zeroGate = gate
	w := mustOpen(t, opts)
	w.Start(1)
	rng := rand.New(rand.NewPCG(3, 3))
	done := make(chan []written)
	go func() { done <- writeRecords(t, w, 0, 40, rng) }() // ~12 KiB of the 64 KiB segment
	var recs []written
	select {
	case recs = <-done:
	case <-time.After(10 * time.Second):
		close(gate)
		t.Fatal("writer waited for the parked allocator")
	}
	active := w.dirs[0].active
	if z, off := active.zeroed.Load(), active.written.Load(); z >= off {
		t.Fatalf("segment zeroed to %d, written to %d: the writer did not overtake", z, off)
	}
	w.dirs[0].amu.Lock()
	overtaken := active.overtaken
	w.dirs[0].amu.Unlock()
	if !overtaken {
		t.Fatal("segment not marked overtaken")
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	close(gate)
	// Zeroing resumes elsewhere but must not touch the overtaken segment:
	// more appends and a clean close keep every record.
	recs = append(recs, writeRecords(t, w, 100, 40, rng)...)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustOpen(t, testOpts(fs, "/z"))
	got, stats := replayAll(t, w, nil)
	w.Close()
	if len(stats.Damaged) != 0 {
		t.Fatalf("damage after clean close: %+v", stats.Damaged)
	}
	checkReplay(t, got, recs)

	w = mustOpen(t, testOpts(crashed, "/z"))
	got, _ = replayAll(t, w, nil)
	w.Close()
	checkReplay(t, got, recs[:40])
}

// TestSparesOption: removed segments are kept as spares up to Options.Spares
// per directory (none when negative), the rest deleted.
func TestSparesOption(t *testing.T) {
	for _, c := range []struct{ spares, want int }{{0, defaultSpares}, {5, 5}, {-1, 0}} {
		t.Run(fmt.Sprint(c.spares), func(t *testing.T) {
			fs := vfs.NewMem()
			opts := testOpts(fs, "/s")
			opts.Spares = c.spares
			w := mustOpen(t, opts)
			w.Start(1)
			writeRecords(t, w, 0, 2000, rand.New(rand.NewPCG(5, 5))) // ~9 segments
			removed := 0
			for _, s := range w.Segments() {
				if !s.Active {
					if err := w.Remove(s.ID); err != nil {
						t.Fatal(err)
					}
					removed++
				}
			}
			if removed < 7 {
				t.Fatalf("only %d segments to remove", removed)
			}
			names, _ := fs.List("/s")
			spares := 0
			for _, n := range names {
				if strings.HasSuffix(n, spareSuffix) {
					spares++
				}
			}
			if spares != c.want {
				t.Fatalf("%d spares kept, want %d (files %v)", spares, c.want, names)
			}
			w.Close()
		})
	}
	o := testOpts(vfs.NewMem(), "/s")
	o.Spares = maxSpares + 1
	if _, err := Open(o); err == nil || !strings.Contains(err.Error(), "Spares") {
		t.Fatalf("Spares %d accepted: %v", o.Spares, err)
	}
}

// TestReadRecords checks the batched reader against ReadRecord: runs in one
// segment, pointers out of order, across segments and directories, records
// bigger than the read-ahead at the end of a run, a corrupt record in the
// middle of a run (reported, its neighbours still read) and an unknown
// segment.
func TestReadRecords(t *testing.T) {
	fs := vfs.NewCrashableMem()
	opts := testOpts(fs, "/r1", "/r2")
	opts.SegmentSize = 1 << 20
	w := mustOpen(t, opts)
	defer w.Close()
	w.Start(1)
	rng := rand.New(rand.NewPCG(21, 21))
	var recs []written
	var b Batch
	// flush writes b to dir and fills in the pointers of its records.
	flush := func(dir int) {
		ptrs, tok, err := w.Write(dir, &b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		for k, p := range ptrs {
			recs[len(recs)-len(ptrs)+k].ptr = p
		}
		b.Reset()
	}
	for i := range 3000 {
		if b.Count() > 0 && (i%50 == 0 || b.Len() > 64<<10) {
			flush(i % 2)
		}
		size := 1 + rng.IntN(300)
		if rng.IntN(40) == 0 {
			size = readAhead + rng.IntN(3*readAhead) // crosses the read-ahead
		}
		p := payloadFor(i, size)
		b.Add(RecordPut, uint64(i), p)
		recs = append(recs, written{txn: uint64(i), payload: p})
	}
	flush(0)

	check := func(name string, sel []written, wantErr map[int]bool) {
		t.Helper()
		ps := make([]Pointer, len(sel))
		for i, r := range sel {
			ps[i] = r.ptr
		}
		next := 0
		_, err := w.ReadRecords(ps, nil, func(i int, rec Record, err error) error {
			if i != next {
				t.Fatalf("%s: fn called for %d, want %d", name, i, next)
			}
			next++
			if wantErr[i] {
				if err == nil {
					t.Fatalf("%s: record %d (%v) read without error", name, i, ps[i])
				}
				return nil
			}
			if err != nil || rec.TxnID != sel[i].txn || !bytes.Equal(rec.Payload, sel[i].payload) {
				t.Fatalf("%s: record %d at %v: %v (txn %d)", name, i, ps[i], err, rec.TxnID)
			}
			return nil
		})
		if err != nil || next != len(sel) {
			t.Fatalf("%s: %v after %d of %d", name, err, next, len(sel))
		}
	}
	check("all in write order", recs, nil)
	shuffled := slices.Clone(recs)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	check("shuffled", shuffled[:500], nil)
	var sparse []written
	for i := 0; i < len(recs); i += 1 + rng.IntN(5) {
		sparse = append(sparse, recs[i])
	}
	check("sparse ascending", sparse, nil)

	// Corrupt one record in the middle of a run: only it fails.
	victim := 1234
	patchFile(t, fs, segPath(w, recs[victim].ptr.Segment()), int64(recs[victim].ptr.Offset())+recordHeaderSize, func(b []byte) { b[0] ^= 1 })
	check("corrupt record", recs, map[int]bool{victim: true})
	_, err := w.ReadRecords([]Pointer{recs[victim].ptr}, nil, func(_ int, _ Record, err error) error {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("single corrupt record: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Unknown segment and a misaligned offset inside a run.
	bad := append([]written{recs[0], {ptr: MakePointer(9999, 32)}, recs[1]}, written{ptr: MakePointer(recs[2].ptr.Segment(), recs[2].ptr.Offset()+3)}, recs[3])
	check("bad pointers", bad, map[int]bool{1: true, 3: true})

	// fn's error stops the reading.
	stop := errors.New("stop")
	calls := 0
	if _, err := w.ReadRecords([]Pointer{recs[0].ptr, recs[1].ptr, recs[2].ptr}, nil, func(int, Record, error) error {
		calls++
		return stop
	}); err != stop || calls != 1 {
		t.Fatalf("fn error: %v after %d calls", err, calls)
	}
}

// TestDamagedEndOfSealedSegment: records at the end of a segment that is
// not its directory's last, damaged together with the seal, are reported
// as damage (a later segment proves the segment was sealed and synced, so
// this is no torn tail); a damaged seal alone loses nothing and is not
// reported; the same damage in the directory's last segment is a torn tail.
func TestDamagedEndOfSealedSegment(t *testing.T) {
	for _, mode := range []string{"records+seal", "seal only", "last segment"} {
		t.Run(mode, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			opts := testOpts(fs, "/s")
			w := mustOpen(t, opts)
			w.Start(1)
			recs := writeRecords(t, w, 0, 400, rand.New(rand.NewPCG(8, 8)))
			w.Close()
			first, last := recs[0].ptr.Segment(), recs[len(recs)-1].ptr.Segment()
			if last-first < 2 {
				t.Fatalf("records span segments %d..%d; the test needs three", first, last)
			}
			seg := first + 1 // sealed, with later segments
			if mode == "last segment" {
				seg = last
			}
			var in []int
			for i, r := range recs {
				if r.ptr.Segment() == seg {
					in = append(in, i)
				}
			}
			victims := in[len(in)-3:]
			w = mustOpen(t, opts)
			path := segPath(w, seg)
			w.Close()
			lastRec := recs[victims[2]]
			sealOff := int64(lastRec.ptr.Offset()) + int64(encodedSize(len(lastRec.payload)))
			patchFile(t, fs, path, sealOff, func(b []byte) { b[0] ^= 0xff }) // the seal's CRC (or the zeroes after the last segment's end)
			if mode != "seal only" {
				for _, v := range victims {
					patchFile(t, fs, path, int64(recs[v].ptr.Offset())+recordHeaderSize, func(b []byte) { b[0] ^= 0xff })
				}
			}
			w = mustOpen(t, opts)
			defer w.Close()
			got, stats := replayAll(t, w, nil)
			want := recs
			if mode != "seal only" {
				want = append(append([]written{}, recs[:victims[0]]...), recs[victims[2]+1:]...)
			}
			checkReplay(t, got, want)
			if mode != "records+seal" {
				if len(stats.Damaged) != 0 {
					t.Fatalf("reported as damage: %+v", stats.Damaged)
				}
				return
			}
			if len(stats.Damaged) != 1 {
				t.Fatalf("damage %+v, want one range", stats.Damaged)
			}
			d := stats.Damaged[0]
			if d.File != path || d.Start != int64(recs[victims[0]].ptr.Offset()) || d.End != sealOff+sealRecordSize || d.EstimatedRecords != 3 ||
				!strings.Contains(d.Reason, "without a seal record") {
				t.Fatalf("damage %+v, want %s [%d, %d) with 3 records", d, path, recs[victims[0]].ptr.Offset(), sealOff+sealRecordSize)
			}
		})
	}
}
