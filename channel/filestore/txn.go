package filestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
	"unsafe"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	sluicecrypto "github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/wal"
)

// chanRun says that the put txn's events up to end (exclusive, counting
// from the txn's first) after the previous run's end are for channel ch.
type chanRun struct {
	ch  *fileChan
	end int
}

type filePut struct {
	s    *Store
	id   uint64
	dir  int
	opts channel.PutOptions
	buf  *putBuffers // pooled; nil once the txn is done
	// The txn's events, in order, as parallel slices (pooled, from buf):
	// sizes has one entry per event added; ptrs has the WAL pointers of
	// the first len(ptrs) of them, those flushed to the WAL (the rest are
	// encoded in the batch); runs maps them to channels.
	sizes []uint32
	ptrs  []wal.Pointer
	runs  []chanRun
	// What checkpoints read (under s.mu, set by flush): the flushed
	// events' sizes (a prefix of sizes: appends never change it) and the
	// runs as of the last flush.
	flushedSizes []uint32
	flushedRuns  []chanRun
	perChan      map[*fileChan]int64
	perChanB     map[*fileChan]int64
	registered   bool // in s.puts (has flushed records)
	renumbered   bool // got a new id at its first flush (see flush)
	committing   bool
	retracted    bool // a failed commit was retracted (Store.retract)
	done         bool
	dedup        bool
	// Per-event mode (see PutSeq): seqs maps the txn's events to their
	// sequences, lastSeq is the last one given; at Commit skip is how many
	// leading events the producer had already committed (dropped), dups
	// what Duplicates reports and seq the sequence the commit records.
	seqs    []seqSpan
	lastSeq uint64
	skip    int
	dups    int
	seq     uint64
	// Offsets (offsets.go): bases[i] is the channel offset of the first
	// event of runs[i], given when the commit record is written; ticket is
	// the commit's place in the publication order.
	bases   []uint64
	ticket  uint64
	pubOK   bool // resolved (in Store.pubWait) as to become visible
	pubDone chan struct{}
	// toks has one sync token per WAL segment the txn wrote to: a commit
	// must make every one of them durable, not only the segment holding the
	// commit record (an earlier segment's failed fsync must fail the commit).
	toks []wal.SyncToken
	// take is set when the put is the move part of a take txn
	// (fileTake.Put): it shares the take's txn id, and its commit batch
	// carries the take record before the one commit record of both.
	take *fileTake
}

// seqSpan says that the put txn's events from index at (up to the next
// span's at) have the sequences first, first+1, ….
type seqSpan struct {
	at    int
	first uint64
}

// BeginPut implements Channel.
func (s *Store) BeginPut(ctx context.Context, opts channel.PutOptions) (channel.PutTxn, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("file channel: %w", err)
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, channel.ErrClosed
	}
	return s.newPut(opts, s.nextTxn.Add(1), int(s.nextDir.Add(1)%uint64(s.wal.NumDirs()))), nil
}

// newPut returns a put txn with pooled buffers.
func (s *Store) newPut(opts channel.PutOptions, id uint64, dir int) *filePut {
	buf := s.putBufs.Get().(*putBuffers)
	return &filePut{
		s:        s,
		buf:      buf,
		sizes:    buf.sizes[:0],
		ptrs:     buf.ptrs[:0],
		runs:     buf.runs[:0],
		id:       id,
		dir:      dir,
		opts:     opts,
		perChan:  make(map[*fileChan]int64, 1),
		perChanB: make(map[*fileChan]int64, 1),
	}
}

func (p *filePut) Put(name string, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if err := p.opts.CheckPut(); err != nil {
		return fmt.Errorf("file channel: %w", err)
	}
	return p.put(name, events)
}

// PutSeq implements channel.PutTxn.
func (p *filePut) PutSeq(name string, first uint64, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if _, err := p.opts.CheckPutSeq(p.lastSeq, first, len(events)); err != nil {
		return fmt.Errorf("file channel: %w", err)
	}
	before := len(p.sizes)
	err := p.put(name, events)
	// Also after a failed flush: the events it added keep their sequences.
	if n := len(p.sizes) - before; n > 0 {
		p.seqs = append(p.seqs, seqSpan{at: before, first: first})
		p.lastSeq = first + uint64(n-1) // last, unless a flush failed
	}
	return err
}

// committedPrefix counts the txn's leading events whose sequence is at or
// below mark (per-event mode: the sequences increase, so they are a prefix).
func (p *filePut) committedPrefix(mark uint64) int {
	n := 0
	for i, sp := range p.seqs {
		end := len(p.sizes)
		if i+1 < len(p.seqs) {
			end = p.seqs[i+1].at
		}
		if sp.first > mark {
			break
		}
		if k := mark - sp.first + 1; k < uint64(end-sp.at) {
			return n + int(k)
		}
		n += end - sp.at
	}
	return n
}

// unreserveSkipped takes the txn's first skip events out of the per-channel
// counts the commit reserves and publishes.
func (p *filePut) unreserveSkipped() {
	start := 0
	for _, r := range p.runs {
		if start >= p.skip {
			break
		}
		end := min(r.end, p.skip)
		var b int64
		for _, sz := range p.sizes[start:end] {
			b += int64(sz)
		}
		if p.perChan[r.ch] -= int64(end - start); p.perChan[r.ch] == 0 {
			delete(p.perChan, r.ch)
			delete(p.perChanB, r.ch)
		} else {
			p.perChanB[r.ch] -= b
		}
		start = r.end
	}
}

// dropSkipped removes the txn's first skip events (already committed by its
// producer) from its pointers, sizes and runs, once they are in the WAL:
// the commit record says to skip them, so neither the queues nor a
// checkpoint of the committing txn hold them. Called with s.mu held.
func (p *filePut) dropSkipped() {
	k := p.skip
	if k == 0 {
		return
	}
	for _, ptr := range p.ptrs[:k] {
		p.s.unpin(ptr)
	}
	p.ptrs, p.sizes = p.ptrs[k:], p.sizes[k:]
	p.flushedSizes = p.sizes[:len(p.ptrs)]
	runs, bases := p.runs[:0], p.bases[:0]
	for i, r := range p.runs {
		if r.end > k {
			runs = append(runs, chanRun{ch: r.ch, end: r.end - k})
			bases = append(bases, p.bases[i])
		}
	}
	clear(p.runs[len(runs):])
	p.runs, p.bases = runs, bases
	p.flushedRuns = append(p.flushedRuns[:0], runs...)
}

func (p *filePut) put(name string, events []channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if p.committing {
		return fmt.Errorf("put after commit started: %w", channel.ErrTxnDone)
	}
	c, err := p.s.channel(name)
	if err != nil {
		return err
	}
	c.PutAttempts.Add(int64(len(events)))
	if n := p.perChan[c] + int64(len(events)); n > int64(c.cfg.TransactionCapacity) {
		return fmt.Errorf("%w: %d events for channel %q, transactionCapacity is %d", channel.ErrTxnFull, n, name, c.cfg.TransactionCapacity)
	}
	plain := true // no event has headers: the templated encoding applies
	for i, ev := range events {
		if sz := ev.Size(); sz > p.s.opts.MaxEventSize {
			return fmt.Errorf("%w: event %d is %d bytes, maximum is %d", channel.ErrEventTooLarge, i, sz, p.s.opts.MaxEventSize)
		}
		if len(ev.Headers) != 0 {
			plain = false
			if err := channel.CheckHeaders(ev); err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
		}
	}
	now := time.Now().UnixNano()
	var addedBytes int64
	sizes, before := p.sizes, len(p.sizes)
	defer func() { // also on a failed flush: counts what was added
		p.extend(c, sizes)
		p.perChan[c] += int64(len(sizes) - before)
		p.perChanB[c] += addedBytes
	}()
	if plain {
		// Every record starts with the same header and channel name, and
		// the put time and zero header count follow the size: one prefix
		// copy, one middle copy and the body per event.
		if pre, ok := putPrefix(p.id, name); ok {
			lastSz, m0, m1, m := -1, uint64(0), uint64(0), 0
			for _, ev := range events {
				sz := len(ev.Body)
				if p.buf.batch.Len() > 0 && p.buf.batch.Len()+sz+len(name)+64 > p.s.flushBytes {
					p.extend(c, sizes)
					if err := p.flush(false); err != nil {
						return err
					}
				}
				if sz != lastSz { // usually one size for all
					m0, m1, m = putMiddle(uint32(sz), now)
					lastSz = sz
				}
				p.buf.batch.AppendPrefixed(&pre, m0, m1, m, ev.Body)
				sizes = append(sizes, uint32(sz))
				addedBytes += int64(sz)
			}
			return nil
		}
	}
	for _, ev := range events {
		sz := ev.Size()
		if p.buf.batch.Len() > 0 && p.buf.batch.Len()+sz+len(name)+64 > p.s.flushBytes {
			p.extend(c, sizes)
			if err := p.flush(false); err != nil {
				return err
			}
		}
		b := p.buf.batch.Begin()
		b = appendPutPayload(b, name, ev, sz, now)
		p.buf.batch.End(wal.RecordPut, p.id, b)
		sizes = append(sizes, uint32(sz))
		addedBytes += int64(sz)
	}
	return nil
}

// queuePointers views WAL pointers as the queue's uint64 elements (the
// same representation) without copying them.
func queuePointers(ps []wal.Pointer) []uint64 {
	return unsafe.Slice((*uint64)(unsafe.SliceData(ps)), len(ps))
}

// extend records that the txn's events are sizes, those beyond the last run
// being for channel c (the Put call in progress).
func (p *filePut) extend(c *fileChan, sizes []uint32) {
	p.sizes = sizes
	n := len(p.runs)
	switch {
	case n > 0 && p.runs[n-1].end == len(sizes):
	case n > 0 && p.runs[n-1].ch == c:
		p.runs[n-1].end = len(sizes)
	default:
		p.runs = append(p.runs, chanRun{ch: c, end: len(sizes)})
	}
}

// flush writes the buffered records (and, when commit is set, the commit
// record) to the WAL and registers the pointers as in-flight, atomically with
// respect to checkpoints.
func (p *filePut) flush(commit bool) error {
	s := p.s
	trailer := 0 // records after the txn's events in the batch
	if commit {
		info := commitInfo{producer: p.opts.ProducerID, sequence: p.seq,
			events: uint64(len(p.sizes)), skip: uint64(p.skip)}
		if t := p.take; t != nil && len(t.entries) > 0 {
			// A move: the take record and the put records share the
			// one commit record, which counts both (torn.go).
			p.buf.batch.Add(wal.RecordTake, p.id, t.takePayload())
			info.events += uint64(len(t.entries))
			trailer++
		}
		p.buf.scratch = appendCommitPayload(p.buf.scratch[:0], info)
		p.buf.batch.Add(wal.RecordCommit, p.id, p.buf.scratch)
		trailer++
	}
	if p.buf.batch.Count() == 0 {
		return nil
	}
	if err := s.checkDiskSpace(); err != nil {
		return err
	}
	s.cpMu.RLock()
	if s.isClosed.Load() {
		s.cpMu.RUnlock()
		return channel.ErrClosed
	}
	if !p.registered && p.id < s.txnFloor.Load() && (p.take == nil || len(p.take.entries) == 0) {
		// Begun before the last checkpoint but not in it: a new id, so
		// that replay can refuse records of older txns (checkTxn). (A
		// move whose take holds events is in s.takes under this id, so
		// it was in that checkpoint or begun after it.)
		p.id = s.nextTxn.Add(1)
		p.renumbered = true
		if p.take != nil {
			p.take.id = p.id
		}
	}
	if p.renumbered {
		// Also later batches: a Put call that flushed mid-way goes on
		// with the record prefix it built with the old id.
		p.buf.batch.SetTxnID(p.id)
	}
	// The pointers are appended to p.ptrs's spare room: what checkpoints
	// read (p.ptrs itself) is unchanged until s.mu is held.
	var ptrs []wal.Pointer
	var tok wal.SyncToken
	var err error
	if commit {
		// Commit records are written one at a time, each taking its
		// offsets and its ticket: offset order = commit WOID order =
		// publication order (offsets.go).
		s.orderMu.Lock()
		p.assignOffsets()
		ptrs, tok, err = s.wal.Write(p.dir, &p.buf.batch, p.ptrs)
		if err != nil {
			p.returnOffsets()
		} else {
			p.ticket = s.nextTicket
			s.nextTicket++
		}
		s.orderMu.Unlock()
	} else {
		ptrs, tok, err = s.wal.Write(p.dir, &p.buf.batch, p.ptrs)
	}
	if err != nil {
		s.cpMu.RUnlock()
		return fmt.Errorf("file channel: txn %d: %w", p.id, walError(err))
	}
	s.walBytes.Add(int64(p.buf.batch.Len()))
	s.walTotal.Add(int64(p.buf.batch.Len()))
	if commit {
		ptrs = ptrs[:len(ptrs)-trailer] // the take and commit records': not events
	}
	s.mu.Lock()
	for i := len(p.ptrs); i < len(ptrs); {
		// One map update per run of records in the same segment.
		seg, j := ptrs[i].Segment(), i
		for j < len(ptrs) && ptrs[j].Segment() == seg {
			j++
		}
		s.live[seg] += int64(j - i)
		i = j
	}
	p.ptrs = ptrs
	p.flushedSizes = p.sizes[:len(ptrs)]
	p.flushedRuns = append(p.flushedRuns[:0], p.runs...)
	if !p.registered {
		s.puts[p.id] = p
		p.registered = true
	}
	if commit {
		p.dropSkipped()
		p.committing = true
		if p.take != nil {
			p.take.committing = true // a checkpoint sees both or neither
		}
	}
	s.mu.Unlock()
	s.cpMu.RUnlock()
	p.buf.batch.Reset()
	if n := len(p.toks); n > 0 && p.toks[n-1].Segment() == tok.Segment() {
		p.toks[n-1] = tok
	} else {
		p.toks = append(p.toks, tok)
	}
	s.maybeKickCheckpoint()
	return nil
}

// syncAll waits until every segment the txn wrote to is durable up to its
// records (the commit record's segment first: earlier segments were sealed
// and synced when the WAL rotated, so their waits are usually immediate).
func (p *filePut) syncAll() error {
	for i := len(p.toks) - 1; i >= 0; i-- {
		if err := p.s.wal.Sync(context.Background(), p.toks[i]); err != nil {
			return err
		}
	}
	return nil
}

// putBuffers are the encoding buffers of a put txn, pooled across txns so a
// txn does not grow its batch from nothing.
type putBuffers struct {
	batch       wal.Batch
	scratch     []byte
	sizes       []uint32
	ptrs        []wal.Pointer
	runs        []chanRun
	flushedRuns []chanRun
}

// release returns the txn's buffers to the pool. Called once it is done.
func (p *filePut) release() {
	if p.buf == nil {
		return
	}
	p.buf.batch.Reset()
	clear(p.runs) // channel pointers
	clear(p.flushedRuns)
	p.buf.sizes, p.buf.ptrs, p.buf.runs, p.buf.flushedRuns = p.sizes[:0], p.ptrs[:0], p.runs[:0], p.flushedRuns[:0]
	p.sizes, p.ptrs, p.runs, p.flushedRuns, p.flushedSizes = nil, nil, nil, nil, nil
	p.s.putBufs.Put(p.buf)
	p.buf = nil
}

func (p *filePut) Deduplicated() bool { return p.dedup }

// Duplicates implements channel.PutTxn.
func (p *filePut) Duplicates() int { return p.dups }

func (p *filePut) Commit(ctx context.Context) error {
	if p.done {
		return channel.ErrTxnDone
	}
	s := p.s
	defer p.release()
	if !s.commitStart() {
		p.rollback(true)
		return channel.ErrClosed
	}
	defer s.commits.Done()
	if len(p.sizes) == 0 && p.opts.ProducerID == "" {
		p.done = true
		return nil
	}
	if err := s.checkDiskSpace(); err != nil {
		p.rollback(false)
		return err
	}
	if p.opts.ProducerID != "" {
		p.seq = p.opts.Sequence
		if p.opts.PerEvent() {
			if len(p.sizes) == 0 { // a keep-alive: no sequence to record
				s.mu.Lock()
				s.producers.Touch(p.opts.ProducerID, s.opts.Clock().UnixNano())
				s.mu.Unlock()
				p.done = true
				return nil
			}
			p.seq = p.lastSeq
		}
		release, mark, dup, err := s.claimProducer(ctx, p.opts.ProducerID, p.seq)
		if err != nil {
			p.rollback(false)
			return err
		}
		defer release()
		if dup {
			p.rollback(false)
			p.dedup, p.dups = true, len(p.sizes)
			return nil
		}
		if p.opts.PerEvent() {
			// The events up to the mark were committed by an earlier put
			// (a source re-reading after a crash): their records stay in
			// the WAL, and the commit record tells replay to skip them.
			p.skip = p.committedPrefix(mark)
			p.dups = p.skip
			p.unreserveSkipped()
		}
	}
	if err := s.reserve(ctx, p.perChan, p.perChanB); err != nil {
		p.rollback(false)
		return err
	}
	if err := p.flush(true); err != nil {
		s.unreserve(p.perChan, p.perChanB)
		p.rollback(false)
		return err
	}
	// The commit record is written: from here the outcome is decided by the
	// fdatasync alone. A cancelled ctx does not abandon it (the txn would be
	// in limbo); the sync is bounded by the disk.
	if err := p.syncAll(); err != nil {
		s.unreserve(p.perChan, p.perChanB)
		s.mu.Lock()
		p.committing = false
		s.mu.Unlock()
		// Retracted before the producer is released, so a retry's commit
		// comes after the rollback record.
		err = s.retract(p.dir, p.id, "put", err)
		p.retracted = true
		p.rollback(false)
		p.publish(false) // its offsets are skipped
		return fmt.Errorf("file channel: commit txn %d: %w", p.id, err)
	}
	p.publish(true)
	p.done = true
	return nil
}

// assignOffsets gives the txn's events their channel offsets. Called with
// s.orderMu held. The first p.skip events, which a per-event put does not
// store, get none: bases[i] is the offset of runs[i]'s first stored event
// (dropSkipped drops the bases of runs left empty with the runs).
func (p *filePut) assignOffsets() {
	p.bases = p.bases[:0]
	start := 0
	for _, r := range p.runs {
		p.bases = append(p.bases, r.ch.nextOff)
		r.ch.nextOff += uint64(r.end - min(max(start, p.skip), r.end))
		start = r.end
	}
}

// returnOffsets undoes assignOffsets after the commit record could not be
// written. Called with s.orderMu held: nobody took offsets since.
func (p *filePut) returnOffsets() {
	for i, r := range p.runs {
		r.ch.nextOff = min(r.ch.nextOff, p.bases[i])
	}
	p.bases = p.bases[:0]
}

// publish resolves the txn's commit (ok: its fdatasync succeeded) and waits
// until every commit written before it is resolved too and its events are
// visible: commits become visible in ticket order, so each queue stays
// sorted by offset (offsets.go). The wait is for fdatasyncs already in
// flight.
func (p *filePut) publish(ok bool) {
	s := p.s
	p.pubDone = make(chan struct{})
	s.cpMu.RLock()
	s.mu.Lock()
	p.pubOK = ok
	s.pubWait[p.ticket] = p
	for {
		q := s.pubWait[s.pubNext]
		if q == nil {
			break
		}
		delete(s.pubWait, s.pubNext)
		s.pubNext++
		if q.pubOK {
			q.applyLocked()
		}
		close(q.pubDone)
	}
	s.mu.Unlock()
	s.cpMu.RUnlock()
	<-p.pubDone
}

// applyLocked makes a committed put visible. Called with s.cpMu held shared
// and s.mu held.
func (p *filePut) applyLocked() {
	s := p.s
	start := 0
	for i, r := range p.runs {
		// One queue append per run of events for the same channel.
		qp := queuePointers(p.ptrs[start:r.end])
		start = r.end
		if err := r.ch.q.PushBackN(qp); err != nil {
			// Cannot happen: capacity was reserved. Report loudly.
			s.log.Error("file channel: queue push after reservation failed", "channel", r.ch.cfg.Name, "events", len(qp), "err", err)
			continue
		}
		r.ch.offs.pushBack(p.bases[i], len(qp))
	}
	for c, n := range p.perChan {
		c.reserved -= n
		c.resBytes -= p.perChanB[c]
		c.bytes += p.perChanB[c]
		c.PutSuccesses.Add(n)
		c.wakeTakers()
	}
	if p.opts.ProducerID != "" {
		s.producers.Note(p.opts.ProducerID, p.seq, s.opts.Clock().UnixNano())
	}
	delete(s.puts, p.id)
}

func (p *filePut) Rollback() error {
	if p.done {
		return nil
	}
	p.rollback(false)
	p.release()
	return nil
}

// rollback discards the txn. Flushed records stay in the WAL (replay ignores
// uncommitted txns); a rollback record lets replay forget them early.
func (p *filePut) rollback(closing bool) {
	if p.done {
		return
	}
	p.done = true
	s := p.s
	s.cpMu.RLock()
	defer s.cpMu.RUnlock()
	if s.isClosed.Load() {
		return // the final checkpoint saved it as in-flight; replay drops it
	}
	if len(p.ptrs) > 0 && !closing && !p.retracted {
		p.buf.batch.Reset()
		p.buf.batch.Add(wal.RecordRollback, p.id, nil)
		_, _, _ = s.wal.Write(p.dir, &p.buf.batch, nil) // best effort: replay drops it anyway
	}
	s.mu.Lock()
	for _, ptr := range p.ptrs {
		s.unpin(ptr)
	}
	delete(s.puts, p.id)
	s.mu.Unlock()
}

// unpin drops one live pointer of a segment. Called with s.mu held.
func (s *Store) unpin(ptr wal.Pointer) { s.unpinN(ptr.Segment(), 1) }

// unpinN drops n live pointers of segment seg. Called with s.mu held.
func (s *Store) unpinN(seg uint32, n int64) {
	if left := s.live[seg] - n; left > 0 {
		s.live[seg] = left
	} else {
		delete(s.live, seg)
	}
}

// retract makes the failure of a commit whose record was written (its
// fdatasync failed, cause) authoritative: a rollback record of txn, written
// after the commit record (the WAL moves on to a new segment: the failed one
// is poisoned) and synced, tells replay to undo the commit (see
// replayState.retract), so the caller's "not committed" holds after a
// restart too. When even that fails, the outcome after a restart is unknown
// (it is stored whole or not at all); the returned error says so.
func (s *Store) retract(dir int, txn uint64, kind string, cause error) error {
	var b wal.Batch
	b.Add(wal.RecordRollback, txn, nil)
	var err error
	for i := range s.wal.NumDirs() {
		d := (dir + i) % s.wal.NumDirs()
		s.cpMu.RLock()
		var tok wal.SyncToken
		_, tok, err = s.wal.Write(d, &b, nil)
		s.cpMu.RUnlock()
		if err == nil {
			if err = s.wal.Sync(context.Background(), tok); err == nil {
				return cause
			}
		}
	}
	s.log.Error("file channel: a failed commit could not be retracted: after a restart it may be found committed",
		"txn", txn, "kind", kind, "commit_err", cause, "retract_err", err)
	return fmt.Errorf("%w (and recording its rollback failed: %v; after a restart the %s may be found committed)", cause, err, kind)
}

// commitStart registers an in-progress commit so Close waits for it.
func (s *Store) commitStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.commits.Add(1)
	return true
}

// claimProducer serialises commits of one producer and reports whether seq
// was already committed, and the producer's mark (its last committed
// sequence, 0 if unknown), which cannot move until release is called when
// the commit is done.
func (s *Store) claimProducer(ctx context.Context, id string, seq uint64) (release func(), mark uint64, dup bool, err error) {
	for {
		s.mu.Lock()
		busy, ok := s.prodBusy[id]
		if !ok {
			if s.producers.Committed(id, seq) {
				s.producers.Touch(id, s.opts.Clock().UnixNano())
				s.mu.Unlock()
				return func() {}, 0, true, nil
			}
			if err := s.producers.Admit(id, s.maxProducers); err != nil {
				s.mu.Unlock()
				return nil, 0, false, fmt.Errorf("file channel: %w", err)
			}
			mark = s.producers[id].Seq
			ch := make(chan struct{})
			s.prodBusy[id] = ch
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				delete(s.prodBusy, id)
				s.mu.Unlock()
				close(ch)
			}, mark, false, nil
		}
		s.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, 0, false, ctx.Err()
		}
	}
}

// reserve claims room for a put in every channel at once, waiting up to the
// longest keep-alive of the channels that are full.
func (s *Store) reserve(ctx context.Context, n, b map[*fileChan]int64) error {
	var deadline time.Time
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return channel.ErrClosed
		}
		var full *fileChan
		for c, k := range n {
			used := int64(c.q.Len()) + c.inTakes + c.reserved
			usedB := c.bytes + c.inTakeB + c.resBytes
			if used+k > c.cfg.Capacity || (c.cfg.MaxBytes > 0 && usedB+b[c] > c.cfg.MaxBytes) {
				full = c
				break
			}
		}
		if full == nil {
			for c, k := range n {
				c.reserved += k
				c.resBytes += b[c]
			}
			s.mu.Unlock()
			return nil
		}
		wait := full.space
		s.mu.Unlock()
		if deadline.IsZero() {
			deadline = time.Now().Add(full.cfg.KeepAlive)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &channel.FullError{Channel: full.cfg.Name, Detail: fmt.Sprintf("capacity %d events, maxBytes %d", full.cfg.Capacity, full.cfg.MaxBytes)}
		}
		timer := time.NewTimer(left)
		select {
		case <-wait:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return &channel.FullError{Channel: full.cfg.Name, Err: ctx.Err()}
		}
		timer.Stop()
	}
}

func (s *Store) unreserve(n, b map[*fileChan]int64) {
	s.mu.Lock()
	for c, k := range n {
		c.reserved -= k
		c.resBytes -= b[c]
		c.wakePutters()
	}
	s.mu.Unlock()
}

// takeEntry is one event held by a take transaction.
type takeEntry struct {
	ptr  wal.Pointer
	pos  uint64 // logical queue position it was taken from
	off  uint64 // channel offset (offsets.go)
	size uint32
}

type fileTake struct {
	s          *Store
	id         uint64
	dir        int
	ch         *fileChan
	entries    []takeEntry
	ptrs       []wal.Pointer // read scratch
	committing bool
	done       bool
	// mv holds the events Put adds (a move, see Put): a put txn with the
	// take's id, committed by the take's commit. nil until the first Put.
	mv *filePut
}

// Put implements channel.TakeTxn: the events are written as put records of
// this txn (its id), and the take's commit writes the take record and one
// commit record for both, through the ordered commit path of puts
// (orderMu, offsets, the publication gate). Replay applies a txn's puts and
// takes at its commit record, so the move is all or none after any crash;
// the torn audit counts both kinds of record against the commit's count.
func (t *fileTake) Put(name string, events ...channel.Event) error {
	if t.done {
		return channel.ErrTxnDone
	}
	if t.committing {
		return fmt.Errorf("put after commit started: %w", channel.ErrTxnDone)
	}
	if t.mv == nil {
		t.mv = t.s.newPut(channel.PutOptions{}, t.id, t.dir)
		t.mv.take = t
	}
	return t.mv.put(name, events)
}

// takePayload encodes the take record of the txn's entries.
func (t *fileTake) takePayload() []byte {
	recs := make([]takeEntryRec, len(t.entries))
	for i, e := range t.entries {
		recs[i] = takeEntryRec{ptr: uint64(e.ptr), size: e.size}
	}
	return appendTakePayload(nil, t.ch.cfg.Name, recs)
}

// BeginTake implements Channel.
func (s *Store) BeginTake(ctx context.Context, name string) (channel.TakeTxn, error) {
	c, err := s.channel(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, channel.ErrClosed
	}
	return &fileTake{
		s:   s,
		id:  s.nextTxn.Add(1),
		dir: int(s.nextDir.Add(1) % uint64(s.wal.NumDirs())),
		ch:  c,
	}, nil
}

func (t *fileTake) Take(ctx context.Context, max int) ([]channel.Event, error) {
	if t.done || t.committing {
		return nil, channel.ErrTxnDone
	}
	if max <= 0 {
		return nil, nil
	}
	s, c := t.s, t.ch
	room := c.cfg.TransactionCapacity - len(t.entries)
	if room <= 0 {
		return nil, fmt.Errorf("%w: take txn holds %d events, transactionCapacity is %d", channel.ErrTxnFull, len(t.entries), c.cfg.TransactionCapacity)
	}
	max = min(max, room)
	c.TakeAttempts.Add(int64(max))
	for {
		s.cpMu.RLock()
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			s.cpMu.RUnlock()
			return nil, channel.ErrClosed
		}
		first := len(t.entries)
		t.entries = slices.Grow(t.entries, int(min(uint64(max), c.q.Len())))
		for len(t.entries)-first < max {
			pos := c.q.Head()
			ptr, ok := c.q.PopFront()
			if !ok {
				break
			}
			off := c.offs.popFront(pos)
			if orig, was := c.rolled[ptr]; was {
				pos = orig
				delete(c.rolled, ptr)
			}
			t.entries = append(t.entries, takeEntry{ptr: wal.Pointer(ptr), pos: pos, off: off})
		}
		got := t.entries[first:]
		if len(got) > 0 {
			if first == 0 && t.id < s.txnFloor.Load() && (t.mv == nil || !t.mv.registered) {
				t.id = s.nextTxn.Add(1) // as filePut.flush
				if t.mv != nil {
					// Its records are not written yet; those it encoded
					// get the new id at its first flush.
					t.mv.id, t.mv.renumbered = t.id, true
				}
			}
			c.inTakes += int64(len(got))
			s.takes[t.id] = t
		}
		wait := c.notify
		s.mu.Unlock()
		s.cpMu.RUnlock()
		if len(got) > 0 {
			return t.read(first)
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// read decodes the bodies of entries[first:] from the WAL (page cache). A
// damaged record is reported and skipped: it stays in the txn so a commit
// removes it, but no garbage is ever returned.
func (t *fileTake) read(first int) ([]channel.Event, error) {
	s, c := t.s, t.ch
	out := make([]channel.Event, 0, len(t.entries)-first)
	sizes := make([]uint32, len(t.entries)-first)
	var bytes int64
	s.walMu.RLock()
	defer s.walMu.RUnlock()
	if s.walClosed {
		return nil, channel.ErrClosed
	}
	ptrs := t.ptrs[:0]
	for _, e := range t.entries[first:] {
		ptrs = append(ptrs, e.ptr)
	}
	t.ptrs = ptrs
	var err error
	var slab bodySlab
	// The read buffer is only needed while the events are copied out of
	// it: a store-wide pool, not one per txn.
	rb := s.readBufs.Get().(*[]byte)
	defer func() {
		if cap(*rb) <= 4<<20 {
			s.readBufs.Put(rb)
		}
	}()
	*rb, err = s.wal.ReadRecords(ptrs, *rb, func(i int, rec wal.Record, err error) error {
		var ev channel.Event
		var h putHeader
		if err == nil {
			if rec.Type != wal.RecordPut {
				err = fmt.Errorf("record at %v is type %d, not a put", ptrs[i], rec.Type)
			} else {
				h, ev, err = decodePutSlab(rec.Payload, &slab)
			}
			if err == nil && h.channel != c.cfg.Name {
				// A pointer into another channel's event (a forged queue
				// file or checkpoint): never delivered here.
				err = fmt.Errorf("record at %v is an event of channel %q, not of %q", ptrs[i], h.channel, c.cfg.Name)
			}
		} else if errors.Is(err, sluicecrypto.ErrAuth) || errors.Is(err, sluicecrypto.ErrPolicy) {
			s.noteAuthFailure(ptrs[i].Segment(), err)
		}
		if err != nil {
			c.corrupt.Add(1)
			s.log.Error("file channel: skipping unreadable event", "channel", c.cfg.Name,
				"segment", ptrs[i].Segment(), "offset", ptrs[i].Offset(), "err", err)
			return nil
		}
		sizes[i] = h.size
		bytes += int64(h.size)
		ev.Offset = t.entries[first+i].off
		out = append(out, ev)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	for i, sz := range sizes {
		t.entries[first+i].size = sz
	}
	c.bytes -= bytes
	c.inTakeB += bytes
	s.mu.Unlock()
	return out, nil
}

func (t *fileTake) Commit(ctx context.Context) error {
	if t.done {
		return channel.ErrTxnDone
	}
	if t.mv != nil && len(t.mv.sizes) > 0 {
		return t.commitMove(ctx)
	}
	if t.mv != nil { // Put calls that added nothing
		t.mv.rollback(false)
		t.mv.release()
	}
	if len(t.entries) == 0 {
		t.done = true
		return nil
	}
	s := t.s
	if !s.commitStart() {
		t.rollback(true)
		return channel.ErrClosed
	}
	defer s.commits.Done()
	var b wal.Batch
	b.Add(wal.RecordTake, t.id, t.takePayload())
	b.Add(wal.RecordCommit, t.id, appendCommitPayload(nil, commitInfo{events: uint64(len(t.entries))}))
	s.cpMu.RLock()
	_, tok, err := s.wal.Write(t.dir, &b, nil)
	written := err == nil
	if err == nil && s.isClosed.Load() {
		err = channel.ErrClosed
	}
	if err == nil {
		s.mu.Lock()
		t.committing = true
		s.mu.Unlock()
		s.walBytes.Add(int64(b.Len()))
		s.walTotal.Add(int64(b.Len()))
	}
	s.cpMu.RUnlock()
	if err == nil {
		err = s.wal.Sync(context.Background(), tok)
	}
	if err != nil {
		s.mu.Lock()
		t.committing = false
		s.mu.Unlock()
		if written && !errors.Is(err, channel.ErrClosed) {
			// Before the events go back to the head: a later take of
			// them comes after the rollback record.
			err = s.retract(t.dir, t.id, "take", err)
		}
		t.rollback(false)
		return fmt.Errorf("file channel: commit take txn %d: %w", t.id, walError(err))
	}
	t.finish()
	return nil
}

// commitMove commits a take txn with a move part (Put): the put's commit
// path with the take record in its final batch. On any failure the whole
// txn is rolled back: the taken events go back to the head, nothing put is
// stored.
func (t *fileTake) commitMove(ctx context.Context) error {
	s, p := t.s, t.mv
	defer p.release()
	fail := func(closing bool) {
		p.rollback(closing)
		t.rollback(closing)
	}
	if !s.commitStart() {
		fail(true)
		return channel.ErrClosed
	}
	defer s.commits.Done()
	if err := s.checkDiskSpace(); err != nil {
		fail(false)
		return err
	}
	if err := s.reserve(ctx, p.perChan, p.perChanB); err != nil {
		fail(false)
		return fmt.Errorf("file channel: commit take txn %d (move): %w", t.id, err)
	}
	if err := p.flush(true); err != nil {
		s.unreserve(p.perChan, p.perChanB)
		fail(false)
		return fmt.Errorf("file channel: commit take txn %d (move): %w", t.id, err)
	}
	// As in filePut.Commit: from here the fdatasync decides.
	if err := p.syncAll(); err != nil {
		s.unreserve(p.perChan, p.perChanB)
		s.mu.Lock()
		p.committing, t.committing = false, false
		s.mu.Unlock()
		// Before the taken events go back and before the offsets are
		// skipped: a later take of them comes after the rollback record.
		err = s.retract(p.dir, p.id, "move", err)
		p.retracted = true
		fail(false)
		p.publish(false)
		return fmt.Errorf("file channel: commit take txn %d (move): %w", t.id, err)
	}
	p.publish(true)
	p.done = true
	if len(t.entries) == 0 {
		t.done = true
		return nil
	}
	t.finish()
	return nil
}

// finish releases a committed take's events: their WAL records are no
// longer live and their room in the channel is free.
func (t *fileTake) finish() {
	s, c := t.s, t.ch
	var bytes int64
	for _, e := range t.entries {
		bytes += int64(e.size)
	}
	s.cpMu.RLock()
	s.mu.Lock()
	for i := 0; i < len(t.entries); {
		// One map update per run of events in the same segment.
		seg, j := t.entries[i].ptr.Segment(), i+1
		for j < len(t.entries) && t.entries[j].ptr.Segment() == seg {
			j++
		}
		s.unpinN(seg, int64(j-i))
		i = j
	}
	c.inTakes -= int64(len(t.entries))
	c.inTakeB -= bytes
	c.TakeSuccesses.Add(int64(len(t.entries)))
	delete(s.takes, t.id)
	c.wakePutters()
	s.mu.Unlock()
	s.cpMu.RUnlock()
	t.done = true
	s.maybeKickCheckpoint()
}

func (t *fileTake) Rollback() error {
	if t.done {
		return nil
	}
	if t.mv != nil {
		t.mv.rollback(false)
		t.mv.release()
	}
	t.rollback(false)
	return nil
}

// rollback puts the taken events back at the head in their original order.
func (t *fileTake) rollback(closing bool) {
	if t.done {
		return
	}
	t.done = true
	if len(t.entries) == 0 {
		return
	}
	s, c := t.s, t.ch
	var bytes int64
	for _, e := range t.entries {
		bytes += int64(e.size)
	}
	s.cpMu.RLock()
	defer s.cpMu.RUnlock()
	if s.isClosed.Load() {
		return // the final checkpoint saved it as in-flight: redelivered at reopen
	}
	s.mu.Lock()
	c.requeue(t.entries, s)
	c.inTakes -= int64(len(t.entries))
	c.inTakeB -= bytes
	c.bytes += bytes
	delete(s.takes, t.id)
	if !closing {
		c.wakeTakers()
	}
	s.mu.Unlock()
}

// inflight snapshots the open transactions for a checkpoint. Called with
// cpMu held exclusively.
func (s *Store) inflight() ([]checkpoint.PutTxn, []checkpoint.TakeTxn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	puts := make([]checkpoint.PutTxn, 0, len(s.puts))
	for _, p := range s.puts {
		ct := checkpoint.PutTxn{TxnID: p.id, Committing: p.committing, ProducerID: p.opts.ProducerID, Sequence: p.opts.Sequence}
		if p.committing {
			ct.Sequence = p.seq // a per-event put's last sequence; its entries are the ones it stores
		}
		ct.Entries = make([]checkpoint.PutEntry, len(p.ptrs))
		i := 0
		for k, r := range p.flushedRuns {
			start := i
			for ; i < min(r.end, len(p.ptrs)); i++ {
				ct.Entries[i] = checkpoint.PutEntry{Channel: r.ch.cfg.Name, Pointer: uint64(p.ptrs[i]), Size: p.flushedSizes[i]}
				if p.committing && k < len(p.bases) {
					ct.Entries[i].Offset = p.bases[k] + uint64(i-start)
				}
			}
		}
		puts = append(puts, ct)
	}
	takes := make([]checkpoint.TakeTxn, 0, len(s.takes))
	for _, t := range s.takes {
		ct := checkpoint.TakeTxn{TxnID: t.id, Channel: t.ch.cfg.Name, Committing: t.committing}
		ct.Entries = make([]checkpoint.TakeEntry, len(t.entries))
		for i, e := range t.entries {
			ct.Entries[i] = checkpoint.TakeEntry{Pointer: uint64(e.ptr), Position: e.pos, Size: e.size, Offset: e.off}
		}
		takes = append(takes, ct)
	}
	return puts, takes
}

// requeue puts rolled-back events back at the head in their original order,
// merged with events earlier rollbacks put there (concurrent take txns may
// roll back in any order). Called with s.mu held.
func (c *fileChan) requeue(entries []takeEntry, s *Store) {
	type back struct{ ptr, orig, off uint64 }
	all := make([]back, 0, len(entries))
	for _, e := range entries {
		all = append(all, back{uint64(e.ptr), e.pos, e.off})
	}
	for c.q.Len() > 0 {
		head := c.q.At(0)
		orig, was := c.rolled[head]
		if !was {
			break
		}
		off := c.offs.popFront(c.q.Head())
		c.q.PopFront()
		all = append(all, back{head, orig, off})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].off < all[j].off })
	ptrs := make([]uint64, len(all))
	offs := make([]uint64, len(all))
	for i, b := range all {
		ptrs[i], offs[i] = b.ptr, b.off
		c.rolled[b.ptr] = b.orig
	}
	if err := c.q.PushFront(ptrs); err != nil {
		// Cannot happen: in-flight takes count against capacity.
		s.log.Error("file channel: rollback could not requeue events", "channel", c.cfg.Name, "events", len(ptrs), "err", err)
		return
	}
	c.offs.pushFront(c.q.Head(), offs)
}

// walError makes the WAL's disk-space refusal match channel.ErrDiskSpace
// too, so callers (and the gRPC status mapping) see one sentinel.
func walError(err error) error {
	if errors.Is(err, wal.ErrDiskSpace) && !errors.Is(err, channel.ErrDiskSpace) {
		return fmt.Errorf("%w: %w", channel.ErrDiskSpace, err)
	}
	return err
}
