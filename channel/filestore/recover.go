package filestore

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/sluicehq/sluice/channel/internal/storekit"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/queue"
	"github.com/sluicehq/sluice/wal"
)

// replayPut is a put txn seen in the WAL (or the checkpoint) but not yet
// committed.
type replayPut struct {
	entries []checkpoint.PutEntry
}

type replayTakeRec struct {
	channel string
	recs    []takeEntryRec
}

// replayState accumulates what the WAL after the checkpoint says.
type replayState struct {
	puts      map[uint64]*replayPut
	takeRecs  map[uint64][]replayTakeRec
	ckptTakes map[uint64]checkpoint.TakeTxn // uncommitted at the checkpoint
	appended  map[string][]checkpoint.PutEntry
	removed   map[string]map[uint64]uint32 // channel -> taken pointer -> size
	// removedUncounted are taken pointers whose bytes were not in the
	// checkpoint's channel bytes (they were in-flight takes then).
	removedUncounted map[uint64]bool
	producers        storekit.ProducerTable
	now              int64               // last-use time of producers seen committing in the replayed WAL
	unknown          map[string]int64    // net committed events of unconfigured channels
	audit            *TxnAudit           // torn transactions (file_torn.go)
	commits          map[uint64]struct{} // txn ids seen committing; nil: not checked (file_crypto.go)
	txnFloor         uint64              // the checkpoint's NextTxnID (file_crypto.go checkTxn)
	ckptTxns         map[uint64]bool     // txns in flight at the checkpoint
	// Commits a later rollback record of the same txn retracts: written
	// when the commit's fdatasync failed (see Store.retract).
	putCommits  map[uint64]putUndo
	takeCommits map[uint64]takeUndo
	// nextOff is each channel's next offset (offsets.go): replayed commits
	// take theirs in WOID order, as they did when they were written.
	nextOff map[string]uint64
}

// putUndo is what retracting a replayed put commit restores.
type putUndo struct {
	spans    []appendSpan
	producer string
	prev     storekit.ProducerEntry
	hadPrev  bool
}

// appendSpan is a run of rs.appended[channel][start:start+n].
type appendSpan struct {
	channel  string
	start, n int
}

// takeUndo is what retracting a replayed take commit restores.
type takeUndo struct {
	recs []replayTakeRec
	ckpt *checkpoint.TakeTxn // in flight at the checkpoint
}

// recover loads the newest usable checkpoint, replays the WAL after it and
// writes a fresh checkpoint of the result.
func (s *Store) recover() error {
	start := time.Now()
	cands, err := s.loadCheckpoints() // fails closed on key errors (file_crypto.go)
	if err != nil {
		return err
	}
	var cp *checkpoint.Checkpoint
	var maxGen uint64
	for _, c := range cands {
		if c.Checkpoint != nil {
			maxGen = max(maxGen, c.Checkpoint.Generation)
		}
	}
	for _, c := range cands {
		if c.Err != nil && !errors.Is(c.Err, os.ErrNotExist) {
			s.fallbacks.Add(1) // a corrupt checkpoint, wherever Load ranked it
		}
	}
	for _, c := range cands {
		if c.Err != nil {
			if !errors.Is(c.Err, os.ErrNotExist) {
				s.log.Warn("file channel: checkpoint unusable, trying the next one", "file", c.Path, "err", c.Err)
			}
			continue
		}
		if err := s.openQueues(c.Checkpoint); err != nil {
			s.fallbacks.Add(1)
			s.log.Warn("file channel: checkpoint queues unusable, trying the next one", "file", c.Path, "err", err)
			s.closeQueues()
			continue
		}
		cp = c.Checkpoint
		s.log.Info("file channel: loaded checkpoint", "file", c.Path, "generation", cp.Generation, "woid", cp.WOID, "clean", cp.Clean)
		break
	}
	if cp == nil {
		if len(s.wal.Segments()) > 0 {
			s.fallbacks.Add(1)
			s.log.Warn("file channel: no usable checkpoint; replaying the whole WAL (events taken before the last segment GC may be delivered again)")
		}
		if err := s.openQueues(nil); err != nil {
			return err
		}
	}

	rs := &replayState{
		puts:             make(map[uint64]*replayPut),
		takeRecs:         make(map[uint64][]replayTakeRec),
		ckptTakes:        make(map[uint64]checkpoint.TakeTxn),
		appended:         make(map[string][]checkpoint.PutEntry),
		removed:          make(map[string]map[uint64]uint32),
		removedUncounted: make(map[uint64]bool),
		producers:        make(storekit.ProducerTable),
		now:              s.opts.Clock().UnixNano(),
		unknown:          make(map[string]int64),
		commits:          s.commitSet(),
	}
	// Commits at or below the newest W any checkpoint names were synced
	// before it was written: whole, though GC may have removed records of
	// theirs (file_torn.go). With no checkpoint that decodes at all (both
	// lost or corrupt: a store writes its first one before it accepts a
	// put) nothing tells a torn commit from one whose early segments GC
	// removed, and dropping the latter would lose acknowledged events:
	// nothing is judged then.
	var judgeAfter uint64
	decoded := false
	for _, c := range cands {
		if c.Checkpoint != nil {
			judgeAfter, decoded = max(judgeAfter, c.Checkpoint.WOID), true
		}
	}
	if cp != nil {
		judgeAfter = cp.WOID
	} else if !decoded {
		judgeAfter = math.MaxUint64
	}
	if cp == nil && !decoded && len(s.wal.Segments()) > 0 {
		s.log.Warn("file channel: no checkpoint decodes; transactions torn by a power cut cannot be told from ones whose early segments were collected, and are kept as found")
	}
	rs.audit = NewTxnAudit(judgeAfter)
	rs.nextOff = make(map[string]uint64, len(s.chans))
	for name, c := range s.chans {
		rs.nextOff[name] = c.nextOff
	}
	rs.putCommits = make(map[uint64]putUndo)
	rs.takeCommits = make(map[uint64]takeUndo)
	var from []wal.Position
	var w, nextTxn uint64
	if cp != nil {
		rs.noteCheckpointTxns(cp)
		w, nextTxn = cp.WOID, cp.NextTxnID
		for _, p := range cp.Frontier {
			from = append(from, wal.Position{Segment: p.Segment, Offset: p.Offset})
		}
		for _, p := range cp.Producers {
			last := p.LastUsed
			if last == 0 { // not recorded (format version 1): at least the checkpoint's time
				last = cp.TimeUnixNano
			}
			rs.producers.Note(p.ID, p.Sequence, last)
		}
		for _, pt := range cp.PutTxns {
			if pt.Committing {
				// Its commit record was synced before the checkpoint was written.
				rs.applyPut(pt.TxnID, pt.Entries, pt.ProducerID, pt.Sequence)
				continue
			}
			rs.puts[pt.TxnID] = &replayPut{entries: pt.Entries}
			rs.audit.seed(pt.TxnID, len(pt.Entries))
		}
		for _, tt := range cp.TakeTxns {
			if !tt.Committing {
				rs.ckptTakes[tt.TxnID] = tt
			}
		}
	}
	stats, err := s.wal.Replay(from, rs.record, func(done, total int64) {
		s.log.Info("file channel: replaying WAL", "done_bytes", done, "total_bytes", total,
			"percent", fmt.Sprintf("%.1f", 100*float64(done)/float64(max(total, 1))))
	})
	if err != nil {
		return fmt.Errorf("file channel: replay: %w", err)
	}
	for _, d := range stats.Damaged {
		s.damaged.Add(1)
		s.damagedRecords.Add(d.EstimatedRecords)
		s.log.Error("file channel: damaged WAL range skipped", "file", d.File, "start", d.Start, "end", d.End,
			"estimated_records_lost", d.EstimatedRecords, "reason", d.Reason)
	}
	s.reportTorn(rs.audit.Torn())
	if cp != nil {
		for _, ch := range cp.Channels {
			if _, ok := s.chans[ch.Name]; !ok && (ch.Size > 0 || rs.appendedCount(ch.Name) > 0) {
				return fmt.Errorf("file channel: checkpoint holds %d events of channel %q, which is not configured; add it back (and drain it) rather than losing them", ch.Size, ch.Name)
			}
		}
		for _, tt := range rs.ckptTakes {
			if _, ok := s.chans[tt.Channel]; !ok {
				return fmt.Errorf("file channel: checkpoint holds %d in-flight taken events of channel %q, which is not configured", len(tt.Entries), tt.Channel)
			}
		}
	}
	if err := s.applyReplay(cp, rs); err != nil {
		return err
	}
	s.producers = rs.producers
	s.nextTxn.Store(max(nextTxn, stats.MaxTxnID+1))
	if cp != nil {
		s.generation = maxGen
		s.lastW = w
		s.prevW = w
	} else {
		s.generation = maxGen
	}
	// New segment ids stay above every id either checkpoint can name.
	var minSeg uint32
	for _, c := range cands {
		if c.Checkpoint != nil {
			for _, p := range c.Checkpoint.Frontier {
				minSeg = max(minSeg, p.Segment+1)
			}
		}
	}
	if err := s.wal.StartAt(max(w, stats.MaxWOID)+1, minSeg); err != nil {
		return fmt.Errorf("file channel: %w", err)
	}
	s.lastReplay.Store(int64(time.Since(start)))
	if stats.Records > 0 || cp == nil || !cp.Clean {
		s.log.Info("file channel: recovered", "records_replayed", stats.Records, "bytes_replayed", stats.Bytes,
			"damaged_ranges", len(stats.Damaged), "duration", time.Since(start))
	}
	if err := s.checkpoint(false); err != nil {
		return fmt.Errorf("file channel: checkpoint after recovery: %w", err)
	}
	return nil
}

// reportTorn logs and counts the torn transactions recovery dropped.
func (s *Store) reportTorn(torn []TornTxn) {
	if len(torn) == 0 {
		return
	}
	paths := map[uint32]string{}
	for _, sg := range s.wal.Segments() {
		paths[sg.ID] = sg.Path
	}
	for _, t := range torn {
		s.tornTxns.Add(1)
		outcome := "its events were dropped (the put was never acknowledged)"
		if t.Kind == "put" {
			s.tornEvents.Add(int64(t.Found))
		} else {
			outcome = "nothing of it was applied"
			switch t.Kind {
			case "take":
				outcome = "its events stay queued and are delivered again"
			case "move":
				outcome = "nothing was moved: its taken events stay queued and are delivered again, its put events were dropped"
			}
		}
		s.log.Error("file channel: torn transaction dropped whole: its commit record reached the disk, some of its records did not",
			"txn", t.TxnID, "kind", t.Kind, "events_expected", t.Expected, "events_found", t.Found,
			"file", paths[t.Commit.Segment()], "offset", t.Commit.Offset(), "woid", t.WOID, "reason", t.Reason, "outcome", outcome)
	}
}

// openQueues opens every configured channel's queue at the checkpoint's
// state (nil: new empty queues).
func (s *Store) openQueues(cp *checkpoint.Checkpoint) error {
	states := map[string]checkpoint.Channel{}
	if cp != nil {
		for _, ch := range cp.Channels {
			states[ch.Name] = ch
		}
	}
	for _, name := range s.names {
		c := s.chans[name]
		var st *queue.State
		c.bytes = 0
		if ch, ok := states[name]; ok {
			st = &queue.State{Gen: ch.Gen, Head: ch.Head, Size: ch.Size, Capacity: ch.Capacity, Digest: ch.Digest}
			c.bytes = int64(ch.Bytes)
		}
		capacity := uint64(c.cfg.Capacity)
		if st != nil {
			capacity = max(capacity, st.Size)
		}
		qo := s.queueOptions(name, capacity)
		if cp != nil {
			qo.CheckKey = cp.DigestKey // keyed digests (file_crypto.go)
		}
		q, err := queue.Open(qo, st)
		if err != nil {
			return fmt.Errorf("channel %q: %w", name, err)
		}
		c.q = q
		c.offs.reset(q.Head())
		c.nextOff = 1
		if ch, ok := states[name]; ok && ch.NextOffset == 0 && q.Len() > 0 {
			// A checkpoint from before offsets: its in-flight takes (back at
			// the head at recovery) get 1…k in applyReplay, the queue the
			// offsets after them.
			k := uint64(0)
			for _, tt := range cp.TakeTxns {
				if tt.Channel == name && !tt.Committing {
					k += uint64(len(tt.Entries))
				}
			}
			c.offs.pushBack(k+1, int(q.Len()))
			c.nextOff = k + q.Len() + 1
		} else if ok && ch.NextOffset > 0 {
			c.nextOff = ch.NextOffset
			for _, r := range ch.Offsets {
				c.offs.runs = append(c.offs.runs, offRun{pos: r.Pos, off: r.Offset})
			}
			c.offs.tail = q.Head() + q.Len()
			if err := checkOffsets(ch, q.Head(), q.Len()); err != nil {
				return fmt.Errorf("channel %q: %w", name, err)
			}
		}
	}
	return nil
}

// checkOffsets validates a checkpoint's offset runs against its queue
// state: they cover [head, head+size) in increasing positions with
// increasing offsets below NextOffset.
func checkOffsets(ch checkpoint.Channel, head, size uint64) error {
	if size == 0 {
		return nil
	}
	rs := ch.Offsets
	if len(rs) == 0 || rs[0].Pos != head {
		return fmt.Errorf("checkpoint offsets do not start at the queue head %d", head)
	}
	for i, r := range rs {
		end := head + size
		if i+1 < len(rs) {
			end = rs[i+1].Pos
		}
		if end <= r.Pos || end > head+size || r.Offset == 0 || r.Offset+(end-r.Pos) > ch.NextOffset ||
			(i > 0 && r.Offset <= rs[i-1].Offset+(r.Pos-rs[i-1].Pos)-1) {
			return fmt.Errorf("checkpoint offset run %d (position %d, offset %d) is out of order or range (head %d, size %d, next offset %d)", i, r.Pos, r.Offset, head, size, ch.NextOffset)
		}
	}
	return nil
}

// appendedCount counts the committed events replay appends to channel name
// (retracted ones are tombstones with pointer 0, never a record's position).
func (rs *replayState) appendedCount(name string) int {
	n := 0
	for _, e := range rs.appended[name] {
		if e.Pointer != 0 {
			n++
		}
	}
	return n
}

// applyPut appends a committed put's entries in commit order and remembers
// how to retract it.
func (rs *replayState) applyPut(txn uint64, entries []checkpoint.PutEntry, producer string, seq uint64) {
	u := putUndo{producer: producer}
	for i := 0; i < len(entries); {
		ch, j := entries[i].Channel, i
		for j < len(entries) && entries[j].Channel == ch {
			j++
		}
		u.spans = append(u.spans, appendSpan{channel: ch, start: len(rs.appended[ch]), n: j - i})
		start := len(rs.appended[ch])
		rs.appended[ch] = append(rs.appended[ch], entries[i:j]...)
		for k := start; k < len(rs.appended[ch]); k++ {
			// A committing put of the checkpoint has its offsets; a
			// replayed commit takes the next ones. Retracted commits keep
			// theirs (skipped), as they did when their sync failed.
			e := &rs.appended[ch][k]
			if e.Offset == 0 {
				e.Offset = rs.nextOff[ch]
				rs.nextOff[ch]++
			}
		}
		i = j
	}
	if producer != "" {
		u.prev, u.hadPrev = rs.producers[producer]
		rs.producers.Note(producer, seq, rs.now)
	}
	rs.putCommits[txn] = u
}

// storedEntries returns the entries of a committed put txn (in txn order)
// that its commit stores: all but its first info.skip events (a per-event
// put's events its producer had already committed). When fewer entries
// than the commit counts are left (a commit not judged by the torn audit
// whose first records lie in segments GC removed, see torn.go) the missing
// ones are the txn's first, so the stored ones are the last events - skip.
func storedEntries(entries []checkpoint.PutEntry, info commitInfo) []checkpoint.PutEntry {
	if info.skip == 0 {
		return entries
	}
	keep := uint64(len(entries))
	if info.events > info.skip {
		keep = min(keep, info.events-info.skip)
	} else {
		keep = 0
	}
	return entries[uint64(len(entries))-keep:]
}

// retract undoes a replayed commit of txn that a later rollback record of
// the same txn retracts: the commit's fdatasync failed, the committer was
// told so, and the store wrote and synced the rollback before anything else
// could depend on the outcome.
func (rs *replayState) retract(txn uint64) {
	if u, ok := rs.putCommits[txn]; ok {
		for _, sp := range u.spans {
			app := rs.appended[sp.channel]
			for i := sp.start; i < sp.start+sp.n; i++ {
				app[i].Pointer, app[i].Size = 0, 0
			}
		}
		if u.producer != "" {
			if u.hadPrev {
				rs.producers[u.producer] = u.prev
			} else {
				delete(rs.producers, u.producer)
			}
		}
		delete(rs.putCommits, txn)
	}
	if u, ok := rs.takeCommits[txn]; ok {
		for _, tr := range u.recs {
			for _, e := range tr.recs {
				delete(rs.removed[tr.channel], e.ptr)
				delete(rs.removedUncounted, e.ptr)
			}
		}
		if u.ckpt != nil {
			rs.ckptTakes[txn] = *u.ckpt
		}
		delete(rs.takeCommits, txn)
	}
}

// record applies one replayed WAL record.
func (rs *replayState) record(rec wal.Record, ptr wal.Pointer) error {
	if err := rs.checkTxn(rec, ptr); err != nil {
		return err
	}
	switch rec.Type {
	case wal.RecordPut:
		h, _, err := decodePutHeader(rec.Payload)
		rs.audit.put(rec.TxnID, err == nil)
		if err != nil {
			return nil // CRC-valid but undecodable: counted as lost below
		}
		p := rs.puts[rec.TxnID]
		if p == nil {
			p = &replayPut{}
			rs.puts[rec.TxnID] = p
		}
		p.entries = append(p.entries, checkpoint.PutEntry{Channel: h.channel, Pointer: uint64(ptr), Size: h.size})
	case wal.RecordTake:
		ch, recs, err := decodeTake(rec.Payload)
		rs.audit.take(rec.TxnID, len(recs), err == nil)
		if err != nil {
			return nil
		}
		rs.takeRecs[rec.TxnID] = append(rs.takeRecs[rec.TxnID], replayTakeRec{channel: ch, recs: recs})
	case wal.RecordCommit:
		info, err := decodeCommit(rec.Payload)
		if rs.audit.commit(rec, ptr, info, err) {
			// Torn: dropped whole. A torn take of a txn in flight at the
			// checkpoint stays in ckptTakes, so its events go back to the
			// head.
			delete(rs.puts, rec.TxnID)
			delete(rs.takeRecs, rec.TxnID)
			return nil
		}
		if err := rs.noteCommit(rec.TxnID, ptr); err != nil {
			return err
		}
		if err != nil {
			info = commitInfo{}
		}
		if p := rs.puts[rec.TxnID]; p != nil || info.producer != "" {
			var entries []checkpoint.PutEntry
			if p != nil {
				entries = storedEntries(p.entries, info)
			}
			rs.applyPut(rec.TxnID, entries, info.producer, info.sequence)
			delete(rs.puts, rec.TxnID)
		}
		ck, fromCkpt := rs.ckptTakes[rec.TxnID]
		if trs := rs.takeRecs[rec.TxnID]; len(trs) > 0 {
			u := takeUndo{recs: trs}
			if fromCkpt {
				u.ckpt = &ck
			}
			rs.takeCommits[rec.TxnID] = u
		}
		for _, tr := range rs.takeRecs[rec.TxnID] {
			m := rs.removed[tr.channel]
			if m == nil {
				m = make(map[uint64]uint32)
				rs.removed[tr.channel] = m
			}
			for _, e := range tr.recs {
				m[e.ptr] = e.size
				if fromCkpt {
					rs.removedUncounted[e.ptr] = true
				}
			}
		}
		delete(rs.takeRecs, rec.TxnID)
		delete(rs.ckptTakes, rec.TxnID)
	case wal.RecordRollback:
		rs.audit.rollback(rec.TxnID)
		delete(rs.puts, rec.TxnID)
		delete(rs.takeRecs, rec.TxnID)
		rs.retract(rec.TxnID)
	}
	return nil
}

// applyReplay turns the replayed changes into queue contents: uncommitted
// takes of the checkpoint go back to the head in their original order,
// committed puts are appended in commit order, committed takes are removed.
func (s *Store) applyReplay(cp *checkpoint.Checkpoint, rs *replayState) error {
	front := make(map[string][]checkpoint.TakeEntry)
	for _, tt := range rs.ckptTakes {
		front[tt.Channel] = append(front[tt.Channel], tt.Entries...)
	}
	for name := range rs.appended {
		if _, ok := s.chans[name]; !ok {
			rs.unknown[name] += int64(rs.appendedCount(name))
		}
	}
	for name, m := range rs.removed {
		if _, ok := s.chans[name]; !ok {
			rs.unknown[name] -= int64(len(m))
		}
	}
	for name, n := range rs.unknown {
		if n > 0 {
			return fmt.Errorf("file channel: the WAL holds %d committed events of channel %q, which is not configured; add it back (and drain it) rather than losing them", n, name)
		}
	}
	for _, name := range s.names {
		c := s.chans[name]
		fr, app, rm := front[name], rs.appended[name], rs.removed[name]
		if len(fr) == 0 && len(app) == 0 && len(rm) == 0 {
			continue
		}
		sort.Slice(fr, func(i, j int) bool { return fr[i].Position < fr[j].Position })
		for i := range fr {
			if fr[i].Offset == 0 { // a checkpoint from before offsets (openQueues)
				fr[i].Offset = uint64(i + 1)
			}
		}
		bytes := c.bytes
		type kept struct{ ptr, off uint64 }
		list := make([]kept, 0, int(c.q.Len())+len(fr)+len(app))
		keep := func(ptr, off uint64, size uint32, counted bool) {
			if sz, gone := rm[ptr]; gone {
				if counted && !rs.removedUncounted[ptr] {
					bytes -= int64(sz)
				}
				return
			}
			if !counted {
				bytes += int64(size)
			}
			list = append(list, kept{ptr, off})
		}
		for _, e := range fr {
			keep(e.Pointer, e.Offset, e.Size, false)
		}
		head := c.q.Head()
		for i := uint64(0); i < c.q.Len(); i++ {
			keep(c.q.At(i), c.offs.at(head+i), 0, true)
		}
		for _, e := range app {
			if e.Pointer != 0 { // 0: retracted
				keep(e.Pointer, e.Offset, e.Size, false)
			}
		}
		// In offset order: in-flight takes of the checkpoint go back
		// among the queued events they were taken with, which may not all
		// precede them (concurrent takes).
		if !slices.IsSortedFunc(list, func(a, b kept) int { return cmp.Compare(a.off, b.off) }) {
			slices.SortStableFunc(list, func(a, b kept) int { return cmp.Compare(a.off, b.off) })
		}
		if uint64(len(list)) > c.q.Capacity() {
			// More events than the queue file holds (capacity was lowered):
			// grow it, never drop an event.
			if err := s.growQueue(c, cp, uint64(len(list))); err != nil {
				return err
			}
		}
		for c.q.Len() > 0 {
			c.q.PopFront()
		}
		c.offs.reset(c.q.Head())
		for _, p := range list {
			if err := c.q.PushBack(p.ptr); err != nil {
				return fmt.Errorf("file channel: channel %q: rebuild queue: %w", name, err)
			}
			c.offs.pushBack(p.off, 1)
		}
		c.bytes = max(bytes, 0)
	}
	for name, c := range s.chans {
		c.nextOff = max(c.nextOff, rs.nextOff[name])
	}
	// Live pointer counts per segment, for GC.
	for _, name := range s.names {
		q := s.chans[name].q
		for i := uint64(0); i < q.Len(); i++ {
			s.live[wal.Pointer(q.At(i)).Segment()]++
		}
	}
	return nil
}

// growQueue reopens c's queue with room for n events, rebuilding it into the
// generation the loaded checkpoint does not use.
func (s *Store) growQueue(c *fileChan, cp *checkpoint.Checkpoint, n uint64) error {
	var st *queue.State
	if cp != nil {
		for _, ch := range cp.Channels {
			if ch.Name == c.cfg.Name {
				st = &queue.State{Gen: ch.Gen, Head: ch.Head, Size: ch.Size, Capacity: ch.Capacity, Digest: ch.Digest}
			}
		}
	}
	c.q.Close()
	c.q = nil
	qo := s.queueOptions(c.cfg.Name, n)
	if cp != nil {
		qo.CheckKey = cp.DigestKey
	}
	q, err := queue.Open(qo, st)
	if err != nil {
		return fmt.Errorf("file channel: channel %q: grow queue to %d: %w", c.cfg.Name, n, err)
	}
	c.q = q
	return nil
}
