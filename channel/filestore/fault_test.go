package filestore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/wal"
)

// Fault injection with errorfs over the crashable memory FS: EIO on write
// and fdatasync of a WAL segment, ENOSPC on the WAL and on the checkpoint,
// and a checkpoint that fails (or the machine dies) at every step of its
// write sequence. After every fault the store is crash-cloned and reopened:
// every acknowledged event must be there exactly once, in put order.

// faultRule is an errorfs injector: while on, operations that match fail
// with err. It fails at most limit matches (0 = no limit), then stays
// quiet. It also counts, per kind and path, the operations it saw while
// watching, so a test can assert that a failed fsync is never retried.
type faultRule struct {
	mu       sync.Mutex
	on       bool
	match    func(op errorfs.Op) bool
	err      error
	limit    int
	hits     int
	watching bool
	seen     map[string]int // "kind path" -> count, while watching
	// crashAt: when ≥ 0, the crashAt-th operation (counting every op from
	// On) fails and, with sticky set, so does every later one.
	crashAt int
	sticky  bool
	ops     int
}

func newFaultRule() *faultRule { return &faultRule{seen: map[string]int{}, crashAt: -1} }

func (r *faultRule) String() string { return "faultRule" }

func (r *faultRule) MaybeError(op errorfs.Op) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.watching {
		r.seen[fmt.Sprintf("%d %s", op.Kind, op.Path)]++
	}
	if !r.on {
		return nil
	}
	if r.crashAt >= 0 {
		i := r.ops
		r.ops++
		if i == r.crashAt || (r.sticky && i > r.crashAt) {
			r.hits++
			return r.err
		}
		return nil
	}
	if r.match != nil && r.match(op) && (r.limit == 0 || r.hits < r.limit) {
		r.hits++
		return r.err
	}
	return nil
}

// arm switches the rule on for matching operations.
func (r *faultRule) arm(err error, limit int, match func(op errorfs.Op) bool) {
	r.mu.Lock()
	r.on, r.err, r.limit, r.match, r.hits = true, err, limit, match, 0
	r.crashAt, r.ops = -1, 0
	r.mu.Unlock()
}

// armAt switches the rule on to fail the k-th operation from now (and every
// later one when sticky).
func (r *faultRule) armAt(k int, sticky bool, err error) {
	r.mu.Lock()
	r.on, r.err, r.crashAt, r.sticky, r.ops, r.hits, r.match = true, err, k, sticky, 0, 0, nil
	r.mu.Unlock()
}

func (r *faultRule) off() (hits int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.on = false
	return r.hits
}

func (r *faultRule) watch(on bool) {
	r.mu.Lock()
	r.watching = on
	if on {
		r.seen = map[string]int{}
	}
	r.mu.Unlock()
}

func (r *faultRule) count(kind errorfs.OpKind, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[fmt.Sprintf("%d %s", kind, path)] + r.seen[fmt.Sprintf("%d %s.tmp", kind, path)]
}

// onSegment reports whether an operation's path is segment seg. A segment
// is created as seg+".tmp" and renamed; errorfs names a file by the path it
// was opened under.
func onSegment(path, seg string) bool { return strings.TrimSuffix(path, ".tmp") == seg }

// faultTotals counts injected faults over the whole package run (reported by
// -v through t.Logf in the tests).
var faultTotals struct {
	sync.Mutex
	n int
}

func noteFaults(t *testing.T, n int) {
	faultTotals.Lock()
	faultTotals.n += n
	total := faultTotals.n
	faultTotals.Unlock()
	t.Logf("faults injected: %d (package total %d)", n, total)
}

// faultStore opens a small store on errorfs(crashable mem).
func faultStore(t *testing.T, dirs int) (*Store, *vfs.MemFS, *faultRule, Options) {
	t.Helper()
	mem := vfs.NewCrashableMem()
	rule := newFaultRule()
	o := testFileOptions(errorfs.Wrap(mem, rule), dirs)
	return mustOpen(t, o), mem, rule, o
}

// activeSegment returns the path of directory dir's active WAL segment.
func activeSegment(s *Store, dir int) string {
	pos, _ := s.wal.Frontier()
	return fmt.Sprintf("/data%d/%010d.wal", dir, pos[dir].Segment)
}

// tryPut puts events [from, to) in one txn and returns Commit's error.
func tryPut(t *testing.T, s *Store, from, to int) error {
	t.Helper()
	tx, err := s.BeginPut(context.Background(), channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := from; i < to; i++ {
		if err := tx.Put("c1", ev(i)); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	return tx.Commit(context.Background())
}

func queued(t *testing.T, s *Store) int64 {
	t.Helper()
	st, err := s.Stats(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	return st.Size
}

// checkRecovered opens o on fs and drains c1: every id in acked must be
// there exactly once, in order; ids in maybe may be there (once, in order);
// nothing else may be. The store is closed afterwards.
func checkRecovered(t *testing.T, o Options, fs vfs.FS, acked, maybe []int) {
	t.Helper()
	o.FS = fs
	s, err := Open(o)
	if err != nil {
		t.Fatalf("reopen after fault: %v", err)
	}
	defer s.Close()
	got := drain(t, s, "c1")
	want := map[int]bool{}
	for _, id := range acked {
		want[id] = true
	}
	allowed := map[int]bool{}
	for _, id := range maybe {
		allowed[id] = true
	}
	seen := map[int]bool{}
	last := -1
	for _, id := range got {
		switch {
		case seen[id]:
			t.Fatalf("event %d delivered twice after reopen", id)
		case !want[id] && !allowed[id]:
			t.Fatalf("event %d was never acknowledged nor in flight, but appeared after reopen", id)
		case id < last:
			t.Fatalf("event %d after %d: order lost", id, last)
		}
		seen[id] = true
		last = id
	}
	for _, id := range acked {
		if !seen[id] {
			t.Fatalf("acknowledged event %d lost after reopen (got %d events)", id, len(got))
		}
	}
}

// walFaultCase drives one WAL fault: acked puts, a put whose commit hits the
// fault, more puts once the fault is gone, then a crash clone and a clean
// reopen must both recover exactly the acknowledged events.
func walFaultCase(t *testing.T, errno error, matchKinds []errorfs.OpKind, wantNoResync bool) {
	s, mem, rule, o := faultStore(t, 1)
	putRange(t, s, "c1", 0, 50, 10)
	acked := seq(0, 50)

	seg := activeSegment(s, 0)
	rule.arm(errno, 1, func(op errorfs.Op) bool {
		if !onSegment(op.Path, seg) {
			return false
		}
		for _, k := range matchKinds {
			if op.Kind == k && (k != errorfs.OpFileWriteAt || op.Offset > 0) {
				return true
			}
		}
		return false
	})
	rule.watch(true)
	err := tryPut(t, s, 50, 60)
	hits := rule.off()
	if hits != 1 {
		t.Fatalf("fault injected %d times, want 1", hits)
	}
	noteFaults(t, hits)
	if err == nil {
		t.Fatalf("commit succeeded although %v was injected", errno)
	}
	if !errors.Is(err, errno) {
		t.Fatalf("commit error %q does not wrap %v", err, errno)
	}
	if n := queued(t, s); n != 50 {
		t.Fatalf("after the failed commit %d events are queued, want 50 (failed txn must not be visible)", n)
	}
	maybe := seq(50, 60)

	// Later commits succeed, on a fresh segment.
	putRange(t, s, "c1", 60, 100, 10)
	acked = append(acked, seq(60, 100)...)
	if got := activeSegment(s, 0); got == seg {
		t.Fatalf("WAL still appends to segment %s after a failure on it", seg)
	}
	if n := queued(t, s); n != 90 {
		t.Fatalf("%d events queued, want 90", n)
	}
	if wantNoResync {
		if n := rule.count(errorfs.OpFileSyncData, seg) + rule.count(errorfs.OpFileSync, seg); n != 1 {
			t.Fatalf("segment %s saw %d fsyncs; the failed one must never be retried", seg, n)
		}
	}
	if n := rule.count(errorfs.OpFileWriteAt, seg); n > 1 {
		t.Fatalf("segment %s written %d times; nothing may be appended after the failure", seg, n)
	}
	rule.watch(false)

	// Power loss now (only synced data survives), then a clean close.
	checkRecovered(t, o, mem.CrashClone(vfs.CrashCloneCfg{}), acked, maybe)
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 7))
		clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
		checkRecovered(t, o, clone, acked, maybe)
	}
	if err := s.Close(); err != nil {
		t.Logf("close after fault: %v", err)
	}
	checkRecovered(t, o, mem, acked, maybe)
}

func TestFaultWALSyncEIO(t *testing.T) {
	walFaultCase(t, syscall.EIO, []errorfs.OpKind{errorfs.OpFileSyncData, errorfs.OpFileSync}, true)
}

func TestFaultWALWriteEIO(t *testing.T) {
	walFaultCase(t, syscall.EIO, []errorfs.OpKind{errorfs.OpFileWriteAt}, false)
}

func TestFaultWALWriteENOSPC(t *testing.T) {
	walFaultCase(t, syscall.ENOSPC, []errorfs.OpKind{errorfs.OpFileWriteAt}, false)
}

// TestFaultWALSyncEIOEarlierSegmentOfTxn: a put txn large enough to flush
// part of its records before Commit writes them to segment X; another txn's
// fdatasync of X then fails (X is poisoned, its sync never retried). When
// the first txn commits, its commit record goes to a fresh segment Y whose
// sync succeeds, but its records in X were never made durable: acking it
// loses events at the next power loss.
func TestFaultWALSyncEIOEarlierSegmentOfTxn(t *testing.T) {
	s, mem, rule, o := faultStore(t, 1)
	defer s.Close()
	ctx := context.Background()
	putRange(t, s, "c1", 0, 10, 10)
	acked := seq(0, 10)

	// Txn A: enough bytes to force a flush (flushBytes is a quarter segment).
	a, err := s.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	big := func(id int) channel.Event {
		e := ev(id)
		e.Headers["pad"] = strings.Repeat("x", 2000)
		return e
	}
	for i := 1000; i < 1010; i++ {
		if err := a.Put("c1", big(i)); err != nil {
			t.Fatal(err)
		}
	}
	seg := activeSegment(s, 0)
	if len(a.(*filePut).ptrs) == 0 {
		t.Fatalf("txn A did not flush before commit; the test needs larger events")
	}

	// Txn B commits on X; its fdatasync fails.
	rule.arm(syscall.EIO, 1, func(op errorfs.Op) bool {
		return onSegment(op.Path, seg) && (op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSync)
	})
	if err := tryPut(t, s, 10, 11); err == nil {
		t.Fatal("commit B succeeded although its fdatasync failed")
	}
	noteFaults(t, rule.off())

	// Txn A commits on a fresh segment.
	errA := a.Commit(ctx)
	if errA == nil {
		acked = append(acked, seq(1000, 1010)...)
	}
	maybe := append(seq(10, 11), seq(1000, 1010)...)
	o.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	got := drain(t, r, "c1")
	r.Close()
	have := map[int]bool{}
	for _, id := range got {
		have[id] = true
	}
	var lost []int
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("txn A's Commit returned %v although its records flushed to poisoned segment %s were never fsynced; "+
			"after power loss %d acknowledged events are lost: %v (Commit must fail when any segment the txn wrote to has a sync error)",
			errA, seg, len(lost), lost)
	}
	_ = maybe
}

// TestFaultWALDiskFull: every write-type operation under the data directory
// fails with ENOSPC (the disk is full, also for new segments). Puts fail
// with an error naming ENOSPC, nothing breaks the next open, and puts
// resume once space returns.
func TestFaultWALDiskFull(t *testing.T) {
	s, mem, rule, o := faultStore(t, 1)
	putRange(t, s, "c1", 0, 40, 10)
	acked := seq(0, 40)
	var maybe []int
	rule.arm(syscall.ENOSPC, 0, func(op errorfs.Op) bool {
		return strings.HasPrefix(op.Path, "/data") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite
	})
	for i := range 5 {
		from := 40 + 10*i
		err := tryPut(t, s, from, from+10)
		if err == nil {
			acked = append(acked, seq(from, from+10)...)
			continue
		}
		maybe = append(maybe, seq(from, from+10)...)
		if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, channel.ErrDiskSpace) {
			t.Fatalf("put on a full disk: error %q names neither ENOSPC nor ErrDiskSpace", err)
		}
	}
	hits := rule.off()
	if hits == 0 {
		t.Fatal("no fault injected")
	}
	noteFaults(t, hits)
	checkRecovered(t, o, mem.CrashClone(vfs.CrashCloneCfg{}), acked, maybe)

	// Space is back: puts resume.
	if err := tryPut(t, s, 100, 110); err != nil {
		// One more attempt: a poisoned next segment may need one rotation.
		if err := tryPut(t, s, 110, 120); err != nil {
			t.Fatalf("puts do not resume after space returned: %v", err)
		}
		maybe = append(maybe, seq(100, 110)...)
		acked = append(acked, seq(110, 120)...)
	} else {
		acked = append(acked, seq(100, 110)...)
	}
	putRange(t, s, "c1", 120, 200, 20)
	acked = append(acked, seq(120, 200)...)
	if err := s.Checkpoint(); err != nil {
		t.Fatalf("checkpoint after space returned: %v", err)
	}
	checkRecovered(t, o, mem.CrashClone(vfs.CrashCloneCfg{}), acked, maybe)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, o, mem, acked, maybe)
}

// TestFaultCheckpointENOSPC: the checkpoint directories are full. The
// checkpoint fails with a clear error, puts go on, nothing half-written
// breaks the next open, and the retried checkpoint succeeds once space
// returns, leaving no temporary files.
func TestFaultCheckpointENOSPC(t *testing.T) {
	s, mem, rule, o := faultStore(t, 1)
	putRange(t, s, "c1", 0, 50, 10)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", 50, 100, 10)
	rule.arm(syscall.ENOSPC, 0, func(op errorfs.Op) bool {
		return strings.HasPrefix(op.Path, "/ckpt") && op.Kind.ReadOrWrite() == errorfs.OpIsWrite
	})
	for i := range 3 {
		err := s.Checkpoint()
		if err == nil {
			t.Fatal("checkpoint succeeded on a full checkpoint directory")
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("checkpoint error %q does not name ENOSPC", err)
		}
		// Puts are not affected by a full checkpoint directory.
		putRange(t, s, "c1", 100+10*i, 110+10*i, 10)
	}
	putRange(t, s, "c1", 130, 150, 10)
	checkRecovered(t, o, mem.CrashClone(vfs.CrashCloneCfg{}), seq(0, 150), nil)
	hits := rule.off()
	noteFaults(t, hits)
	if err := s.Checkpoint(); err != nil {
		t.Fatalf("checkpoint after space returned: %v", err)
	}
	for _, d := range []string{"/ckpt", "/ckpt-backup"} {
		names, err := mem.List(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.Contains(n, "tmp") {
				t.Errorf("temporary file %s/%s left behind after a successful checkpoint", d, n)
			}
		}
	}
	putRange(t, s, "c1", 150, 200, 10)
	checkRecovered(t, o, mem.CrashClone(vfs.CrashCloneCfg{}), seq(0, 200), nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRecovered(t, o, mem, seq(0, 200), nil)
}

// checkpointWorkload builds a store state with something of every kind for
// a checkpoint to save: queued events, a committed take, an open take and an
// open put. It returns the store and the ids that must survive.
func checkpointWorkload(t *testing.T, s *Store) (acked []int, cleanup func()) {
	t.Helper()
	ctx := context.Background()
	putRange(t, s, "c1", 0, 60, 10)
	tk, err := s.BeginTake(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := tk.Take(ctx, 10); err != nil || len(evs) != 10 {
		t.Fatalf("take: %d events, %v", len(evs), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", 60, 100, 10)
	open, err := s.BeginTake(ctx, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := open.Take(ctx, 5); err != nil || len(evs) != 5 {
		t.Fatalf("take: %d events, %v", len(evs), err)
	}
	op, err := s.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Large enough to flush records to the WAL before commit: the
	// checkpoint must fdatasync them and save the txn as in-flight.
	for i := 5000; i < 5010; i++ {
		e := ev(i)
		e.Headers["pad"] = strings.Repeat("p", 2000)
		if err := op.Put("c1", e); err != nil {
			t.Fatal(err)
		}
	}
	return seq(10, 100), func() { _ = open.Rollback(); _ = op.Rollback() }
}

// TestFaultCheckpointEveryStep fails the k-th filesystem operation after a
// checkpoint starts, for every k until the checkpoint gets through. In
// "crash" mode that op and every later one fail (the machine died there),
// then the store is crash-cloned (dropping a random share of unsynced data,
// which tears the checkpoint's tmp and queue files) and reopened. In
// "transient" mode only that op fails: the store keeps serving, the next
// checkpoint succeeds, and a crash after it loses nothing either.
func TestFaultCheckpointEveryStep(t *testing.T) {
	for _, mode := range []string{"crash", "transient"} {
		t.Run(mode, func(t *testing.T) {
			steps, injected := 0, 0
			for k := 0; k < 300; k++ {
				s, mem, rule, o := faultStore(t, 1)
				acked, cleanup := checkpointWorkload(t, s)
				rule.armAt(k, mode == "crash", syscall.EIO)
				err := s.Checkpoint()
				if mode == "crash" {
					rng := rand.New(rand.NewPCG(uint64(k), 11))
					clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
					hits := rule.off()
					injected += hits
					cleanup()
					_ = s.Close()
					checkRecovered(t, o, clone, acked, nil)
					if hits == 0 {
						if err != nil {
							t.Fatalf("checkpoint failed without an injected fault: %v", err)
						}
						steps = k
						break
					}
					continue
				}
				hits := rule.off()
				injected += hits
				if hits == 0 {
					if err != nil {
						t.Fatalf("checkpoint failed without an injected fault: %v", err)
					}
					cleanup()
					_ = s.Close()
					steps = k
					break
				}
				if err == nil {
					// The failed op was outside the checkpoint's own
					// sequence (e.g. background segment preparation) or
					// a best-effort one; the store must still be sound.
					t.Logf("k=%d: checkpoint succeeded despite the fault", k)
				}
				// The store keeps working and the retry succeeds,
				// unless the fault was a WAL fdatasync that left
				// records in doubt: that is sticky (Linux reports a
				// writeback error once per open file, so a later
				// fdatasync's success would not mean they are on disk)
				// and checkpoints fail until the store is reopened.
				putRange(t, s, "c1", 100, 110, 10)
				err = s.Checkpoint()
				sticky := errors.Is(err, wal.ErrSyncFailed)
				if sticky {
					t.Logf("k=%d: checkpoint retry fails after a WAL fdatasync fault (sticky): %v", k, err)
				} else if err != nil {
					t.Fatalf("k=%d: checkpoint retry after a transient fault: %v", k, err)
				}
				clone := mem.CrashClone(vfs.CrashCloneCfg{})
				cleanup()
				checkRecovered(t, o, clone, append(acked, seq(100, 110)...), nil)
				if err := s.Close(); err != nil && !(sticky && errors.Is(err, wal.ErrSyncFailed)) {
					t.Fatalf("k=%d: close: %v", k, err)
				}
				checkRecovered(t, o, mem, append(acked, seq(100, 110)...), nil)
			}
			if steps == 0 {
				t.Fatal("checkpoint never got through within 300 operations")
			}
			noteFaults(t, injected)
			t.Logf("checkpoint write sequence: %d filesystem operations, each failed once", steps)
		})
	}
}

// A commit whose fdatasync fails is retracted: the rollback record written
// and synced after it makes "not committed" hold after a restart too, even
// when the commit record itself reached the disk. A take's events are then
// delivered again instead of lost; a put's retry (same producer, same
// sequence) is stored once, not twice.
func TestFaultFailedCommitRetracted(t *testing.T) {
	syncOf := func(rule *faultRule, s *Store) {
		seg := activeSegment(s, 0)
		rule.arm(syscall.EIO, 1, func(op errorfs.Op) bool {
			return op.Kind == errorfs.OpFileSyncData && onSegment(op.Path, seg)
		})
	}
	t.Run("take", func(t *testing.T) {
		s, mem, rule, o := faultStore(t, 1)
		defer s.Close()
		putRange(t, s, "c1", 0, 20, 20)
		tx, _ := s.BeginTake(context.Background(), "c1")
		evs, err := tx.Take(context.Background(), 10)
		if err != nil || len(evs) != 10 {
			t.Fatalf("take: %d, %v", len(evs), err)
		}
		syncOf(rule, s)
		if err := tx.Commit(context.Background()); err == nil {
			t.Fatal("take commit with a failing fdatasync succeeded")
		}
		if rule.off() != 1 {
			t.Fatal("the fault did not fire")
		}
		if n := queued(t, s); n != 20 {
			t.Fatalf("after the failed take commit %d events are queued, want all 20 back", n)
		}
		// What survives: every page written (the commit record too).
		checkRecovered(t, o, killClone(mem), seq(0, 20), nil)
	})
	t.Run("put", func(t *testing.T) {
		s, mem, rule, o := faultStore(t, 1)
		defer s.Close()
		putRange(t, s, "c1", 0, 5, 5)
		opts := channel.PutOptions{ProducerID: "src", Sequence: 1}
		attempt := func() error {
			tx, _ := s.BeginPut(context.Background(), opts)
			for i := 5; i < 10; i++ {
				tx.Put("c1", ev(i))
			}
			return tx.Commit(context.Background())
		}
		syncOf(rule, s)
		if err := attempt(); err == nil {
			t.Fatal("put commit with a failing fdatasync succeeded")
		}
		rule.off()
		if err := attempt(); err != nil { // the producer's retry
			t.Fatal(err)
		}
		checkRecovered(t, o, killClone(mem), seq(0, 10), nil)
	})
}
