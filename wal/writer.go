package wal

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Appending, rotation and group commit.
//
// Each directory has one writer mutex (dirState.mu). Write assigns WOIDs and
// checksums and appends a whole batch with one WriteAt under the mutex, so
// within a directory WOIDs increase with the offset. Sync waits until an
// fdatasync that started after the write has completed. Group commit is
// leader/follower: a caller that finds no fdatasync in flight in its
// directory runs one itself, covering every write completed so far; callers
// arriving meanwhile wait for it, and the first of them not covered leads the
// next one. A lone committer so never hands off to another goroutine (two
// wake-ups less per commit); concurrent ones share fdatasyncs.

// SyncToken names the end of a write: its directory, segment and end offset.
type SyncToken struct {
	seg *segment
	end int64
}

// Dir returns the directory index of the write (-1 for the zero token).
func (t SyncToken) Dir() int {
	if t.seg == nil {
		return -1
	}
	return t.seg.dir.idx
}

// Segment returns the segment id of the write.
func (t SyncToken) Segment() uint32 {
	if t.seg == nil {
		return 0
	}
	return t.seg.id
}

// End returns the end offset of the write in its segment.
func (t SyncToken) End() int64 { return t.end }

var (
	errPoisoned   = errors.New("wal: segment poisoned")
	errNotStarted = errors.New("wal: write before Start")
)

// Write appends every record of b to directory dir's active segment with one
// WriteAt, appends one Pointer per record to ptrs and returns it with a token
// for Sync. It rotates to a new segment first when the batch does not fit or
// the active segment is poisoned.
func (w *WAL) Write(dir int, b *Batch, ptrs []Pointer) ([]Pointer, SyncToken, error) {
	if dir < 0 || dir >= len(w.dirs) {
		return ptrs, SyncToken{}, fmt.Errorf("wal: write: directory index %d out of range [0, %d)", dir, len(w.dirs))
	}
	if len(b.offs) == 0 {
		return ptrs, SyncToken{}, nil
	}
	if !w.running.Load() {
		return ptrs, SyncToken{}, errNotStarted
	}
	buf, offs := b.buf, b.offs
	if c := w.opts.Codec; c != nil && !isPassthrough(c) {
		pooled := w.encBufs.Get().(*encBuf)
		defer func() {
			if cap(buf) <= 8<<20 {
				pooled.buf, pooled.offs = buf[:0], offs[:0]
				w.encBufs.Put(pooled)
			}
		}()
		var err error
		if buf, offs, err = b.encodeWith(w.opts.Codec, pooled.buf[:0], pooled.offs[:0]); err != nil {
			return ptrs, SyncToken{}, err
		}
	}
	n := int64(len(buf))
	if limit := w.opts.SegmentSize - segmentHeaderSize - sealRecordSize; n > limit {
		return ptrs, SyncToken{}, fmt.Errorf("wal: write of %d records, %d bytes, segment holds %d: %w", len(offs), n, limit, ErrBatchTooLarge)
	}

	d := w.dirs[dir]
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ptrs, SyncToken{}, ErrClosed
	}
	s, err := d.activeFor(n)
	if err != nil {
		return ptrs, SyncToken{}, err
	}

	count := uint64(len(offs))
	last := w.woid.Add(count)
	woid := last - count + 1
	start := len(ptrs)
	seed := segmentSeed(s.id)
	ptrs = slices.Grow(ptrs, len(offs))
	// Two passes: stamping the WOIDs first keeps the checksum's wide loads
	// from waiting on the store of the WOID they cover (a store-forwarding
	// stall per record, a third of the checksum time for small records).
	// Both walk the offsets, not the header lengths: no load chains one
	// record to the next.
	base := uint32(s.off)
	for i, off := range offs {
		binary.LittleEndian.PutUint64(buf[off+20:off+28], woid+uint64(i))
		ptrs = append(ptrs, MakePointer(s.id, base+off))
	}
	for _, off := range offs {
		rec := buf[off:]
		length := binary.LittleEndian.Uint32(rec[4:8])
		if uint64(length) > uint64(len(rec)-recordHeaderSize) {
			// Only a caller that filled the batch wrongly gets here.
			return ptrs[:start], SyncToken{}, fmt.Errorf("wal: write: malformed batch: record at %d of %d bytes claims %d payload bytes", off, len(buf), length)
		}
		checksumRecord(seed, rec[:recordHeaderSize+int(length)])
	}
	if _, err := s.wf.WriteAt(buf, s.off); err != nil {
		s.writeFailed = true
		s.poisoned.Store(true)
		w.logger.Error("wal: write failed, segment poisoned", "file", s.path, "offset", s.off, "err", err)
		return ptrs[:start], SyncToken{}, fmt.Errorf("wal: writing %d bytes to %s at offset %d: %w", n, s.path, s.off, err)
	}
	s.off += n
	s.written.Store(s.off)
	s.maxWOID.Store(last)
	return ptrs, SyncToken{seg: s, end: s.off}, nil
}

// activeFor returns the active segment once it can take n more bytes (plus
// the seal), rotating as needed. d.mu is held.
func (d *dirState) activeFor(n int64) (*segment, error) {
	var lastErr error
	for range 4 {
		s := d.active
		if s == nil || s.poisoned.Load() || s.off+n+sealRecordSize > s.size {
			if err := d.rotateLocked(); err != nil {
				return nil, err
			}
			continue
		}
		if err := d.waitZeroed(s, s.off+n); err != nil {
			if errors.Is(err, ErrClosed) {
				return nil, err
			}
			lastErr = err
			continue
		}
		return s, nil
	}
	return nil, fmt.Errorf("wal: directory %s: no usable segment: %w", d.path, lastErr)
}

// waitZeroed makes [0, end) of s ready for appends. If the allocator has not
// zeroed that far, zeroing of s stops (the rest stays preallocated but
// unwritten, see segment.go) once any chunk in flight is done.
func (d *dirState) waitZeroed(s *segment, end int64) error {
	if s.zeroed.Load() >= end {
		return nil
	}
	d.amu.Lock()
	defer d.amu.Unlock()
	for s.zeroed.Load() < end {
		if s.poisoned.Load() {
			return fmt.Errorf("wal: %s: %w", s.path, errPoisoned)
		}
		if d.stopping {
			return ErrClosed
		}
		if !s.zeroing {
			s.overtaken = true
			return nil
		}
		d.acond.Wait()
	}
	return nil
}

// rotateLocked makes the prepared next segment active, then seals, syncs and
// closes the old one. d.mu is held. If no next segment can be had the old one
// stays active and the error (e.g. ErrDiskSpace) is returned.
func (d *dirState) rotateLocked() error {
	d.amu.Lock()
	d.waitingNext = true
	d.acond.Broadcast()
	for d.next == nil && d.nextErr == nil && !d.stopping {
		d.acond.Wait()
	}
	next, err := d.next, d.nextErr
	d.next, d.nextErr = nil, nil
	d.waitingNext = false
	stopping := d.stopping
	d.acond.Broadcast()
	d.amu.Unlock()
	if next == nil {
		if stopping {
			return ErrClosed
		}
		return err
	}
	old := d.active
	d.active = next
	if old != nil {
		d.retireActive(old)
	}
	return nil
}

// retireActive seals (unless poisoned), syncs and closes a segment that is no
// longer active. Errors poison the segment and are reported to its waiters.
func (d *dirState) retireActive(s *segment) {
	if !s.poisoned.Load() {
		if err := d.waitZeroed(s, s.off+sealRecordSize); err == nil {
			seal := appendRecord(make([]byte, 0, sealRecordSize), s.id, RecordSeal, 0, 0, 0, d.w.woid.Add(1), nil)
			if _, err := s.wf.WriteAt(seal, s.off); err != nil {
				s.writeFailed = true
				s.poisoned.Store(true)
				d.w.logger.Error("wal: writing seal record", "file", s.path, "offset", s.off, "err", err)
			} else {
				s.off += int64(len(seal))
				s.written.Store(s.off)
				s.maxWOID.Store(decodeRecordHeader(seal).WOID)
			}
		}
	}
	// An error here poisons s: its waiters get it, and so does every
	// SyncAll while s exists with records in doubt.
	_ = d.syncSegment(s, s.written.Load())
	s.closeWriter()
	s.current.Store(false)
}

// syncSegment fdatasyncs s and marks everything written before the
// fdatasync started durable, unless an earlier sync of s failed (a failed
// fsync is never retried on a file: Linux reports a writeback error once
// per open file, so a later success would not mean the data is there). It
// returns the segment's sticky error if there is one (whether this sync or
// an earlier one failed), nil once target is durable. Syncs of one segment
// are serialised by s.syncMu; those of different segments and directories
// run in parallel.
func (d *dirState) syncSegment(s *segment, target int64) error {
	if target <= s.durable.Load() {
		// Durable before any failure that may follow: a failed sync
		// never lowers durable.
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.stickyErr(); err != nil {
		return err
	}
	if target <= s.durable.Load() {
		return nil // synced by whoever held syncMu before
	}
	s.fmu.RLock()
	// Every append completed by now is in the page cache before the
	// fdatasync starts: cover them all.
	target = max(target, s.written.Load())
	var err error
	if s.wf == nil {
		// Closed after a final sync by retireActive (which a concurrent
		// leader may race with): fine if that sync covered target.
		if target <= s.durable.Load() {
			s.fmu.RUnlock()
			return nil
		}
		err = fmt.Errorf("%w: fdatasync %s up to offset %d: file already closed", ErrSyncFailed, s.path, target)
	} else if err = s.wf.SyncData(); err != nil {
		err = fmt.Errorf("%w: fdatasync %s up to offset %d: %w", ErrSyncFailed, s.path, target, err)
	}
	s.fmu.RUnlock()
	if err != nil {
		d.failSegment(s, err)
		return s.stickyErr()
	}
	d.smu.Lock()
	if s.syncErr == nil && target > s.durable.Load() {
		s.durable.Store(target)
	}
	close(d.syncDone)
	d.syncDone = make(chan struct{})
	d.smu.Unlock()
	return nil
}

// syncInherited fdatasyncs, once, a segment an earlier process wrote: it
// may have died before syncing records that Replay has since applied.
func (d *dirState) syncInherited(s *segment) error {
	if !s.inherited.Load() {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if err := s.stickyErr(); err != nil {
		return err
	}
	if !s.inherited.Load() {
		return nil
	}
	f, release, err := s.reader()
	if err != nil {
		if s.removed() {
			return nil // removed meanwhile: nothing to sync
		}
		return err
	}
	err = f.SyncData()
	release()
	if err != nil {
		err = fmt.Errorf("%w: fdatasync %s (written by an earlier process): %w", ErrSyncFailed, s.path, err)
		d.failSegment(s, err)
		return s.stickyErr()
	}
	s.inherited.Store(false)
	return nil
}

// Sync returns once everything up to tok is durable. Concurrent callers share
// fdatasyncs; a failed fdatasync is returned to every caller it covered.
// Cancelling ctx stops the wait, not the fdatasync.
func (w *WAL) Sync(ctx context.Context, tok SyncToken) error {
	s := tok.seg
	if s == nil || s.durable.Load() >= tok.end {
		return nil
	}
	d := s.dir
	for {
		d.smu.Lock()
		if s.durable.Load() >= tok.end {
			d.smu.Unlock()
			return nil
		}
		if s.syncErr != nil {
			err := s.syncErr
			d.smu.Unlock()
			return err
		}
		done := d.syncDone
		if !d.syncing {
			d.syncing = true
			d.smu.Unlock()
			if ctx.Done() == nil {
				d.leadSync(s)
				continue
			}
			// A cancellable caller must be able to stop waiting for a
			// slow disk: the fdatasync runs on its own goroutine.
			go d.leadSync(s)
		} else {
			d.smu.Unlock()
		}
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// leadSync runs a leader's fdatasync of s, covering every completed write,
// then wakes all waiters (those not covered elect the next leader).
func (d *dirState) leadSync(s *segment) {
	_ = d.syncSegment(s, s.written.Load()) // waiters read the sticky error
	d.smu.Lock()
	d.syncing = false
	close(d.syncDone)
	d.syncDone = make(chan struct{})
	d.smu.Unlock()
}

// close seals and syncs the active segment, stops the background goroutines
// and hands a prepared next segment back to the spares.
func (d *dirState) close() error {
	d.mu.Lock()
	d.closed = true
	var errs []error
	if s := d.active; s != nil && s.wf != nil {
		d.retireActive(s)
		d.smu.Lock()
		if s.syncErr != nil {
			errs = append(errs, s.syncErr)
		}
		d.smu.Unlock()
	}
	d.mu.Unlock()

	d.amu.Lock()
	d.stopping = true
	d.acond.Broadcast()
	d.amu.Unlock()
	d.wg.Wait()

	d.amu.Lock()
	next := d.next
	d.next = nil
	d.amu.Unlock()
	if next != nil {
		next.current.Store(false)
		d.w.mu.Lock()
		delete(d.w.segs, next.id)
		d.w.mu.Unlock()
		next.closeFiles()
		if err := d.retire(next); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Passthrough is implemented by a Codec that, for now, stores payloads as
// they are (no key, no compression): Write then skips the encoding copy.
// Its Decode must still handle records written with other settings.
type Passthrough interface {
	Passthrough() bool
}

func isPassthrough(c Codec) bool {
	p, ok := c.(Passthrough)
	return ok && p.Passthrough()
}
