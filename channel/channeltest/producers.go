package channeltest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// ProducerTableLimit asserts the bound on a store's producer table: st has
// one channel "c" (capacity ≥ 10), MaxProducers 2, ProducerExpiry one hour
// and clock as its Clock; sweep makes the store drop expired entries (the
// file store sweeps at checkpoints, the memory store at commits). A put of a
// new producer id beyond the limit fails with ErrProducerTableFull and
// stores nothing, known producers go on, and an expired entry makes room.
func ProducerTableLimit(t *testing.T, st channel.Store, clock *Clock, sweep func() error) {
	t.Helper()
	ctx := context.Background()
	put := func(id string, seq uint64) error {
		tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: id, Sequence: seq})
		if err != nil {
			return err
		}
		if err := tx.Put("c", channel.Event{Body: []byte(id)}); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}
	for _, id := range []string{"p1", "p2"} {
		if err := put(id, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := put("p3", 1); !errors.Is(err, channel.ErrProducerTableFull) {
		t.Fatalf("third producer: %v, want ErrProducerTableFull", err)
	}
	if err := put("p1", 2); err != nil {
		t.Fatalf("known producer: %v", err)
	}
	if n := len(drain(t, st, "c")); n != 3 {
		t.Fatalf("%d events stored, want 3 (nothing of the refused put)", n)
	}
	// p2 idles past the expiry; p1 keeps committing.
	clock.Add(50 * time.Minute)
	if err := put("p1", 3); err != nil {
		t.Fatal(err)
	}
	clock.Add(20 * time.Minute)
	if err := sweep(); err != nil {
		t.Fatal(err)
	}
	if err := put("p3", 1); err != nil {
		t.Fatalf("new producer after an entry expired: %v", err)
	}
}
