package filestore

import (
	"fmt"

	"github.com/sluicehq/sluice/wal"
)

// Torn transactions.
//
// A commit is acknowledged only after every segment its records lie in was
// fdatasynced, but until then the page cache writes the records back in any
// order: after a power cut the page holding a commit record can be on disk
// while an earlier page of the same transaction is not (or was torn, or holds
// a recycled segment's stale bytes). Such a transaction was never
// acknowledged. Its commit record counts its events (commitInfo.events), so
// replay compares that count with the events its records (and the
// checkpoint's in-flight entry) hold; a transaction that does not add up is
// torn, and is dropped whole: a put's events are not queued and its producer
// sequence is not recorded (a retry is stored), a take's events stay queued
// (they are delivered again), and a move is neither: its taken events stay
// queued and its put events are not stored. Each is reported in the log, in StoreStats and
// by `sluice verify`.
//
// Only commits after the checkpoint replay starts from are judged (every
// commit replay sees, when a checkpoint loaded; none when no checkpoint
// decodes at all, see Store.recover). A commit at or below the
// newest checkpoint's write-order id was synced before that checkpoint was
// written, so it is whole; its records may meanwhile lie in segments that GC
// removed once their events were taken, which is why such a transaction is
// never judged by its count.

// TornTxn is a committed transaction whose records the WAL does not all hold.
type TornTxn struct {
	TxnID uint64
	// Kind is "put", "take", "move" (a take that put events, TakeTxn.Put),
	// or "unknown" when none of its records is left.
	Kind string
	// Expected is the event count the commit record names; Found is how many
	// events its readable records (and the checkpoint) hold.
	Expected, Found uint64
	// Commit is the position of the commit record; WOID its write-order id.
	Commit wal.Pointer
	WOID   uint64
	// Reason is set when the commit record itself did not decode.
	Reason string
}

func (t TornTxn) String() string {
	s := fmt.Sprintf("%s transaction %d: commit record at %s (WOID %d) counts %d events, its records hold %d",
		t.Kind, t.TxnID, t.Commit, t.WOID, t.Expected, t.Found)
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	return s
}

// TxnAudit counts the events of every open transaction in WAL records fed in
// write order (the order of wal.Replay's callback) and judges each commit
// record against its count. Recovery and `sluice verify` share it.
type TxnAudit struct {
	after uint64 // commits at or below this WOID are not judged
	open  map[uint64]*auditTxn
	torn  []TornTxn
}

type auditTxn struct {
	events  uint64
	put     bool
	take    bool
	partial bool // some record did not decode
}

// NewTxnAudit returns an audit that judges commits with a write-order id above
// after (the W of the checkpoint the records follow, 0 for all).
func NewTxnAudit(after uint64) *TxnAudit {
	return &TxnAudit{after: after, open: make(map[uint64]*auditTxn)}
}

func (a *TxnAudit) txn(id uint64) *auditTxn {
	t := a.open[id]
	if t == nil {
		t = &auditTxn{}
		a.open[id] = t
	}
	return t
}

// seed adds n events of txn id known from elsewhere (a checkpoint's in-flight
// put transaction).
func (a *TxnAudit) seed(id uint64, n int) {
	t := a.txn(id)
	t.put = true
	t.events += uint64(n)
}

// Record feeds one WAL record and reports whether it is the commit record of
// a torn transaction (then appended to Torn). A transaction is forgotten at
// its commit or rollback record. Replay, which decodes the records anyway,
// feeds the decoded parts through put, take, rollback and commit instead.
func (a *TxnAudit) Record(rec wal.Record, ptr wal.Pointer) (torn bool) {
	switch rec.Type {
	case wal.RecordPut:
		_, _, err := decodePutHeader(rec.Payload)
		a.put(rec.TxnID, err == nil)
	case wal.RecordTake:
		_, recs, err := decodeTake(rec.Payload)
		a.take(rec.TxnID, len(recs), err == nil)
	case wal.RecordRollback:
		a.rollback(rec.TxnID)
	case wal.RecordCommit:
		info, err := decodeCommit(rec.Payload)
		return a.commit(rec, ptr, info, err)
	}
	return false
}

// put counts a put record of txn (ok: its payload decoded).
func (a *TxnAudit) put(txn uint64, ok bool) {
	t := a.txn(txn)
	t.put = true
	if !ok {
		t.partial = true
		return
	}
	t.events++
}

// take counts a take record of txn holding n events (ok: it decoded).
func (a *TxnAudit) take(txn uint64, n int, ok bool) {
	t := a.txn(txn)
	t.take = true
	if !ok {
		t.partial = true
		return
	}
	t.events += uint64(n)
}

func (a *TxnAudit) rollback(txn uint64) { delete(a.open, txn) }

// commit judges the commit record rec (its decoded payload info, or the
// decode error) against the events counted for its txn, and reports
// whether the txn is torn.
func (a *TxnAudit) commit(rec wal.Record, ptr wal.Pointer, info commitInfo, err error) bool {
	t := a.open[rec.TxnID]
	delete(a.open, rec.TxnID)
	if t == nil {
		t = &auditTxn{}
	}
	if rec.WOID <= a.after || (err == nil && info.events == t.events) {
		return false
	}
	torn := TornTxn{TxnID: rec.TxnID, Kind: "unknown", Expected: info.events, Found: t.events, Commit: ptr, WOID: rec.WOID}
	switch {
	case t.put && t.take:
		torn.Kind = "move"
	case t.put:
		torn.Kind = "put"
	case t.take:
		torn.Kind = "take"
	case info.producer != "":
		torn.Kind = "put"
	}
	if err != nil {
		torn.Reason = fmt.Sprintf("commit record does not decode: %v", err)
	} else if t.partial {
		torn.Reason = "a record of it does not decode"
	}
	a.torn = append(a.torn, torn)
	return true
}

// Torn lists the torn transactions found so far, in commit order.
func (a *TxnAudit) Torn() []TornTxn { return a.torn }
