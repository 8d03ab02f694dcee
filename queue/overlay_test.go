package queue

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestDequeModel drives two deques sharing one block pool with random pushes
// at both ends and pops, across many block boundaries, against slices: a
// block reused from the pool must never alias a live one, and a deque holds
// at most two partly used blocks beyond its values.
func TestDequeModel(t *testing.T) {
	for seed := range uint64(12) {
		rng := rand.New(rand.NewPCG(seed, 7))
		pool := &blockPool{keep: 8}
		ds := [2]deque{{pool: pool}, {pool: pool}}
		var models [2][]uint64
		next := uint64(1)
		for step := range 2000 {
			k := rng.IntN(2)
			d, m := &ds[k], &models[k]
			switch r := rng.IntN(100); {
			case r < 30:
				d.pushBack(next)
				*m = append(*m, next)
				next++
			case r < 50:
				vs := make([]uint64, rng.IntN(3*dequeBlock))
				for i := range vs {
					vs[i] = next
					next++
				}
				d.pushBackN(vs)
				*m = append(*m, vs...)
			case r < 65:
				var front []uint64
				for range rng.IntN(2 * dequeBlock) {
					d.pushFront(next)
					front = append(front, next)
					next++
				}
				slices.Reverse(front)
				*m = append(front, *m...)
			case r < 97:
				n := min(len(*m), rng.IntN(3*dequeBlock))
				for range n {
					d.popFront()
				}
				*m = (*m)[n:]
			default:
				d.release()
				*m = nil
			}
			for k := range ds {
				d, m := &ds[k], models[k]
				if d.len() != len(m) {
					t.Fatalf("seed %d step %d deque %d: len %d, model %d", seed, step, k, d.len(), len(m))
				}
				if max := len(m)/dequeBlock + 2; len(d.blocks) > max {
					t.Fatalf("seed %d step %d deque %d: %d blocks for %d values", seed, step, k, len(d.blocks), len(m))
				}
				for i, v := range m {
					if step%20 != 0 && rng.IntN(64) != 0 {
						continue // a sample; everything every 20 steps
					}
					if got := d.at(i); got != v {
						t.Fatalf("seed %d step %d deque %d: at(%d) = %d, want %d", seed, step, k, i, got, v)
					}
				}
			}
			if len(pool.free) > pool.keep {
				t.Fatalf("pool holds %d blocks, keep %d", len(pool.free), pool.keep)
			}
		}
	}
}

// TestInstallRecyclesBlocks checks that the blocks of an installed
// snapshot's overlay are reused by the next one instead of allocated.
func TestInstallRecyclesBlocks(t *testing.T) {
	opts := kinds[0].opts(t, "mem", 100_000)
	q := mustOpen(t, opts, nil)
	defer q.Close()
	fill(t, q, 1, 20_000)
	checkpoint(t, q)
	want := 20_000/dequeBlock + 1
	if len(q.pool.free) < want-1 || q.pool.keep < want {
		t.Fatalf("pool after install: %d free, keep %d; the overlay had about %d blocks", len(q.pool.free), q.pool.keep, want)
	}
	free := len(q.pool.free)
	ps := make([]uint64, 5000)
	for i := range ps {
		ps[i] = uint64(30_000 + i)
	}
	if err := q.PushBackN(ps); err != nil {
		t.Fatal(err)
	}
	if got := free - len(q.pool.free); got != len(q.cur.post.blocks) {
		t.Fatalf("took %d pooled blocks, overlay holds %d", got, len(q.cur.post.blocks))
	}
	for i := range uint64(25_000) {
		want := i + 1 // the checkpointed values, then the pushed ones
		if i >= 20_000 {
			want = 30_000 + i - 20_000
		}
		if v, _ := q.PopFront(); v != want {
			t.Fatalf("pop %d = %d, want %d", i, v, want)
		}
	}
	if q.Len() != 0 {
		t.Fatal(q.Len())
	}
}
