package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// Storage faults: sticky sync errors, serialised syncs, bounded reads.

// segName matches the files of segment id whatever their current name
// (errorfs and the hooks below see the name a file was opened under: the
// temporary one of a new segment, the spare one of a recycled one).
func segName(id uint32) string { return fmt.Sprintf("%010d", id) }

func writeOne(t *testing.T, w *WAL, txn uint64, payload []byte) SyncToken {
	t.Helper()
	var b Batch
	b.Add(RecordPut, txn, payload)
	_, tok, err := w.Write(0, &b, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fillSegment writes a batch that does not fit in what is left of the active
// segment, so Write rotates (retiring the old segment) first.
func fillSegment(t *testing.T, w *WAL) SyncToken {
	t.Helper()
	return writeOne(t, w, 1000, make([]byte, w.opts.SegmentSize-128))
}

// syncDataFailer fails every fdatasync of a file whose path contains the
// string failPath holds (none while it holds nil).
func syncDataFailer() (*atomic.Pointer[string], errorfs.Injector) {
	failPath := new(atomic.Pointer[string])
	return failPath, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if p := failPath.Load(); p != nil && op.Kind == errorfs.OpFileSyncData && strings.Contains(op.Path, *p) {
			return errorfs.ErrInjected
		}
		return nil
	})
}

// TestSyncAllReportsRetiredSegmentError: a record's segment is retired (by
// rotation) and its retirement fdatasync fails. SyncAll, which a checkpoint
// relies on before recording the record as done, must report that failure,
// also later when a new fdatasync would succeed (sticky), and not only the
// state of the active segment.
func TestSyncAllReportsRetiredSegmentError(t *testing.T) {
	mem := vfs.NewCrashableMem()
	failPath, inj := syncDataFailer()
	opts := testOpts(errorfs.Wrap(mem, inj), "/r")
	opts.ZeroChunk = opts.SegmentSize
	w := mustOpen(t, opts)
	defer w.Close()
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	tok := writeOne(t, w, 1, []byte("take commit"))
	name := segName(tok.Segment())
	failPath.Store(&name)
	next := fillSegment(t, w) // retires tok's segment; its fdatasync fails
	if next.Segment() == tok.Segment() {
		t.Fatal("no rotation")
	}
	failPath.Store(nil)
	for i := range 2 { // the second time a fresh fdatasync would succeed
		err := w.SyncAll(context.Background())
		if !errors.Is(err, errorfs.ErrInjected) {
			t.Fatalf("SyncAll #%d after a failed fdatasync of retired segment %d: %v, want the injected error", i, tok.Segment(), err)
		}
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("error does not name the segment file: %v", err)
		}
	}
	if err := w.Sync(context.Background(), tok); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Sync of the lost record: %v", err)
	}
	// The segment written after the failure is fine on its own.
	if err := w.Sync(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	// SyncUpTo the current frontier covers the poisoned segment too.
	pos, _ := w.Frontier()
	if err := w.SyncUpTo(context.Background(), pos); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("SyncUpTo(%v): %v", pos, err)
	}
	// Once the poisoned segment is removed, SyncAll succeeds again.
	if err := w.Remove(tok.Segment()); err != nil {
		t.Fatal(err)
	}
	if err := w.SyncAll(context.Background()); err != nil {
		t.Fatalf("SyncAll after removing the poisoned segment: %v", err)
	}
}

// TestSyncAllSyncsInheritedSegments: records an earlier process wrote but
// may not have synced (it was killed) are in the page cache when Replay
// reads them; the first SyncAll makes them durable before a checkpoint can
// rely on them.
func TestSyncAllSyncsInheritedSegments(t *testing.T) {
	mem := vfs.NewCrashableMem()
	opts := testOpts(mem, "/i")
	w := mustOpen(t, opts)
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	writeOne(t, w, 1, []byte("written, never synced"))
	// The process dies (its page cache survives): no Close.
	w.releaseLocks()
	w2 := mustOpen(t, opts)
	defer w2.Close()
	got, _ := replayAll(t, w2, nil)
	if len(got) != 1 {
		t.Fatalf("replayed %d records, want 1", len(got))
	}
	if err := w2.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Power loss now keeps the replayed record.
	w3 := mustOpen(t, testOpts(mem.CrashClone(vfs.CrashCloneCfg{}), "/i"))
	defer w3.Close()
	if got, _ := replayAll(t, w3, nil); len(got) != 1 {
		t.Fatalf("after SyncAll and a power loss: %d records, want 1", len(got))
	}
}

// wbErrFS models how Linux reports a writeback error of an open file: armed,
// the file of segment match has one pending, and the first fdatasync that
// looks collects it; a concurrent one that does not is told success. An
// fdatasync in flight waits (up to a while) for a second one to overlap it,
// then the second collects the error, a little later: the first returns
// success for the very pages that were lost. With no overlap the only
// fdatasync collects it.
type wbErrFS struct {
	vfs.FS
	match string

	mu       sync.Mutex
	armed    bool
	pending  bool
	inflight int
	first    chan struct{} // closed when an fdatasync of match is in flight
	second   chan struct{} // closed when a second one overlaps it
	overlaps int
}

type wbErrFile struct {
	vfs.File
	fs   *wbErrFS
	name string
}

func (fs *wbErrFS) arm(match string) {
	fs.mu.Lock()
	fs.match, fs.armed, fs.pending = match, true, true
	fs.first, fs.second = make(chan struct{}), make(chan struct{})
	fs.mu.Unlock()
}

func (fs *wbErrFS) collect() error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.pending {
		fs.pending = false
		return errorfs.ErrInjected
	}
	return nil
}

func (f wbErrFile) SyncData() error {
	fs := f.fs
	fs.mu.Lock()
	if !fs.armed || !strings.Contains(f.name, fs.match) {
		fs.mu.Unlock()
		return f.File.SyncData()
	}
	fs.inflight++
	n := fs.inflight
	switch n {
	case 1:
		close(fs.first)
	case 2:
		fs.overlaps++
		close(fs.second)
	}
	second := fs.second
	fs.mu.Unlock()
	defer func() {
		fs.mu.Lock()
		fs.inflight--
		fs.mu.Unlock()
	}()
	if err := f.File.SyncData(); err != nil {
		return err
	}
	if n == 1 {
		select {
		case <-second:
			return nil // the overlapping one collects the error
		case <-time.After(300 * time.Millisecond):
			return fs.collect()
		}
	}
	time.Sleep(50 * time.Millisecond) // the first one reports first
	return fs.collect()
}

func (fs *wbErrFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	if err != nil {
		return nil, err
	}
	return wbErrFile{f, fs, name}, nil
}

func (fs *wbErrFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, o ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, o...)
	if err != nil {
		return nil, err
	}
	return wbErrFile{f, fs, name}, nil
}

func waitClosed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestOverlappingSyncsNeverHideAnError: a commit's group-commit fdatasync
// is in flight when another fdatasync of the same file starts (the segment's
// retirement by a rotating writer, or the zeroer) and collects the writeback
// error of the commit's pages. The commit must not be told it is durable.
func TestOverlappingSyncsNeverHideAnError(t *testing.T) {
	for _, other := range []string{"retirement", "zeroer"} {
		t.Run(other, func(t *testing.T) {
			wfs := &wbErrFS{FS: vfs.NewCrashableMem()}
			opts := testOpts(wfs, "/o")
			gate := make(chan struct{})
			if other == "zeroer" {
				opts.zeroGate = gate
			} else {
				opts.ZeroChunk = opts.SegmentSize
			}
			w := mustOpen(t, opts)
			defer w.Close()
			defer close(gate)
			if err := w.Start(1); err != nil {
				t.Fatal(err)
			}
			s := w.dirs[0].active
			if other == "zeroer" {
				// Let the allocator zero one chunk, so the record fits
				// in zeroed space and zeroing goes on afterwards.
				gate <- struct{}{}
				for s.zeroed.Load() < opts.ZeroChunk {
					time.Sleep(time.Millisecond)
				}
			}
			tok := writeOne(t, w, 1, []byte("commit"))
			if tok.Segment() != s.id {
				t.Fatalf("record in segment %d, want %d", tok.Segment(), s.id)
			}
			wfs.arm(segName(s.id))
			res := make(chan error, 1)
			go func() { res <- w.Sync(context.Background(), tok) }()
			waitClosed(t, wfs.first, "the commit's fdatasync")
			otherDone := make(chan struct{})
			go func() {
				defer close(otherDone)
				if other == "zeroer" {
					gate <- struct{}{} // zero the next chunk and sync it
				} else if next := fillSegment(t, w); next.Segment() == s.id {
					t.Error("no rotation") // it should retire and sync s
				}
			}()
			err := <-res
			waitClosed(t, otherDone, other)
			if other == "zeroer" {
				// Wait until the zeroer's chunk is done or failed.
				deadline := time.Now().Add(10 * time.Second)
				for s.stickyErr() == nil && s.zeroed.Load() < 2*opts.ZeroChunk && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			wfs.mu.Lock()
			overlaps := wfs.overlaps
			wfs.mu.Unlock()
			t.Logf("commit sync: %v; overlapping fdatasyncs: %d", err, overlaps)
			if !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("commit whose pages hit a writeback error was told %v", err)
			}
			if overlaps != 0 {
				t.Fatalf("%d fdatasyncs of one segment overlapped", overlaps)
			}
			if err := w.SyncAll(context.Background()); !errors.Is(err, errorfs.ErrInjected) {
				t.Fatalf("SyncAll after the failure: %v", err)
			}
		})
	}
}

// allocDuring returns the bytes allocated while fn ran.
func allocDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestReadRecordCorruptLengthAllocatesLittle: a record length with a flipped
// bit (here: 48 MiB in a 64 MiB segment) must not make a read allocate that
// much before the record is found corrupt; the error names file and offset.
func TestReadRecordCorruptLengthAllocatesLittle(t *testing.T) {
	fs := vfs.NewMem()
	opts := testOpts(fs, "/l")
	opts.SegmentSize = 64 << 20
	gate := make(chan struct{}) // no zeroing: the file holds the appends only
	opts.zeroGate = gate
	w := mustOpen(t, opts)
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	var b Batch
	b.Add(RecordPut, 1, []byte("first"))
	b.Add(RecordPut, 2, []byte("second"))
	ptrs, tok, err := w.Write(0, &b, nil)
	if err != nil || w.Sync(context.Background(), tok) != nil {
		t.Fatal(err)
	}
	path := segPath(w, ptrs[0].Segment())
	const bogus = 48 << 20
	patchFile(t, fs, path, int64(ptrs[0].Offset()), func(b []byte) { binary.LittleEndian.PutUint32(b[4:8], bogus) })

	check := func(t *testing.T, w *WAL, wantReason string) {
		t.Helper()
		var rerr, rserr error
		var buf []byte
		n := allocDuring(func() {
			_, rerr = w.ReadRecord(ptrs[0], nil)
			buf, _ = w.ReadRecords(ptrs, buf, func(i int, rec Record, err error) error {
				if i == 0 {
					rserr = err
				} else if err != nil || string(rec.Payload) != "second" {
					t.Errorf("record after the corrupt one: %q, %v", rec.Payload, err)
				}
				return nil
			})
		})
		for _, err := range []error{rerr, rserr} {
			var ce *CorruptionError
			if !errors.As(err, &ce) || ce.File != path || ce.Offset != int64(ptrs[0].Offset()) || !strings.Contains(ce.Reason, wantReason) {
				t.Fatalf("got %v, want a corruption error at %s offset %d: %s", err, path, ptrs[0].Offset(), wantReason)
			}
		}
		t.Logf("%v; allocated %d bytes", rerr, n)
		if n > 2<<20 {
			t.Fatalf("reading a record claiming %d bytes allocated %d bytes", bogus, n)
		}
	}
	t.Run("written by this process", func(t *testing.T) { check(t, w, "exceeds") })
	// Close stops the allocator, parked at the gate: release it once
	// stopping is set, so that it zeroes nothing more.
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	for d := w.dirs[0]; ; time.Sleep(time.Millisecond) {
		d.amu.Lock()
		stopping := d.stopping
		d.amu.Unlock()
		if stopping {
			break
		}
	}
	close(gate)
	<-closed

	// Reopened, the written end is unknown: the checksum is streamed.
	w = mustOpen(t, testOpts(fs, "/l"))
	t.Run("short file", func(t *testing.T) { check(t, w, "beyond end of file") })
	w.Close()
	// The file is long enough (e.g. preallocated and zeroed).
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8), opts.SegmentSize-8); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w = mustOpen(t, testOpts(fs, "/l"))
	t.Run("long file", func(t *testing.T) { check(t, w, "checksum mismatch") })
	w.Close()
	// After a Replay, the end of the valid records bounds the length.
	w = mustOpen(t, testOpts(fs, "/l"))
	defer w.Close()
	if got, _ := replayAll(t, w, nil); len(got) != 1 {
		t.Fatalf("replayed %d records, want the second one", len(got))
	}
	t.Run("replayed", func(t *testing.T) { check(t, w, "exceeds") })
}

// TestZeroerSyncFailureWithoutRecordsInDoubt: the zeroer's fdatasync of a
// segment that has no unsynced records fails. The segment takes no more
// appends, but nothing written is in doubt, so SyncAll (a checkpoint) goes
// on succeeding.
func TestZeroerSyncFailureWithoutRecordsInDoubt(t *testing.T) {
	mem := vfs.NewCrashableMem()
	failPath, inj := syncDataFailer()
	opts := testOpts(errorfs.Wrap(mem, inj), "/z")
	gate := make(chan struct{})
	opts.zeroGate = gate
	w := mustOpen(t, opts)
	defer w.Close()
	defer close(gate)
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	tok0 := writeOne(t, w, 1, []byte("durable"))
	if err := w.Sync(context.Background(), tok0); err != nil {
		t.Fatal(err)
	}
	s := w.dirs[0].active
	// The writer overtook zeroing of s; once the next segment is
	// prepared, let its zeroing fail.
	deadline := time.Now().Add(10 * time.Second)
	step := func(what string, done func() bool) {
		t.Helper()
		for !done() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			select {
			case gate <- struct{}{}: // one chunk (of whichever segment)
			case <-time.After(time.Millisecond):
			}
		}
	}
	var next *segment
	step("the next segment", func() bool {
		w.mu.RLock()
		defer w.mu.RUnlock()
		next = w.segs[s.id+1]
		return next != nil
	})
	name := segName(next.id)
	failPath.Store(&name)
	step("the zeroer's failed fdatasync", func() bool { return next.stickyErr() != nil })
	failPath.Store(nil)
	if err := w.SyncAll(context.Background()); err != nil {
		t.Fatalf("SyncAll with no record in doubt: %v", err)
	}
	// Rotation skips the poisoned prepared segment's appends.
	tok := fillSegment(t, w)
	if tok.Segment() == next.id {
		t.Fatalf("appended to the poisoned segment %d", next.id)
	}
	if err := w.Sync(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	if err := w.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
}
