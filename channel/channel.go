// Package channel defines the one interface that sources, sinks, the gRPC
// server and the client share: a Store of named channels, its transactions,
// the event type and the errors callers branch on. It imports no storage
// engine, so a client application pays for none; the implementations are
// their own packages: filestore (the durable file channel: wal + queue +
// checkpoint), memstore (volatile), client (over gRPC) and the server's
// router (several stores as one).
//
// The vocabulary is Flume's: a channel is one queue; a store holds one or
// more channels that a put can cover atomically. A put transaction may put
// events into several channels of its store and commits on all or none; a
// take transaction takes from one channel's head, and may put events into
// channels of its store that are stored when (and only when) the take
// commits: the atomic move to a dead-letter channel.
package channel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"
)

// Event is the unit of data: string headers and an opaque body.
type Event struct {
	Headers map[string]string
	Body    []byte
	// Offset is set on taken events: the event's position in its
	// channel, given when its put committed. Offsets start at 1, are
	// unique and increase in the order events entered the channel (the
	// order takes return them, also after rollbacks), and an event keeps
	// its offset for the life of the channel, across restarts: a sink
	// derives idempotent writes from it (object keys from offset ranges,
	// an offsets row in the same database transaction, a document id).
	// Put ignores it. Gaps are allowed (a commit that failed keeps its
	// offsets).
	Offset uint64
}

// Size is the number of bytes an event counts for against byte limits and
// the maximum event size: the body plus every header key and value.
func (e Event) Size() int {
	n := len(e.Body)
	if len(e.Headers) == 0 {
		return n // skips the map iterator's setup
	}
	for k, v := range e.Headers {
		n += len(k) + len(v)
	}
	return n
}

// LeaseExtender is implemented by take transactions that a lease bounds
// (the gRPC client's: the server rolls back a take whose lease runs out
// between requests). ExtendLease renews the lease for another full term, so
// a sink that holds its take for minutes (one rolling file or object per
// transaction) keeps it while it is alive; a sink that dies lets it lapse
// and its events go back. The local stores' takes have no lease.
type LeaseExtender interface {
	ExtendLease(ctx context.Context) error
}

// FullError is ErrChannelFull for one channel: errors.Is(err,
// ErrChannelFull) holds, and a remote layer can name the channel without
// passing on the rest of a store error's text.
type FullError struct {
	Channel string
	Detail  string // capacity, bytes
	Err     error  // the context error that ended a keep-alive wait, or nil
}

func (e *FullError) Error() string {
	s := fmt.Sprintf("%v: channel %q", ErrChannelFull, e.Channel)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrChannelFull and the context error.
func (e *FullError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrChannelFull, e.Err}
	}
	return []error{ErrChannelFull}
}

// CheckHeaders reports a header key or value of ev that is not valid UTF-8.
func CheckHeaders(ev Event) error {
	for k, v := range ev.Headers {
		if !utf8.ValidString(k) {
			return fmt.Errorf("%w: header key %q is not valid UTF-8", ErrInvalidEvent, k)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("%w: value of header %q is not valid UTF-8", ErrInvalidEvent, k)
		}
	}
	return nil
}

// Sentinel errors callers branch on. Implementations wrap them with context.
var (
	// ErrChannelFull: the put does not fit the channel's capacity (events or
	// bytes). Retry later; nothing of the transaction was stored.
	ErrChannelFull = errors.New("channel full")
	// ErrTxnFull: more events in one transaction than transactionCapacity.
	ErrTxnFull = errors.New("transaction capacity exceeded")
	// ErrEventTooLarge: an event exceeds the maximum event size.
	ErrEventTooLarge = errors.New("event too large")
	// ErrInvalidEvent: an event is malformed: a header key or value that is
	// not valid UTF-8 (headers are text, as Flume's are; bodies are bytes).
	ErrInvalidEvent = errors.New("invalid event")
	// ErrUnknownChannel: no channel of that name in this store.
	ErrUnknownChannel = errors.New("unknown channel")
	// ErrClosed: the store or transaction is closed.
	ErrClosed = errors.New("closed")
	// ErrTxnDone: Put/Take/Commit after the transaction committed or rolled back.
	ErrTxnDone = errors.New("transaction already finished")
	// ErrDiskSpace: a data directory is below its minimum required free space.
	ErrDiskSpace = errors.New("insufficient disk space")
	// ErrDuplicate is never returned to callers of Commit: a put whose
	// (producer, sequence) was already committed commits as a no-op and
	// PutTxn.Commit returns nil. It is exported so remote layers can report it.
	ErrDuplicate = errors.New("duplicate producer sequence")
	// ErrBadProducer: a producer id longer than MaxProducerIDLen, or
	// sequences used wrongly: a plain Put in per-event mode (producer id
	// with Sequence 0: every event needs its sequence, from PutSeq), a
	// PutSeq without a producer id or in whole-put mode (Sequence set), a
	// PutSeq whose first sequence is 0 or not above the previous PutSeq's
	// last one in the transaction. The call stores nothing; the
	// transaction stays usable.
	ErrBadProducer = errors.New("invalid producer id or sequence")
	// ErrProducerTableFull: a put of a producer id the store does not know
	// yet, while the store already remembers its MaxProducers producers.
	// Nothing was stored. Entries leave the table by expiry.
	ErrProducerTableFull = errors.New("producer table full")
)

// MaxProducerIDLen bounds PutOptions.ProducerID in bytes: every id is kept in
// memory and in every checkpoint until it expires.
const MaxProducerIDLen = 256

// DefaultProducerExpiry is how long a producer's deduplication entry is kept
// after its last commit when the options leave it zero.
const DefaultProducerExpiry = 7 * 24 * time.Hour

// DefaultMaxProducers is how many producer ids a store remembers at most
// when its options leave it zero.
const DefaultMaxProducers = 100_000

// Validate checks the producer fields of a put (every store runs it at
// BeginPut; remote layers may run it before sending).
func (o PutOptions) Validate() error {
	if len(o.ProducerID) > MaxProducerIDLen {
		return fmt.Errorf("%w: producer id of %d bytes is longer than %d", ErrBadProducer, len(o.ProducerID), MaxProducerIDLen)
	}
	return nil
}

// PerEvent reports whether the options select per-event sequences: a
// producer id and no Sequence. Its events are then put with PutSeq.
func (o PutOptions) PerEvent() bool { return o.ProducerID != "" && o.Sequence == 0 }

// CheckPut checks a plain Put against the options: in per-event mode every
// event needs a sequence, so Put is refused (every store runs it).
func (o PutOptions) CheckPut() error {
	if o.PerEvent() {
		return fmt.Errorf("%w: producer %q without a Sequence puts events with PutSeq (per-event sequences), not Put", ErrBadProducer, o.ProducerID)
	}
	return nil
}

// CheckPutSeq checks a PutSeq call of n events from sequence first, in a
// transaction whose previous PutSeq calls ended at sequence last (0: none),
// and returns the new last sequence (last itself when n is 0). Every store
// runs it, so the rules are the same everywhere.
func (o PutOptions) CheckPutSeq(last, first uint64, n int) (uint64, error) {
	switch {
	case o.ProducerID == "":
		return last, fmt.Errorf("%w: PutSeq needs a producer id (PutOptions.ProducerID)", ErrBadProducer)
	case o.Sequence != 0:
		return last, fmt.Errorf("%w: producer %q: PutSeq in a put with Sequence %d (whole-put mode); leave Sequence 0 for per-event sequences", ErrBadProducer, o.ProducerID, o.Sequence)
	case first == 0:
		return last, fmt.Errorf("%w: producer %q: first sequence 0 (sequences start at 1)", ErrBadProducer, o.ProducerID)
	case first <= last:
		return last, fmt.Errorf("%w: producer %q: first sequence %d is not above %d, the last of the transaction's previous PutSeq (sequences must increase across the transaction)", ErrBadProducer, o.ProducerID, first, last)
	case n == 0:
		return last, nil
	case uint64(n-1) > math.MaxUint64-first:
		return last, fmt.Errorf("%w: producer %q: %d events from sequence %d overflow 64 bits", ErrBadProducer, o.ProducerID, n, first)
	}
	return first + uint64(n-1), nil
}

// PutOptions tune one put transaction.
type PutOptions struct {
	// ProducerID makes the put idempotent: the store durably remembers,
	// per producer, the highest sequence committed (its mark), atomically
	// with the events, and ProducerSequence reads it back. A producer must
	// have at most one put in flight: commits of one producer id are
	// serialised. Two modes:
	//
	// Whole put (Sequence > 0): the put is one unit. When Sequence is not
	// above the mark the put commits as a no-op (Commit returns nil,
	// Deduplicated reports true); otherwise its events are stored and the
	// mark becomes Sequence.
	//
	// Per event (Sequence 0): every event carries its own sequence, given
	// by PutSeq (Put is refused). At Commit the events whose sequence is
	// not above the mark are dropped (Duplicates counts them), the rest
	// are stored and the mark becomes the last event's sequence. A source
	// whose position is its event number can thus re-read from any earlier
	// position after a crash and cut its batches differently: each event
	// is stored once. An empty per-event put stores nothing and refreshes
	// the producer's entry (keep-alive).
	ProducerID string
	Sequence   uint64
}

// PutTxn is an open put transaction. Not safe for concurrent use.
//
// Events are copied by Put (the local kinds) or by Commit (the gRPC
// client): a caller may reuse its buffers once Commit returns. A Commit that
// returns an error ends the transaction; nothing of it is visible. When the
// error is a storage failure after the commit record was written (a failed
// fdatasync) the file store retracts the commit: it writes and syncs a
// rollback record in a fresh segment, and replay undoes the commit, so the
// put is not stored after a restart either. Only when that fails too (the
// error says so) is the outcome after a restart unknown: stored whole or not
// at all; a producer sequence makes the retry safe.
type PutTxn interface {
	// Put adds events destined for one channel. Nothing is visible to takers
	// before Commit returns nil. Events count against the channel's
	// TransactionCapacity per transaction.
	Put(channel string, events ...Event) error
	// Commit makes every event of the transaction durable and visible in
	// all its channels at once, or none of them. When ErrChannelFull is
	// returned nothing was stored.
	Commit(ctx context.Context) error
	// Rollback discards the transaction. Safe to call after Commit (no-op).
	Rollback() error
	// PutSeq adds events destined for one channel with the per-event
	// sequences first, first+1, … (per-event mode: PutOptions with a
	// ProducerID and no Sequence). The sequences increase across the whole
	// transaction, also across channels: first must be above the last
	// sequence of the previous PutSeq call (gaps are allowed, say Kafka
	// offsets). A call breaking a rule fails with ErrBadProducer (see
	// there) and adds nothing; otherwise it fails and succeeds as Put does.
	PutSeq(channel string, first uint64, events ...Event) error
	// Deduplicated reports, after a nil Commit, whether the put had events
	// and stored none of them because all were already committed by its
	// producer (a retry).
	Deduplicated() bool
	// Duplicates reports, after a nil Commit, how many of the put's events
	// were dropped as already committed by its producer: every event of a
	// deduplicated whole put, the events at or below the producer's mark
	// of a per-event put, 0 otherwise.
	Duplicates() int
}

// TakeTxn is an open take transaction on one channel. Not safe for
// concurrent use. The caller owns the events Take returns. Events held by an
// open take still count against the channel's capacity (a rollback always
// has room to put them back).
type TakeTxn interface {
	// Take removes up to max events from the channel head into the
	// transaction. When events are queued it returns them at once (even if
	// ctx is done); otherwise it waits until some arrive or ctx is done, in
	// which case it returns no events and ctx.Err(). The total taken by one
	// transaction is bounded by transactionCapacity: Take returns fewer
	// than max when the transaction is nearly full, and ErrTxnFull once it
	// is full. max <= 0 returns nothing.
	Take(ctx context.Context, max int) ([]Event, error)
	// Commit makes the removal durable: committed events are never
	// delivered again.
	Commit(ctx context.Context) error
	// Rollback puts every taken event back at the head, in original order.
	// Safe to call after Commit (no-op). Events added by Put are dropped.
	Rollback() error
	// Put adds events for a channel of the same store to the transaction:
	// they are stored when the take commits, atomically with the removal
	// of the taken events. This is the move: take a poison event, Put it
	// (with a reason header) into a dead-letter channel, Commit, and the
	// event is in exactly one of the two channels, also after a crash or a
	// power cut. Nothing put is visible before Commit returns nil; moved
	// events get new offsets in their channel.
	//
	// The rules of PutTxn.Put apply: the maximum event size, UTF-8
	// headers, and the target channel's transactionCapacity for the events
	// one transaction puts there (counted apart from the events it took).
	// A call that breaks one fails and adds nothing; the transaction stays
	// usable. A channel of another store of a server with several stores
	// fails too (the router's CrossStoreError; gRPC INVALID_ARGUMENT,
	// CROSS_STORE): a move never spans stores. There is no producer id:
	// the take's atomicity makes a move happen once.
	//
	// At Commit the put events need room in their channels: a full channel
	// is waited for up to its keep-alive, as a put is, then Commit fails
	// with ErrChannelFull. A Commit that fails, for any reason, ends the
	// transaction with nothing moved: the taken events are back at the
	// head and none of the put events is stored. Events put into the
	// take's own channel go to its tail and need room beside the taken
	// events, which count against the capacity until the commit.
	Put(channel string, events ...Event) error
}

// Stats is a point-in-time view of one channel.
type Stats struct {
	Name                 string
	Size                 int64 // queued events, excluding ones held by open take txns
	InFlightTakes        int64 // events held by open take transactions
	Bytes                int64 // bytes of queued events (Event.Size)
	Capacity             int64
	MaxBytes             int64 // 0 = unbounded
	PutAttempts          int64 // EventPutAttemptCount
	PutSuccesses         int64 // EventPutSuccessCount
	TakeAttempts         int64 // EventTakeAttemptCount
	TakeSuccesses        int64 // EventTakeSuccessCount
	OldestEventAge       time.Duration
	CorruptEventsSkipped int64
	// Limits, so a client or a component can check a batch before its
	// commit fails: events per transaction and bytes per event
	// (Event.Size). Capacity and MaxBytes above bound the channel.
	TransactionCapacity int
	MaxEventSize        int
}

// Store holds one or more named channels (queues). Every implementation
// passes the conformance suite in channel/channeltest.
type Store interface {
	// Channels lists the channel names, sorted.
	Channels() []string
	// BeginPut opens a put transaction.
	BeginPut(ctx context.Context, opts PutOptions) (PutTxn, error)
	// BeginTake opens a take transaction on one channel.
	BeginTake(ctx context.Context, channel string) (TakeTxn, error)
	// Stats reports one channel. ctx bounds a remote call (the local
	// stores answer from memory). Channels needs none: a store's channels
	// are fixed while it is open, and a remote client lists the ones Dial
	// read.
	Stats(ctx context.Context, channel string) (Stats, error)
	// ProducerSequence reports the last sequence producerID committed to
	// the store that holds channel; ok is false when the store does not
	// remember the producer (it never committed, or its entry expired).
	// A replayable source keeps its position as its producer's sequence,
	// committed in the same put as the events, and resumes after it.
	ProducerSequence(ctx context.Context, channel, producerID string) (seq uint64, ok bool, err error)
	// Close rolls back open transactions and releases the store. Calling
	// it again is a no-op.
	Close() error
}
