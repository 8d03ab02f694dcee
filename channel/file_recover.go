package channel

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

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
	producers        producerTable
	now              int64               // last-use time of producers seen committing in the replayed WAL
	unknown          map[string]int64    // net committed events of unconfigured channels
	commits          map[uint64]struct{} // txn ids seen committing; nil: not checked (file_crypto.go)
	txnFloor         uint64              // the checkpoint's NextTxnID (file_crypto.go checkTxn)
	ckptTxns         map[uint64]bool     // txns in flight at the checkpoint
}

// recover loads the newest usable checkpoint, replays the WAL after it and
// writes a fresh checkpoint of the result.
func (s *File) recover() error {
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
		producers:        make(producerTable),
		now:              s.opts.now().UnixNano(),
		unknown:          make(map[string]int64),
		commits:          s.commitSet(),
	}
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
			rs.producers.note(p.ID, p.Sequence, last)
		}
		for _, pt := range cp.PutTxns {
			if pt.Committing {
				// Its commit record was synced before the checkpoint was written.
				rs.applyPut(pt.Entries, pt.ProducerID, pt.Sequence)
				continue
			}
			rs.puts[pt.TxnID] = &replayPut{entries: pt.Entries}
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

// openQueues opens every configured channel's queue at the checkpoint's
// state (nil: new empty queues).
func (s *File) openQueues(cp *checkpoint.Checkpoint) error {
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
	}
	return nil
}

func (rs *replayState) appendedCount(name string) int { return len(rs.appended[name]) }

func (rs *replayState) applyPut(entries []checkpoint.PutEntry, producer string, seq uint64) {
	for _, e := range entries {
		rs.appended[e.Channel] = append(rs.appended[e.Channel], e)
	}
	if producer != "" {
		rs.producers.note(producer, seq, rs.now)
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
		if err != nil {
			return nil
		}
		rs.takeRecs[rec.TxnID] = append(rs.takeRecs[rec.TxnID], replayTakeRec{channel: ch, recs: recs})
	case wal.RecordCommit:
		if err := rs.noteCommit(rec.TxnID, ptr); err != nil {
			return err
		}
		info, err := decodeCommit(rec.Payload)
		if err != nil {
			info = commitInfo{}
		}
		if p := rs.puts[rec.TxnID]; p != nil {
			rs.applyPut(p.entries, info.producer, info.sequence)
			delete(rs.puts, rec.TxnID)
		} else if info.producer != "" {
			rs.producers.note(info.producer, info.sequence, rs.now)
		}
		_, fromCkpt := rs.ckptTakes[rec.TxnID]
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
		delete(rs.puts, rec.TxnID)
		delete(rs.takeRecs, rec.TxnID)
	}
	return nil
}

// applyReplay turns the replayed changes into queue contents: uncommitted
// takes of the checkpoint go back to the head in their original order,
// committed puts are appended in commit order, committed takes are removed.
func (s *File) applyReplay(cp *checkpoint.Checkpoint, rs *replayState) error {
	front := make(map[string][]checkpoint.TakeEntry)
	for _, tt := range rs.ckptTakes {
		front[tt.Channel] = append(front[tt.Channel], tt.Entries...)
	}
	for name, app := range rs.appended {
		if _, ok := s.chans[name]; !ok {
			rs.unknown[name] += int64(len(app))
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
		bytes := c.bytes
		list := make([]uint64, 0, int(c.q.Len())+len(fr)+len(app))
		keep := func(ptr uint64, size uint32, counted bool) {
			if sz, gone := rm[ptr]; gone {
				if counted && !rs.removedUncounted[ptr] {
					bytes -= int64(sz)
				}
				return
			}
			if !counted {
				bytes += int64(size)
			}
			list = append(list, ptr)
		}
		for _, e := range fr {
			keep(e.Pointer, e.Size, false)
		}
		for i := uint64(0); i < c.q.Len(); i++ {
			keep(c.q.At(i), 0, true)
		}
		for _, e := range app {
			keep(e.Pointer, e.Size, false)
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
		for _, p := range list {
			if err := c.q.PushBack(p); err != nil {
				return fmt.Errorf("file channel: channel %q: rebuild queue: %w", name, err)
			}
		}
		c.bytes = max(bytes, 0)
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
func (s *File) growQueue(c *fileChan, cp *checkpoint.Checkpoint, n uint64) error {
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
