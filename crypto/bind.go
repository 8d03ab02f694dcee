package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/wal"
)

// Binding sealed data to its place, and refusing what an attacker with
// write access to the data directories (but no key) could plant.
//
// A WAL record sealed by this build (FlagBound) is authenticated together
// with the store id, its record type and its txn id (associated data format
// 2, see codec.go), so a sealed record copied from another store sharing the
// key, re-typed, or re-filed under another txn id fails authentication.
//
// What is not bound, and why: the segment, offset and WOID are assigned by
// wal.Write after the payload is sealed, under the data directory's write
// lock; sealing there would serialise all encryption of a directory behind
// one mutex. So an attacker can still
//   - drop sealed records (a whole transaction, or its tail: the channel's
//     torn-transaction check compares the events of a put txn with the count
//     in its sealed commit record),
//   - re-order or duplicate whole records of one transaction at other
//     offsets or segments, with new WOIDs and CRCs. Replay refuses a txn id
//     that commits twice within the replayed range; a copy of a transaction
//     whose original lies before the checkpoint's frontier (so is not
//     replayed) is not detected and would deliver its events again (an
//     at-least-once duplicate, never a forged event),
//   - replace a sealed record by an older sealed record of the same
//     transaction, type and store.
//
// The Policy says where records must be sealed: once encryption is on, every
// segment from EncryptedSince on holds only sealed records, and from
// BoundSince on only bound ones; an unsealed (or legacy-sealed) record there
// is refused, not delivered. Both points are recorded in the store's
// authenticated crypto manifest (channel/filestore/crypto.go).

// StoreIDSize is the size of a store identity.
const StoreIDSize = 16

// StoreID is the random identity of a store, created with it and kept in
// its authenticated crypto manifest.
type StoreID [StoreIDSize]byte

// Policy is what a Codec binds to and refuses. The zero Policy binds to the
// zero store id and refuses nothing.
type Policy struct {
	Store StoreID
	// EncryptedSince: records in segments with id >= EncryptedSince must
	// be sealed (0: no such rule).
	EncryptedSince uint32
	// BoundSince: sealed records in segments with id >= BoundSince must
	// carry format 2 associated data (0: no such rule).
	BoundSince uint32
	// LegacyCheckpoints: checkpoints sealed with associated data format 1
	// (not bound to store and file) are opened. Only while a store written
	// by an older build is being migrated.
	LegacyCheckpoints bool
}

// SetPolicy installs p for every later record and checkpoint.
func (c *Codec) SetPolicy(p Policy) { c.pol.Store(&p) }

// Policy returns the current policy.
func (c *Codec) Policy() Policy { return *c.pol.Load() }

// SetProbe switches probe mode: DecodeRecord does not open sealed records
// but counts them (ProbeCounts) and returns an empty payload. Used once, at
// the migration of a store, to learn whether its WAL already holds sealed
// (or bound) records. Turning it on resets the counts.
func (c *Codec) SetProbe(on bool) {
	if on {
		c.probeSealed.Store(0)
		c.probeBound.Store(0)
	}
	c.probe.Store(on)
}

// ProbeCounts returns how many sealed and bound records probe mode saw.
func (c *Codec) ProbeCounts() (sealed, bound int64) {
	return c.probeSealed.Load(), c.probeBound.Load()
}

// AuthError is a sealed WAL record that failed authentication: tampered, or
// the key with its id is not the key that sealed it. It is not a
// wal.ErrCorrupt, so a replay stops at it (fail closed) instead of skipping
// the record as damage.
type AuthError struct {
	KeyID   uint16
	KeyFile string
	Reason  string
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("crypto: record sealed with key id %d failed authentication with key file %s (wrong key for that id, or tampered data): %s", e.KeyID, e.KeyFile, e.Reason)
}

// Unwrap returns ErrAuth.
func (e *AuthError) Unwrap() error { return ErrAuth }

// ErrPolicy is wrapped by a record refused for its place.
var ErrPolicy = errors.New("crypto: record refused")

// PolicyError is a WAL record refused for its place: unsealed in a segment
// written after encryption was switched on, or sealed the old way in a
// segment written after the store was bound. Written by someone without the
// key; never delivered.
type PolicyError struct {
	Segment uint32
	Reason  string
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("crypto: record in segment %d refused: %s", e.Segment, e.Reason)
}

// Unwrap returns ErrPolicy.
func (e *PolicyError) Unwrap() error { return ErrPolicy }

const (
	walADv2     = "sluice wal v2"
	walADv2Size = len(walADv2) + 1 + 2 + StoreIDSize + 1 + 8
)

func appendWALADv2(b []byte, flags uint8, keyID uint16, store *StoreID, typ wal.RecordType, txnID uint64) []byte {
	b = append(b, walADv2...)
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint16(b, keyID)
	b = append(b, store[:]...)
	b = append(b, byte(typ))
	return binary.LittleEndian.AppendUint64(b, txnID)
}

// EncodeRecord implements wal.RecordCodec: Encode, with the payload bound to
// the store, the record type and the txn id (FlagBound).
func (c *Codec) EncodeRecord(dst, payload []byte, info wal.RecordInfo, scratch *[]byte) ([]byte, uint8, uint16, error) {
	kr := c.ring.Load()
	if kr == nil {
		return c.Encode(dst, payload)
	}
	id, aead := kr.active, kr.activeAEAD
	plain, flag, bp := c.compressForSeal(payload)
	flags := FlagSealed | FlagBound | flag
	ad := appendWALADv2((*scratch)[:0], flags, id, &c.pol.Load().Store, info.Type, info.TxnID)
	*scratch = ad
	out := aead.Seal(dst, nil, plain, ad)
	if bp != nil {
		c.tmp.Put(bp)
	}
	c.countSealed(id)
	return out, flags, id, nil
}

// DecodeRecord implements wal.RecordCodec: Decode, checking the record's
// place against the Policy and, for bound records, authenticating the store,
// type and txn id. An authentication failure is an *AuthError and a refused
// record a *PolicyError, neither a wal.ErrCorrupt (a replay stops: fail
// closed), unless the Codec tolerates them (offline tools).
func (c *Codec) DecodeRecord(dst, stored []byte, flags uint8, keyID uint16, info wal.RecordInfo) ([]byte, error) {
	if flags&^flagKnown != 0 || flags&flagCompMask == flagCompMask {
		return nil, fmt.Errorf("crypto: record flags %#x are not understood by this build (written by a newer version?)", flags)
	}
	sealed := flags&FlagSealed != 0
	if sealed != (keyID != 0) || (flags&FlagBound != 0 && !sealed) {
		return nil, &CorruptError{KeyID: keyID, Reason: fmt.Sprintf("record flags %#x inconsistent with key id %d", flags, keyID)}
	}
	bound := flags&FlagBound != 0
	if sealed && c.probe.Load() {
		c.probeSealed.Add(1)
		if bound {
			c.probeBound.Add(1)
		}
		return dst, nil
	}
	pol := c.pol.Load()
	refuse := func(reason string) error {
		if c.tolerant {
			return &CorruptError{KeyID: keyID, Reason: fmt.Sprintf("record in segment %d refused: %s", info.Segment, reason)}
		}
		return &PolicyError{Segment: info.Segment, Reason: reason}
	}
	switch {
	case !sealed && pol.EncryptedSince != 0 && info.Segment >= pol.EncryptedSince:
		return nil, refuse(fmt.Sprintf("unsealed %s record (txn %d, write order id %d) in a segment written after encryption was switched on (segment %d): written by someone without the key",
			info.Type, info.TxnID, info.WOID, pol.EncryptedSince))
	case sealed && !bound && pol.BoundSince != 0 && info.Segment >= pol.BoundSince:
		return nil, refuse(fmt.Sprintf("%s record (txn %d) sealed without store binding in a segment written after the store was bound (segment %d): copied or forged",
			info.Type, info.TxnID, pol.BoundSince))
	}
	if !bound {
		var adBuf [24]byte
		return c.decode(dst, stored, flags, keyID, walAssociated(&adBuf, flags, keyID), !c.tolerant)
	}
	var adBuf [walADv2Size]byte
	return c.decode(dst, stored, flags, keyID, appendWALADv2(adBuf[:0], flags, keyID, &pol.Store, info.Type, info.TxnID), !c.tolerant)
}
