// Package storekit holds what the store implementations (filestore,
// memstore) share and nothing else should depend on: the producer-sequence
// table, the Flume-style counters and channel-config validation.
package storekit

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// ProducerEntry is what the store remembers of one producer: its last
// committed sequence and when it last committed (unix ns).
type ProducerEntry struct {
	Seq  uint64
	Last int64
}

// ProducerTable is the producer-sequence table of a store. An entry is kept
// until its producer has committed nothing for the store's expiry; a retry
// arriving later than that is no longer recognised as a duplicate. Without
// expiry, every producer id ever seen (say one per process start) would be
// held in memory and in every checkpoint forever.
type ProducerTable map[string]ProducerEntry

// Committed reports whether seq was already committed by producer id.
func (t ProducerTable) Committed(id string, seq uint64) bool {
	e, ok := t[id]
	return ok && seq <= e.Seq
}

// Touch marks id as used at now without changing its sequence: a retry
// that was deduplicated, or a source's empty put at its current position,
// keeps a quiet producer's entry from expiring.
func (t ProducerTable) Touch(id string, now int64) {
	if e, ok := t[id]; ok && now > e.Last {
		e.Last = now
		t[id] = e
	}
}

// Note records a commit of (id, seq) at time now: the sequence only moves
// forward, the time to the latest seen.
func (t ProducerTable) Note(id string, seq uint64, now int64) {
	e := t[id]
	e.Seq = max(e.Seq, seq)
	e.Last = max(e.Last, now)
	t[id] = e
}

// Admit fails when id is not in the table and the table already holds
// limit producers.
func (t ProducerTable) Admit(id string, limit int) error {
	if _, ok := t[id]; ok || len(t) < limit {
		return nil
	}
	return fmt.Errorf("%w: %d producers are remembered (the limit); producer %q is new: wait for idle producers to expire (producerExpiry) or raise maxProducers", channel.ErrProducerTableFull, len(t), id)
}

// MaxProducers resolves an options value: 0 is channel.DefaultMaxProducers.
func MaxProducers(n int) int {
	if n <= 0 {
		return channel.DefaultMaxProducers
	}
	return n
}

// Sweep drops the entries whose last commit is before cutoff and returns
// how many it dropped.
func (t ProducerTable) Sweep(cutoff int64) int {
	n := 0
	for id, e := range t {
		if e.Last < cutoff {
			delete(t, id)
			n++
		}
	}
	return n
}

// ProducerExpiry resolves an options value: 0 is the default, negative is
// never (returned as 0).
func ProducerExpiry(d time.Duration) time.Duration {
	switch {
	case d == 0:
		return channel.DefaultProducerExpiry
	case d < 0:
		return 0
	}
	return d
}
