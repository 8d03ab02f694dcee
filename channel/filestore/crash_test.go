package filestore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/wal"
)

// crashModel records, from the point of view of clients, what happened to
// every event. Its mutex is held while the crash clone is taken, so whatever
// the model says at that moment happened-before the simulated power loss.
type crashModel struct {
	mu      sync.Mutex
	state   map[int]evState
	hist    map[int][]evState
	nextID  int
	crashed bool
	// puts and takes are the id sets of put and take txns whose commit
	// started: each must survive a crash whole or not at all. A take with
	// moved set is a move (TakeTxn.Put): those of its events it also put
	// into the dead-letter channel.
	puts  [][]int
	takes []takeRec
	// offs is the offset each taken event was delivered with: it must be
	// the same whenever the event is delivered again, also after a crash.
	offs    map[int]uint64
	offsErr error
}

type evState uint8

const (
	evOpen           evState = iota // in a put txn not yet committing: must not survive
	evCommitting                    // put commit in progress: may or may not survive
	evAcked                         // put committed: must survive unless its take was committed
	evHeld                          // in an open take txn: must be redelivered
	evTakeCommitting                // take commit in progress: either
	evTaken                         // take committed: must never come back
	evRolledBack                    // put rolled back: must not survive
	evMoveCommitting                // moved by a take commit in progress: in c1 or in dlq, never both
	evMoved                         // move committed: in dlq, never again in c1
)

// takeRec is a take txn whose commit started; moved are those of its
// events it put into the dead-letter channel.
type takeRec struct {
	ids   []int
	moved map[int]bool
}

func (m *crashModel) set(ids []int, st evState) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crashed {
		return false
	}
	for _, id := range ids {
		m.state[id] = st
		m.hist[id] = append(m.hist[id], st)
	}
	return true
}

// advance moves ids that are still in state from to state to: a worker's
// late mark never overwrites what another worker already observed (a taker
// may take an event before its putter marks the put acknowledged).
func (m *crashModel) advance(ids []int, from, to evState) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crashed {
		return false
	}
	for _, id := range ids {
		if m.state[id] == from {
			m.state[id] = to
			m.hist[id] = append(m.hist[id], to)
		}
	}
	return true
}

// committing marks the ids of a txn whose commit starts (evCommitting for a
// put, evTakeCommitting for a take, moved from evHeld; evMoveCommitting for
// the ones a take moves) and records the txn.
func (m *crashModel) committing(ids []int, take bool, moved map[int]bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.crashed {
		return false
	}
	if take {
		m.takes = append(m.takes, takeRec{ids: ids, moved: moved})
	} else {
		m.puts = append(m.puts, ids)
	}
	for _, id := range ids {
		if take && m.state[id] != evHeld {
			continue
		}
		st := evCommitting
		if take {
			st = evTakeCommitting
			if moved[id] {
				st = evMoveCommitting
			}
		}
		m.state[id] = st
		m.hist[id] = append(m.hist[id], st)
	}
	return true
}

// checkAtomic reports the first txn that recovery split: a put txn of which
// some events survived (or were seen by takers, so its commit was durable)
// must have every event back (in c1, or in dlq when moved) unless a take of
// it committed or was committing; a take txn committing at the crash must
// be redelivered whole or not at all, and a move with it: either every
// event is back in c1 and none of its moved ones in dlq, or none is in c1
// and every moved one is in dlq.
func (m *crashModel) checkAtomic(snapshot map[int]evState, puts [][]int, takes []takeRec, seen, seenD map[int]bool) error {
	for _, ids := range puts {
		durable := false
		for _, id := range ids {
			switch snapshot[id] {
			case evAcked, evHeld, evTakeCommitting, evTaken, evMoveCommitting, evMoved:
				durable = true
			}
			durable = durable || seen[id] || seenD[id]
		}
		if !durable {
			continue
		}
		for _, id := range ids {
			if st := snapshot[id]; !seen[id] && !seenD[id] && st != evTaken && st != evTakeCommitting {
				return fmt.Errorf("put txn of %d events %v came back in part: event %d (state %d, history %v) is missing", len(ids), ids, id, st, m.hist[id])
			}
		}
	}
	last := map[int]int{} // id -> the last take txn that held it
	for i, tr := range takes {
		for _, id := range tr.ids {
			last[id] = i
		}
	}
	for i, tr := range takes {
		n, inD, open := 0, 0, true
		for _, id := range tr.ids {
			want := evTakeCommitting
			if tr.moved[id] {
				want = evMoveCommitting
			}
			open = open && snapshot[id] == want && last[id] == i
			if seen[id] {
				n++
			}
			if tr.moved[id] && seenD[id] {
				inD++
			}
		}
		if !open {
			continue
		}
		if n != 0 && n != len(tr.ids) {
			return fmt.Errorf("take txn of %d events %v (%d moved) came back in part: %d redelivered", len(tr.ids), tr.ids, len(tr.moved), n)
		}
		if (n == 0 && inD != len(tr.moved)) || (n != 0 && inD != 0) {
			return fmt.Errorf("move of %d events %v (%d moved) came back in part: %d back in c1, %d of the moved ones in dlq", len(tr.ids), tr.ids, len(tr.moved), n, inD)
		}
	}
	return nil
}

func (m *crashModel) newIDs(n int) []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]int, n)
	for i := range ids {
		ids[i] = m.nextID
		m.state[m.nextID] = evOpen
		m.nextID++
	}
	return ids
}

// crashSeeds: a few hundred in the normal suite; SLUICE_CRASH_SEEDS overrides.
func crashSeeds(t *testing.T) int {
	if v := os.Getenv("SLUICE_CRASH_SEEDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("SLUICE_CRASH_SEEDS: %v", err)
		}
		return n
	}
	if testing.Short() {
		return 40
	}
	return 300
}

// TestFileCrashSimulation: concurrent putters, takers and checkpoints on a
// crashable memory FS, a simulated power cut at a random moment, recovery,
// three rounds per seed. The cut tears the page cache as a real one does:
// every synced byte survives, and each unsynced 4 KiB page (and each
// unsynced directory entry) independently survives or vanishes with a
// per-seed probability from 0 to 100% (pebble's CrashClone), so a commit
// record's page can survive while an earlier page of its transaction does
// not. Judged per event (acknowledged ones survive, uncommitted ones never
// appear, committed takes never come back) and per transaction
// (crashModel.checkAtomic: all or none).
func TestFileCrashSimulation(t *testing.T) {
	n := crashSeeds(t)
	for seed := range n {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runCrashSeed(t, uint64(seed), crashVariant{})
		})
	}
}

// crashVariant adapts runCrashSeed: options per seed and per round, and an
// action the background goroutine may take instead of a checkpoint (e.g. a
// key rotation). The zero value is the plain store.
type crashVariant struct {
	seedRand uint64                                    // PCG stream, so variants explore other seeds
	setup    func(rng *rand.Rand, o *Options)          // once per seed
	round    func(round int, o *Options)               // before each round's open
	action   func(round int, s *Store, rng *rand.Rand) // in the background loop, instead of one checkpoint
}

func runCrashSeed(t *testing.T, seed uint64, v crashVariant) {
	rng := rand.New(rand.NewPCG(seed, 0x5105e+v.seedRand))
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1+rng.IntN(3), channel.ChannelConfig{Name: "c1", Capacity: 5000, TransactionCapacity: 200},
		channel.ChannelConfig{Name: "dlq", Capacity: 5000, TransactionCapacity: 200})
	o.CheckpointBytes = int64(16<<10 + rng.IntN(64<<10))
	if v.setup != nil {
		v.setup(rng, &o)
	}
	queued := map[int]bool{} // ids the store must hold at the start of a round
	for round := range 3 {
		if v.round != nil {
			v.round(round, &o)
		}
		s, err := Open(o)
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		// Verify the previous round's outcome is what the store holds now
		// (checked by the drain at the end of the previous round).
		m := &crashModel{state: map[int]evState{}, hist: map[int][]evState{}, nextID: (round + 1) * 1_000_000, offs: map[int]uint64{}}
		for id := range queued {
			m.state[id] = evAcked
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		workers := 1 + rng.IntN(4)
		for w := range workers {
			wg.Add(1)
			wseed := rng.Uint64()
			go func() {
				defer wg.Done()
				crashWorker(ctx, s, m, rand.New(rand.NewPCG(wseed, uint64(w))), w%2 == 1)
			}()
		}
		bgCkpt := rng.IntN(2) == 0 || v.action != nil
		if bgCkpt {
			wg.Add(1)
			crng := rand.New(rand.NewPCG(rng.Uint64(), 7))
			go func() {
				defer wg.Done()
				acted := false
				for ctx.Err() == nil {
					time.Sleep(time.Duration(crng.IntN(3)+1) * time.Millisecond)
					if v.action != nil && !acted && crng.IntN(4) == 0 {
						acted = true
						v.action(round, s, crng)
						continue
					}
					s.Checkpoint()
				}
			}()
		}
		time.Sleep(time.Duration(5+rng.IntN(40)) * time.Millisecond)
		m.mu.Lock()
		m.crashed = true
		unsynced := rng.IntN(101)
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced, RNG: rand.New(rand.NewPCG(seed, uint64(round)))})
		snapshot := m.state
		puts, takes := m.puts, m.takes
		m.mu.Unlock()
		cancel()
		wg.Wait()
		s.Close() // the old process's store; the clone is what survived
		fs = clone
		o.FS = fs

		s2, err := Open(o)
		if err != nil {
			t.Fatalf("round %d: reopen after crash: %v", round, err)
		}
		got, gotOffs := drainOffsets(t, s2, "c1")
		gotD, _ := drainOffsets(t, s2, "dlq")
		seenD := map[int]bool{}
		for _, id := range gotD {
			if seenD[id] {
				t.Fatalf("round %d: event %d moved into dlq twice", round, id)
			}
			seenD[id] = true
			switch st := snapshot[id]; st {
			case evMoveCommitting, evMoved:
			default:
				t.Fatalf("round %d: event %d is in dlq but no move of it committed (state %d, history %v)", round, id, st, m.hist[id])
			}
		}
		if m.offsErr != nil {
			t.Fatalf("round %d: before the crash: %v", round, m.offsErr)
		}
		seen := map[int]bool{}
		for i, id := range got {
			if prev, ok := m.offs[id]; ok && prev != gotOffs[i] {
				t.Fatalf("round %d: event %d delivered with offset %d after recovery, %d before the crash (dirs %d, workers %d, unsynced %d%%)",
					round, id, gotOffs[i], prev, len(o.DataDirs), workers, unsynced)
			}
			if seen[id] {
				t.Fatalf("round %d: event %d delivered twice after recovery", round, id)
			}
			seen[id] = true
			st, known := snapshot[id]
			switch {
			case !known:
				t.Fatalf("round %d: event %d was never put", round, id)
			case st == evOpen || st == evRolledBack:
				t.Fatalf("round %d: uncommitted put of event %d is visible", round, id)
			case st == evTaken:
				t.Fatalf("round %d: committed take of event %d delivered again", round, id)
			case st == evMoved:
				t.Fatalf("round %d: event %d moved by a committed take is back in c1", round, id)
			case seenD[id]:
				t.Fatalf("round %d: event %d is in c1 and in dlq (state %d, history %v)", round, id, st, m.hist[id])
			}
		}
		for id, st := range snapshot {
			if (st == evMoved && !seenD[id]) || (st == evMoveCommitting && !seen[id] && !seenD[id]) {
				t.Fatalf("round %d: event %d (state %d, history %v) is neither in c1 nor in dlq after its move", round, id, st, m.hist[id])
			}
			if (st == evAcked || st == evHeld) && !seen[id] {
				s2.Close()
				t.Log(explainLoss(o, id), " history ", m.hist[id])
				t.Fatalf("round %d: acknowledged event %d (state %d) lost (dirs %d, workers %d, bg checkpoints %v, unsynced %d%%, recovered %d events, checkpoints %d)",
					round, id, st, len(o.DataDirs), workers, bgCkpt, unsynced, len(got), s.checkpointCount.Load())
			}
		}
		if err := m.checkAtomic(snapshot, puts, takes, seen, seenD); err != nil {
			t.Fatalf("round %d: %v (dirs %d, workers %d, unsynced %d%%)", round, err, len(o.DataDirs), workers, unsynced)
		}
		if st, _ := s2.Stats(context.Background(), "c1"); st.CorruptEventsSkipped != 0 {
			t.Fatalf("round %d: %d events skipped as corrupt", round, st.CorruptEventsSkipped)
		}
		// Put the survivors back for the next round.
		queued = map[int]bool{}
		rb, _ := s2.BeginPut(context.Background(), channel.PutOptions{})
		for i, id := range got {
			if i >= 150 {
				break
			}
			rb.Put("c1", ev(id))
			queued[id] = true
		}
		if err := rb.Commit(context.Background()); err != nil {
			t.Fatalf("round %d: requeue: %v", round, err)
		}
		if err := s2.Close(); err != nil {
			t.Fatalf("round %d: close: %v", round, err)
		}
	}
}

func crashWorker(ctx context.Context, s *Store, m *crashModel, rng *rand.Rand, taker bool) {
	for ctx.Err() == nil {
		if !taker || rng.IntN(3) == 0 {
			n := 1 + rng.IntN(40)
			ids := m.newIDs(n)
			tx, err := s.BeginPut(ctx, channel.PutOptions{})
			if err != nil {
				return
			}
			for _, id := range ids {
				e := ev(id)
				switch rng.IntN(8) {
				case 0:
					e.Headers["pad"] = string(make([]byte, rng.IntN(4000)))
				case 1, 2, 3:
					e = evPlain(id)
				}
				if err := tx.Put("c1", e); err != nil {
					tx.Rollback()
					m.set(ids, evRolledBack)
					break
				}
			}
			if rng.IntN(6) == 0 {
				tx.Rollback()
				m.set(ids, evRolledBack)
				continue
			}
			if !m.committing(ids, false, nil) {
				return
			}
			if err := tx.Commit(context.Background()); err != nil {
				if errors.Is(err, channel.ErrChannelFull) || errors.Is(err, channel.ErrClosed) {
					m.set(ids, evRolledBack)
				}
				continue
			}
			m.advance(ids, evCommitting, evAcked)
			continue
		}
		tx, err := s.BeginTake(ctx, "c1")
		if err != nil {
			return
		}
		tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		evs, _ := tx.Take(tctx, 1+rng.IntN(60))
		cancel()
		ids := make([]int, len(evs))
		for i, e := range evs {
			ids[i] = bodyID(e.Body)
		}
		m.mu.Lock()
		for i, e := range evs {
			if prev, ok := m.offs[ids[i]]; ok && prev != e.Offset {
				m.offsErr = fmt.Errorf("event %d delivered with offset %d, earlier with %d", ids[i], e.Offset, prev)
			}
			m.offs[ids[i]] = e.Offset
		}
		m.mu.Unlock()
		if !m.set(ids, evHeld) {
			return
		}
		var moved map[int]bool
		if len(evs) > 0 && rng.IntN(4) == 0 {
			// A move: some of the taken events (or all) go to dlq in the
			// take's commit, the others are just taken.
			moved = map[int]bool{}
			for i, e := range evs {
				if rng.IntN(3) != 0 {
					continue
				}
				d := channel.Event{Body: e.Body} // plain ones stay plain (evID)
				if id, ok := e.Headers["id"]; ok {
					d.Headers = map[string]string{"id": id, "dlq.reason": "poison"}
					if rng.IntN(3) == 0 {
						d.Headers["pad"] = string(make([]byte, rng.IntN(3000)))
					}
				}
				if err := tx.Put("dlq", d); err != nil {
					tx.Rollback()
					m.advance(ids, evHeld, evAcked)
					moved = nil
					break
				}
				moved[ids[i]] = true
			}
		}
		switch rng.IntN(4) {
		case 0:
			// Back in the queue from the moment Rollback starts; marking it
			// after would race with another taker's marks.
			if !m.advance(ids, evHeld, evAcked) {
				return
			}
			tx.Rollback()
		case 1:
			// Leave it open for a while (it may be held at the crash).
			time.Sleep(time.Duration(rng.IntN(5)) * time.Millisecond)
			fallthrough
		default:
			if !m.committing(ids, true, moved) {
				return
			}
			if err := tx.Commit(context.Background()); err == nil {
				m.advance(ids, evTakeCommitting, evTaken)
				m.advance(ids, evMoveCommitting, evMoved)
			} // else: either outcome is allowed; leave it "committing".
		}
	}
}

// explainLoss replays the whole WAL of a failed run and says what it holds
// about event id, to tell a lost record from a recovery bug.
func explainLoss(o Options, id int) string {
	w, err := wal.Open(wal.Options{FS: o.FS, Dirs: o.DataDirs, SegmentSize: o.SegmentSize})
	if err != nil {
		return "explain: " + err.Error()
	}
	defer w.Close()
	var out []string
	var txn uint64
	want := "event-" + strconv.Itoa(id)
	wantPlain := "plain-" + strconv.Itoa(id)
	_, err = w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
		switch rec.Type {
		case wal.RecordPut:
			if _, e, err := decodePut(rec.Payload); err == nil && (string(e.Body) == want || string(e.Body) == wantPlain) {
				txn = rec.TxnID
				out = append(out, fmt.Sprintf("put txn %d woid %d at %d/%d", rec.TxnID, rec.WOID, ptr.Segment(), ptr.Offset()))
			}
		case wal.RecordCommit, wal.RecordRollback:
			if rec.TxnID == txn && txn != 0 {
				out = append(out, fmt.Sprintf("type %d txn %d woid %d at %d/%d", rec.Type, rec.TxnID, rec.WOID, ptr.Segment(), ptr.Offset()))
			}
		case wal.RecordTake:
			_, recs, _ := decodeTake(rec.Payload)
			_ = recs
		}
		return nil
	}, nil)
	cands := checkpoint.Load(o.FS, o.CheckpointDir, o.BackupCheckpointDir, nil)
	for _, c := range cands {
		if c.Checkpoint != nil {
			out = append(out, fmt.Sprintf("checkpoint %s gen %d W %d frontier %v", c.Path, c.Checkpoint.Generation, c.Checkpoint.WOID, c.Checkpoint.Frontier))
		} else {
			out = append(out, fmt.Sprintf("checkpoint %s: %v", c.Path, c.Err))
		}
	}
	return fmt.Sprintf("replay err %v; %v", err, out)
}
