package memstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/internal/storekit"
)

// Options configure a memory store.
type Options struct {
	// Channels are the named channels of the store (at least one).
	Channels []channel.ChannelConfig
	// MaxEventSize bounds Event.Size of one event; 0 means
	// DefaultMaxEventSize.
	MaxEventSize int
	// ProducerExpiry: a producer's deduplication entry is dropped once it
	// has committed nothing for this long (checked at commits, at most
	// once a minute); default DefaultProducerExpiry, negative never.
	ProducerExpiry time.Duration
	// MaxProducers bounds the producer ids remembered (default
	// DefaultMaxProducers); a put of a new one beyond it fails with
	// ErrProducerTableFull.
	MaxProducers int
	// Clock is the clock of producer entries' last use, which their expiry
	// counts from (nil: time.Now; tests set it).
	Clock func() time.Time
}

// Store is the volatile channel kind: the same transactional semantics as
// the file channel (atomic multi-channel puts, producer deduplication,
// capacity in events and bytes, keep-alive waits, take rollback in original
// order) but nothing survives the process.
//
// Accounting choices, shared with the file channel:
//   - TransactionCapacity bounds the events a put transaction puts into each
//     channel separately (a put spanning two channels may hold up to
//     TransactionCapacity events for each), and the events one take
//     transaction holds. Take clamps max to the room left and returns
//     ErrTxnFull only when the transaction is already full.
//   - Events held by open take transactions still count against Capacity and
//     MaxBytes until the take commits, so a rollback can always requeue them.
//     Stats.Size and Stats.Bytes exclude them; Stats.InFlightTakes counts them.
//   - PutAttempts counts the events of every Put call on the channel (also
//     calls that fail); PutSuccesses the events stored by committed puts (not
//     deduplicated ones). TakeAttempts counts, per Take call, the events asked
//     for (max clamped to the transaction's room); TakeSuccesses the events
//     removed by committed takes.
//   - A failed Commit (channel full, closed, ctx done while waiting) finishes
//     the transaction: nothing of it was stored and later calls return
//     ErrTxnDone (Rollback is a no-op).
//   - A failed Put (ErrTxnFull, ErrEventTooLarge, ErrUnknownChannel) adds none
//     of that call's events; the transaction stays usable.
//
// Events are copied on Put and again on Take, so callers own the events they
// pass in and the events they get back; modifying a taken event never alters
// what a rollback requeues.
type Store struct {
	maxEventSize int
	names        []string
	chans        map[string]*memChan
	closedFlag   atomic.Bool
	closeCh      chan struct{} // closed by Close; wakes every waiter

	mu           sync.Mutex
	closed       bool
	producers    storekit.ProducerTable // last committed sequence per producer
	expiry       time.Duration          // of producer entries; 0 never
	maxProducers int                    // producer ids remembered at most
	swept        time.Time              // last producer sweep
	now          func() time.Time       // clock of producer entries (tests set it)
	takes        map[*memTake]struct{}  // open take txns holding events
}

// memEvent is a queued event with its bookkeeping.
type memEvent struct {
	ev      channel.Event
	size    int64
	putTime int64  // unix nanos of the Put call
	seq     uint64 // per-channel commit order; restores order on rollback
}

type memChan struct {
	cfg channel.ChannelConfig

	// Guarded by Store.mu.
	q             ring
	bytes         int64 // bytes of queued events
	inflight      int64 // events held by open take txns
	inflightBytes int64
	nextSeq       uint64
	avail         chan struct{} // closed when events are queued
	availWaited   bool
	space         chan struct{} // closed when a take commit frees room
	spaceWaited   bool

	storekit.Counters
}

var _ channel.Store = (*Store)(nil)

// New opens a memory store with the given channels.
func New(opts Options) (*Store, error) {
	cfgs, err := storekit.ValidateChannels(opts.Channels)
	if err != nil {
		return nil, fmt.Errorf("memory channel: %w", err)
	}
	switch {
	case opts.MaxEventSize == 0:
		opts.MaxEventSize = channel.DefaultMaxEventSize
	case opts.MaxEventSize < 0:
		return nil, fmt.Errorf("memory channel: maxEventSize %d must not be negative", opts.MaxEventSize)
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	m := &Store{
		maxEventSize: opts.MaxEventSize,
		chans:        make(map[string]*memChan, len(cfgs)),
		closeCh:      make(chan struct{}),
		producers:    make(storekit.ProducerTable),
		expiry:       storekit.ProducerExpiry(opts.ProducerExpiry),
		maxProducers: storekit.MaxProducers(opts.MaxProducers),
		now:          opts.Clock,
		swept:        opts.Clock(),
		takes:        make(map[*memTake]struct{}),
	}
	for name, cfg := range cfgs {
		m.names = append(m.names, name)
		m.chans[name] = &memChan{cfg: cfg, avail: make(chan struct{}), space: make(chan struct{})}
	}
	slices.Sort(m.names)
	return m, nil
}

func (m *Store) channel(name string) (*memChan, error) {
	c, ok := m.chans[name]
	if !ok {
		if name == "" {
			return nil, fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return nil, fmt.Errorf("%w %q", channel.ErrUnknownChannel, name)
	}
	return c, nil
}

// Channels implements Channel.
func (m *Store) Channels() []string { return slices.Clone(m.names) }

// BeginPut implements Channel.
func (m *Store) BeginPut(ctx context.Context, opts channel.PutOptions) (channel.PutTxn, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("memory channel: %w", err)
	}
	if m.closedFlag.Load() {
		return nil, channel.ErrClosed
	}
	return &memPut{m: m, opts: opts}, nil
}

// BeginTake implements Channel.
func (m *Store) BeginTake(ctx context.Context, name string) (channel.TakeTxn, error) {
	c, err := m.channel(name)
	if err != nil {
		return nil, err
	}
	if m.closedFlag.Load() {
		return nil, channel.ErrClosed
	}
	return &memTake{m: m, c: c}, nil
}

// Stats implements Channel.
func (m *Store) Stats(ctx context.Context, name string) (channel.Stats, error) {
	c, err := m.channel(name)
	if err != nil {
		return channel.Stats{}, err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return channel.Stats{}, channel.ErrClosed
	}
	st := channel.Stats{
		Name:          name,
		Size:          int64(c.q.len()),
		InFlightTakes: c.inflight,
		Bytes:         c.bytes,
		Capacity:      c.cfg.Capacity,
		MaxBytes:      c.cfg.MaxBytes,

		TransactionCapacity: c.cfg.TransactionCapacity,
		MaxEventSize:        m.maxEventSize,
	}
	var headPut int64
	if c.q.len() > 0 {
		headPut = c.q.at(0).putTime
	}
	m.mu.Unlock()
	c.Fill(&st)
	if headPut != 0 {
		st.OldestEventAge = max(time.Since(time.Unix(0, headPut)), 0)
	}
	return st, nil
}

// Close rolls back open transactions, wakes every blocked Take and Commit
// with ErrClosed and releases the store. Later calls on the store or its
// transactions return ErrClosed (Rollback returns nil). Closing twice is a
// no-op.
func (m *Store) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	m.closedFlag.Store(true)
	for t := range m.takes {
		t.rollbackLocked()
	}
	close(m.closeCh)
	return nil
}

// wakeTakers signals that events were queued. Called with m.mu held.
func (c *memChan) wakeTakers() {
	if c.availWaited {
		close(c.avail)
		c.avail = make(chan struct{})
		c.availWaited = false
	}
}

// wakePutters signals that room was freed. Called with m.mu held.
func (c *memChan) wakePutters() {
	if c.spaceWaited {
		close(c.space)
		c.space = make(chan struct{})
		c.spaceWaited = false
	}
}

// copyEvents deep-copies events: every body into one shared allocation
// (each sub-slice capped so appends cannot clobber a neighbour), headers
// into fresh maps. Empty bodies and header sets come back nil.
func copyEvents(dst []channel.Event, src []channel.Event) {
	total := 0
	for i := range src {
		total += len(src[i].Body)
	}
	var arena []byte
	if total > 0 {
		arena = make([]byte, total)
	}
	off := 0
	for i := range src {
		var body []byte
		if n := len(src[i].Body); n > 0 {
			body = arena[off : off+n : off+n]
			copy(body, src[i].Body)
			off += n
		}
		var h map[string]string
		if len(src[i].Headers) > 0 {
			h = maps.Clone(src[i].Headers)
		}
		dst[i] = channel.Event{Headers: h, Body: body}
	}
}

// memPut is an open put transaction.
type memPut struct {
	m       *Store
	opts    channel.PutOptions
	parts   []memPutPart // one per channel, in first-Put order
	done    bool
	dedup   bool
	n       int    // events added
	lastSeq uint64 // per-event mode: the last sequence PutSeq gave
	dups    int
}

type memPutPart struct {
	c      *memChan
	events []memEvent
	seqs   []uint64 // per-event mode: each event's sequence
	bytes  int64
}

func (p *memPut) part(c *memChan) *memPutPart {
	for i := range p.parts {
		if p.parts[i].c == c {
			return &p.parts[i]
		}
	}
	p.parts = append(p.parts, memPutPart{c: c})
	return &p.parts[len(p.parts)-1]
}

// Put implements PutTxn.
func (p *memPut) Put(name string, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if err := p.opts.CheckPut(); err != nil {
		return fmt.Errorf("memory channel: %w", err)
	}
	_, err := p.put(name, 0, events)
	return err
}

// PutSeq implements PutTxn.
func (p *memPut) PutSeq(name string, first uint64, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	last, err := p.opts.CheckPutSeq(p.lastSeq, first, len(events))
	if err != nil {
		return fmt.Errorf("memory channel: %w", err)
	}
	added, err := p.put(name, first, events)
	if added {
		p.lastSeq = last
	}
	return err
}

// put adds events for channel name (with the sequences first, first+1, …
// when first is not 0) and reports whether it added them.
func (p *memPut) put(name string, first uint64, events []channel.Event) (bool, error) {
	if p.done {
		return false, channel.ErrTxnDone
	}
	m := p.m
	if m.closedFlag.Load() {
		return false, channel.ErrClosed
	}
	c, err := m.channel(name)
	if err != nil {
		return false, err
	}
	c.PutAttempts.Add(int64(len(events)))
	if len(events) == 0 {
		return false, nil
	}
	pt := p.part(c)
	if n := len(pt.events) + len(events); n > c.cfg.TransactionCapacity {
		return false, fmt.Errorf("%w: %d events for channel %q, transactionCapacity is %d", channel.ErrTxnFull, n, name, c.cfg.TransactionCapacity)
	}
	for i := range events {
		if sz := events[i].Size(); sz > m.maxEventSize {
			return false, fmt.Errorf("%w: event %d is %d bytes, maximum is %d", channel.ErrEventTooLarge, i, sz, m.maxEventSize)
		}
		if len(events[i].Headers) != 0 {
			if err := channel.CheckHeaders(events[i]); err != nil {
				return false, fmt.Errorf("event %d: %w", i, err)
			}
		}
	}
	copied := make([]channel.Event, len(events))
	copyEvents(copied, events)
	now := time.Now().UnixNano()
	pt.events = slices.Grow(pt.events, len(events))
	for i := range copied {
		sz := int64(events[i].Size())
		pt.events = append(pt.events, memEvent{ev: copied[i], size: sz, putTime: now})
		pt.bytes += sz
	}
	if first != 0 {
		for i := range events {
			pt.seqs = append(pt.seqs, first+uint64(i))
		}
	}
	p.n += len(events)
	return true, nil
}

// Deduplicated implements PutTxn.
func (p *memPut) Deduplicated() bool { return p.dedup }

// Duplicates implements PutTxn.
func (p *memPut) Duplicates() int { return p.dups }

// dropCommitted drops, in per-event mode, the events whose sequence is at
// or below mark (a prefix of each part: sequences increase) and reports
// whether none is left. Called with m.mu held.
func (p *memPut) dropCommitted(mark uint64) bool {
	left := 0
	for i := range p.parts {
		pt := &p.parts[i]
		k := 0
		for k < len(pt.seqs) && pt.seqs[k] <= mark {
			pt.bytes -= pt.events[k].size
			k++
		}
		pt.events, pt.seqs = pt.events[k:], pt.seqs[k:]
		p.dups += k
		left += len(pt.events)
	}
	return left == 0
}

// Rollback implements PutTxn.
func (p *memPut) Rollback() error {
	p.done = true
	p.parts = nil
	return nil
}

// Commit implements PutTxn. When a channel is full it waits up to that
// channel's KeepAlive (counted from the first time a full channel is met)
// for take commits to free room, or until ctx is done.
func (p *memPut) Commit(ctx context.Context) error { return p.commit(ctx, nil) }

// commit commits the put; with also set (a move: memTake.Put), also is
// called under m.mu right before the events are queued, and an error from
// it fails the commit with nothing stored.
func (p *memPut) commit(ctx context.Context, also func() error) error {
	if p.done {
		return channel.ErrTxnDone
	}
	p.done = true
	defer func() { p.parts = nil }()
	m := p.m
	if len(p.parts) == 0 && p.opts.ProducerID == "" {
		if m.closedFlag.Load() {
			return channel.ErrClosed
		}
		return nil
	}
	var deadline time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return channel.ErrClosed
		}
		if id := p.opts.ProducerID; id != "" {
			perEvent := p.opts.PerEvent()
			if perEvent && p.n == 0 { // a keep-alive: no sequence to record
				m.producers.Touch(id, m.now().UnixNano())
				m.mu.Unlock()
				return nil
			}
			if !perEvent && m.producers.Committed(id, p.opts.Sequence) {
				m.producers.Touch(id, m.now().UnixNano())
				m.mu.Unlock()
				p.dedup, p.dups = true, p.n
				return nil
			}
			if perEvent && p.dropCommitted(m.producers[id].Seq) {
				m.producers.Touch(id, m.now().UnixNano())
				m.mu.Unlock()
				p.dedup = true
				return nil
			}
			if err := m.producers.Admit(id, m.maxProducers); err != nil {
				m.mu.Unlock()
				return fmt.Errorf("memory channel: %w", err)
			}
		}
		full := p.firstFull()
		if full == nil {
			if also != nil {
				if err := also(); err != nil {
					m.mu.Unlock()
					return err
				}
			}
			p.applyLocked()
			m.mu.Unlock()
			return nil
		}
		c := full.c
		if c.cfg.MaxBytes > 0 && full.bytes > c.cfg.MaxBytes {
			m.mu.Unlock()
			return &channel.FullError{Channel: c.cfg.Name, Detail: fmt.Sprintf("the transaction holds %d bytes, maxBytes is %d", full.bytes, c.cfg.MaxBytes)}
		}
		c.spaceWaited = true
		wait := c.space
		m.mu.Unlock()

		if deadline.IsZero() {
			deadline = time.Now().Add(c.cfg.KeepAlive)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return &channel.FullError{Channel: c.cfg.Name, Detail: fmt.Sprintf("capacity %d events, maxBytes %d", c.cfg.Capacity, c.cfg.MaxBytes)}
		}
		if timer == nil {
			timer = time.NewTimer(left)
		} else {
			timer.Reset(left)
		}
		select {
		case <-wait:
		case <-timer.C:
		case <-m.closeCh:
			return channel.ErrClosed
		case <-ctx.Done():
			return &channel.FullError{Channel: c.cfg.Name, Err: ctx.Err()}
		}
	}
}

// firstFull returns the first part that does not fit its channel now, or
// nil. Called with m.mu held.
func (p *memPut) firstFull() *memPutPart {
	for i := range p.parts {
		pt := &p.parts[i]
		c := pt.c
		if len(pt.events) == 0 {
			continue
		}
		used := int64(c.q.len()) + c.inflight
		if used+int64(len(pt.events)) > c.cfg.Capacity {
			return pt
		}
		if c.cfg.MaxBytes > 0 && c.bytes+c.inflightBytes+pt.bytes > c.cfg.MaxBytes {
			return pt
		}
	}
	return nil
}

// applyLocked queues every event of the transaction. Called with m.mu held.
func (p *memPut) applyLocked() {
	for i := range p.parts {
		pt := &p.parts[i]
		if len(pt.events) == 0 {
			continue
		}
		c := pt.c
		c.q.reserve(len(pt.events))
		for _, e := range pt.events {
			e.seq = c.nextSeq
			c.nextSeq++
			c.q.pushBack(e)
		}
		c.bytes += pt.bytes
		c.PutSuccesses.Add(int64(len(pt.events)))
		c.wakeTakers()
	}
	if p.opts.ProducerID != "" {
		now := p.m.now()
		seq := p.opts.Sequence
		if p.opts.PerEvent() {
			seq = p.lastSeq
		}
		p.m.producers.Note(p.opts.ProducerID, seq, now.UnixNano())
		if m := p.m; m.expiry > 0 && now.Sub(m.swept) >= min(time.Minute, m.expiry) {
			m.producers.Sweep(now.Add(-m.expiry).UnixNano())
			m.swept = now
		}
	}
}

// memTake is an open take transaction.
type memTake struct {
	m *Store
	c *memChan

	// Guarded by m.mu (Close may roll the txn back from another goroutine).
	held   []memEvent
	bytes  int64
	done   bool
	closed bool // rolled back by Close

	// mv holds the events Put adds (a move), queued by Commit together
	// with the removal of the held events. Used by the txn's goroutine only.
	mv *memPut
}

// Put implements TakeTxn: the events are stored at Commit, atomically with
// the removal of the taken events.
func (t *memTake) Put(name string, events ...channel.Event) error {
	t.m.mu.Lock()
	err := t.usableLocked()
	t.m.mu.Unlock()
	if err != nil {
		return err
	}
	if t.mv == nil {
		t.mv = &memPut{m: t.m}
	}
	_, err = t.mv.put(name, 0, events)
	return err
}

// Take implements TakeTxn.
func (t *memTake) Take(ctx context.Context, max int) ([]channel.Event, error) {
	m, c := t.m, t.c
	m.mu.Lock()
	if err := t.usableLocked(); err != nil {
		m.mu.Unlock()
		return nil, err
	}
	if max <= 0 {
		m.mu.Unlock()
		return nil, nil
	}
	room := c.cfg.TransactionCapacity - len(t.held)
	if room <= 0 {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: take txn holds %d events, transactionCapacity is %d", channel.ErrTxnFull, len(t.held), c.cfg.TransactionCapacity)
	}
	max = min(max, room)
	c.TakeAttempts.Add(int64(max))
	for {
		if n := min(max, c.q.len()); n > 0 {
			first := len(t.held)
			t.held = slices.Grow(t.held, n)
			var b int64
			for range n {
				e := c.q.popFront()
				b += e.size
				t.held = append(t.held, e)
			}
			c.bytes -= b
			c.inflight += int64(n)
			c.inflightBytes += b
			t.bytes += b
			m.takes[t] = struct{}{}
			got := t.held[first:len(t.held):len(t.held)]
			m.mu.Unlock()
			// Copy outside the lock. Held events are immutable and
			// rollbackLocked (which Close may run concurrently) only
			// reads t.held's backing array, never writes it.
			out := make([]channel.Event, n)
			src := make([]channel.Event, n)
			for i := range got {
				src[i] = got[i].ev
			}
			copyEvents(out, src)
			for i := range out {
				out[i].Offset = got[i].seq + 1 // offsets start at 1
			}
			return out, nil
		}
		c.availWaited = true
		wait := c.avail
		m.mu.Unlock()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		select {
		case <-wait:
		case <-m.closeCh:
			return nil, channel.ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m.mu.Lock()
		if err := t.usableLocked(); err != nil {
			m.mu.Unlock()
			return nil, err
		}
	}
}

func (t *memTake) usableLocked() error {
	switch {
	case t.closed || t.m.closed:
		return channel.ErrClosed
	case t.done:
		return channel.ErrTxnDone
	}
	return nil
}

// Commit implements TakeTxn: the events are gone for good and their room is
// released.
func (t *memTake) Commit(ctx context.Context) error {
	if mv := t.mv; mv != nil && mv.n > 0 {
		t.mv = nil
		err := mv.commit(ctx, func() error { // m.mu held
			if err := t.usableLocked(); err != nil {
				return err
			}
			t.commitLocked()
			return nil
		})
		if err != nil {
			t.Rollback() // the taken events go back (a no-op if Close did it)
			return err
		}
		return nil
	}
	t.mv = nil
	m := t.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := t.usableLocked(); err != nil {
		return err
	}
	t.commitLocked()
	return nil
}

// commitLocked removes the held events for good. Called with m.mu held.
func (t *memTake) commitLocked() {
	m, c := t.m, t.c
	t.done = true
	if len(t.held) == 0 {
		return
	}
	c.inflight -= int64(len(t.held))
	c.inflightBytes -= t.bytes
	c.TakeSuccesses.Add(int64(len(t.held)))
	delete(m.takes, t)
	t.held = nil
	c.wakePutters()
}

// Rollback implements TakeTxn.
func (t *memTake) Rollback() error {
	t.mv = nil
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if t.done || t.closed {
		return nil
	}
	t.rollbackLocked()
	return nil
}

// rollbackLocked requeues the held events at the head, merged with any
// events other rolled-back transactions put there, so the head is again in
// commit order. Called with m.mu held.
func (t *memTake) rollbackLocked() {
	m, c := t.m, t.c
	t.done = true
	if m.closed {
		t.closed = true
	}
	if len(t.held) == 0 {
		return
	}
	// Never sort t.held in place: a Take of this txn may still be copying
	// from it (only possible when Close rolls it back concurrently).
	evs := t.held
	if !slices.IsSortedFunc(evs, cmpSeq) {
		evs = slices.Clone(evs)
		slices.SortFunc(evs, cmpSeq)
	}
	c.q.restore(evs)
	c.bytes += t.bytes
	c.inflight -= int64(len(t.held))
	c.inflightBytes -= t.bytes
	delete(m.takes, t)
	t.held = nil
	t.bytes = 0
	c.wakeTakers()
}

func cmpSeq(a, b memEvent) int {
	switch {
	case a.seq < b.seq:
		return -1
	case a.seq > b.seq:
		return 1
	}
	return 0
}

// ring is a growable double-ended queue of events; its buffer length is
// zero or a power of two.
type ring struct {
	buf  []memEvent
	head int
	n    int
}

const ringMin = 16

func (r *ring) len() int { return r.n }

func (r *ring) at(i int) *memEvent { return &r.buf[(r.head+i)&(len(r.buf)-1)] }

// reserve makes room for k more events.
func (r *ring) reserve(k int) {
	if r.n+k <= len(r.buf) {
		return
	}
	size := max(len(r.buf), ringMin)
	for size < r.n+k {
		size *= 2
	}
	r.resize(size)
}

func (r *ring) resize(size int) {
	buf := make([]memEvent, size)
	if r.n > 0 {
		end := r.head + r.n
		if end <= len(r.buf) {
			copy(buf, r.buf[r.head:end])
		} else {
			k := copy(buf, r.buf[r.head:])
			copy(buf[k:], r.buf[:r.n-k])
		}
	}
	r.buf, r.head = buf, 0
}

func (r *ring) pushBack(e memEvent) {
	r.reserve(1)
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = e
	r.n++
}

func (r *ring) pushFront(e memEvent) {
	r.reserve(1)
	r.head = (r.head - 1) & (len(r.buf) - 1)
	r.buf[r.head] = e
	r.n++
}

func (r *ring) popFront() memEvent {
	e := r.buf[r.head]
	r.buf[r.head] = memEvent{} // release the event's memory
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	// Shrink after a burst so a drained channel does not pin a huge buffer.
	if len(r.buf) > 4*ringMin && r.n < len(r.buf)/4 {
		r.resize(len(r.buf) / 2)
	}
	return e
}

// restore puts evs (sorted by seq) back at the front, merged with the
// queued events that precede them in seq order, so the whole queue stays
// sorted by seq. The queue is sorted by seq before and after: puts append
// increasing seqs and every removal is at the front.
func (r *ring) restore(evs []memEvent) {
	r.reserve(len(evs))
	last := evs[len(evs)-1].seq
	p := 0
	for p < r.n && r.at(p).seq < last {
		p++
	}
	if p == 0 {
		for i := len(evs) - 1; i >= 0; i-- {
			r.pushFront(evs[i])
		}
		return
	}
	merged := make([]memEvent, 0, p+len(evs))
	i, j := 0, 0
	for i < p || j < len(evs) {
		if j == len(evs) || (i < p && r.at(i).seq < evs[j].seq) {
			merged = append(merged, *r.at(i))
			i++
		} else {
			merged = append(merged, evs[j])
			j++
		}
	}
	for range p {
		r.buf[r.head] = memEvent{}
		r.head = (r.head + 1) & (len(r.buf) - 1)
		r.n--
	}
	for k := len(merged) - 1; k >= 0; k-- {
		r.pushFront(merged[k])
	}
}

// ProducerSequence implements channel.Store.
func (m *Store) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	if _, err := m.channel(ch); err != nil {
		return 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, false, channel.ErrClosed
	}
	e, ok := m.producers[producerID]
	return e.Seq, ok, nil
}
