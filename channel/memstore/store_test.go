package memstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/channeltest"
	"github.com/sluicehq/sluice/channel/memstore"
)

func newMemory(t testing.TB, cfgs ...channel.ChannelConfig) *memstore.Store {
	t.Helper()
	m, err := memstore.New(memstore.Options{Channels: cfgs})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMemoryConformance(t *testing.T) {
	channeltest.Run(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
		return newMemory(t, cfgs...)
	})
}

func TestMemoryOptions(t *testing.T) {
	tests := []struct {
		name string
		opts memstore.Options
		want string // error substring; "" = success
	}{
		{"no channels", memstore.Options{}, "no channels"},
		{"bad name", memstore.Options{Channels: []channel.ChannelConfig{{Name: "a b"}}}, "name"},
		{"duplicate", memstore.Options{Channels: []channel.ChannelConfig{{Name: "a"}, {Name: "a"}}}, "twice"},
		{"txn over capacity", memstore.Options{Channels: []channel.ChannelConfig{{Name: "a", Capacity: 5, TransactionCapacity: 6}}}, "exceeds capacity"},
		{"negative max event", memstore.Options{Channels: []channel.ChannelConfig{{Name: "a"}}, MaxEventSize: -1}, "maxEventSize"},
		{"defaults", memstore.Options{Channels: []channel.ChannelConfig{{Name: "a"}}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := memstore.New(tc.opts)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				st, err := m.Stats(context.Background(), "a")
				if err != nil {
					t.Fatal(err)
				}
				if st.Capacity != channel.DefaultCapacity {
					t.Fatalf("Capacity %d, want default %d", st.Capacity, channel.DefaultCapacity)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewMemory: %v, want error containing %q", err, tc.want)
			}
		})
	}
}

func TestMemoryMaxEventSize(t *testing.T) {
	m, err := memstore.New(memstore.Options{
		Channels:     []channel.ChannelConfig{{Name: "a"}},
		MaxEventSize: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tx, _ := m.BeginPut(context.Background(), channel.PutOptions{})
	if err := tx.Put("a", channel.Event{Body: make([]byte, 10)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", channel.Event{Headers: map[string]string{"k": "v"}, Body: make([]byte, 9)}); !errors.Is(err, channel.ErrEventTooLarge) {
		t.Fatalf("11-byte event with max 10: %v", err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryRollbackOrderLarge exercises the head merge with many concurrent
// take txns rolling back in random order over a queue that wraps its ring.
func TestMemoryRollbackOrderLarge(t *testing.T) {
	m := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 10_000, TransactionCapacity: 1000})
	defer m.Close()
	ctx := context.Background()
	put := func(from, to int) {
		tx, _ := m.BeginPut(ctx, channel.PutOptions{})
		for i := from; i < to; i++ {
			if err := tx.Put("a", channel.Event{Body: fmt.Appendf(nil, "%05d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Move the ring's head off zero so later pushes wrap.
	put(0, 100)
	tx, _ := m.BeginTake(ctx, "a")
	if _, err := tx.Take(ctx, 100); err != nil {
		t.Fatal(err)
	}
	tx.Commit(ctx)
	put(100, 1100)
	put(1100, 2100)

	var txns []channel.TakeTxn
	held := map[int][]string{}
	finished := map[int]bool{}
	for i := range 40 {
		tx, _ := m.BeginTake(ctx, "a")
		txns = append(txns, tx)
		for round := range 3 {
			got, err := tx.Take(ctx, 1+(i*7+round*3)%13)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				held[i] = append(held[i], string(e.Body))
			}
		}
		// Interleave rollbacks with takes so restored events are taken again.
		if i%4 == 3 {
			if err := txns[i-1].Rollback(); err != nil {
				t.Fatal(err)
			}
			delete(held, i-1)
			finished[i-1] = true
		}
	}
	// Finish in a scrambled order: commit every fifth, roll back the rest.
	removed := map[string]bool{}
	for k := range txns {
		i := (k * 17) % len(txns)
		if finished[i] {
			continue
		}
		if i%5 == 0 {
			if err := txns[i].Commit(ctx); err != nil {
				t.Fatal(err)
			}
			for _, b := range held[i] {
				removed[b] = true
			}
			continue
		}
		if err := txns[i].Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	var want []string
	for i := 100; i < 2100; i++ {
		if b := fmt.Sprintf("%05d", i); !removed[b] {
			want = append(want, b)
		}
	}
	var got []string
	for {
		tx, _ := m.BeginTake(ctx, "a")
		evs, err := tx.Take(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		tx.Commit(ctx)
		for _, e := range evs {
			got = append(got, string(e.Body))
		}
		if len(got) == len(want) {
			break
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queue after scrambled rollbacks differs: %d events, want %d (first %q, want %q)", len(got), len(want), got[:min(5, len(got))], want[:min(5, len(want))])
	}
	tx.Rollback()
}

// TestMemoryRingCycles checks that a drained channel does not pin its peak
// buffer and that the ring stays correct across grow/shrink cycles.
func TestMemoryRingCycles(t *testing.T) {
	m := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 100_000, TransactionCapacity: 5000})
	defer m.Close()
	ctx := context.Background()
	next, want := 0, 0
	for cycle := range 6 {
		n := 10 << cycle
		tx, _ := m.BeginPut(ctx, channel.PutOptions{})
		for range n {
			tx.Put("a", channel.Event{Body: fmt.Appendf(nil, "%d", next)})
			next++
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for {
			tk, _ := m.BeginTake(ctx, "a")
			got, err := tk.Take(ctx, 7+cycle)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				if string(e.Body) != fmt.Sprint(want) {
					t.Fatalf("cycle %d: got %s, want %d", cycle, e.Body, want)
				}
				want++
			}
			tk.Commit(ctx)
			if st, _ := m.Stats(context.Background(), "a"); st.Size == 0 {
				break
			}
		}
	}
	if want != next {
		t.Fatalf("took %d of %d", want, next)
	}
}

// TestMemoryCloseDuringKeepAlive checks that Close wakes a put waiting for
// room.
func TestMemoryCloseDuringKeepAlive(t *testing.T) {
	m := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 1, TransactionCapacity: 1, KeepAlive: time.Minute})
	ctx := context.Background()
	tx, _ := m.BeginPut(ctx, channel.PutOptions{})
	tx.Put("a", channel.Event{})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tx, _ = m.BeginPut(ctx, channel.PutOptions{})
	tx.Put("a", channel.Event{})
	errc := make(chan error, 1)
	go func() { errc <- tx.Commit(ctx) }()
	time.Sleep(20 * time.Millisecond)
	m.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, channel.ErrClosed) {
			t.Fatalf("waiting Commit after Close: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the waiting Commit")
	}
}

// TestMemoryConcurrentSameProducer: concurrent retries of one (producer,
// sequence) store it once.
func TestMemoryConcurrentSameProducer(t *testing.T) {
	m := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 1000, TransactionCapacity: 10})
	defer m.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	dups := 0
	for range 16 {
		wg.Go(func() {
			tx, _ := m.BeginPut(ctx, channel.PutOptions{ProducerID: "p", Sequence: 7})
			tx.Put("a", channel.Event{Body: []byte("x")})
			if err := tx.Commit(ctx); err != nil {
				t.Error(err)
			}
			mu.Lock()
			if tx.Deduplicated() {
				dups++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if st, _ := m.Stats(context.Background(), "a"); st.Size != 1 || dups != 15 {
		t.Fatalf("Size %d, %d deduplicated; want 1, 15", st.Size, dups)
	}
}

func benchChannel(b *testing.B) *memstore.Store {
	m, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{{
		Name: "a", Capacity: 1 << 20, TransactionCapacity: 1000,
	}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func benchEvents(size, n int) []channel.Event {
	evs := make([]channel.Event, n)
	for i := range evs {
		evs[i] = channel.Event{Body: make([]byte, size)}
	}
	return evs
}

// putBatches puts n events in transactions of batch events.
func putBatches(b *testing.B, m *memstore.Store, evs []channel.Event, n int) {
	ctx := context.Background()
	for done := 0; done < n; {
		k := min(len(evs), n-done)
		tx, err := m.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if err := tx.Put("a", evs[:k]...); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}

// takeBatches takes and commits n events in transactions of up to batch.
func takeBatches(b *testing.B, m *memstore.Store, batch, n int) {
	ctx := context.Background()
	for done := 0; done < n; {
		tx, err := m.BeginTake(ctx, "a")
		if err != nil {
			b.Fatal(err)
		}
		got, err := tx.Take(ctx, min(batch, n-done))
		if err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		done += len(got)
	}
}

// Each op is one event; the channel is drained (untimed) every chunk events.
const benchChunk = 1 << 16

func BenchmarkMemoryPut(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				m := benchChannel(b)
				evs := benchEvents(size, batch)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					k := min(benchChunk, b.N-done)
					putBatches(b, m, evs, k)
					done += k
					b.StopTimer()
					takeBatches(b, m, 1000, k)
					b.StartTimer()
				}
			})
		}
	}
}

func BenchmarkMemoryTake(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				m := benchChannel(b)
				evs := benchEvents(size, 1000)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for done := 0; done < b.N; {
					k := min(benchChunk, b.N-done)
					b.StopTimer()
					putBatches(b, m, evs, k)
					b.StartTimer()
					takeBatches(b, m, batch, k)
					done += k
				}
			})
		}
	}
}

// TestMemoryProducerExpiry: the memory channel drops idle entries too.
func TestMemoryProducerExpiry(t *testing.T) {
	clock := channeltest.NewClock(time.Unix(1_800_000_000, 0))
	m, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}}, ProducerExpiry: time.Hour, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	put := func(producer string, seq uint64) bool {
		t.Helper()
		tx, _ := m.BeginPut(ctx, channel.PutOptions{ProducerID: producer, Sequence: seq})
		tx.Put("c", channel.Event{Body: []byte("x")})
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return tx.Deduplicated()
	}
	put("old", 1)
	clock.Add(2 * time.Hour)
	put("new", 1) // sweeps: old is two hours idle
	if put("old", 1) {
		t.Fatal("an expired producer's sequence was still deduplicated")
	}
	if !put("new", 1) {
		t.Fatal("a recent producer's retry was stored again")
	}
}

func TestMemoryProducerTableLimit(t *testing.T) {
	clock := channeltest.NewClock(time.Unix(1_800_000_000, 0))
	m, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}},
		MaxProducers: 2, ProducerExpiry: time.Hour, Clock: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// the memory store sweeps at commits
	channeltest.ProducerTableLimit(t, m, clock, func() error { return put1(m, "p1", 4) })
}

// put1 commits one event to channel c as (producer, seq).
func put1(st channel.Store, producer string, seq uint64) error {
	ctx := context.Background()
	tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: producer, Sequence: seq})
	if err != nil {
		return err
	}
	if err := tx.Put("c", channel.Event{Body: []byte(producer)}); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
