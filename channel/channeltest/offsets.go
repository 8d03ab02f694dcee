package channeltest

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/sluicehq/sluice/channel"
)

// testOffsets: every taken event carries its channel offset (from 1,
// unique, increasing in take order), the same every time it is delivered,
// through interleaved takes that roll back in any order; new puts get
// offsets above every earlier one, also after the channel was drained; a
// put's own Offset field is ignored; each channel counts its own.
func (s *suite) testOffsets(t *testing.T) {
	ch := s.open(t, cfg("a", 1000, 50), cfg("b", 1000, 50))
	ctx := context.Background()
	first := evs("e", 0, 30)
	first[3].Offset = 999 // ignored
	if err := tryPut(ch, channel.PutOptions{}, map[string][]channel.Event{"a": first[:20], "b": evs("b", 0, 5)}); err != nil {
		t.Fatal(err)
	}
	put(t, ch, "a", first[20:]...)
	seen := map[string]uint64{} // body -> offset
	var last uint64
	check := func(what string, got []channel.Event, increasing bool) {
		t.Helper()
		prev := uint64(0)
		for _, e := range got {
			if e.Offset == 0 {
				t.Fatalf("%s: event %q has no offset", what, e.Body)
			}
			if increasing && e.Offset <= prev {
				t.Fatalf("%s: offset %d of %q after offset %d", what, e.Offset, e.Body, prev)
			}
			prev = e.Offset
			if o, ok := seen[string(e.Body)]; ok && o != e.Offset {
				t.Fatalf("%s: event %q delivered with offset %d, earlier with %d", what, e.Body, e.Offset, o)
			}
			seen[string(e.Body)] = e.Offset
			last = max(last, e.Offset)
		}
	}
	takeEvents := func(tx channel.TakeTxn, n int) []channel.Event {
		t.Helper()
		got, err := tx.Take(expired(), n)
		if err != nil {
			t.Fatalf("Take(%d): %v", n, err)
		}
		return got
	}
	// The first take sees every offset once, in order.
	tx, err := ch.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	check("first take", takeEvents(tx, 30), true)
	if len(seen) != 30 {
		t.Fatalf("%d distinct offsets for 30 events", len(seen))
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// Interleaved takes, rolled back in random order: every redelivery
	// has the event's offset, and each batch is increasing.
	rng := rand.New(rand.NewPCG(7, 11))
	for round := range 20 {
		var open []channel.TakeTxn
		for range 1 + rng.IntN(3) {
			tx, err := ch.BeginTake(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, tx)
			check("interleaved take", takeEvents(tx, 1+rng.IntN(5)), true)
		}
		rng.Shuffle(len(open), func(i, j int) { open[i], open[j] = open[j], open[i] })
		for _, tx := range open {
			if err := tx.Rollback(); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	// Commit a few from the middle of the order: the rest stay in order.
	tx1, _ := ch.BeginTake(ctx, "a")
	tx2, _ := ch.BeginTake(ctx, "a")
	check("tx1", takeEvents(tx1, 4), true)
	check("tx2", takeEvents(tx2, 4), true)
	if err := tx2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx1.Rollback(); err != nil {
		t.Fatal(err)
	}
	tx, _ = ch.BeginTake(ctx, "a")
	rest := takeEvents(tx, 50)
	check("after a commit in the middle", rest, true)
	if len(rest) != 26 {
		t.Fatalf("%d events left, want 26", len(rest))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// The channel is empty; new events get offsets above every earlier one.
	put(t, ch, "a", evs("n", 0, 3)...)
	tx, _ = ch.BeginTake(ctx, "a")
	newer := takeEvents(tx, 10)
	before := last
	check("after draining", newer, true)
	if len(newer) != 3 || newer[0].Offset <= before {
		t.Fatalf("new events got offsets %d… after %d was delivered", newer[0].Offset, before)
	}
	tx.Commit(ctx)
	// Channel b has its own offsets.
	tx, _ = ch.BeginTake(ctx, "b")
	seen = map[string]uint64{}
	bs := takeEvents(tx, 10)
	check("channel b", bs, true)
	if len(bs) != 5 {
		t.Fatalf("channel b: %d events", len(bs))
	}
	tx.Commit(ctx)
}
