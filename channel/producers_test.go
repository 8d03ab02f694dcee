package channel

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestProducerTable(t *testing.T) {
	tab := make(producerTable)
	tab.note("a", 5, 100)
	tab.note("a", 3, 50) // a replayed older commit moves neither field back
	if e := tab["a"]; e.seq != 5 || e.last != 100 {
		t.Fatalf("entry %+v, want seq 5 last 100", e)
	}
	for seq, want := range map[uint64]bool{4: true, 5: true, 6: false} {
		if got := tab.committed("a", seq); got != want {
			t.Fatalf("committed(a, %d) = %v", seq, got)
		}
	}
	if tab.committed("b", 0) {
		t.Fatal("unknown producer reported committed")
	}
	tab.note("b", 1, 200)
	if n := tab.sweep(150); n != 1 || len(tab) != 1 || !tab.committed("b", 1) {
		t.Fatalf("sweep(150) dropped %d, left %v", n, tab)
	}
	if producerExpiry(0) != DefaultProducerExpiry || producerExpiry(-1) != 0 || producerExpiry(time.Hour) != time.Hour {
		t.Fatal("producerExpiry defaults")
	}
}

// fakeClock is a settable clock for producer expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestFileProducerExpiry: an entry idle longer than ProducerExpiry is
// dropped at the next checkpoint (a retry of its sequence is then stored
// again), a recent one is kept, and the last-use times survive a restart
// in the checkpoint, so the expiry keeps counting across it.
func TestFileProducerExpiry(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.ProducerExpiry = time.Hour
	o.now = clock.now
	ctx := context.Background()
	put := func(s *File, producer string, seq uint64) (dedup bool) {
		t.Helper()
		tx, err := s.BeginPut(ctx, PutOptions{ProducerID: producer, Sequence: seq})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put("c1", evPlain(int(seq))); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return tx.(*filePut).Deduplicated()
	}
	s := mustOpen(t, o)
	put(s, "old", 1)
	clock.add(50 * time.Minute)
	put(s, "new", 1)
	if !put(s, "new", 1) { // a retry (it counts as a use, at the same time)
		t.Fatal("a retry of a recent producer was stored again")
	}
	clock.add(20 * time.Minute) // old idle 70 min, new 20 min
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if put(s, "old", 1) {
		t.Fatal("an expired producer's sequence was still deduplicated")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// "old" was re-noted just now; "new" last committed 20 minutes ago.
	clock.add(45 * time.Minute)
	s = mustOpen(t, o)
	defer s.Close()
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if !put(s, "old", 1) {
		t.Fatal("after a restart, a producer used 45 minutes ago was forgotten")
	}
	if put(s, "new", 1) {
		t.Fatal("after a restart, a producer idle 65 minutes was still deduplicated: its last use was not kept")
	}
}

// TestMemoryProducerExpiry: the memory channel drops idle entries too.
func TestMemoryProducerExpiry(t *testing.T) {
	m, err := NewMemory(MemoryOptions{Channels: []ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}}, ProducerExpiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	m.now = clock.now
	m.swept = clock.now()
	ctx := context.Background()
	put := func(producer string, seq uint64) bool {
		t.Helper()
		tx, _ := m.BeginPut(ctx, PutOptions{ProducerID: producer, Sequence: seq})
		tx.Put("c", Event{Body: []byte("x")})
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return tx.Deduplicated()
	}
	put("old", 1)
	clock.add(2 * time.Hour)
	put("new", 1) // sweeps: old is two hours idle
	if put("old", 1) {
		t.Fatal("an expired producer's sequence was still deduplicated")
	}
	if !put("new", 1) {
		t.Fatal("a recent producer's retry was stored again")
	}
}

// The producer table is bounded: a put of a new producer id beyond
// MaxProducers fails with ErrProducerTableFull and stores nothing, known
// producers go on, and an expired entry makes room.
func TestProducerTableLimit(t *testing.T) {
	cfgs := []ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}}
	for _, kind := range []string{"file", "memory"} {
		t.Run(kind, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
			var st Channel
			if kind == "file" {
				o := testFileOptions(vfs.NewMem(), 1, cfgs...)
				o.MaxProducers, o.ProducerExpiry, o.now = 2, time.Hour, clock.now
				f := mustOpen(t, o)
				st = f
			} else {
				m, err := NewMemory(MemoryOptions{Channels: cfgs, MaxProducers: 2, ProducerExpiry: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				m.now = clock.now
				m.swept = clock.now()
				st = m
			}
			defer st.Close()
			put := func(id string, seq uint64) error {
				tx, err := st.BeginPut(context.Background(), PutOptions{ProducerID: id, Sequence: seq})
				if err != nil {
					return err
				}
				tx.Put("c", Event{Body: []byte(id)})
				return tx.Commit(context.Background())
			}
			for _, id := range []string{"p1", "p2"} {
				if err := put(id, 1); err != nil {
					t.Fatal(err)
				}
			}
			if err := put("p3", 1); !errors.Is(err, ErrProducerTableFull) {
				t.Fatalf("third producer: %v, want ErrProducerTableFull", err)
			}
			if err := put("p1", 2); err != nil {
				t.Fatalf("known producer: %v", err)
			}
			if n := len(drainBodies(t, st)); n != 3 {
				t.Fatalf("%d events stored, want 3 (nothing of the refused put)", n)
			}
			// p2 idles past the expiry; p1 keeps committing.
			clock.add(50 * time.Minute)
			if err := put("p1", 3); err != nil {
				t.Fatal(err)
			}
			clock.add(20 * time.Minute)
			if f, ok := st.(*File); ok {
				if err := f.Checkpoint(); err != nil { // the file store sweeps at checkpoints
					t.Fatal(err)
				}
			} else if err := put("p1", 4); err != nil { // the memory store sweeps at commits
				t.Fatal(err)
			}
			if err := put("p3", 1); err != nil {
				t.Fatalf("new producer after an entry expired: %v", err)
			}
		})
	}
}

func drainBodies(t *testing.T, st Channel) []string {
	t.Helper()
	var out []string
	tx, err := st.BeginTake(context.Background(), "c")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	evs, _ := tx.Take(ctx, 100)
	for _, e := range evs {
		out = append(out, string(e.Body))
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return out
}

// A quiet producer keeps its entry by putting at its current position (a
// deduplicated put): the entry's last use moves, so it does not expire while
// the producer is alive; one that stops doing so expires.
func TestQuietProducerKeepsEntry(t *testing.T) {
	cfgs := []ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}}
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	o := testFileOptions(vfs.NewMem(), 1, cfgs...)
	o.ProducerExpiry, o.now = time.Hour, clock.now
	s := mustOpen(t, o)
	defer s.Close()
	ctx := context.Background()
	put := func(id string, seq uint64, n int) {
		t.Helper()
		tx, err := s.BeginPut(ctx, PutOptions{ProducerID: id, Sequence: seq})
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			tx.Put("c", Event{Body: []byte(id)})
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	put("quiet", 5, 1)
	put("gone", 5, 1)
	for range 3 { // three hours of keep-alive puts at the same position
		clock.add(40 * time.Minute)
		put("quiet", 5, 0)
		if err := s.Checkpoint(); err != nil { // sweeps
			t.Fatal(err)
		}
	}
	if seq, ok, _ := s.ProducerSequence(ctx, "c", "quiet"); !ok || seq != 5 {
		t.Fatalf("quiet producer: %d %v, want its entry at 5", seq, ok)
	}
	if _, ok, _ := s.ProducerSequence(ctx, "c", "gone"); ok {
		t.Fatal("a producer idle for two hours still has its entry (expiry 1h)")
	}
}
