package filestore

import (
	"context"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/channeltest"
)

// TestFileProducerExpiry: an entry idle longer than ProducerExpiry is
// dropped at the next checkpoint (a retry of its sequence is then stored
// again), a recent one is kept, and the last-use times survive a restart
// in the checkpoint, so the expiry keeps counting across it.
func TestFileProducerExpiry(t *testing.T) {
	clock := channeltest.NewClock(time.Unix(1_800_000_000, 0))
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.ProducerExpiry = time.Hour
	o.Clock = clock.Now
	ctx := context.Background()
	put := func(s *Store, producer string, seq uint64) (dedup bool) {
		t.Helper()
		tx, err := s.BeginPut(ctx, channel.PutOptions{ProducerID: producer, Sequence: seq})
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
	clock.Add(50 * time.Minute)
	put(s, "new", 1)
	if !put(s, "new", 1) { // a retry (it counts as a use, at the same time)
		t.Fatal("a retry of a recent producer was stored again")
	}
	clock.Add(20 * time.Minute) // old idle 70 min, new 20 min
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
	clock.Add(45 * time.Minute)
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

// A quiet producer keeps its entry by putting at its current position (a
// deduplicated put): the entry's last use moves, so it does not expire while
// the producer is alive; one that stops doing so expires.
func TestQuietProducerKeepsEntry(t *testing.T) {
	cfgs := []channel.ChannelConfig{{Name: "c", Capacity: 100, TransactionCapacity: 10}}
	clock := channeltest.NewClock(time.Unix(1_800_000_000, 0))
	o := testFileOptions(vfs.NewMem(), 1, cfgs...)
	o.ProducerExpiry, o.Clock = time.Hour, clock.Now
	s := mustOpen(t, o)
	defer s.Close()
	ctx := context.Background()
	put := func(id string, seq uint64, n int) {
		t.Helper()
		tx, err := s.BeginPut(ctx, channel.PutOptions{ProducerID: id, Sequence: seq})
		if err != nil {
			t.Fatal(err)
		}
		for range n {
			tx.Put("c", channel.Event{Body: []byte(id)})
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	put("quiet", 5, 1)
	put("gone", 5, 1)
	for range 3 { // three hours of keep-alive puts at the same position
		clock.Add(40 * time.Minute)
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

func TestProducerTableLimit(t *testing.T) {
	clock := channeltest.NewClock(time.Unix(1_800_000_000, 0))
	o := testFileOptions(vfs.NewMem(), 1, channel.ChannelConfig{Name: "c", Capacity: 100, TransactionCapacity: 10})
	o.MaxProducers, o.ProducerExpiry, o.Clock = 2, time.Hour, clock.Now
	s := mustOpen(t, o)
	defer s.Close()
	channeltest.ProducerTableLimit(t, s, clock, s.Checkpoint) // the file store sweeps at checkpoints
}
