package channel

import (
	"context"
	"fmt"
	"time"
)

// DefaultProducerExpiry is how long a producer's deduplication entry is kept
// after its last commit when the options leave it zero.
const DefaultProducerExpiry = 7 * 24 * time.Hour

// producerEntry is what the store remembers of one producer: its last
// committed sequence and when it last committed (unix ns).
type producerEntry struct {
	seq  uint64
	last int64
}

// producerTable is the producer-sequence table of a store. An entry is kept
// until its producer has committed nothing for the store's expiry; a retry
// arriving later than that is no longer recognised as a duplicate. Without
// expiry, every producer id ever seen (say one per process start) would be
// held in memory and in every checkpoint forever.
type producerTable map[string]producerEntry

// committed reports whether seq was already committed by producer id.
func (t producerTable) committed(id string, seq uint64) bool {
	e, ok := t[id]
	return ok && seq <= e.seq
}

// touch marks id as used at now without changing its sequence: a retry
// that was deduplicated, or a source's empty put at its current position,
// keeps a quiet producer's entry from expiring.
func (t producerTable) touch(id string, now int64) {
	if e, ok := t[id]; ok && now > e.last {
		e.last = now
		t[id] = e
	}
}

// note records a commit of (id, seq) at time now: the sequence only moves
// forward, the time to the latest seen.
func (t producerTable) note(id string, seq uint64, now int64) {
	e := t[id]
	e.seq = max(e.seq, seq)
	e.last = max(e.last, now)
	t[id] = e
}

// admit fails when id is not in the table and the table already holds
// limit producers.
func (t producerTable) admit(id string, limit int) error {
	if _, ok := t[id]; ok || len(t) < limit {
		return nil
	}
	return fmt.Errorf("%w: %d producers are remembered (the limit); producer %q is new: wait for idle producers to expire (producerExpiry) or raise maxProducers", ErrProducerTableFull, len(t), id)
}

// maxProducers resolves an options value: 0 is DefaultMaxProducers.
func maxProducers(n int) int {
	if n <= 0 {
		return DefaultMaxProducers
	}
	return n
}

// sweep drops the entries whose last commit is before cutoff and returns
// how many it dropped.
func (t producerTable) sweep(cutoff int64) int {
	n := 0
	for id, e := range t {
		if e.last < cutoff {
			delete(t, id)
			n++
		}
	}
	return n
}

// producerExpiry resolves an options value: 0 is the default, negative is
// never (returned as 0).
func producerExpiry(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return DefaultProducerExpiry
	case d < 0:
		return 0
	}
	return d
}

// ProducerSequence implements Channel.
func (s *File) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	if _, err := s.channel(ch); err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false, ErrClosed
	}
	e, ok := s.producers[producerID]
	return e.seq, ok, nil
}

// ProducerSequence implements Channel.
func (m *Memory) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	if _, err := m.channel(ch); err != nil {
		return 0, false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, false, ErrClosed
	}
	e, ok := m.producers[producerID]
	return e.seq, ok, nil
}
