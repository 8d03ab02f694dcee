package agent

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sluicehq/sluice/channel"
)

// Dead letters.
//
// A sink's write fails in one of two ways. A transient error (the
// destination is down, a timeout) is worth retrying: Drain rolls the take
// back and the same events come again. A permanent error (the destination
// refuses an event: a constraint violation, a document it cannot parse)
// never goes away, and in Flume it blocks the channel forever. A sink says
// which one it met:
//
//   - Permanent(err): the batch cannot be written, some event of it is at
//     fault but the sink does not know which. Drain takes the batch's
//     events again one at a time (isolation); an event whose write alone
//     fails permanently is dead-lettered, the others are written.
//   - &RejectedError{Events: {i: reason, …}}: every event of the batch was
//     written except those, which are refused for good.
//
// With `deadLetter.channel` set on the sink (a channel of the same store),
// the refused events are moved there in the take's own commit
// (channel.TakeTxn.Put): each event leaves the sink's channel and enters
// the dead-letter channel with the reason, or neither happens, also across
// a crash. Without one, a refused event is retried like a transient error
// (Flume's behaviour) and logged with the hint. `deadLetter.maxAttempts`
// (default 0, off) also dead-letters an event whose write keeps failing
// with transient errors: after that many consecutive failures of a batch
// the batch is isolated, and an event failing alone that many times is
// dead-lettered. Beware: during an outage of the destination every event
// then reaches the dead-letter channel after maxAttempts tries; `sluice dlq
// redrive` moves them back.

// Headers a dead-lettered event carries beside its own.
const (
	HeaderDLQReason   = "sluice.dlq.reason"   // the error, at most 1000 bytes
	HeaderDLQSink     = "sluice.dlq.sink"     // the sink that refused it
	HeaderDLQChannel  = "sluice.dlq.channel"  // the channel it was taken from
	HeaderDLQOffset   = "sluice.dlq.offset"   // its offset there
	HeaderDLQTime     = "sluice.dlq.time"     // when, in Unix milliseconds
	HeaderDLQAttempts = "sluice.dlq.attempts" // writes tried (maxAttempts) or 1
	// HeaderDLQPrefix starts every header above: `sluice dlq redrive`
	// removes them.
	HeaderDLQPrefix = "sluice.dlq."
)

// maxReason bounds the reason header.
const maxReason = 1000

// PermanentError marks a write error that retrying cannot fix (see
// Permanent).
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent: the destination refused the batch for a
// reason a retry cannot change. Drain isolates the event at fault and
// dead-letters it (when the sink has a dead-letter channel). nil stays nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// IsPermanent reports whether err is (or wraps) a PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RejectedError is what a write returns when it wrote every event of the
// batch except some, which the destination refuses for good: Events maps
// their index in the batch to the reason. Drain dead-letters them and
// commits the take.
type RejectedError struct {
	Events map[int]error
}

func (e *RejectedError) Error() string {
	idx := make([]int, 0, len(e.Events))
	for i := range e.Events {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var b strings.Builder
	fmt.Fprintf(&b, "%d events refused", len(idx))
	for k, i := range idx {
		if k == 3 {
			b.WriteString("; …")
			break
		}
		fmt.Fprintf(&b, "; event %d: %v", i, e.Events[i])
	}
	return b.String()
}

// DeadLetter is a sink's dead-letter configuration (`deadLetter.*`).
type DeadLetter struct {
	Channel     string // "" = none: refused events are retried
	MaxAttempts int    // 0 = transient errors are retried for ever
}

// deadLetterEvent is ev as it enters the dead-letter channel: its headers,
// plus the reason and where it came from. small keeps only the channel and
// offset (for an event that with the full headers would be too large).
func (in *Input) deadLetterEvent(ev channel.Event, reason error, attempts int, small bool) channel.Event {
	h := make(map[string]string, len(ev.Headers)+6)
	maps.Copy(h, ev.Headers)
	h[HeaderDLQChannel] = in.channel
	h[HeaderDLQOffset] = strconv.FormatUint(ev.Offset, 10)
	if !small {
		h[HeaderDLQReason] = truncateUTF8(reason.Error(), maxReason)
		h[HeaderDLQSink] = in.sink
		h[HeaderDLQTime] = strconv.FormatInt(in.now().UnixMilli(), 10)
		h[HeaderDLQAttempts] = strconv.Itoa(max(attempts, 1))
	}
	return channel.Event{Headers: h, Body: ev.Body}
}

// truncateUTF8 cuts s to at most n bytes at a rune boundary, valid UTF-8.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// moveDead puts the refused events (index → reason) into the dead-letter
// channel in txn, to commit with the take.
func (in *Input) moveDead(txn channel.TakeTxn, evs []channel.Event, refused map[int]error, attempts int) error {
	idx := make([]int, 0, len(refused))
	for i := range refused {
		if i < 0 || i >= len(evs) {
			return fmt.Errorf("sink %s: RejectedError names event %d of a batch of %d", in.sink, i, len(evs))
		}
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		err := txn.Put(in.dead.Channel, in.deadLetterEvent(evs[i], refused[i], attempts, false))
		if errors.Is(err, channel.ErrEventTooLarge) {
			err = txn.Put(in.dead.Channel, in.deadLetterEvent(evs[i], refused[i], attempts, true))
		}
		if err != nil {
			return fmt.Errorf("sink %s: move event (offset %d) to dead-letter channel %s: %w", in.sink, evs[i].Offset, in.dead.Channel, err)
		}
	}
	return nil
}

// deadLetterState is an Input's memory of failures between Drain calls.
type deadLetterState struct {
	isolate   int    // events still to take one at a time
	failHead  uint64 // offset of the first event of the batch that failed last
	failCount int    // consecutive failures of batches starting there
}

// failed notes a failed write of a batch starting at offset head and
// returns how many times in a row such a batch failed.
func (d *deadLetterState) failed(head uint64) int {
	if d.failCount > 0 && d.failHead == head {
		d.failCount++
	} else {
		d.failHead, d.failCount = head, 1
	}
	return d.failCount
}

// done notes a batch of n events that left the channel (written or
// dead-lettered).
func (d *deadLetterState) done(n int) {
	d.failCount = 0
	d.isolate = max(d.isolate-n, 0)
}
