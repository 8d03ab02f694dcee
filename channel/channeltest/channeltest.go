// Package channeltest is the conformance suite every channel.Store kind
// runs: it asserts the transaction contract of docs/contracts.md ("The
// transaction contract") and the documented behaviour of package channel.
//
// A kind's test calls Run with a Factory:
//
//	func TestMemoryConformance(t *testing.T) {
//		channeltest.Run(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
//			m, err := memstore.New(memstore.Options{Channels: cfgs})
//			if err != nil {
//				t.Fatal(err)
//			}
//			return m
//		})
//	}
//
// The suite keeps sizes modest so it stays fast over real disks. Behaviour
// the suite relies on beyond the interface comments (both the memory and the
// file channel implement it):
//   - the store uses channel.DefaultMaxEventSize;
//   - events held by open take transactions count against Capacity until the
//     take commits (so a rollback always has room);
//   - TransactionCapacity applies per channel within a put transaction, and
//     Take clamps max to the transaction's remaining room (ErrTxnFull only
//     when it is already full);
//   - a failed put Commit finishes the transaction;
//   - Close is safe to call twice.
package channeltest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// Factory returns an open store with the given channels. The suite closes it.
type Factory func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store

// Run runs the conformance suite against the channel kind f builds.
func Run(t *testing.T, f Factory) { run(t, &suite{f: f}) }

// RunRemote runs the suite against a remote client of a store (the gRPC
// client): the same rules, except that the store's PutAttempts counts only
// the events the client sent, so a put rolled back before its commit, which
// a remote client never sends, is not counted.
func RunRemote(t *testing.T, f Factory) { run(t, &suite{f: f, remote: true}) }

func run(t *testing.T, s *suite) {
	tests := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"FIFO", s.testFIFO},
		{"UncommittedPutInvisible", s.testUncommittedPutInvisible},
		{"PutRollback", s.testPutRollback},
		{"TakeRollbackOrder", s.testTakeRollbackOrder},
		{"MultiChannelAllOrNothing", s.testMultiChannelAllOrNothing},
		{"CapacityEvents", s.testCapacityEvents},
		{"CapacityBytes", s.testCapacityBytes},
		{"KeepAlive", s.testKeepAlive},
		{"TxnCapacityPut", s.testTxnCapacityPut},
		{"TxnCapacityTake", s.testTxnCapacityTake},
		{"EventTooLarge", s.testEventTooLarge},
		{"InvalidHeaders", s.testInvalidHeaders},
		{"UnknownChannel", s.testUnknownChannel},
		{"ProducerDedup", s.testProducerDedup},
		{"PerEventSequences", s.testPerEventSequences},
		{"TakeBlocking", s.testTakeBlocking},
		{"TxnDone", s.testTxnDone},
		{"Close", s.testClose},
		{"Stats", s.testStats},
		{"RoundTrip", s.testRoundTrip},
		{"Offsets", s.testOffsets},
		{"Move", s.testMove},
		{"Stress", s.testStress},
	}
	for _, tc := range tests {
		t.Run(tc.name, tc.fn)
	}
}

type suite struct {
	f      Factory
	remote bool // see RunRemote
}

// store is a channel under test with an idempotent close.
type store struct {
	channel.Store
	once sync.Once
	err  error
}

func (s *store) close() error {
	s.once.Do(func() { s.err = s.Store.Close() })
	return s.err
}

func (s *suite) open(t *testing.T, cfgs ...channel.ChannelConfig) *store {
	t.Helper()
	st := &store{Store: s.f(t, cfgs)}
	t.Cleanup(func() {
		if err := st.close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return st
}

func cfg(name string, capacity int64, txnCap int) channel.ChannelConfig {
	return channel.ChannelConfig{Name: name, Capacity: capacity, TransactionCapacity: txnCap}
}

func ev(body string) channel.Event { return channel.Event{Body: []byte(body)} }

func evs(prefix string, from, to int) []channel.Event {
	out := make([]channel.Event, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, ev(prefix+strconv.Itoa(i)))
	}
	return out
}

func bodies(events []channel.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = string(e.Body)
	}
	return out
}

// put commits one put transaction into one channel.
func put(t testing.TB, ch channel.Store, name string, events ...channel.Event) {
	t.Helper()
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{name: events}); err != nil {
		t.Fatalf("put %d events into %q: %v", len(events), name, err)
	}
}

// tryPut runs one put transaction over several channels and commits it.
func tryPut(ch channel.Store, opts channel.PutOptions, byChan map[string][]channel.Event) error {
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	names := make([]string, 0, len(byChan))
	for n := range byChan {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tx.Put(n, byChan[n]...); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

func expired() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// drain takes and commits everything queued in a channel, without waiting.
func drain(t testing.TB, ch channel.Store, name string) []string {
	t.Helper()
	var out []string
	for {
		got := take(t, ch, name, 16, true)
		if len(got) == 0 {
			return out
		}
		out = append(out, got...)
	}
}

// take takes up to max queued events in one transaction without waiting and
// commits it (or rolls it back).
func take(t testing.TB, ch channel.Store, name string, max int, commit bool) []string {
	t.Helper()
	tx, err := ch.BeginTake(context.Background(), name)
	if err != nil {
		t.Fatalf("BeginTake(%q): %v", name, err)
	}
	got, err := tx.Take(expired(), max)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Take(%q): %v", name, err)
	}
	if len(got) > 0 && err != nil {
		t.Fatalf("Take(%q) returned %d events and error %v", name, len(got), err)
	}
	if commit {
		err = tx.Commit(context.Background())
	} else {
		err = tx.Rollback()
	}
	if err != nil {
		t.Fatalf("take txn end (commit=%v): %v", commit, err)
	}
	return bodies(got)
}

func mustTake(t testing.TB, tx channel.TakeTxn, max int) []string {
	t.Helper()
	got, err := tx.Take(expired(), max)
	if err != nil {
		t.Fatalf("Take(%d): %v", max, err)
	}
	return bodies(got)
}

func stats(t testing.TB, ch channel.Store, name string) channel.Stats {
	t.Helper()
	st, err := ch.Stats(context.Background(), name)
	if err != nil {
		t.Fatalf("Stats(%q): %v", name, err)
	}
	return st
}

func wantSize(t testing.TB, ch channel.Store, name string, size int64) {
	t.Helper()
	if st := stats(t, ch, name); st.Size != size {
		t.Fatalf("channel %q: Size = %d, want %d", name, st.Size, size)
	}
}

func wantStrings(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

func (s *suite) testFIFO(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 10))
	put(t, ch, "a", evs("e", 0, 4)...)
	put(t, ch, "a", evs("e", 4, 5)...)
	put(t, ch, "a", evs("e", 5, 10)...)
	var got []string
	got = append(got, take(t, ch, "a", 3, true)...)
	// Several Take calls in one transaction continue from the head.
	tx, err := ch.BeginTake(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, mustTake(t, tx, 2)...)
	got = append(got, mustTake(t, tx, 2)...)
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	got = append(got, drain(t, ch, "a")...)
	wantStrings(t, "taken", got, bodies(evs("e", 0, 10)))
	wantSize(t, ch, "a", 0)
}

func (s *suite) testUncommittedPutInvisible(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 10))
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("e", 0, 3)...); err != nil {
		t.Fatal(err)
	}
	if got := take(t, ch, "a", 10, true); len(got) != 0 {
		t.Fatalf("took uncommitted events %q", got)
	}
	if st := stats(t, ch, "a"); st.Size != 0 || st.Bytes != 0 {
		t.Fatalf("uncommitted put counted: Size %d Bytes %d", st.Size, st.Bytes)
	}
	// A take blocked meanwhile sees the events only once they commit.
	tt, err := ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	got, err := tt.Take(short, 10)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || len(got) != 0 {
		t.Fatalf("Take before commit = %d events, %v; want none, DeadlineExceeded", len(got), err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "taken after commit", mustTake(t, tt, 10), []string{"e0", "e1", "e2"})
	if err := tt.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) testPutRollback(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 10), cfg("b", 100, 10))
	ctx := context.Background()
	put(t, ch, "a", ev("before"))
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("x", 0, 5)...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("b", evs("y", 0, 5)...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("second Rollback: %v", err)
	}
	put(t, ch, "a", ev("after"))
	wantStrings(t, "a", drain(t, ch, "a"), []string{"before", "after"})
	wantStrings(t, "b", drain(t, ch, "b"), nil)
	if st := stats(t, ch, "b"); st.Size != 0 || st.Bytes != 0 || st.PutSuccesses != 0 {
		t.Fatalf("rolled back put left %+v", st)
	}
}

func (s *suite) testTakeRollbackOrder(t *testing.T) {
	all := bodies(evs("e", 0, 10))
	// Each step: txn index, then "take N", "commit" or "rollback".
	type step struct {
		txn int
		op  string
		n   int
	}
	tests := []struct {
		name  string
		steps []step
		want  []string // queue content afterwards
	}{
		{
			name:  "single",
			steps: []step{{0, "take", 3}, {0, "rollback", 0}},
			want:  all,
		},
		{
			name: "interleaved, later txn rolls back first",
			steps: []step{{0, "take", 2}, {1, "take", 2}, {0, "take", 1}, {1, "take", 1},
				{1, "rollback", 0}, {0, "rollback", 0}},
			want: all,
		},
		{
			name: "interleaved, earlier txn rolls back first",
			steps: []step{{0, "take", 2}, {1, "take", 2}, {0, "take", 1}, {1, "take", 1},
				{0, "rollback", 0}, {1, "rollback", 0}},
			want: all,
		},
		{
			name: "interleaved, one commits",
			steps: []step{{0, "take", 2}, {1, "take", 2}, {0, "take", 1}, {1, "take", 1},
				{0, "commit", 0}, {1, "rollback", 0}},
			want: []string{"e2", "e3", "e5", "e6", "e7", "e8", "e9"},
		},
		{
			name: "retaken rolled-back events",
			// txn0 takes e0, txn1 takes e1, txn0 rolls back, txn1 takes e0
			// again (it now holds e1, e0), txn1 rolls back.
			steps: []step{{0, "take", 1}, {1, "take", 1}, {0, "rollback", 0}, {1, "take", 1},
				{1, "rollback", 0}},
			want: all,
		},
		{
			name: "three txns",
			steps: []step{{0, "take", 1}, {1, "take", 1}, {2, "take", 1}, {0, "take", 1},
				{1, "take", 1}, {2, "take", 1}, {1, "rollback", 0}, {2, "rollback", 0}, {0, "rollback", 0}},
			want: all,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := s.open(t, cfg("a", 100, 10))
			put(t, ch, "a", evs("e", 0, 10)...)
			txns := map[int]channel.TakeTxn{}
			held := map[int]int{}
			for _, st := range tc.steps {
				tx := txns[st.txn]
				if tx == nil {
					var err error
					if tx, err = ch.BeginTake(context.Background(), "a"); err != nil {
						t.Fatal(err)
					}
					txns[st.txn] = tx
				}
				var err error
				switch st.op {
				case "take":
					got := mustTake(t, tx, st.n)
					if len(got) != st.n {
						t.Fatalf("txn %d took %q, want %d events", st.txn, got, st.n)
					}
					held[st.txn] += st.n
				case "commit":
					err = tx.Commit(context.Background())
					held[st.txn] = 0
				case "rollback":
					err = tx.Rollback()
					held[st.txn] = 0
				}
				if err != nil {
					t.Fatalf("txn %d %s: %v", st.txn, st.op, err)
				}
				inFlight := 0
				for _, n := range held {
					inFlight += n
				}
				if got := stats(t, ch, "a").InFlightTakes; got != int64(inFlight) {
					t.Fatalf("after txn %d %s: InFlightTakes = %d, want %d", st.txn, st.op, got, inFlight)
				}
			}
			wantStrings(t, "queue after rollbacks", drain(t, ch, "a"), tc.want)
		})
	}
}

func (s *suite) testMultiChannelAllOrNothing(t *testing.T) {
	ch := s.open(t, cfg("a", 10, 5), cfg("b", 2, 2))
	put(t, ch, "b", ev("b0"), ev("b1"))
	err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{
		"a": {ev("a0"), ev("a1")},
		"b": {ev("b2")},
	})
	if !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put into full channel b: %v, want ErrChannelFull", err)
	}
	if !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("ErrChannelFull does not name the channel: %v", err)
	}
	if st := stats(t, ch, "a"); st.Size != 0 || st.Bytes != 0 || st.PutSuccesses != 0 {
		t.Fatalf("channel a changed by a failed multi-channel put: %+v", st)
	}
	wantSize(t, ch, "b", 2)
	wantStrings(t, "b head", take(t, ch, "b", 1, true), []string{"b0"})
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{
		"a": {ev("a0"), ev("a1")},
		"b": {ev("b2")},
	}); err != nil {
		t.Fatalf("retry after room was freed: %v", err)
	}
	wantStrings(t, "a", drain(t, ch, "a"), []string{"a0", "a1"})
	wantStrings(t, "b", drain(t, ch, "b"), []string{"b1", "b2"})
}

func (s *suite) testCapacityEvents(t *testing.T) {
	ch := s.open(t, cfg("a", 5, 5))
	put(t, ch, "a", evs("e", 0, 3)...)
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": evs("e", 3, 6)}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put 3 into 3/5: %v, want ErrChannelFull", err)
	}
	wantSize(t, ch, "a", 3)
	put(t, ch, "a", evs("e", 3, 5)...)
	wantSize(t, ch, "a", 5)
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {ev("x")}}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put into full channel: %v, want ErrChannelFull", err)
	}
	// Events held by an open take still occupy room until it commits.
	tx, err := ch.BeginTake(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "taken", mustTake(t, tx, 1), []string{"e0"})
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {ev("x")}}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put while a take holds the freed slot: %v, want ErrChannelFull", err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	put(t, ch, "a", ev("e5"))
	wantStrings(t, "queue", drain(t, ch, "a"), bodies(evs("e", 1, 6)))
}

func (s *suite) testCapacityBytes(t *testing.T) {
	c := cfg("a", 100, 10)
	c.MaxBytes = 100
	ch := s.open(t, c)
	body := func(n int) channel.Event { return channel.Event{Body: make([]byte, n)} }
	put(t, ch, "a", body(60))
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {body(41)}}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put 41 bytes into 60/100: %v, want ErrChannelFull", err)
	}
	// Headers count too: 29 body + 11 header bytes = 40, then 41.
	hdr := channel.Event{Headers: map[string]string{"kk": "v", "k": "vv", "x": "yyyy"}, Body: make([]byte, 29)}
	if hdr.Size() != 40 {
		t.Fatalf("test event size %d", hdr.Size())
	}
	hdr.Headers["z"] = ""
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {hdr}}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put 41 bytes (with headers) into 60/100: %v, want ErrChannelFull", err)
	}
	put(t, ch, "a", body(30), body(10))
	if st := stats(t, ch, "a"); st.Bytes != 100 || st.Size != 3 || st.MaxBytes != 100 {
		t.Fatalf("stats after filling bytes: Size %d Bytes %d MaxBytes %d, want 3, 100, 100", st.Size, st.Bytes, st.MaxBytes)
	}
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {body(1)}}); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("put 1 byte into 100/100: %v, want ErrChannelFull", err)
	}
	// A zero-size event still fits the byte bound.
	put(t, ch, "a", channel.Event{})
	take(t, ch, "a", 1, true)
	put(t, ch, "a", body(60))
	if st := stats(t, ch, "a"); st.Bytes != 100 {
		t.Fatalf("Bytes = %d, want 100", st.Bytes)
	}
}

func (s *suite) testKeepAlive(t *testing.T) {
	full := func(t *testing.T, keepAlive time.Duration) *store {
		c := cfg("a", 2, 2)
		c.KeepAlive = keepAlive
		ch := s.open(t, c)
		put(t, ch, "a", ev("e0"), ev("e1"))
		return ch
	}
	t.Run("freed within keep-alive", func(t *testing.T) {
		ch := full(t, 3*time.Second)
		errc := make(chan error, 1)
		go func() {
			time.Sleep(50 * time.Millisecond)
			tx, err := ch.BeginTake(context.Background(), "a")
			if err == nil {
				_, err = tx.Take(context.Background(), 1)
			}
			if err == nil {
				err = tx.Commit(context.Background())
			}
			errc <- err
		}()
		start := time.Now()
		if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {ev("e2")}}); err != nil {
			t.Fatalf("put waiting for room: %v", err)
		}
		if d := time.Since(start); d < 40*time.Millisecond {
			t.Errorf("put into a full channel succeeded after %v, before any room was freed", d)
		} else if d > 2*time.Second {
			t.Errorf("put succeeded only after %v: the take commit did not wake it", d)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "queue", drain(t, ch, "a"), []string{"e1", "e2"})
	})
	t.Run("expires", func(t *testing.T) {
		ch := full(t, 100*time.Millisecond)
		start := time.Now()
		err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {ev("e2")}})
		d := time.Since(start)
		if !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("put: %v, want ErrChannelFull", err)
		}
		if d < 90*time.Millisecond || d > 5*time.Second {
			t.Errorf("failed after %v, want about the 100ms keep-alive", d)
		}
		wantSize(t, ch, "a", 2)
	})
	t.Run("zero fails at once", func(t *testing.T) {
		ch := full(t, 0)
		start := time.Now()
		err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": {ev("e2")}})
		if !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("put: %v, want ErrChannelFull", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("keep-alive 0 put failed only after %v", d)
		}
	})
	t.Run("ctx ends the wait", func(t *testing.T) {
		ch := full(t, time.Minute)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		tx, err := ch.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put("a", ev("e2")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err = tx.Commit(ctx)
		if err == nil || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, channel.ErrChannelFull)) {
			t.Fatalf("Commit with expiring ctx: %v, want DeadlineExceeded or ErrChannelFull", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("ctx expiry ended the wait only after %v", d)
		}
		wantStrings(t, "queue", drain(t, ch, "a"), []string{"e0", "e1"})
	})
}

func (s *suite) testTxnCapacityPut(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 3), cfg("b", 100, 3))
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if err := tx.Put("a", evs("a", 0, 2)...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("a", 2, 4)...); !errors.Is(err, channel.ErrTxnFull) {
		t.Fatalf("4th event in a txn of capacity 3: %v, want ErrTxnFull", err)
	}
	// The failed call added nothing; the transaction stays usable.
	if err := tx.Put("a", ev("a2")); err != nil {
		t.Fatal(err)
	}
	// The bound applies per channel.
	if err := tx.Put("b", evs("b", 0, 3)...); err != nil {
		t.Fatalf("3 events for channel b in a txn already holding 3 for a: %v", err)
	}
	if err := tx.Put("a", ev("a3")); !errors.Is(err, channel.ErrTxnFull) {
		t.Fatalf("4th event: %v, want ErrTxnFull", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "a", drain(t, ch, "a"), []string{"a0", "a1", "a2"})
	wantStrings(t, "b", drain(t, ch, "b"), []string{"b0", "b1", "b2"})
}

func (s *suite) testTxnCapacityTake(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 3))
	put(t, ch, "a", evs("e", 0, 3)...)
	put(t, ch, "a", evs("e", 3, 6)...)
	tx, err := ch.BeginTake(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "first take", mustTake(t, tx, 2), []string{"e0", "e1"})
	wantStrings(t, "take clamped to the room left", mustTake(t, tx, 5), []string{"e2"})
	if got, err := tx.Take(expired(), 1); !errors.Is(err, channel.ErrTxnFull) || len(got) != 0 {
		t.Fatalf("take from a full txn: %d events, %v; want ErrTxnFull", len(got), err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "rest", drain(t, ch, "a"), []string{"e3", "e4", "e5"})
}

func (s *suite) testEventTooLarge(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 10))
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	max := channel.DefaultMaxEventSize
	tooBig := []channel.Event{
		{Body: make([]byte, max+1)},
		{Headers: map[string]string{"key": "value"}, Body: make([]byte, max-7)},
	}
	for i, e := range tooBig {
		if err := tx.Put("a", ev("ok"), e); !errors.Is(err, channel.ErrEventTooLarge) {
			t.Fatalf("event %d of size %d: %v, want ErrEventTooLarge", i, e.Size(), err)
		}
	}
	atLimit := channel.Event{Headers: map[string]string{"key": "value"}, Body: make([]byte, max-8)}
	if err := tx.Put("a", atLimit); err != nil {
		t.Fatalf("event of exactly the maximum size: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if st := stats(t, ch, "a"); st.Size != 1 || st.Bytes != int64(max) {
		t.Fatalf("Size %d Bytes %d, want 1 and %d (rejected calls must add nothing)", st.Size, st.Bytes, max)
	}
}

// Header keys and values are text (valid UTF-8); a malformed one fails the
// Put call alone, with ErrInvalidEvent, and the transaction goes on.
func (s *suite) testInvalidHeaders(t *testing.T) {
	ch := s.open(t, cfg("a", 100, 10))
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []map[string]string{{"k": "\xff\xfe"}, {"\xc3": "v"}} {
		if err := tx.Put("a", ev("ok-before"), channel.Event{Headers: h, Body: []byte("bad")}); !errors.Is(err, channel.ErrInvalidEvent) {
			t.Fatalf("Put with header %q: %v, want ErrInvalidEvent", h, err)
		}
	}
	if err := tx.Put("a", channel.Event{Headers: map[string]string{"k": "v"}, Body: []byte("good")}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantStrings(t, "a", drain(t, ch, "a"), []string{"good"})
}

func (s *suite) testUnknownChannel(t *testing.T) {
	ch := s.open(t, cfg("b", 10, 5), cfg("a", 10, 5))
	ctx := context.Background()
	wantStrings(t, "Channels()", ch.Channels(), []string{"a", "b"})
	for _, name := range []string{"nope", "", "A"} {
		tx, err := ch.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put(name, ev("x")); !errors.Is(err, channel.ErrUnknownChannel) {
			t.Errorf("Put(%q): %v, want ErrUnknownChannel", name, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Errorf("Commit after a rejected Put: %v", err)
		}
		if _, err := ch.BeginTake(ctx, name); !errors.Is(err, channel.ErrUnknownChannel) {
			t.Errorf("BeginTake(%q): %v, want ErrUnknownChannel", name, err)
		}
		if _, err := ch.Stats(context.Background(), name); !errors.Is(err, channel.ErrUnknownChannel) {
			t.Errorf("Stats(%q): %v, want ErrUnknownChannel", name, err)
		}
	}
	wantSize(t, ch, "a", 0)
	wantSize(t, ch, "b", 0)
}

func (s *suite) testProducerDedup(t *testing.T) {
	type attempt struct {
		producer string
		seq      uint64
		body     string
		commit   bool // false: roll back instead
		wantDup  bool
	}
	tests := []struct {
		name     string
		attempts []attempt
		want     []string
	}{
		{"retry same sequence", []attempt{
			{"p", 1, "x", true, false}, {"p", 1, "x", true, true}}, []string{"x"}},
		{"lower sequence", []attempt{
			{"p", 5, "x", true, false}, {"p", 3, "y", true, true}}, []string{"x"}},
		{"higher sequence", []attempt{
			{"p", 5, "x", true, false}, {"p", 6, "y", true, false}, {"p", 6, "y", true, true}}, []string{"x", "y"}},
		{"producers independent", []attempt{
			{"p", 5, "x", true, false}, {"q", 1, "y", true, false}, {"q", 1, "y", true, true},
			{"p", 2, "z", true, true}}, []string{"x", "y"}},
		{"no producer never deduplicates", []attempt{
			{"", 1, "x", true, false}, {"", 1, "x", true, false}}, []string{"x", "x"}},
		{"rolled back sequence not remembered", []attempt{
			{"p", 1, "x", false, false}, {"p", 1, "x", true, false}}, []string{"x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch := s.open(t, cfg("a", 100, 10), cfg("b", 100, 10))
			ctx := context.Background()
			for i, a := range tc.attempts {
				tx, err := ch.BeginPut(ctx, channel.PutOptions{ProducerID: a.producer, Sequence: a.seq})
				if err != nil {
					t.Fatal(err)
				}
				if err := tx.Put("a", ev(a.body)); err != nil {
					t.Fatal(err)
				}
				if err := tx.Put("b", ev(a.body)); err != nil {
					t.Fatal(err)
				}
				if !a.commit {
					if err := tx.Rollback(); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatalf("attempt %d: Commit: %v", i, err)
				}
				if tx.Deduplicated() != a.wantDup {
					t.Fatalf("attempt %d (%q, %d): Deduplicated = %v, want %v", i, a.producer, a.seq, tx.Deduplicated(), a.wantDup)
				}
			}
			wantStrings(t, "a", drain(t, ch, "a"), tc.want)
			wantStrings(t, "b", drain(t, ch, "b"), tc.want)
		})
	}
	t.Run("resume position", func(t *testing.T) {
		ch := s.open(t, cfg("a", 100, 10), cfg("b", 100, 10))
		ctx := context.Background()
		if seq, ok, err := ch.ProducerSequence(ctx, "a", "src"); err != nil || ok || seq != 0 {
			t.Fatalf("unknown producer: %d %v %v", seq, ok, err)
		}
		for _, seq := range []uint64{3, 7} {
			if err := tryPut(ch, channel.PutOptions{ProducerID: "src", Sequence: seq}, map[string][]channel.Event{"a": {ev("x")}}); err != nil {
				t.Fatal(err)
			}
		}
		// A rolled-back put does not move the position.
		tx, err := ch.BeginPut(ctx, channel.PutOptions{ProducerID: "src", Sequence: 9})
		if err != nil {
			t.Fatal(err)
		}
		tx.Put("a", ev("y"))
		tx.Rollback()
		// Any channel of the store answers for its producer table.
		for _, name := range []string{"a", "b"} {
			if seq, ok, err := ch.ProducerSequence(ctx, name, "src"); err != nil || !ok || seq != 7 {
				t.Fatalf("ProducerSequence(%s): %d %v %v, want 7", name, seq, ok, err)
			}
		}
		if _, _, err := ch.ProducerSequence(ctx, "nope", "src"); !errors.Is(err, channel.ErrUnknownChannel) {
			t.Fatalf("unknown channel: %v", err)
		}
	})
	t.Run("invalid producer refused", func(t *testing.T) {
		ch := s.open(t, cfg("a", 100, 10))
		ctx := context.Background()
		o := channel.PutOptions{ProducerID: strings.Repeat("p", channel.MaxProducerIDLen+1), Sequence: 1}
		if tx, err := ch.BeginPut(ctx, o); !errors.Is(err, channel.ErrBadProducer) {
			if tx != nil {
				tx.Rollback()
			}
			t.Fatalf("BeginPut(producer of %d bytes): %v, want ErrBadProducer", len(o.ProducerID), err)
		}
		// Sequence 0 is per-event mode: a plain Put, which would make
		// every later put of the producer look like a duplicate, is refused.
		tx, err := ch.BeginPut(ctx, channel.PutOptions{ProducerID: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put("a", ev("x")); !errors.Is(err, channel.ErrBadProducer) {
			t.Fatalf("Put with producer and sequence 0: %v, want ErrBadProducer", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// The longest allowed id and sequence 1 work, and the store is unchanged.
		long := strings.Repeat("p", channel.MaxProducerIDLen)
		if err := tryPut(ch, channel.PutOptions{ProducerID: long, Sequence: 1}, map[string][]channel.Event{"a": {ev("x")}}); err != nil {
			t.Fatal(err)
		}
		if err := tryPut(ch, channel.PutOptions{ProducerID: "p", Sequence: 1}, map[string][]channel.Event{"a": {ev("y")}}); err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "a", drain(t, ch, "a"), []string{"x", "y"})
	})
	t.Run("failed commit not remembered", func(t *testing.T) {
		ch := s.open(t, cfg("a", 1, 1))
		put(t, ch, "a", ev("fill"))
		opts := channel.PutOptions{ProducerID: "p", Sequence: 1}
		if err := tryPut(ch, opts, map[string][]channel.Event{"a": {ev("x")}}); !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("put into full channel: %v", err)
		}
		take(t, ch, "a", 1, true)
		if err := tryPut(ch, opts, map[string][]channel.Event{"a": {ev("x")}}); err != nil {
			t.Fatalf("retry after room was freed: %v", err)
		}
		// A retry of a committed put succeeds even when the channel is full.
		if err := tryPut(ch, opts, map[string][]channel.Event{"a": {ev("x")}}); err != nil {
			t.Fatalf("retry of a committed put into a full channel: %v", err)
		}
		wantStrings(t, "a", drain(t, ch, "a"), []string{"x"})
	})
}

func (s *suite) testTakeBlocking(t *testing.T) {
	t.Run("woken by commit", func(t *testing.T) {
		ch := s.open(t, cfg("a", 10, 5))
		tx, err := ch.BeginTake(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		var committed atomic.Bool
		type result struct {
			got []channel.Event
			err error
		}
		res := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := tx.Take(ctx, 5)
			if !committed.Load() {
				err = fmt.Errorf("Take returned %d events, %v before the put committed", len(got), err)
			}
			res <- result{got, err}
		}()
		time.Sleep(50 * time.Millisecond)
		committed.Store(true)
		put(t, ch, "a", ev("x"), ev("y"))
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		wantStrings(t, "woken take", bodies(r.got), []string{"x", "y"})
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("woken by rollback", func(t *testing.T) {
		ch := s.open(t, cfg("a", 10, 5))
		put(t, ch, "a", ev("x"))
		holder, err := ch.BeginTake(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		mustTake(t, holder, 1)
		tx, err := ch.BeginTake(context.Background(), "a")
		if err != nil {
			t.Fatal(err)
		}
		res := make(chan []string, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, _ := tx.Take(ctx, 5)
			res <- bodies(got)
		}()
		time.Sleep(20 * time.Millisecond)
		if err := holder.Rollback(); err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "take woken by rollback", <-res, []string{"x"})
		tx.Rollback()
	})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"cancelled ctx", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"expired deadline", func() (context.Context, context.CancelFunc) {
			return context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		}, context.DeadlineExceeded},
		{"short timeout", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := s.open(t, cfg("a", 10, 5))
			tx, err := ch.BeginTake(context.Background(), "a")
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			got, err := tx.Take(ctx, 5)
			if !errors.Is(err, tc.want) || len(got) != 0 {
				t.Fatalf("Take on empty channel = %d events, %v; want none, %v", len(got), err, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Take returned after %v", d)
			}
			// Queued events are returned even when ctx is done.
			put(t, ch, "a", ev("x"))
			got, err = tx.Take(ctx, 5)
			if err != nil || len(got) != 1 {
				t.Fatalf("Take with done ctx and a queued event = %d events, %v", len(got), err)
			}
		})
	}
}

func (s *suite) testTxnDone(t *testing.T) {
	ch := s.open(t, cfg("a", 10, 5))
	ctx := context.Background()
	for _, commit := range []bool{true, false} {
		name := map[bool]string{true: "commit", false: "rollback"}[commit]
		t.Run("put after "+name, func(t *testing.T) {
			tx, err := ch.BeginPut(ctx, channel.PutOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Put("a", ev("x")); err != nil {
				t.Fatal(err)
			}
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tx.Put("a", ev("y")); !errors.Is(err, channel.ErrTxnDone) {
				t.Errorf("Put: %v, want ErrTxnDone", err)
			}
			// Per-event mode: its calls, too.
			pe, err := ch.BeginPut(ctx, channel.PutOptions{ProducerID: "p-" + name})
			if err != nil {
				t.Fatal(err)
			}
			if err := pe.PutSeq("a", 1, ev("x")); err != nil {
				t.Fatal(err)
			}
			if commit {
				err = pe.Commit(ctx)
			} else {
				err = pe.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
			for call, err := range map[string]error{"PutSeq": pe.PutSeq("a", 2, ev("y")), "Put": pe.Put("a", ev("y")), "Commit": pe.Commit(ctx)} {
				if !errors.Is(err, channel.ErrTxnDone) {
					t.Errorf("per-event %s: %v, want ErrTxnDone", call, err)
				}
			}
			if err := tx.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
				t.Errorf("Commit: %v, want ErrTxnDone", err)
			}
			if err := tx.Rollback(); err != nil {
				t.Errorf("Rollback: %v, want nil", err)
			}
		})
		t.Run("take after "+name, func(t *testing.T) {
			put(t, ch, "a", ev("x"))
			tx, err := ch.BeginTake(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			mustTake(t, tx, 1)
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Take(expired(), 1); !errors.Is(err, channel.ErrTxnDone) {
				t.Errorf("Take: %v, want ErrTxnDone", err)
			}
			if err := tx.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
				t.Errorf("Commit: %v, want ErrTxnDone", err)
			}
			if err := tx.Rollback(); err != nil {
				t.Errorf("Rollback: %v, want nil", err)
			}
		})
	}
	drain(t, ch, "a")
	// A put txn whose commit failed is finished too.
	full := s.open(t, cfg("f", 1, 1))
	put(t, full, "f", ev("x"))
	tx, err := full.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("f", ev("y")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("Commit: %v, want ErrChannelFull", err)
	}
	if err := tx.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
		t.Errorf("Commit after a failed Commit: %v, want ErrTxnDone", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Errorf("Rollback after a failed Commit: %v", err)
	}
}

func (s *suite) testClose(t *testing.T) {
	keep := cfg("full", 1, 1)
	keep.KeepAlive = time.Minute
	ch := s.open(t, cfg("a", 10, 5), cfg("b", 10, 5), keep)
	ctx := context.Background()
	put(t, ch, "a", ev("x"))
	holder, err := ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	mustTake(t, holder, 1)
	openPut, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := openPut.Put("a", ev("y")); err != nil {
		t.Fatal(err)
	}
	// Block a Take on a channel no other transaction touches, so only
	// Close itself can wake it.
	blocked, err := ch.BeginTake(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	// And a put waiting for room in a full channel with a long keep-alive.
	put(t, ch, "full", ev("f"))
	waiting, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := waiting.Put("full", ev("g")); err != nil {
		t.Fatal(err)
	}
	putRes := make(chan error, 1)
	go func() { putRes <- waiting.Commit(ctx) }()
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got, err := blocked.Take(ctx, 1)
		if len(got) != 0 {
			err = fmt.Errorf("blocked Take returned %d events", len(got))
		}
		res <- err
	}()
	time.Sleep(30 * time.Millisecond)
	start := time.Now()
	if err := ch.close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for what, c := range map[string]chan error{"blocked Take": res, "put waiting for room": putRes} {
		select {
		case err := <-c:
			if !errors.Is(err, channel.ErrClosed) {
				t.Fatalf("%s after Close: %v, want ErrClosed", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Close did not wake the %s", what)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close woke the blocked Take and put after %v", d)
	}
	if err := ch.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := ch.BeginPut(ctx, channel.PutOptions{}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("BeginPut after Close: %v, want ErrClosed", err)
	}
	if _, err := ch.BeginTake(ctx, "a"); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("BeginTake after Close: %v, want ErrClosed", err)
	}
	if _, err := ch.Stats(context.Background(), "a"); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Stats after Close: %v, want ErrClosed", err)
	}
	if err := openPut.Commit(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Commit of a put opened before Close: %v, want ErrClosed", err)
	}
	if _, err := holder.Take(expired(), 1); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Take on a txn opened before Close: %v, want ErrClosed", err)
	}
	if err := holder.Commit(ctx); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Commit of a take opened before Close: %v, want ErrClosed", err)
	}
	if err := holder.Rollback(); err != nil {
		t.Errorf("Rollback after Close: %v", err)
	}
	wantStrings(t, "Channels() after Close", ch.Channels(), []string{"a", "b", "full"})
}

func (s *suite) testStats(t *testing.T) {
	c := cfg("a", 50, 10)
	c.MaxBytes = 1000
	ch := s.open(t, c, cfg("idle", 7, 7))
	ctx := context.Background()

	st := stats(t, ch, "idle")
	// The limits are reported: a client checks a batch against them.
	if st.MaxEventSize <= 0 {
		t.Fatalf("idle channel stats report maxEventSize %d", st.MaxEventSize)
	}
	want := channel.Stats{Name: "idle", Capacity: 7, TransactionCapacity: 7, MaxEventSize: st.MaxEventSize}
	if st != want {
		t.Fatalf("idle channel stats %+v, want %+v", st, want)
	}

	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("e", 0, 3)...); err != nil { // 2 bytes each
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("e", 3, 5)...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err = ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("a", evs("r", 0, 2)...); err != nil {
		t.Fatal(err)
	}
	tx.Rollback()
	time.Sleep(20 * time.Millisecond)

	st = stats(t, ch, "a")
	if st.Name != "a" || st.Capacity != 50 || st.MaxBytes != 1000 {
		t.Fatalf("config in stats: %+v", st)
	}
	wantAttempts := int64(7) // the two rolled-back events count
	if s.remote {
		wantAttempts = 5 // a remote client never sent them
	}
	if st.PutAttempts != wantAttempts || st.PutSuccesses != 5 {
		t.Fatalf("PutAttempts %d PutSuccesses %d, want %d, 5", st.PutAttempts, st.PutSuccesses, wantAttempts)
	}
	if st.Size != 5 || st.Bytes != 10 || st.InFlightTakes != 0 {
		t.Fatalf("Size %d Bytes %d InFlightTakes %d, want 5, 10, 0", st.Size, st.Bytes, st.InFlightTakes)
	}
	if st.OldestEventAge < 10*time.Millisecond || st.OldestEventAge > time.Minute {
		t.Fatalf("OldestEventAge %v, want at least the 20ms slept", st.OldestEventAge)
	}

	take(t, ch, "a", 3, true)
	take(t, ch, "a", 2, false)
	held, err := ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	mustTake(t, held, 1)
	st = stats(t, ch, "a")
	if st.TakeAttempts != 6 || st.TakeSuccesses != 3 {
		t.Fatalf("TakeAttempts %d TakeSuccesses %d, want 6, 3", st.TakeAttempts, st.TakeSuccesses)
	}
	if st.Size != 1 || st.InFlightTakes != 1 || st.Bytes != 2 {
		t.Fatalf("Size %d InFlightTakes %d Bytes %d, want 1, 1, 2", st.Size, st.InFlightTakes, st.Bytes)
	}
	if err := held.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	take(t, ch, "a", 1, true)
	st = stats(t, ch, "a")
	if st.Size != 0 || st.Bytes != 0 || st.InFlightTakes != 0 || st.OldestEventAge != 0 || st.TakeSuccesses != 5 {
		t.Fatalf("drained channel stats %+v", st)
	}
	if st.PutAttempts != wantAttempts || st.PutSuccesses != 5 {
		t.Fatalf("put counters changed by takes: %+v", st)
	}
}

func (s *suite) testRoundTrip(t *testing.T) {
	binary := make([]byte, 256*4)
	for i := range binary {
		binary[i] = byte(i)
	}
	max := channel.DefaultMaxEventSize
	large := make([]byte, max-len("timestamp")-16-1)
	for i := range large {
		large[i] = byte(i*7 + i>>8)
	}
	many := map[string]string{}
	for i := range 50 {
		many["h"+strconv.Itoa(i)] = strings.Repeat("v", i)
	}
	tests := []struct {
		name string
		ev   channel.Event
	}{
		{"nil body no headers", channel.Event{}},
		{"empty body", channel.Event{Body: []byte{}}},
		{"empty header value", channel.Event{Headers: map[string]string{"k": ""}}},
		{"binary body", channel.Event{Body: binary}},
		{"zero bytes", channel.Event{Body: make([]byte, 100)}},
		{"newlines", channel.Event{Body: []byte("a\nb\r\n\x00c\n")}},
		{"unicode headers", channel.Event{Headers: map[string]string{"clé": "välue ✓", "": "empty key", "\x00k": "\u00ff\U0001F600"}, Body: []byte("x")}},
		{"many headers", channel.Event{Headers: many, Body: []byte("body")}},
		{"just under the limit", channel.Event{Headers: map[string]string{"timestamp": "1700000000000000"}, Body: large}},
	}
	ch := s.open(t, cfg("a", 100, 20))
	ctx := context.Background()
	tx, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Callers may reuse their buffers after Put: scribble over them before
	// the commit and check what comes back.
	var scribble []func()
	for _, tc := range tests {
		e := tc.ev
		in := channel.Event{Body: append([]byte(nil), e.Body...)}
		if e.Body != nil && len(e.Body) == 0 {
			in.Body = []byte{}
		}
		if e.Headers != nil {
			in.Headers = map[string]string{}
			for k, v := range e.Headers {
				in.Headers[k] = v
			}
		}
		if err := tx.Put("a", in); err != nil {
			t.Fatalf("%s: Put: %v", tc.name, err)
		}
		scribble = append(scribble, func() {
			for i := range in.Body {
				in.Body[i] ^= 0xff
			}
			for k := range in.Headers {
				in.Headers[k] = "changed"
			}
			if in.Headers != nil {
				in.Headers["added"] = "after put"
			}
		})
	}
	// The local stores copy at Put; every implementation has copied by
	// the time Commit returns (a remote client sends at Commit).
	if !s.remote {
		for _, f := range scribble {
			f()
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if s.remote {
		for _, f := range scribble {
			f()
		}
	}
	check := func(round string, got []channel.Event) {
		t.Helper()
		if len(got) != len(tests) {
			t.Fatalf("%s: took %d events, want %d", round, len(got), len(tests))
		}
		for i, tc := range tests {
			if err := sameEvent(got[i], tc.ev); err != nil {
				t.Errorf("%s: %s: %v", round, tc.name, err)
			}
		}
	}
	tt, err := ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tt.Take(expired(), len(tests))
	if err != nil {
		t.Fatal(err)
	}
	check("first take", got)
	// The taker owns what it got: changing it must not alter a redelivery.
	for _, e := range got {
		for i := range e.Body {
			e.Body[i] = 'z'
		}
		if e.Headers != nil {
			e.Headers["taker"] = "was here"
		}
	}
	if err := tt.Rollback(); err != nil {
		t.Fatal(err)
	}
	tt, err = ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err = tt.Take(expired(), len(tests))
	if err != nil {
		t.Fatal(err)
	}
	check("after rollback", got)
	if err := tt.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func sameEvent(got, want channel.Event) error {
	if string(got.Body) != string(want.Body) {
		return fmt.Errorf("body differs: got %d bytes, want %d", len(got.Body), len(want.Body))
	}
	if len(got.Headers) != len(want.Headers) {
		return fmt.Errorf("got %d headers %q, want %d %q", len(got.Headers), got.Headers, len(want.Headers), want.Headers)
	}
	for k, v := range want.Headers {
		if gv, ok := got.Headers[k]; !ok || gv != v {
			return fmt.Errorf("header %q = %q (present %v), want %q", k, gv, ok, v)
		}
	}
	return nil
}

// testStress runs concurrent producers (multi-channel puts with producer
// sequences, retried on ErrChannelFull) and consumers and checks that every
// committed event is taken exactly once from each channel. Without
// rollbacks it also checks that each consumer sees every producer's events
// in order. (Rollbacks requeue at the head, so a consumer may legitimately
// see an older event after a newer one then.)
func (s *suite) testStress(t *testing.T) {
	for _, rollbacks := range []bool{false, true} {
		name := map[bool]string{false: "ordered", true: "with rollbacks"}[rollbacks]
		t.Run(name, func(t *testing.T) { s.stress(t, rollbacks) })
	}
}

func (s *suite) stress(t *testing.T, rollbacks bool) {
	const (
		producers   = 8
		perProducer = 250
		perChanCons = 4 // consumers per channel
		capacity    = 200
		txnCap      = 32
	)
	chans := []string{"s0", "s1"}
	var cfgs []channel.ChannelConfig
	for _, n := range chans {
		c := cfg(n, capacity, txnCap)
		c.KeepAlive = 20 * time.Millisecond
		cfgs = append(cfgs, c)
	}
	ch := s.open(t, cfgs...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var wg sync.WaitGroup
	errc := make(chan error, producers+len(chans)*perChanCons)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	for p := range producers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(p), 1))
			id := "prod" + strconv.Itoa(p)
			var seq uint64
			for i := 0; i < perProducer; {
				n := min(1+rng.IntN(12), perProducer-i)
				batch := make([]channel.Event, n)
				for j := range batch {
					batch[j] = channel.Event{
						Headers: map[string]string{"p": strconv.Itoa(p)},
						Body:    []byte(strconv.Itoa(i + j)),
					}
				}
				seq++
				opts := channel.PutOptions{ProducerID: id, Sequence: seq}
				for {
					err := tryPut(ch, opts, map[string][]channel.Event{chans[0]: batch, chans[1]: batch})
					if err == nil {
						break
					}
					if !errors.Is(err, channel.ErrChannelFull) || ctx.Err() != nil {
						fail(fmt.Errorf("producer %d: %w", p, err))
						return
					}
				}
				i += n
			}
		})
	}

	total := int64(producers * perProducer)
	type seen struct {
		mu     sync.Mutex
		counts map[[2]int]int
	}
	results := make([]*seen, len(chans))
	for ci, name := range chans {
		res := &seen{counts: map[[2]int]int{}}
		results[ci] = res
		var committed atomic.Int64
		for c := range perChanCons {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(ci*100+c), 2))
				last := map[int]int{}
				for committed.Load() < total {
					if ctx.Err() != nil {
						fail(fmt.Errorf("consumer %s/%d: %d of %d events committed: %w", name, c, committed.Load(), total, ctx.Err()))
						return
					}
					tx, err := ch.BeginTake(ctx, name)
					if err != nil {
						fail(err)
						return
					}
					wctx, wcancel := context.WithTimeout(ctx, 20*time.Millisecond)
					var got []channel.Event
					for range 1 + rng.IntN(3) {
						evs, err := tx.Take(wctx, 1+rng.IntN(12))
						if err != nil && !errors.Is(err, context.DeadlineExceeded) {
							wcancel()
							fail(fmt.Errorf("consumer %s/%d: Take: %w", name, c, err))
							return
						}
						got = append(got, evs...)
					}
					wcancel()
					if rollbacks && rng.IntN(4) == 0 {
						if err := tx.Rollback(); err != nil {
							fail(err)
							return
						}
						continue
					}
					if err := tx.Commit(ctx); err != nil {
						fail(fmt.Errorf("consumer %s/%d: Commit: %w", name, c, err))
						return
					}
					res.mu.Lock()
					for _, e := range got {
						p, err1 := strconv.Atoi(e.Headers["p"])
						i, err2 := strconv.Atoi(string(e.Body))
						if err1 != nil || err2 != nil {
							res.mu.Unlock()
							fail(fmt.Errorf("consumer %s/%d: malformed event %q %q", name, c, e.Headers, e.Body))
							return
						}
						res.counts[[2]int{p, i}]++
						if !rollbacks {
							if prev, ok := last[p]; ok && i <= prev {
								res.mu.Unlock()
								fail(fmt.Errorf("consumer %s/%d: producer %d event %d after %d", name, c, p, i, prev))
								return
							}
							last[p] = i
						}
					}
					res.mu.Unlock()
					committed.Add(int64(len(got)))
				}
			})
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	for ci, name := range chans {
		counts := results[ci].counts
		for p := range producers {
			for i := range perProducer {
				if n := counts[[2]int{p, i}]; n != 1 {
					t.Fatalf("channel %s: producer %d event %d taken %d times", name, p, i, n)
				}
			}
		}
		if len(counts) != producers*perProducer {
			t.Fatalf("channel %s: %d distinct events taken, want %d", name, len(counts), producers*perProducer)
		}
		if st := stats(t, ch, name); st.Size != 0 || st.InFlightTakes != 0 || st.Bytes != 0 ||
			st.PutSuccesses != total || st.TakeSuccesses != total {
			t.Fatalf("channel %s after stress: %+v", name, st)
		}
	}
}

// Clock is a settable clock for a store's Clock option (producer expiry
// tests). Safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now reads the clock.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
