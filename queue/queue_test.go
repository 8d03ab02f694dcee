package queue

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// backingKind describes one way to back the test queues.
type backingKind struct {
	name string
	opts func(t testing.TB, name string, capacity uint64) Options
}

var kinds = []backingKind{
	{"mem", func(t testing.TB, name string, c uint64) Options {
		return Options{Dir: "d", BackupDir: "b", Name: name, Capacity: c, FS: vfs.NewCrashableMem()}
	}},
	{"mmap", func(t testing.TB, name string, c uint64) Options {
		d := t.TempDir()
		return Options{Dir: d, BackupDir: d + "/backup", Name: name, Capacity: c, FS: vfs.Default}
	}},
}

// model is the reference implementation: a slice and a head.
type model struct {
	head uint64
	vals []uint64
}

func (m model) clone() model { return model{m.head, slices.Clone(m.vals)} }

func contents(q *Queue) []uint64 {
	out := make([]uint64, q.Len())
	for i := range out {
		out[i] = q.At(uint64(i))
	}
	return out
}

func checkEqual(t testing.TB, q *Queue, m model, what string) {
	t.Helper()
	if q.Head() != m.head || q.Len() != uint64(len(m.vals)) {
		t.Fatalf("%s: head/len = %d/%d, model %d/%d", what, q.Head(), q.Len(), m.head, len(m.vals))
	}
	if got := contents(q); !slices.Equal(got, m.vals) {
		t.Fatalf("%s: contents differ\n got %v\nwant %v", what, got, m.vals)
	}
}

func mustOpen(t testing.TB, opts Options, st *State) *Queue {
	t.Helper()
	q, err := Open(opts, st)
	if err != nil {
		t.Fatalf("Open(%+v): %v", st, err)
	}
	return q
}

// runModel drives a queue with random operations and checks it against the
// model after each step, including checkpoints, aborts and reopens.
func runModel(t *testing.T, k backingKind, seed uint64, steps int) (wraps uint64) {
	var maxHead uint64
	rng := rand.New(rand.NewPCG(seed, 0x51))
	capa := uint64(1 + rng.IntN(40))
	opts := k.opts(t, fmt.Sprintf("ch/%d", seed), capa)
	q := mustOpen(t, opts, nil)
	defer func() { q.Close() }()

	m := model{}
	var next uint64 = 1
	var popped []uint64 // recently popped, for rollback-like PushFront

	// durable state and the model it holds
	var durable *State
	durableModel := model{}

	var frozen *Frozen
	var frozenModel model
	var written *State

	for step := 0; step < steps; step++ {
		what := fmt.Sprintf("seed %d step %d", seed, step)
		switch r := rng.IntN(100); {
		case r < 13:
			// A batch: all of it fits, or none is added.
			ps := make([]uint64, rng.IntN(12))
			for i := range ps {
				ps[i] = next + uint64(i)
			}
			err := q.PushBackN(ps)
			if uint64(len(m.vals)+len(ps)) > q.Capacity() {
				if !errors.Is(err, ErrFull) {
					t.Fatalf("%s: PushBackN of %d beyond capacity: %v", what, len(ps), err)
				}
			} else {
				if err != nil {
					t.Fatalf("%s: PushBackN: %v", what, err)
				}
				m.vals = append(m.vals, ps...)
				next += uint64(len(ps))
			}
		case r < 33:
			err := q.PushBack(next)
			if uint64(len(m.vals)) == q.Capacity() {
				if !errors.Is(err, ErrFull) {
					t.Fatalf("%s: PushBack on full: %v", what, err)
				}
			} else {
				if err != nil {
					t.Fatalf("%s: PushBack: %v", what, err)
				}
				m.vals = append(m.vals, next)
				next++
			}
		case r < 63:
			v, ok := q.PopFront()
			if len(m.vals) == 0 {
				if ok {
					t.Fatalf("%s: PopFront on empty returned %d", what, v)
				}
				break
			}
			if !ok || v != m.vals[0] {
				t.Fatalf("%s: PopFront = %d,%v want %d", what, v, ok, m.vals[0])
			}
			m.vals = m.vals[1:]
			m.head++
			popped = append(popped, v)
			if len(popped) > 64 {
				popped = popped[len(popped)-64:]
			}
		case r < 68:
			var ps []uint64
			if rng.IntN(2) == 0 && len(popped) > 0 {
				// rollback: the last n popped, in their original order
				n := 1 + rng.IntN(len(popped))
				ps = slices.Clone(popped[len(popped)-n:])
				popped = popped[:len(popped)-n]
			} else {
				for range rng.IntN(6) {
					ps = append(ps, next)
					next++
				}
			}
			err := q.PushFront(ps)
			switch {
			case uint64(len(ps)+len(m.vals)) > q.Capacity():
				if !errors.Is(err, ErrFull) {
					t.Fatalf("%s: PushFront overflow: %v", what, err)
				}
			case uint64(len(ps)) > m.head:
				if !errors.Is(err, ErrHeadUnderflow) {
					t.Fatalf("%s: PushFront underflow: %v", what, err)
				}
			default:
				if err != nil {
					t.Fatalf("%s: PushFront: %v", what, err)
				}
				m.vals = append(slices.Clone(ps), m.vals...)
				m.head -= uint64(len(ps))
			}
		case r < 76:
			if len(m.vals) > 0 {
				i := rng.IntN(len(m.vals))
				if got := q.At(uint64(i)); got != m.vals[i] {
					t.Fatalf("%s: At(%d) = %d want %d", what, i, got, m.vals[i])
				}
			}
		case r < 83:
			f := q.Freeze()
			if frozen != nil {
				if f != nil {
					t.Fatalf("%s: second Freeze succeeded", what)
				}
				break
			}
			frozen, frozenModel, written = f, m.clone(), nil
		case r < 89:
			if frozen == nil || written != nil {
				break
			}
			st, err := q.WriteSnapshot(frozen)
			if err != nil {
				t.Fatalf("%s: WriteSnapshot: %v", what, err)
			}
			if st.Head != frozenModel.head || st.Size != uint64(len(frozenModel.vals)) ||
				st.Digest != Digest(frozenModel.vals) || st.Capacity != q.Capacity() ||
				(durable != nil && st.Gen == durable.Gen) {
				t.Fatalf("%s: snapshot state %+v, model head %d len %d digest %08x", what, st,
					frozenModel.head, len(frozenModel.vals), Digest(frozenModel.vals))
			}
			written = &st
		case r < 95:
			if written == nil {
				break
			}
			q.Install(frozen, *written)
			durable, durableModel = written, frozenModel
			frozen, written = nil, nil
		case r < 99:
			if frozen == nil {
				break
			}
			q.Abort(frozen)
			frozen, written = nil, nil
		default:
			// crash / restart from the durable state, maybe with a
			// different capacity.
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			o := opts
			if rng.IntN(3) == 0 {
				o.Capacity = uint64(1 + rng.IntN(40))
			}
			if durable == nil {
				q = mustOpen(t, o, nil)
				m = model{}
			} else {
				q = mustOpen(t, o, durable)
				m = durableModel.clone()
				want := max(o.Capacity, durable.Size)
				if q.Capacity() != want {
					t.Fatalf("%s: capacity after reopen %d want %d", what, q.Capacity(), want)
				}
			}
			opts = o
			popped = nil
			frozen, written = nil, nil
		}
		maxHead = max(maxHead, m.head)
		if step%16 == 0 || step == steps-1 {
			checkEqual(t, q, m, what)
		}
		if q.OverlayEntries() > 2*int(q.Capacity())+2 {
			t.Fatalf("%s: overlay has %d entries for capacity %d", what, q.OverlayEntries(), q.Capacity())
		}
	}
	return maxHead / max(1, capa)
}

func TestModel(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			seeds := 60
			if k.name == "mmap" {
				seeds = 12
			}
			var wraps uint64
			for seed := range uint64(seeds) {
				wraps += runModel(t, k, seed, 4000)
			}
			t.Logf("average max head / capacity: %d", wraps/uint64(seeds))
			if wraps/uint64(seeds) < 5 {
				t.Fatalf("not enough wraparound")
			}
		})
	}
}

func fill(t testing.TB, q *Queue, from, n uint64) {
	t.Helper()
	for i := range n {
		if err := q.PushBack(from + i); err != nil {
			t.Fatal(err)
		}
	}
}

func checkpoint(t testing.TB, q *Queue) State {
	t.Helper()
	f := q.Freeze()
	if f == nil {
		t.Fatal("Freeze refused")
	}
	st, err := q.WriteSnapshot(f)
	if err != nil {
		t.Fatal(err)
	}
	q.Install(f, st)
	return st
}

func TestReopen(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "reopen", 100)
			q := mustOpen(t, opts, nil)
			fill(t, q, 1000, 100)
			for range 70 {
				q.PopFront()
			}
			fill(t, q, 5000, 50) // wraps
			if err := q.PushFront([]uint64{7, 8, 9}); err != nil {
				t.Fatal(err)
			}
			want := contents(q)
			st := checkpoint(t, q)
			if st.Gen != 1 || st.Head != 67 || st.Size != 83 || st.Digest != Digest(want) {
				t.Fatalf("state %+v", st)
			}
			// Changes after the checkpoint are not in the snapshot.
			q.PopFront()
			fill(t, q, 9000, 3)
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			q = mustOpen(t, opts, &st)
			if got := contents(q); !slices.Equal(got, want) || q.Head() != 67 {
				t.Fatalf("reopened %v head %d, want %v", got, q.Head(), want)
			}
			// A second round alternates back to generation A.
			q.PopFront()
			st2 := checkpoint(t, q)
			if st2.Gen != 0 {
				t.Fatalf("gen %d", st2.Gen)
			}
			q.Close()
			q = mustOpen(t, opts, &st2)
			defer q.Close()
			if got := contents(q); !slices.Equal(got, want[1:]) {
				t.Fatalf("reopened %v", got)
			}
		})
	}
}

// corrupt overwrites 8 bytes of a file at off.
func corrupt(t *testing.T, opts Options, gen uint8, off int64) {
	t.Helper()
	b := []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4}
	path := Path(opts, gen)
	if opts.FS == vfs.Default {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := opts.FS.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestDigestMismatch(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "digest", 16)
			q := mustOpen(t, opts, nil)
			fill(t, q, 1, 10)
			st := checkpoint(t, q)
			q.Close()

			// A slot outside the live range does not matter.
			corrupt(t, opts, st.Gen, headerSize+12*slotSize)
			q = mustOpen(t, opts, &st)
			q.Close()

			corrupt(t, opts, st.Gen, headerSize+3*slotSize)
			_, err := Open(opts, &st)
			if !errors.Is(err, ErrDigest) {
				t.Fatalf("err = %v, want ErrDigest", err)
			}
			t.Log(err)

			// Header capacity / generation mismatches are digest errors too.
			bad := st
			bad.Capacity = 17
			if _, err := Open(opts, &bad); !errors.Is(err, ErrDigest) {
				t.Fatalf("capacity mismatch: %v", err)
			}
			bad = st
			bad.Gen = 0 // gen A file exists with another generation's data
			bad.Size = 0
			bad.Digest = 0
			if q, err := Open(opts, &bad); err != nil {
				t.Fatalf("empty gen A: %v", err)
			} else {
				q.Close()
			}

			// A truncated file, and a missing one.
			if opts.FS == vfs.Default {
				if err := os.Truncate(Path(opts, st.Gen), 100); err != nil {
					t.Fatal(err)
				}
			} else {
				f, err := opts.FS.Create(Path(opts, st.Gen), vfs.WriteCategoryUnspecified)
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			if _, err := Open(opts, &st); !errors.Is(err, ErrDigest) {
				t.Fatalf("truncated: %v", err)
			}
			if err := Remove(opts); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(opts, &st); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("missing: %v", err)
			}
		})
	}
}

func TestKeyedDigest(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "keyed", 16)
			opts.DigestKey = bytes.Repeat([]byte{1}, 32)
			q := mustOpen(t, opts, nil)
			fill(t, q, 1, 10)
			var ptrs []uint64
			for i := uint64(0); i < q.Len(); i++ {
				ptrs = append(ptrs, q.At(i))
			}
			st := checkpoint(t, q)
			q.Close()
			if st.Digest == Digest(ptrs) {
				t.Fatal("keyed digest equals the CRC32C digest")
			}
			// The right key opens it; no key or another key does not.
			for _, key := range [][]byte{nil, bytes.Repeat([]byte{2}, 32)} {
				o := opts
				o.CheckKey = key
				if _, err := Open(o, &st); !errors.Is(err, ErrDigest) {
					t.Fatalf("check key %x: %v", key, err)
				}
			}
			o := opts
			o.CheckKey = opts.DigestKey
			q = mustOpen(t, o, &st)
			q.Close()
		})
	}
}

func TestCapacityChange(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "resize", 10)
			q := mustOpen(t, opts, nil)
			fill(t, q, 100, 10)
			for range 7 {
				q.PopFront()
			}
			fill(t, q, 200, 7) // wraps
			want := contents(q)
			st := checkpoint(t, q)
			q.Close()

			// Grow.
			grown := opts
			grown.Capacity = 25
			q = mustOpen(t, grown, &st)
			if q.Capacity() != 25 || !slices.Equal(contents(q), want) {
				t.Fatalf("grow: cap %d contents %v", q.Capacity(), contents(q))
			}
			fill(t, q, 300, 15)
			if err := q.PushBack(1); !errors.Is(err, ErrFull) {
				t.Fatalf("want ErrFull, got %v", err)
			}
			want = contents(q)
			// Until the next checkpoint the old state still opens (the
			// rebuild leaves the file it names untouched).
			q2 := mustOpen(t, opts, &st)
			q2.Close()
			st = checkpoint(t, q)
			if st.Capacity != 25 {
				t.Fatalf("state %+v", st)
			}
			q.Close()
			q = mustOpen(t, grown, &st)
			if !slices.Equal(contents(q), want) {
				t.Fatalf("grow reopen: %v want %v", contents(q), want)
			}
			q.Close()

			// Shrink below the size: every event kept, capacity = size.
			shrunk := opts
			shrunk.Capacity = 5
			q = mustOpen(t, shrunk, &st)
			if q.Capacity() != 25 || !slices.Equal(contents(q), want) {
				t.Fatalf("shrink: cap %d", q.Capacity())
			}
			for range 22 {
				q.PopFront()
			}
			want = want[22:]
			st = checkpoint(t, q)
			q.Close()
			q = mustOpen(t, shrunk, &st) // size 3 now: capacity 5
			if q.Capacity() != 5 || !slices.Equal(contents(q), want) {
				t.Fatalf("shrink 2: cap %d contents %v", q.Capacity(), contents(q))
			}
			fill(t, q, 400, 2)
			if err := q.PushBack(1); !errors.Is(err, ErrFull) {
				t.Fatalf("want ErrFull, got %v", err)
			}
			want = append(want, 400, 401)
			st = checkpoint(t, q)
			q.Close()
			q = mustOpen(t, shrunk, &st)
			defer q.Close()
			if st.Capacity != 5 || !slices.Equal(contents(q), want) {
				t.Fatalf("final: %+v %v", st, contents(q))
			}
		})
	}
}

func TestShrinkBelowSize(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "shrink", 50)
			q := mustOpen(t, opts, nil)
			fill(t, q, 1, 50)
			for range 20 {
				q.PopFront()
			}
			fill(t, q, 100, 10)
			want := contents(q)
			st := checkpoint(t, q)
			q.Close()
			small := opts
			small.Capacity = 8
			q = mustOpen(t, small, &st)
			if q.Capacity() != 40 {
				t.Fatalf("capacity %d want 40", q.Capacity())
			}
			st = checkpoint(t, q)
			q.Close()
			q = mustOpen(t, small, &st)
			defer q.Close()
			if st.Capacity != 40 || !slices.Equal(contents(q), want) {
				t.Fatalf("%+v %v", st, contents(q))
			}
		})
	}
}

func TestFreezeRules(t *testing.T) {
	opts := kinds[0].opts(t, "freeze", 8)
	q := mustOpen(t, opts, nil)
	defer q.Close()
	fill(t, q, 1, 3)
	f := q.Freeze()
	if q.Freeze() != nil {
		t.Fatal("second Freeze succeeded")
	}
	if _, err := q.WriteSnapshot(nil); !errors.Is(err, ErrFrozen) {
		t.Fatal(err)
	}
	fill(t, q, 10, 2)
	q.PopFront()
	q.Abort(f)
	q.Abort(f) // no-op
	if got := contents(q); !slices.Equal(got, []uint64{2, 3, 10, 11}) {
		t.Fatal(got)
	}
	f = q.Freeze()
	st, err := q.WriteSnapshot(f)
	if err != nil {
		t.Fatal(err)
	}
	if st.Digest != Digest([]uint64{2, 3, 10, 11}) {
		t.Fatal("digest")
	}
	if _, err := q.WriteSnapshot(&Frozen{}); !errors.Is(err, ErrFrozen) {
		t.Fatal(err)
	}
	q.Install(f, st)
	if q.Gen() != 1 || q.OverlayEntries() != 0 {
		t.Fatalf("gen %d overlay %d", q.Gen(), q.OverlayEntries())
	}
	if err := q.PushFront([]uint64{1, 2}); !errors.Is(err, ErrHeadUnderflow) {
		t.Fatal(err)
	}
}

// TestOverlayMemory checks unchanged positions cost nothing and rollbacks
// of unchanged values are free.
func TestOverlayMemory(t *testing.T) {
	opts := kinds[0].opts(t, "mem", 1000)
	q := mustOpen(t, opts, nil)
	defer q.Close()
	fill(t, q, 1, 1000)
	checkpoint(t, q)
	if q.OverlayEntries() != 0 {
		t.Fatal(q.OverlayEntries())
	}
	var taken []uint64
	for range 100 {
		v, _ := q.PopFront()
		taken = append(taken, v)
	}
	if err := q.PushFront(taken); err != nil {
		t.Fatal(err)
	}
	if q.OverlayEntries() != 0 {
		t.Fatalf("rollback cost %d entries", q.OverlayEntries())
	}
	for range 500 {
		q.PopFront()
	}
	fill(t, q, 5000, 10)
	if q.OverlayEntries() != 10 {
		t.Fatalf("overlay %d entries, want 10", q.OverlayEntries())
	}
	// A changed value in the middle fills from there up to the tail.
	q.PopFront()
	if err := q.PushFront([]uint64{42}); err != nil {
		t.Fatal(err)
	}
	if q.OverlayEntries() != int(q.Len()) {
		t.Fatalf("overlay %d entries, len %d", q.OverlayEntries(), q.Len())
	}
	if q.At(0) != 42 || q.At(1) != 502 {
		t.Fatal(q.At(0), q.At(1))
	}
}

func TestConcurrentSnapshot(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "conc", 5000)
			q := mustOpen(t, opts, nil)
			defer q.Close()
			var mu sync.Mutex
			m := model{}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				rng := rand.New(rand.NewPCG(1, 2))
				next := uint64(1)
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					for range 50 {
						switch r := rng.IntN(10); {
						case r < 5:
							if q.PushBack(next) == nil {
								m.vals = append(m.vals, next)
								next++
							}
						case r < 9:
							if v, ok := q.PopFront(); ok {
								if v != m.vals[0] {
									panic("pop mismatch")
								}
								m.vals = m.vals[1:]
								m.head++
							}
						default:
							ps := []uint64{next, next + 1}
							if q.PushFront(ps) == nil {
								m.vals = append(ps, m.vals...)
								m.head -= 2
								next += 2
							}
						}
						if len(m.vals) > 0 && q.At(uint64(len(m.vals)-1)) != m.vals[len(m.vals)-1] {
							panic("At mismatch")
						}
					}
					mu.Unlock()
				}
			}()
			var st State
			var want model
			for i := range 60 {
				mu.Lock()
				f := q.Freeze()
				fm := m.clone()
				mu.Unlock()
				s, err := q.WriteSnapshot(f)
				if err != nil {
					t.Fatal(err)
				}
				if s.Digest != Digest(fm.vals) || s.Head != fm.head {
					t.Fatalf("round %d: state %+v, model head %d digest %08x", i, s, fm.head, Digest(fm.vals))
				}
				mu.Lock()
				if i%5 == 4 {
					q.Abort(f)
				} else {
					q.Install(f, s)
					st, want = s, fm
				}
				mu.Unlock()
			}
			close(stop)
			<-done
			checkEqual(t, q, m, "end")
			q2 := mustOpen(t, opts, &st)
			checkEqual(t, q2, want, "reopen")
			q2.Close()
		})
	}
}

// TestCrash simulates crashes on a crashable MemFS: after WriteSnapshot
// returned the new state opens; in the middle of it the previous one does.
func TestCrash(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 7))
		fs := vfs.NewCrashableMem()
		opts := Options{Dir: "a", BackupDir: "b", Name: "crash", Capacity: uint64(8 + rng.IntN(100)), FS: fs}
		q := mustOpen(t, opts, nil)
		m := model{}
		next := uint64(1)
		prev := (*State)(nil)
		prevModel := model{}
		for round := range 12 {
			for range rng.IntN(150) {
				if rng.IntN(2) == 0 {
					if q.PushBack(next) == nil {
						m.vals = append(m.vals, next)
						next++
					}
				} else if v, ok := q.PopFront(); ok {
					if v != m.vals[0] {
						t.Fatal("mismatch")
					}
					m.vals = m.vals[1:]
					m.head++
				}
			}
			f := q.Freeze()
			fm := m.clone()
			var mid *vfs.MemFS
			testHookBeforeSync = func() {
				mid = fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
			}
			st, err := q.WriteSnapshot(f)
			testHookBeforeSync = nil
			if err != nil {
				t.Fatal(err)
			}
			after := fs.CrashClone(vfs.CrashCloneCfg{})

			what := fmt.Sprintf("seed %d round %d", seed, round)
			o := opts
			o.FS = mid
			if prev == nil {
				// No checkpoint yet: the channel would start empty.
			} else {
				q2, err := Open(o, prev)
				if err != nil {
					t.Fatalf("%s: mid-snapshot crash, previous state: %v", what, err)
				}
				checkEqual(t, q2, prevModel, what+" mid")
				q2.Close()
			}
			o.FS = after
			q2, err := Open(o, &st)
			if err != nil {
				t.Fatalf("%s: after snapshot: %v", what, err)
			}
			checkEqual(t, q2, fm, what+" after")
			q2.Close()
			if rng.IntN(4) == 0 {
				q.Abort(f) // meta write failed
				continue
			}
			q.Install(f, st)
			prev, prevModel = &st, fm
			// Sometimes restart with a new capacity from the crash image.
			if rng.IntN(4) == 0 {
				q.Close()
				o := opts
				o.FS = fs.CrashClone(vfs.CrashCloneCfg{})
				fs = o.FS.(*vfs.MemFS)
				if rng.IntN(2) == 0 {
					o.Capacity = uint64(8 + rng.IntN(100))
				}
				opts = o
				q = mustOpen(t, o, prev)
				m = prevModel.clone()
			}
		}
		q.Close()
	}
}

func TestRemoveAndNames(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			opts := k.opts(t, "we/ird %name..", 4)
			q := mustOpen(t, opts, nil)
			fill(t, q, 1, 2)
			checkpoint(t, q)
			q.Close()
			fs := opts.FS
			for gen := range uint8(2) {
				if _, err := fs.Stat(Path(opts, gen)); err != nil {
					t.Fatal(err)
				}
			}
			if err := Remove(opts); err != nil {
				t.Fatal(err)
			}
			for gen := range uint8(2) {
				if _, err := fs.Stat(Path(opts, gen)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("gen %d still there: %v", gen, err)
				}
			}
			if err := Remove(opts); err != nil {
				t.Fatal(err)
			}
		})
	}
	for name, want := range map[string]string{
		"default": "default", "a.b_c-D9": "a.b_c-D9", "a/b": "a%2Fb", "%": "%25", "..": "..", "é": "%C3%A9",
	} {
		if got := escapeName(name); got != want {
			t.Errorf("escapeName(%q) = %q want %q", name, got, want)
		}
	}
}

func TestHeader(t *testing.T) {
	b := make([]byte, headerSize)
	encodeHeader(b, 12345, 1)
	h, err := decodeHeader(b)
	if err != nil || h.capacity != 12345 || h.gen != 1 {
		t.Fatal(h, err)
	}
	for i := range headerCRCOff + 4 {
		c := slices.Clone(b)
		c[i] ^= 0x10
		if _, err := decodeHeader(c); err == nil {
			t.Fatalf("flip at %d accepted", i)
		}
	}
}
