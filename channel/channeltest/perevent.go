package channeltest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	"github.com/sluicehq/sluice/channel"
)

// Reopener is implemented by a store under test whose data outlives it (the
// file store, a client of a server of one). The suite's restart rules close
// the store and call Reopen for a store on the same data; a store without
// it is checked by the same rules without the restart.
type Reopener interface {
	Reopen(t testing.TB) channel.Store
}

// restart closes st and opens it again on the same data (see Reopener).
func (s *suite) restart(t *testing.T, st *store) *store {
	t.Helper()
	r, ok := st.Store.(Reopener)
	if !ok {
		return st
	}
	if err := st.close(); err != nil {
		t.Fatalf("Close before restart: %v", err)
	}
	ns := &store{Store: r.Reopen(t)}
	t.Cleanup(func() {
		if err := ns.close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return ns
}

// seqRun is one PutSeq call: events prefix+first … prefix+(first+n-1) with
// those sequences.
type seqRun struct {
	channel string
	first   uint64
	n       int
}

func seqEvents(prefix string, first uint64, n int) []channel.Event {
	out := make([]channel.Event, n)
	for i := range out {
		out[i] = ev(prefix + strconv.FormatUint(first+uint64(i), 10))
	}
	return out
}

// putSeq runs one per-event put of runs (events named channel+sequence)
// and commits it, returning the transaction for its Duplicates and
// Deduplicated.
func putSeq(t testing.TB, st channel.Store, producer string, runs ...seqRun) channel.PutTxn {
	t.Helper()
	ctx := context.Background()
	tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: producer})
	if err != nil {
		t.Fatalf("BeginPut(%q per event): %v", producer, err)
	}
	defer tx.Rollback()
	for _, r := range runs {
		if err := tx.PutSeq(r.channel, r.first, seqEvents(r.channel, r.first, r.n)...); err != nil {
			t.Fatalf("PutSeq(%q, %d, %d events): %v", r.channel, r.first, r.n, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("Commit of per-event put %v: %v", runs, err)
	}
	return tx
}

func wantDups(t testing.TB, tx channel.PutTxn, dups int, dedup bool) {
	t.Helper()
	if tx.Duplicates() != dups || tx.Deduplicated() != dedup {
		t.Fatalf("Duplicates %d Deduplicated %v, want %d %v", tx.Duplicates(), tx.Deduplicated(), dups, dedup)
	}
}

func wantMark(t testing.TB, st channel.Store, ch, producer string, seq uint64) {
	t.Helper()
	got, ok, err := st.ProducerSequence(context.Background(), ch, producer)
	if err != nil || !ok || got != seq {
		t.Fatalf("ProducerSequence(%q) = %d, %v, %v; want %d, true", producer, got, ok, err, seq)
	}
}

func seqNames(prefix string, from, to uint64) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, prefix+strconv.FormatUint(i, 10))
	}
	return out
}

// testPerEventSequences: a put with a producer id and no Sequence gives each
// event its own sequence (PutSeq); at commit the events at or below the
// producer's mark are dropped and the mark moves to the last one.
func (s *suite) testPerEventSequences(t *testing.T) {
	ctx := context.Background()
	t.Run("prefix dropped, mark advances to last", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 1, 5}), 0, false)
		wantMark(t, st, "a", "src", 5)
		// A replay from 3 to 8: 3..5 were committed, 6..8 are new.
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 3, 6}), 3, false)
		wantMark(t, st, "a", "src", 8)
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 9, 1}), 0, false)
		// The dropped events took no offsets: a sink's ranges stay dense.
		got, offs := drainOffsets(t, st, "a")
		wantStrings(t, "a", got, seqNames("a", 1, 9))
		for i, o := range offs {
			if o != uint64(i+1) {
				t.Fatalf("offsets %v, want 1..9", offs)
			}
		}
		if got := stats(t, st, "a").PutSuccesses; got != 9 {
			t.Fatalf("PutSuccesses %d, want 9 (duplicates are not stored)", got)
		}
	})
	t.Run("all duplicates", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		putSeq(t, st, "src", seqRun{"a", 1, 5})
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 2, 4}), 4, true)
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 1, 1}), 1, true)
		wantMark(t, st, "a", "src", 5)
		wantStrings(t, "a", drain(t, st, "a"), seqNames("a", 1, 5))
	})
	t.Run("gaps", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		// Kafka-like offsets: 10, 11, then 20.
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 10, 2}, seqRun{"a", 20, 1}), 0, false)
		wantMark(t, st, "a", "src", 20)
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 11, 3}), 3, true)
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 15, 11}), 6, false) // 15..20 dropped, 21..25 stored
		wantMark(t, st, "a", "src", 25)
		want := append(seqNames("a", 10, 11), seqNames("a", 20, 25)...)
		wantStrings(t, "a", drain(t, st, "a"), want)
	})
	t.Run("rebatched replay stores each event exactly once", func(t *testing.T) {
		st := s.open(t, cfg("a", 1000, 50))
		rng := rand.New(rand.NewPCG(17, 4))
		const lines = 200
		next := uint64(1) // where the source reads on
		for attempt := 0; next <= lines; attempt++ {
			// Commit a few batches of one size, then "crash": the source
			// forgets everything and resumes before the store's mark.
			size := 1 + rng.IntN(30)
			for range 1 + rng.IntN(4) {
				if next > lines {
					break
				}
				n := min(size, int(lines-next+1))
				putSeq(t, st, "tail", seqRun{"a", next, n})
				next += uint64(n)
			}
			mark, _, err := st.ProducerSequence(ctx, "a", "tail")
			if err != nil {
				t.Fatal(err)
			}
			next = 1 + mark - min(mark, uint64(rng.IntN(40))) // re-read an overlap
		}
		wantMark(t, st, "a", "tail", lines)
		wantStrings(t, "a", drain(t, st, "a"), seqNames("a", 1, lines))
	})
	t.Run("sequences increase across the transaction", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20), cfg("b", 100, 20))
		tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		if err := tx.PutSeq("a", 5, seqEvents("a", 5, 2)...); err != nil { // 5, 6
			t.Fatal(err)
		}
		for _, c := range []struct {
			ch    string
			first uint64
			n     int
		}{
			{"a", 6, 1},                  // not above the last (6)
			{"b", 3, 1},                  // other channel, still one order
			{"a", 0, 1},                  // sequences start at 1
			{"b", 0, 0},                  // also without events
			{"a", math.MaxUint64 - 1, 3}, // overflows
		} {
			err := tx.PutSeq(c.ch, c.first, seqEvents(c.ch, c.first, c.n)...)
			if !errors.Is(err, channel.ErrBadProducer) {
				t.Fatalf("PutSeq(%q, %d, %d events) after sequence 6: %v, want ErrBadProducer", c.ch, c.first, c.n, err)
			}
		}
		// The transaction stays usable, and gaps are fine.
		if err := tx.PutSeq("b", 9, seqEvents("b", 9, 1)...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		wantMark(t, st, "a", "src", 9)
		wantStrings(t, "a", drain(t, st, "a"), []string{"a5", "a6"})
		wantStrings(t, "b", drain(t, st, "b"), []string{"b9"})
	})
	t.Run("modes do not mix", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		for _, c := range []struct {
			name string
			opts channel.PutOptions
			seq  bool // the refused call is PutSeq (else Put)
		}{
			{"Put in per-event mode", channel.PutOptions{ProducerID: "p"}, false},
			{"PutSeq in whole-put mode", channel.PutOptions{ProducerID: "p", Sequence: 3}, true},
			{"PutSeq without a producer", channel.PutOptions{}, true},
		} {
			tx, err := st.BeginPut(ctx, c.opts)
			if err != nil {
				t.Fatalf("%s: BeginPut: %v", c.name, err)
			}
			if c.seq {
				err = tx.PutSeq("a", 1, ev("bad"))
			} else {
				err = tx.Put("a", ev("bad"))
			}
			if !errors.Is(err, channel.ErrBadProducer) {
				tx.Rollback()
				t.Fatalf("%s: %v, want ErrBadProducer", c.name, err)
			}
			// The transaction stays usable in its own mode.
			if c.seq {
				err = tx.Put("a", ev(c.name))
			} else {
				err = tx.PutSeq("a", 1, ev(c.name))
			}
			if err != nil {
				t.Fatalf("%s: the transaction's own mode after the refusal: %v", c.name, err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatalf("%s: Commit: %v", c.name, err)
			}
		}
		wantStrings(t, "a", drain(t, st, "a"), []string{"Put in per-event mode", "PutSeq in whole-put mode", "PutSeq without a producer"})
		wantMark(t, st, "a", "p", 3)
	})
	t.Run("whole-put dedup counts its events as duplicates", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		o := channel.PutOptions{ProducerID: "p", Sequence: 4}
		for i, dup := range []bool{false, true} {
			tx, err := st.BeginPut(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			tx.Put("a", ev("x"), ev("y"))
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			want := 0
			if dup {
				want = 2
			}
			if tx.Duplicates() != want || tx.Deduplicated() != dup {
				t.Fatalf("attempt %d: Duplicates %d Deduplicated %v, want %d %v", i, tx.Duplicates(), tx.Deduplicated(), want, dup)
			}
		}
		tx, _ := st.BeginPut(ctx, channel.PutOptions{})
		tx.Put("a", ev("z"))
		if err := tx.Commit(ctx); err != nil || tx.Duplicates() != 0 || tx.Deduplicated() {
			t.Fatalf("put without producer: %v, Duplicates %d, Deduplicated %v", err, tx.Duplicates(), tx.Deduplicated())
		}
		wantStrings(t, "a", drain(t, st, "a"), []string{"x", "y", "z"})
	})
	t.Run("atomic across channels", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20), cfg("b", 3, 3))
		// One order of sequences over both channels.
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 1, 3}, seqRun{"b", 4, 3}), 0, false)
		wantMark(t, st, "a", "src", 6)
		// b is full, but the replay's events for b are duplicates: they
		// need no room, and the new event of a is stored.
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 2, 2}, seqRun{"b", 4, 3}, seqRun{"a", 7, 1}), 5, false)
		wantMark(t, st, "a", "src", 7)
		// A put whose new events do not fit stores none of them and
		// leaves the mark.
		tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
		if err != nil {
			t.Fatal(err)
		}
		tx.PutSeq("a", 6, seqEvents("a", 6, 3)...) // 6, 7 duplicates, 8 new
		tx.PutSeq("b", 9, seqEvents("b", 9, 1)...) // new: b is full
		if err := tx.Commit(ctx); !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("commit into a full channel: %v, want ErrChannelFull", err)
		}
		wantMark(t, st, "a", "src", 7)
		gotB, offB := drainOffsets(t, st, "b")
		wantStrings(t, "b", gotB, []string{"b4", "b5", "b6"})
		gotA, offA := drainOffsets(t, st, "a")
		wantStrings(t, "a", gotA, []string{"a1", "a2", "a3", "a7"})
		if !slices.Equal(offA, []uint64{1, 2, 3, 4}) || !slices.Equal(offB, []uint64{1, 2, 3}) {
			t.Fatalf("offsets %v (a) and %v (b), want 1..4 and 1..3: dropped events take none", offA, offB)
		}
		// A stored run after a dropped run of another channel takes its
		// own channel's next offsets.
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 7, 1}, seqRun{"b", 8, 2}), 1, false)
		gotB, offB = drainOffsets(t, st, "b")
		wantStrings(t, "b", gotB, []string{"b8", "b9"})
		if !slices.Equal(offB, []uint64{4, 5}) {
			t.Fatalf("offsets of b %v, want 4, 5", offB)
		}
	})
	t.Run("empty per-event put is a keep-alive", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20))
		tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: "new"})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil || tx.Deduplicated() || tx.Duplicates() != 0 {
			t.Fatalf("empty per-event put: %v, Deduplicated %v, Duplicates %d", err, tx.Deduplicated(), tx.Duplicates())
		}
		if seq, ok, err := st.ProducerSequence(ctx, "a", "new"); err != nil || ok || seq != 0 {
			t.Fatalf("an empty per-event put of an unknown producer records nothing: %d %v %v", seq, ok, err)
		}
		putSeq(t, st, "new", seqRun{"a", 3, 1})
		if tx := putSeq(t, st, "new"); tx.Deduplicated() || tx.Duplicates() != 0 {
			t.Fatalf("empty per-event put: Deduplicated %v, Duplicates %d", tx.Deduplicated(), tx.Duplicates())
		}
		wantMark(t, st, "a", "new", 3)
		wantStrings(t, "a", drain(t, st, "a"), []string{"a3"})
	})
	t.Run("rolled back or failed per-event put leaves the mark", func(t *testing.T) {
		st := s.open(t, cfg("a", 2, 2))
		putSeq(t, st, "src", seqRun{"a", 1, 1})
		tx, _ := st.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
		tx.PutSeq("a", 2, seqEvents("a", 2, 1)...)
		tx.Rollback()
		tx, _ = st.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
		tx.PutSeq("a", 2, seqEvents("a", 2, 2)...) // 2 new events, room for 1
		if err := tx.Commit(ctx); !errors.Is(err, channel.ErrChannelFull) {
			t.Fatalf("commit into a full channel: %v, want ErrChannelFull", err)
		}
		wantMark(t, st, "a", "src", 1)
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 1, 2}), 1, false)
		wantStrings(t, "a", drain(t, st, "a"), []string{"a1", "a2"})
	})
	t.Run("survives restart", func(t *testing.T) {
		st := s.open(t, cfg("a", 100, 20), cfg("b", 100, 20))
		putSeq(t, st, "src", seqRun{"a", 1, 4}, seqRun{"b", 5, 2})
		wantDups(t, putSeq(t, st, "src", seqRun{"a", 3, 6}), 4, false) // 3..6 dropped: 7, 8 stored
		st = s.restart(t, st)
		wantMark(t, st, "a", "src", 8)
		wantDups(t, putSeq(t, st, "src", seqRun{"b", 6, 5}), 3, false) // 6..8 dropped: 9, 10 stored
		st = s.restart(t, st)
		wantMark(t, st, "b", "src", 10)
		wantStrings(t, "a", drain(t, st, "a"), []string{"a1", "a2", "a3", "a4", "a7", "a8"})
		wantStrings(t, "b", drain(t, st, "b"), []string{"b5", "b6", "b9", "b10"})
	})
}

// drainOffsets takes and commits everything queued in a channel and returns
// the bodies and offsets.
func drainOffsets(t testing.TB, st channel.Store, name string) ([]string, []uint64) {
	t.Helper()
	var bs []string
	var offs []uint64
	for {
		tx, err := st.BeginTake(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := tx.Take(expired(), 16)
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return bs, offs
		}
		for _, e := range got {
			bs = append(bs, string(e.Body))
			offs = append(offs, e.Offset)
		}
	}
}

func (r seqRun) String() string { return fmt.Sprintf("%s[%d+%d]", r.channel, r.first, r.n) }
