package filestore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
)

// sourceLine is line n of the source's input: its body carries n and, so
// that some transactions flush records before their commit (and straddle a
// checkpoint), up to 3 KiB of padding.
func sourceLine(n uint64, rng *rand.Rand) channel.Event {
	return channel.Event{Body: []byte("line-" + strconv.FormatUint(n, 10) + "|" + strings.Repeat("x", rng.IntN(3<<10)))}
}

func lineNumber(t testing.TB, body []byte) uint64 {
	t.Helper()
	s, _, _ := strings.Cut(strings.TrimPrefix(string(body), "line-"), "|")
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("unexpected event %.40q", body)
	}
	return n
}

// drainLines takes and commits every queued event of ch and returns the
// line numbers in order.
func drainLines(t testing.TB, s channel.Store, ch string) []uint64 {
	t.Helper()
	var out []uint64
	for _, e := range drainEvents(t, s, ch) { // offsets increase
		out = append(out, lineNumber(t, e.Body))
	}
	return out
}

// TestSourceResumesAfterCrash is issue 17's exactly-once source: a source
// reads lines and puts them with per-event sequences (sequence = line
// number) in batches of one size; the machine loses power right after a
// Commit returned, before the source recorded anything locally (its own
// bookkeeping lags, as it may: the store is the authority). After the
// restart the source resumes from the store's ProducerSequence, or from an
// older local position of its own (re-reading lines the store already
// holds), cuts its batches with another size, and carries on. At the end
// every line is in the channel exactly once, in order. Checkpoints run
// concurrently so that the per-event commits meet every replay path
// (commit record after the checkpoint, transaction in flight or committing
// at the checkpoint).
func TestSourceResumesAfterCrash(t *testing.T) {
	seeds := 12
	if testing.Short() {
		seeds = 4
	}
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runSourceCrash(t, uint64(seed))
		})
	}
}

func runSourceCrash(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x5e91))
	const lines, producer = 1200, "tail:/var/log/app.log"
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1+rng.IntN(2), channel.ChannelConfig{Name: "c1", Capacity: 100_000, TransactionCapacity: 400})
	o.CheckpointBytes = int64(32<<10 + rng.IntN(128<<10))
	ctx := context.Background()

	var local uint64 // the source's own record of its position: lags behind
	var acked uint64 // the highest sequence a Commit acknowledged
	lastSize := 0
	for round := 0; ; round++ {
		if round > 200 {
			t.Fatalf("source not done after %d rounds (acked %d)", round, acked)
		}
		s, err := Open(o)
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		if torn := s.tornTxns.Load(); torn != 0 {
			t.Fatalf("round %d: %d transactions reported torn (none was in flight at the crash)", round, torn)
		}
		mark, ok, err := s.ProducerSequence(ctx, "c1", producer)
		if err != nil {
			t.Fatal(err)
		}
		// Every acknowledged commit survived the crash, and its sequence
		// was recorded with it.
		if mark != acked || ok != (acked > 0) {
			t.Fatalf("round %d: ProducerSequence %d (known %v) after the crash, the last acknowledged commit was %d", round, mark, ok, acked)
		}
		if mark == lines {
			s.Close()
			break
		}
		// Resume: from the store's position, or from the source's own
		// older one (an overlap the store must drop), or anywhere before.
		next := mark + 1
		switch rng.IntN(3) {
		case 1:
			next = local + 1
		case 2:
			next = 1 + mark - min(mark, rng.Uint64N(400))
		}
		size := lastSize
		for size == lastSize { // a different cut than before the crash
			size = 1 + rng.IntN(120)
		}
		lastSize = size
		stop := make(chan struct{})
		var wg sync.WaitGroup
		if rng.IntN(3) > 0 {
			crng := rand.New(rand.NewPCG(seed, uint64(round)+1<<32))
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(crng.IntN(2000)) * time.Microsecond):
					}
					s.Checkpoint()
				}
			})
		}
		crashAfter := 1 + rng.IntN(8) // commits before the power cut
		var clone *vfs.MemFS
		for commits := 0; clone == nil; commits++ {
			if next > lines {
				// Done: the source stops here; a clean close follows and
				// the loop above checks the position.
				break
			}
			n := min(uint64(size), lines-next+1)
			tx, err := s.BeginPut(ctx, channel.PutOptions{ProducerID: producer})
			if err != nil {
				t.Fatal(err)
			}
			evs := make([]channel.Event, n)
			for i := range evs {
				evs[i] = sourceLine(next+uint64(i), rng)
			}
			// Cut the batch into PutSeq calls too, as a source reading
			// several chunks would.
			for k := 0; k < len(evs); {
				m := min(len(evs)-k, 1+rng.IntN(len(evs)))
				if err := tx.PutSeq("c1", next+uint64(k), evs[k:k+m]...); err != nil {
					t.Fatalf("round %d: PutSeq: %v", round, err)
				}
				k += m
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("round %d: Commit: %v", round, err)
			}
			last := next + n - 1
			wantDup := 0
			if next <= acked {
				wantDup = int(min(acked, last) - next + 1)
			}
			if tx.Duplicates() != wantDup || tx.Deduplicated() != (wantDup == int(n)) {
				t.Fatalf("round %d: put of %d..%d after %d was acknowledged: Duplicates %d Deduplicated %v, want %d", round, next, last, acked, tx.Duplicates(), tx.Deduplicated(), wantDup)
			}
			acked = max(acked, last)
			if commits+1 == crashAfter {
				// Power cut right after the acknowledgement, before the
				// source wrote down anything.
				clone = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rand.New(rand.NewPCG(seed, uint64(round)))})
				break
			}
			next = last + 1
			if rng.IntN(3) == 0 {
				local = last // the source's bookkeeping, now and then
			}
		}
		close(stop)
		wg.Wait()
		if err := s.Close(); err != nil && clone == nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
		if clone != nil {
			fs = clone
			o.FS = fs
		}
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := drainLines(t, s, "c1")
	want := make([]uint64, lines)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the channel holds %d events, want lines 1..%d exactly once in order; first difference at %d", len(got), lines, firstDiff(got, want))
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// syncBlocker is an errorfs injector that, while armed, holds every
// fdatasync of one WAL segment (path) until released. Other segments (the
// allocator zeroing spare ones in the background) go on.
type syncBlocker struct {
	mu      sync.Mutex
	armed   bool
	path    string
	release chan struct{}
}

func (b *syncBlocker) String() string { return "syncBlocker" }

func (b *syncBlocker) MaybeError(op errorfs.Op) error {
	if op.Kind != errorfs.OpFileSyncData {
		return nil
	}
	b.mu.Lock()
	armed, release := b.armed && onSegment(op.Path, b.path), b.release
	b.mu.Unlock()
	if armed {
		<-release
	}
	return nil
}

// putPerEvent commits one per-event put of lines first..last into c1.
func putPerEvent(t *testing.T, s *Store, producer string, first, last uint64) channel.PutTxn {
	t.Helper()
	tx, err := s.BeginPut(context.Background(), channel.PutOptions{ProducerID: producer})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(first, last))
	for n := first; n <= last; n++ {
		if err := tx.PutSeq("c1", n, sourceLine(n, rng)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tx
}

func wantLines(t *testing.T, got []uint64, from, to uint64) {
	t.Helper()
	var want []uint64
	for n := from; n <= to; n++ {
		want = append(want, n)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("lines %v, want %d..%d", got, from, to)
	}
}

// A per-event put that is committing (its commit record written, its
// fdatasync not yet returned) when a checkpoint freezes the store is saved
// in the checkpoint with only the events it stores and its last sequence:
// recovery from that checkpoint (the commit record lies before its
// frontier, so replay never reads it) stores each line once and restores
// the producer's mark.
func TestPerEventCommittingAtCheckpoint(t *testing.T) {
	mem := vfs.NewCrashableMem()
	b := &syncBlocker{release: make(chan struct{})}
	o := testFileOptions(errorfs.Wrap(mem, b), 1)
	o.SegmentSize = 1 << 20 // the test's few small records stay in one segment
	s := mustOpen(t, o)
	small := func(first, last uint64) channel.PutTxn { // events of some 10 bytes
		tx, err := s.BeginPut(context.Background(), channel.PutOptions{ProducerID: "src"})
		if err != nil {
			t.Error(err)
			return nil
		}
		for n := first; n <= last; n++ {
			if err := tx.PutSeq("c1", n, channel.Event{Body: []byte("line-" + strconv.FormatUint(n, 10) + "|")}); err != nil {
				t.Error(err)
			}
		}
		if err := tx.Commit(context.Background()); err != nil {
			t.Error(err)
		}
		return tx
	}
	small(1, 10)

	b.mu.Lock()
	b.armed, b.path = true, activeSegment(s, 0)
	b.mu.Unlock()
	committed := make(chan channel.PutTxn)
	go func() { committed <- small(4, 15) }() // 4..10 are duplicates
	// Wait until its commit record is written and its fdatasync held.
	for deadline := time.Now().Add(10 * time.Second); ; {
		s.mu.Lock()
		committing := false
		for _, p := range s.puts {
			committing = committing || p.committing
		}
		s.mu.Unlock()
		if committing {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("the put never reached its commit's fdatasync\n%s", buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
	floor := s.txnFloor.Load()
	ckpt := make(chan error, 1)
	go func() { ckpt <- s.Checkpoint() }()
	for s.txnFloor.Load() == floor { // the checkpoint froze the store
		time.Sleep(time.Millisecond)
	}
	b.mu.Lock()
	b.armed = false
	close(b.release)
	b.mu.Unlock()
	if tx := <-committed; tx == nil || tx.Duplicates() != 7 {
		t.Fatalf("the committing put: %v", tx)
	}
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	var newest *checkpoint.Checkpoint
	for _, c := range checkpoint.Load(o.FS, o.CheckpointDir, o.BackupCheckpointDir, nil) {
		if c.Err == nil && (newest == nil || c.Checkpoint.Generation > newest.Generation) {
			newest = c.Checkpoint
		}
	}
	var found bool
	for _, pt := range newest.PutTxns {
		if pt.Committing {
			found = true
			if len(pt.Entries) != 5 || pt.Sequence != 15 {
				t.Fatalf("committing txn in the checkpoint: %d entries, sequence %d; want 5, 15", len(pt.Entries), pt.Sequence)
			}
		}
	}
	if !found {
		t.Fatal("the checkpoint holds no committing put")
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	s.Close()
	o.FS = clone
	s2 := mustOpen(t, o)
	defer s2.Close()
	if seq, ok, err := s2.ProducerSequence(context.Background(), "c1", "src"); err != nil || !ok || seq != 15 {
		t.Fatalf("ProducerSequence after recovery: %d %v %v, want 15", seq, ok, err)
	}
	wantLines(t, drainLines(t, s2, "c1"), 1, 15)
}

// A per-event put whose first records were flushed before a checkpoint (in
// flight there) and whose commit follows it: replay counts the
// checkpoint's entries and the later records against the commit's event
// count (not torn) and skips the commit's duplicates among them in txn
// order.
func TestPerEventStraddlingCheckpoint(t *testing.T) {
	mem := vfs.NewCrashableMem()
	o := testFileOptions(mem, 1)
	s := mustOpen(t, o)
	putPerEvent(t, s, "src", 1, 30)
	ctx := context.Background()
	tx, err := s.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var n uint64 = 10                      // a re-read from line 10: 10..30 are duplicates
	for ; !tx.(*filePut).registered; n++ { // until a batch reached the WAL
		if err := tx.PutSeq("c1", n, sourceLine(n, rng)); err != nil {
			t.Fatal(err)
		}
	}
	if n > 30 {
		t.Fatalf("the first flush came after line %d: want one among the duplicates", n-1)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	for ; n <= 40; n++ {
		if err := tx.PutSeq("c1", n, sourceLine(n, rng)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if tx.Duplicates() != 21 {
		t.Fatalf("Duplicates %d, want 21", tx.Duplicates())
	}
	clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 0})
	s.Close()
	o.FS = clone
	s2 := mustOpen(t, o)
	defer s2.Close()
	if torn := s2.tornTxns.Load(); torn != 0 {
		t.Fatalf("%d transactions reported torn", torn)
	}
	if seq, _, _ := s2.ProducerSequence(ctx, "c1", "src"); seq != 40 {
		t.Fatalf("ProducerSequence after recovery: %d, want 40", seq)
	}
	wantLines(t, drainLines(t, s2, "c1"), 1, 40)
}
