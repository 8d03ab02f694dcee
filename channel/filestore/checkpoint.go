package filestore

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/internal/storekit"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/queue"
)

// checkpointLoop writes a checkpoint every CheckpointInterval, or sooner once
// CheckpointBytes of WAL were written since the last one.
func (s *Store) checkpointLoop() {
	defer close(s.cpDone)
	t := time.NewTicker(s.opts.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.cpKick:
		}
		if err := s.checkpoint(false); err != nil {
			// Until one succeeds no WAL segment is collected: the disk
			// fills. Counted (StoreStats.CheckpointFailures) and logged
			// every time.
			s.checkpointFailures.Add(1)
			s.log.Error("file channel: checkpoint failed; will retry (WAL segments are not collected until one succeeds)", "err", err,
				"failures", s.checkpointFailures.Load())
		}
	}
}

func (s *Store) maybeKickCheckpoint() {
	if s.walBytes.Load() < s.opts.CheckpointBytes {
		return
	}
	select {
	case s.cpKick <- struct{}{}:
	default:
	}
}

// Checkpoint writes a checkpoint now (tests and tools; the store also
// checkpoints by itself).
func (s *Store) Checkpoint() error {
	if s.isClosed.Load() {
		return channel.ErrClosed
	}
	return s.checkpoint(false)
}

// checkpoint makes the current state durable so that recovery replays only
// the WAL written after it:
//
//  1. under cpMu (exclusive, microseconds): read the WAL frontier and last
//     WOID, freeze every queue, copy the in-flight transactions and the
//     producer table;
//  2. fdatasync every WAL directory (queued pointers and committing txns must
//     refer to durable records);
//  3. write each queue's other generation file and msync it;
//  4. write the checkpoint meta atomically (tmp, fsync, rename, fsync dir);
//  5. install the new queue generations, then remove WAL segments nobody
//     needs any more.
//
// A failure at any step leaves the previous checkpoint and its queue files
// untouched; the frozen overlays are merged back.
func (s *Store) checkpoint(clean bool) error {
	s.cpRun.Lock()
	defer s.cpRun.Unlock()
	start := time.Now()

	s.cpMu.Lock()
	frontier, w := s.wal.Frontier()
	puts, takes := s.inflight()
	s.mu.Lock()
	cp := &checkpoint.Checkpoint{
		Generation:   s.generation + 1,
		WOID:         w,
		Clean:        clean,
		NextTxnID:    s.nextTxn.Load() + 1,
		TimeUnixNano: start.UnixNano(),
		PutTxns:      puts,
		TakeTxns:     takes,
		DigestKey:    s.digestKey,
	}
	s.txnFloor.Store(cp.NextTxnID)
	for _, p := range frontier {
		cp.Frontier = append(cp.Frontier, checkpoint.Position{Segment: p.Segment, Offset: p.Offset})
	}
	if exp := storekit.ProducerExpiry(s.opts.ProducerExpiry); exp > 0 {
		if n := s.producers.Sweep(s.opts.Clock().UnixNano() - int64(exp)); n > 0 {
			s.log.Info("file channel: producer deduplication entries expired", "producers", n, "idle_for", exp)
		}
	}
	for id, e := range s.producers {
		cp.Producers = append(cp.Producers, checkpoint.Producer{ID: id, Sequence: e.Seq, LastUsed: e.Last})
	}
	bytes := make(map[string]int64, len(s.chans))
	type offState struct {
		next uint64
		runs []checkpoint.OffsetRun
	}
	offs := make(map[string]offState, len(s.chans))
	for _, name := range s.names {
		c := s.chans[name]
		c.frozen = c.q.Freeze()
		bytes[name] = c.bytes
		// nextOff is read under cpMu held exclusively: no commit record
		// write (orderMu, taken inside cpMu shared) is in progress.
		st := offState{next: c.nextOff}
		head, end := c.q.Head(), c.q.Head()+c.q.Len()
		for _, r := range c.offs.live() {
			if r.pos >= end {
				break
			}
			if r.pos < head { // the head run: start it at the head
				r = offRun{pos: head, off: r.off + (head - r.pos)}
			}
			if n := len(st.runs); n > 0 && st.runs[n-1].Pos == r.pos {
				st.runs[n-1] = checkpoint.OffsetRun{Pos: r.pos, Offset: r.off}
				continue
			}
			st.runs = append(st.runs, checkpoint.OffsetRun{Pos: r.pos, Offset: r.off})
		}
		offs[name] = st
	}
	s.mu.Unlock()
	s.walBytes.Store(0)
	s.cpMu.Unlock()

	abort := func(err error) error {
		s.mu.Lock()
		for _, c := range s.chans {
			if c.frozen != nil {
				c.q.Abort(c.frozen)
				c.frozen = nil
			}
		}
		s.mu.Unlock()
		return err
	}
	if err := s.wal.SyncAll(context.Background()); err != nil {
		return abort(fmt.Errorf("sync WAL before checkpoint: %w", err))
	}
	states := make(map[string]queue.State, len(s.names))
	for _, name := range s.names {
		c := s.chans[name]
		st, err := c.q.WriteSnapshot(c.frozen)
		if err != nil {
			return abort(fmt.Errorf("write queue of channel %q: %w", name, err))
		}
		states[name] = st
		cp.Channels = append(cp.Channels, checkpoint.Channel{
			Name: name, Capacity: st.Capacity, Head: st.Head, Size: st.Size,
			Bytes: uint64(max(bytes[name], 0)), Gen: st.Gen, Digest: st.Digest,
			NextOffset: offs[name].next, Offsets: offs[name].runs,
		})
	}
	// A pending crypto manifest (new store id, where encryption starts,
	// the active key) is durable before the checkpoint sealed under it;
	// the generation continues above the one the manifest recorded.
	if err := s.beforeCheckpoint(cp, frontier, w); err != nil {
		return abort(err)
	}
	dir, name := checkpoint.FileFor(s.opts.CheckpointDir, s.opts.BackupCheckpointDir, cp.Generation)
	sealer := s.checkpointSealer()
	if err := checkpoint.Write(s.fs, dir, name, cp, sealer); err != nil {
		return abort(err)
	}
	s.afterCheckpoint(cp.Generation)

	s.mu.Lock()
	for _, name := range s.names {
		c := s.chans[name]
		c.q.Install(c.frozen, states[name])
		c.frozen = nil
	}
	s.generation = cp.Generation
	s.prevW, s.lastW = s.lastW, w
	s.mu.Unlock()
	s.checkpointCount.Add(1)
	s.lastCheckpoint.Store(int64(time.Since(start)))
	s.gc()
	return nil
}

// gc removes WAL segments that hold no live pointer (queued or in-flight)
// and no record either checkpoint still needs for replay (max WOID ≤ the W
// of the older of the two checkpoints).
func (s *Store) gc() {
	s.mu.Lock()
	limit := s.prevW
	var victims []uint32
	for _, seg := range s.wal.Segments() {
		if seg.Active || seg.MaxWOID > limit || s.live[seg.ID] > 0 || s.keepSegment(seg.ID) {
			continue
		}
		victims = append(victims, seg.ID)
	}
	s.mu.Unlock()
	for _, id := range victims {
		if err := s.wal.Remove(id); err != nil {
			s.log.Warn("file channel: could not remove WAL segment", "segment", id, "err", err)
		}
	}
}
