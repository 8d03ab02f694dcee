package channeltest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// testMove: TakeTxn.Put, the atomic move (the dead-letter move): the put
// events are stored when the take commits, with it, or not at all.
func (s *suite) testMove(t *testing.T) {
	ctx := context.Background()
	open := func(t *testing.T, dlq channel.ChannelConfig) *store {
		return s.open(t, cfg("work", 100, 10), dlq)
	}
	// takeAll begins a take on work and takes n events.
	takeAll := func(t *testing.T, ch channel.Store, n int) (channel.TakeTxn, []channel.Event) {
		t.Helper()
		tx, err := ch.BeginTake(ctx, "work")
		if err != nil {
			t.Fatal(err)
		}
		got, err := tx.Take(expired(), n)
		if err != nil || len(got) != n {
			t.Fatalf("Take(%d) = %d events, %v", n, len(got), err)
		}
		return tx, got
	}
	dead := func(e channel.Event, reason string) channel.Event {
		h := map[string]string{"sluice.dlq.reason": reason}
		for k, v := range e.Headers {
			h[k] = v
		}
		return channel.Event{Headers: h, Body: e.Body}
	}

	t.Run("commit moves", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 10))
		put(t, ch, "work", evs("e", 0, 5)...)
		tx, got := takeAll(t, ch, 5)
		if err := tx.Put("dlq", dead(got[2], "poison")); err != nil {
			t.Fatalf("TakeTxn.Put: %v", err)
		}
		if st := stats(t, ch, "dlq"); st.Size != 0 {
			t.Fatalf("dlq holds %d events before the commit", st.Size)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatalf("Commit: %v", err)
		}
		wantSize(t, ch, "work", 0)
		dtx, err := ch.BeginTake(ctx, "dlq")
		if err != nil {
			t.Fatal(err)
		}
		moved, err := dtx.Take(expired(), 10)
		if err != nil || len(moved) != 1 {
			t.Fatalf("dlq take: %d events, %v", len(moved), err)
		}
		if string(moved[0].Body) != "e2" || moved[0].Headers["sluice.dlq.reason"] != "poison" || moved[0].Offset != 1 {
			t.Fatalf("moved event = body %q headers %v offset %d, want e2 with the reason header at offset 1", moved[0].Body, moved[0].Headers, moved[0].Offset)
		}
		if err := dtx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		st := stats(t, ch, "work")
		if st.TakeSuccesses != 5 {
			t.Fatalf("work TakeSuccesses = %d, want 5", st.TakeSuccesses)
		}
		if st := stats(t, ch, "dlq"); st.PutSuccesses != 1 {
			t.Fatalf("dlq PutSuccesses = %d, want 1", st.PutSuccesses)
		}
	})

	t.Run("rollback moves nothing", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 10))
		put(t, ch, "work", evs("e", 0, 3)...)
		tx, got := takeAll(t, ch, 3)
		if err := tx.Put("dlq", dead(got[0], "poison"), dead(got[1], "poison")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "work", drain(t, ch, "work"), []string{"e0", "e1", "e2"})
		wantStrings(t, "dlq", drain(t, ch, "dlq"), nil)
		if err := tx.Put("dlq", ev("late")); !errors.Is(err, channel.ErrTxnDone) {
			t.Fatalf("Put after Rollback: %v, want ErrTxnDone", err)
		}
	})

	t.Run("full target fails whole", func(t *testing.T) {
		d := cfg("dlq", 2, 2) // KeepAlive 0: fails at once
		ch := open(t, d)
		put(t, ch, "dlq", ev("d0"), ev("d1"))
		put(t, ch, "work", evs("e", 0, 3)...)
		tx, got := takeAll(t, ch, 3)
		if err := tx.Put("dlq", dead(got[1], "poison")); err != nil {
			t.Fatal(err)
		}
		err := tx.Commit(ctx)
		if !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("Commit into a full dead-letter channel: %v, want ErrChannelFull", err)
		}
		if err := tx.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
			t.Fatalf("Commit after a failed Commit: %v, want ErrTxnDone", err)
		}
		wantStrings(t, "work after the failed move", drain(t, ch, "work"), []string{"e0", "e1", "e2"})
		wantStrings(t, "dlq after the failed move", drain(t, ch, "dlq"), []string{"d0", "d1"})
	})

	t.Run("bad put keeps the txn usable", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 2))
		put(t, ch, "work", evs("e", 0, 2)...)
		tx, got := takeAll(t, ch, 2)
		defer tx.Rollback()
		if err := tx.Put("nope", got[0]); !errors.Is(err, channel.ErrUnknownChannel) {
			t.Fatalf("Put into an unknown channel: %v, want ErrUnknownChannel", err)
		}
		big := channel.Event{Body: make([]byte, channel.DefaultMaxEventSize+1)}
		if err := tx.Put("dlq", big); !errors.Is(err, channel.ErrEventTooLarge) {
			t.Fatalf("Put of an oversized event: %v, want ErrEventTooLarge", err)
		}
		bad := channel.Event{Headers: map[string]string{"k": "\xff"}, Body: []byte("x")}
		if err := tx.Put("dlq", bad); !errors.Is(err, channel.ErrInvalidEvent) {
			t.Fatalf("Put with an invalid header: %v, want ErrInvalidEvent", err)
		}
		if err := tx.Put("dlq", ev("a"), ev("b"), ev("c")); !errors.Is(err, channel.ErrTxnFull) {
			t.Fatalf("Put of 3 events into a channel of transactionCapacity 2: %v, want ErrTxnFull", err)
		}
		if err := tx.Put("dlq", dead(got[0], "r0"), dead(got[1], "r1")); err != nil {
			t.Fatalf("Put after refused calls: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "dlq", drain(t, ch, "dlq"), []string{"e0", "e1"})
		wantSize(t, ch, "work", 0)
	})

	t.Run("put without take", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 10))
		tx, err := ch.BeginTake(ctx, "work")
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put("dlq", ev("x")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "dlq", drain(t, ch, "dlq"), []string{"x"})
	})

	t.Run("into its own channel", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 10))
		put(t, ch, "work", evs("e", 0, 3)...)
		tx, got := takeAll(t, ch, 1)
		retry := channel.Event{Headers: map[string]string{"retries": "1"}, Body: got[0].Body}
		if err := tx.Put("work", retry); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		rt, err := ch.BeginTake(ctx, "work")
		if err != nil {
			t.Fatal(err)
		}
		rest, err := rt.Take(expired(), 10)
		if err != nil {
			t.Fatal(err)
		}
		wantStrings(t, "work", bodies(rest), []string{"e1", "e2", "e0"})
		if rest[2].Headers["retries"] != "1" || rest[2].Offset <= rest[1].Offset {
			t.Fatalf("requeued event: headers %v offset %d after offset %d; want the new header and a later offset", rest[2].Headers, rest[2].Offset, rest[1].Offset)
		}
		if err := rt.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("survives restart", func(t *testing.T) {
		ch := open(t, cfg("dlq", 100, 10))
		put(t, ch, "work", evs("e", 0, 4)...)
		tx, got := takeAll(t, ch, 2)
		if err := tx.Put("dlq", dead(got[1], "poison")); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// An open move at the restart is rolled back whole.
		tx2, got2 := takeAll(t, ch, 1)
		if err := tx2.Put("dlq", dead(got2[0], "open")); err != nil {
			t.Fatal(err)
		}
		if _, ok := ch.Store.(Reopener); !ok {
			tx2.Rollback() // what the restart does
		}
		ch = s.restart(t, ch)
		wantStrings(t, "work after restart", drain(t, ch, "work"), []string{"e2", "e3"})
		wantStrings(t, "dlq after restart", drain(t, ch, "dlq"), []string{"e1"})
	})

	t.Run("concurrent moves", func(t *testing.T) {
		ch := s.open(t, cfg("work", 1000, 20), cfg("dlq", 1000, 20), cfg("done", 1000, 20))
		const n = 300
		errs := make(chan error, 5)
		go func() {
			for i := 0; i < n; i += 10 {
				if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"work": evs("e", i, i+10)}); err != nil {
					errs <- err
					return
				}
			}
		}()
		var mu sync.Mutex
		committed := map[string]int{}
		var wg sync.WaitGroup
		var total int
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					finished := total >= n
					mu.Unlock()
					if finished {
						return
					}
					tx, err := ch.BeginTake(ctx, "work")
					if err != nil {
						errs <- err
						return
					}
					tctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
					got, _ := tx.Take(tctx, 1+w*3)
					cancel()
					for i, e := range got {
						to := "done"
						if i%2 == w%2 {
							to = "dlq"
						}
						if err := tx.Put(to, dead(e, to)); err != nil {
							errs <- err
							return
						}
					}
					if w == 0 && len(got) > 0 {
						tx.Rollback() // comes back: another worker moves it
						continue
					}
					if err := tx.Commit(ctx); err != nil {
						errs <- fmt.Errorf("commit: %w", err)
						return
					}
					mu.Lock()
					total += len(got)
					for _, e := range got {
						committed[string(e.Body)]++
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, name := range []string{"dlq", "done"} {
			for _, b := range drain(t, ch, name) {
				if prev, dup := seen[b]; dup {
					t.Fatalf("event %s is in %s and %s", b, prev, name)
				}
				seen[b] = name
			}
		}
		if len(seen) != n || len(committed) != n {
			t.Fatalf("%d events moved (%d committed takes), want %d", len(seen), len(committed), n)
		}
		for b, k := range committed {
			if k != 1 {
				t.Fatalf("event %s taken and committed %d times", b, k)
			}
			if !strings.HasPrefix(b, "e") || seen[b] == "" {
				t.Fatalf("event %s committed but not moved", b)
			}
		}
		wantSize(t, ch, "work", 0)
	})
}
