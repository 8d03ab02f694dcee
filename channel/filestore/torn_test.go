package filestore

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/wal"
)

// tearTxn zeroes, in fs, the 4 KiB page holding a put record of txn that
// lies in the commit record's segment at least a page before the commit
// record: the page a power cut lost while the commit record's page reached
// the disk. It returns the txn's commit pointer.
func tearTxn(t *testing.T, o Options, fs vfs.FS, txn uint64) wal.Pointer {
	t.Helper()
	w, err := wal.Open(wal.Options{FS: fs, Dirs: o.DataDirs, SegmentSize: o.SegmentSize, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var puts []wal.Pointer
	var commit wal.Pointer
	if _, err := w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		if rec.TxnID == txn && rec.Type == wal.RecordPut {
			puts = append(puts, ptr)
		}
		if rec.TxnID == txn && rec.Type == wal.RecordCommit {
			commit = ptr
		}
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	path := ""
	for _, sg := range w.Segments() {
		if sg.ID == commit.Segment() {
			path = sg.Path
		}
	}
	w.Close()
	victim := int64(-1)
	for _, p := range puts {
		if p.Segment() == commit.Segment() && p.Offset()/4096 < commit.Offset()/4096 {
			victim = int64(p.Offset()) / 4096 * 4096
		}
	}
	if path == "" || victim < 0 {
		t.Fatalf("txn %d: no put record a page before its commit %s (%d puts)", txn, commit, len(puts))
	}
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), max(victim, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return commit
}

// A put txn whose commit record survived a power cut while an earlier page
// of it did not is dropped whole and reported; the acknowledged txn before
// it and the producer's retry are unaffected.
func TestFileTornPutDroppedWhole(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      int  // body bytes per event
		midCkpt   bool // checkpoint while the txn is open (it straddles)
		wantSegs2 bool // the txn spans segments
	}{
		{name: "one-segment", body: 40},
		{name: "across-segments-and-checkpoint", body: 1000, midCkpt: true, wantSegs2: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			o := testFileOptions(fs, 2)
			s := mustOpen(t, o)
			putRange(t, s, "c1", 0, 10, 10) // acknowledged
			tx, err := s.BeginPut(context.Background(), channel.PutOptions{ProducerID: "src-1", Sequence: 7})
			if err != nil {
				t.Fatal(err)
			}
			pad := strings.Repeat("x", tc.body)
			for i := 100; i < 300; i++ {
				e := ev(i)
				e.Headers["pad"] = pad
				if err := tx.Put("c1", e); err != nil {
					t.Fatal(err)
				}
				if tc.midCkpt && i == 200 {
					if err := s.Checkpoint(); err != nil {
						t.Fatal(err)
					}
				}
			}
			txn := tx.(*filePut).id
			if err := tx.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			clone := killClone(fs) // every page written, then one is torn below
			s.Close()
			o.FS = clone
			commit := tearTxn(t, o, clone, txn)
			if tc.wantSegs2 {
				var first wal.Pointer
				w, _ := wal.Open(wal.Options{FS: clone, Dirs: o.DataDirs, SegmentSize: o.SegmentSize})
				w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
					if rec.TxnID == txn && first == 0 {
						first = ptr
					}
					return nil
				}, nil)
				w.Close()
				if first.Segment() == commit.Segment() {
					t.Fatalf("txn %d does not span segments (first record %s, commit %s)", txn, first, commit)
				}
			}

			var logBuf bytes.Buffer
			o.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
			s2 := mustOpen(t, o)
			defer s2.Close()
			if got := drain(t, s2, "c1"); !slices.Equal(got, seq(0, 10)) {
				t.Fatalf("after the torn txn: got %d events %v, want only the acknowledged 0..9", len(got), got[:min(len(got), 12)])
			}
			st := s2.StoreStats()
			if st.TornTxns != 1 || st.TornEventsDropped == 0 || st.TornEventsDropped >= 200 {
				t.Fatalf("StoreStats: torn txns %d, torn events dropped %d; want 1 and 1..199", st.TornTxns, st.TornEventsDropped)
			}
			log := logBuf.String()
			for _, want := range []string{"torn transaction dropped whole", "txn=" + strconv.FormatUint(txn, 10), "events_expected=200", ".wal"} {
				if !strings.Contains(log, want) {
					t.Fatalf("log lacks %q:\n%s", want, log)
				}
			}
			// The torn put was never acknowledged: its producer sequence
			// is not recorded, so the retry is stored.
			rt, err := s2.BeginPut(context.Background(), channel.PutOptions{ProducerID: "src-1", Sequence: 7})
			if err != nil {
				t.Fatal(err)
			}
			rt.Put("c1", ev(100))
			if err := rt.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			if rt.Deduplicated() {
				t.Fatal("the retry of the torn put was taken for a duplicate")
			}
			if got := drain(t, s2, "c1"); !slices.Equal(got, []int{100}) {
				t.Fatalf("retry: got %v", got)
			}
		})
	}
}

// A take whose take record was lost while its commit record survived is
// dropped whole: every event of it is delivered again.
func TestFileTornTakeRedelivered(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 300, 300)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	tx, _ := s.BeginTake(context.Background(), "c1")
	evs, err := tx.Take(context.Background(), 300)
	if err != nil || len(evs) != 300 {
		t.Fatalf("take: %d events, %v", len(evs), err)
	}
	txn := tx.(*fileTake).id
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	clone := killClone(fs)
	s.Close()
	o.FS = clone
	// The take record precedes the commit record: clear its header, as a
	// lost page would.
	w, _ := wal.Open(wal.Options{FS: clone, Dirs: o.DataDirs, SegmentSize: o.SegmentSize})
	var take, commit wal.Pointer
	w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		if rec.TxnID == txn && rec.Type == wal.RecordTake {
			take = ptr
		}
		if rec.TxnID == txn && rec.Type == wal.RecordCommit {
			commit = ptr
		}
		return nil
	}, nil)
	var path string
	for _, sg := range w.Segments() {
		if sg.ID == take.Segment() {
			path = sg.Path
		}
	}
	w.Close()
	if take == 0 || commit == 0 {
		t.Fatalf("take txn %d: take record %s, commit %s", txn, take, commit)
	}
	f, _ := clone.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	f.WriteAt(make([]byte, 8), int64(take.Offset())) // its header: the record no longer validates
	f.Sync()
	f.Close()
	s2 := mustOpen(t, o)
	defer s2.Close()
	if got := drain(t, s2, "c1"); !slices.Equal(got, seq(0, 300)) {
		t.Fatalf("torn take: got %d events, want all 300 again", len(got))
	}
	if st := s2.StoreStats(); st.TornTxns != 1 || st.TornEventsDropped != 0 {
		t.Fatalf("StoreStats: torn txns %d, dropped %d; want 1, 0", st.TornTxns, st.TornEventsDropped)
	}
}

// A per-event put is judged torn by all its records, the duplicates its
// commit skips included: one lost page drops it whole, whichever events
// the page held, and the producer's mark stays at the last whole put.
func TestFileTornPerEventPutDroppedWhole(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	put := func(first, last uint64) *filePut {
		tx, err := s.BeginPut(context.Background(), channel.PutOptions{ProducerID: "src"})
		if err != nil {
			t.Fatal(err)
		}
		for n := first; n <= last; n++ {
			if err := tx.PutSeq("c1", n, channel.Event{Body: []byte("line-" + strconv.FormatUint(n, 10) + "|")}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		return tx.(*filePut)
	}
	put(1, 250)
	// A re-read from 100: 151 duplicates, then 10 new lines, whose records
	// share the commit record's page or the one before.
	tx := put(100, 260)
	if tx.Duplicates() != 151 {
		t.Fatalf("Duplicates %d, want 151", tx.Duplicates())
	}
	clone := killClone(fs)
	s.Close()
	o.FS = clone
	tearTxn(t, o, clone, tx.id)
	s2 := mustOpen(t, o)
	defer s2.Close()
	if st := s2.StoreStats(); st.TornTxns != 1 {
		t.Fatalf("torn txns %d, want 1", st.TornTxns)
	}
	if seq, _, _ := s2.ProducerSequence(context.Background(), "c1", "src"); seq != 250 {
		t.Fatalf("ProducerSequence %d, want 250: the torn put's sequence is not recorded", seq)
	}
	got := drainLines(t, s2, "c1")
	if len(got) != 250 || got[0] != 1 || got[249] != 250 {
		t.Fatalf("after the torn put: %d lines, want 1..250", len(got))
	}
}

// A move (a take that put events, TakeTxn.Put) whose commit record
// survived while an earlier page of its put records did not is dropped
// whole: nothing was moved, every taken event is delivered again from the
// work channel and none reaches the dead-letter channel. The torn audit
// counts the take record's events and the put records against the one
// commit record, and reports the txn as a move.
func TestFileTornMoveDroppedWhole(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1, channel.ChannelConfig{Name: "c1", Capacity: 10_000, TransactionCapacity: 1000},
		channel.ChannelConfig{Name: "dlq", Capacity: 10_000, TransactionCapacity: 1000})
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 200, 200)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	tx, _ := s.BeginTake(context.Background(), "c1")
	evs, err := tx.Take(context.Background(), 200)
	if err != nil || len(evs) != 200 {
		t.Fatalf("take: %d events, %v", len(evs), err)
	}
	for _, e := range evs {
		d := channel.Event{Headers: map[string]string{"reason": "poison"}, Body: e.Body}
		if err := tx.Put("dlq", d); err != nil {
			t.Fatal(err)
		}
	}
	txn := tx.(*fileTake).id
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	clone := killClone(fs)
	s.Close()
	o.FS = clone
	tearTxn(t, o, clone, txn)

	// The audit `sluice verify` runs sees the torn move.
	w, err := wal.Open(wal.Options{FS: clone, Dirs: o.DataDirs, SegmentSize: o.SegmentSize, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	audit := NewTxnAudit(0)
	if _, err := w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error { audit.Record(rec, ptr); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if torn := audit.Torn(); len(torn) != 1 || torn[0].Kind != "move" || torn[0].TxnID != txn || torn[0].Expected != 400 {
		t.Fatalf("audit: torn %v, want the move txn %d counting 400 events", torn, txn)
	}

	s2 := mustOpen(t, o)
	defer s2.Close()
	if st := s2.StoreStats(); st.TornTxns != 1 || st.TornEventsDropped != 0 {
		t.Fatalf("StoreStats: torn txns %d, dropped %d; want 1, 0 (a torn move loses nothing)", st.TornTxns, st.TornEventsDropped)
	}
	if got := drain(t, s2, "dlq"); len(got) != 0 {
		t.Fatalf("dlq holds %d events of a torn move", len(got))
	}
	if got := drain(t, s2, "c1"); !slices.Equal(got, seq(0, 200)) {
		t.Fatalf("torn move: c1 has %d events, want all 200 again", len(got))
	}
}
