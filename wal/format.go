// Package wal is Sluice's write-ahead log: one or more data directories, each
// holding a sequence of preallocated segment files that are appended to with
// group-committed fdatasyncs.
//
// # Segment file
//
// A segment is named <dir>/<segment id as %010d>.wal. It is preallocated to
// its full size and either zeroed (progressively, in synced chunks) or
// recycled from a removed segment. It starts with a fixed 32-byte header:
//
//	 0       4   5       8              12       16                 24      28      32
//	+--------+---+-------+--------------+--------+------------------+-------+-------+
//	| magic  | v | zero  |  segment id  |  zero  |   segment size   |  CRC  | zero  |
//	| "SLWL" |   | (3)   |  (uint32)    |  (4)   |   (uint64)       | (4)   | (4)   |
//	+--------+---+-------+--------------+--------+------------------+-------+-------+
//
// v is the format version (formatVersion); it comes first after the magic so
// the rest of the layout may change with it. CRC is CRC32C (Castagnoli) of
// bytes [0, 24). All integers are little endian. Records start at offset 32.
//
// # Record
//
// Records follow each other from offset 32, each starting at an 8-byte
// aligned offset. A record never spans segments.
//
//	 0       4        8      9       10        12             20             28
//	+-------+--------+------+-------+---------+--------------+--------------+-----------+---------+
//	|  CRC  | length | type | flags | key id  |    txn id    |     WOID     |  payload  | padding |
//	|  (4)  |  (4)   | (1)  |  (1)  |  (2)    |   (uint64)   |   (uint64)   | (length)  | to 8    |
//	+-------+--------+------+-------+---------+--------------+--------------+-----------+---------+
//
// CRC is CRC32C over the four little-endian bytes of the segment id followed
// by header bytes [4, 28) and the payload: the checksum is seeded with the
// segment id, so a stale record left in a recycled file (written under an
// older id) never validates. length is the payload length (stored, i.e. after
// the optional Codec transformed it). flags and key id belong to the Codec
// (compression, encryption key, associated-data format; see crypto/codec.go);
// both are zero for plaintext. A RecordCodec binds sealed payloads to the
// record's type and txn id (not to its segment, offset or WOID, which Write
// assigns after encoding). The CRC is not authentication: anyone who can
// write a segment can write records that validate.
//
// # What a reader relies on
//
//   - A record is valid only if its type is known (1..5), its payload fits in
//     the segment (header size field and file size), and its CRC matches.
//     Zeroes never validate: type 0 is not a record type, so an all-zero
//     header marks the end of written data.
//   - Within a data directory WOIDs strictly increase with segment id and
//     offset.
//   - A Seal record (no payload) is the last record of a segment that was
//     closed by rotation or Close. A segment without one is the tail of its
//     directory as written when the process stopped.
//   - An invalid record followed, later in the same segment, by a valid one
//     is mid-segment damage: it is reported and skipped. An invalid record
//     with no valid record after it is the end of data (a torn tail), unless
//     the segment has no Seal and a later segment of the directory has
//     records: a segment is sealed and synced before the next one is
//     written, so its records that fail their checksum there are damage.
//   - A length is trusted for an allocation only once validated: a record
//     read by pointer must end within the completed appends of a segment
//     this process wrote (else within the valid records Replay read in it,
//     else within the segment), and one longer than
//     1 MiB that does not fit the caller's buffer is checksummed by
//     streaming it through a 64 KiB buffer first (Replay streams records
//     longer than its 1 MiB window the same way). A corrupt length costs
//     reads, never an allocation of its size, and yields a *CorruptionError
//     naming file and offset.
//
// # Sync errors
//
// Linux reports a writeback error once per open file, to whichever fsync
// collects it; a later fsync succeeds although the data is gone. So:
//
//   - The fdatasyncs of one segment (group-commit leader, retirement by
//     rotation or Close, the zeroer, SyncUpTo) are serialised by a
//     per-segment mutex, and a failing one records the segment's sticky
//     error before the next starts: no success can overlap, and so hide, a
//     failure. Different segments and directories sync in parallel; Write
//     takes no extra lock, and fdatasync stays outside the writer lock.
//   - A segment whose fdatasync ever failed is poisoned: it is never synced
//     or appended to again; every waiter whose bytes were not durable
//     before the failure gets the error (ErrSyncFailed), whichever sync
//     (even the zeroer's) collected it, and so does every later
//     SyncAll/SyncUpTo covering the segment for as long as it exists, if
//     it holds such records in doubt. durable only ever advances by an
//     fdatasync that succeeded with no failing one overlapping it.
//   - SyncAll/SyncUpTo cover every segment up to the frontier, not only the
//     active ones, and fdatasync once each segment an earlier process left
//     (it may have died before syncing what Replay applied from the page
//     cache), so a checkpoint never relies on a record that is not durable.
package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/internal/crc32c"
)

const (
	segmentMagic  = "SLWL"
	formatVersion = 1

	// segmentHeaderSize is where the first record starts.
	segmentHeaderSize = 32
	// recordHeaderSize is the fixed part of every record.
	recordHeaderSize = 28
	// recordAlign is the alignment of every record start.
	recordAlign = 8
	// sealRecordSize is the on-disk size of a Seal record; every segment keeps
	// this much room free at its end.
	sealRecordSize = (recordHeaderSize + recordAlign - 1) &^ (recordAlign - 1)
)

// RecordType says what a record means to the channel layer.
type RecordType uint8

// Record types. RecordSeal is internal to the wal: it ends a segment and is
// never passed to Replay callbacks.
const (
	RecordPut      RecordType = 1
	RecordTake     RecordType = 2
	RecordCommit   RecordType = 3
	RecordRollback RecordType = 4
	RecordSeal     RecordType = 5
)

func (t RecordType) valid() bool { return t >= RecordPut && t <= RecordSeal }

func (t RecordType) String() string {
	switch t {
	case RecordPut:
		return "put"
	case RecordTake:
		return "take"
	case RecordCommit:
		return "commit"
	case RecordRollback:
		return "rollback"
	case RecordSeal:
		return "seal"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Record is one decoded log record.
type Record struct {
	Type    RecordType
	Flags   uint8
	KeyID   uint16
	TxnID   uint64
	WOID    uint64
	Payload []byte
}

// Pointer names a record: segmentID<<32 | offset of the record header.
type Pointer uint64

// MakePointer returns the pointer to the record at offset in segment.
func MakePointer(segment, offset uint32) Pointer {
	return Pointer(uint64(segment)<<32 | uint64(offset))
}

// Segment returns the segment id of p.
func (p Pointer) Segment() uint32 { return uint32(p >> 32) }

// Offset returns the offset of the record header within its segment.
func (p Pointer) Offset() uint32 { return uint32(p) }

func (p Pointer) String() string { return fmt.Sprintf("%d:%d", p.Segment(), p.Offset()) }

// Sentinel errors callers branch on.
var (
	ErrCorrupt       = errors.New("wal: corrupt data")
	ErrLocked        = errors.New("wal: directory locked by another opener")
	ErrClosed        = errors.New("wal: closed")
	ErrBatchTooLarge = errors.New("wal: batch larger than a segment can hold")
	ErrDiskSpace     = errors.New("wal: not enough free disk space")
	// ErrSyncFailed is wrapped by a segment's sticky sync error (with the
	// file, offset and the file system's error): an fdatasync of the
	// segment failed, so its unsynced records may be lost even if a later
	// fdatasync would succeed. Every Sync of those records, and every
	// SyncAll/SyncUpTo covering the segment while it has such records,
	// returns it.
	ErrSyncFailed = errors.New("wal: segment sync failed")
)

// CorruptionError says which bytes of which file failed validation.
type CorruptionError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("wal: corrupt data in %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

// Unwrap makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// alignUp rounds n up to the record alignment.
func alignUp(n int64) int64 { return (n + recordAlign - 1) &^ (recordAlign - 1) }

// encodedSize is the on-disk size of a record with an n-byte payload.
func encodedSize(n int) int { return int(alignUp(int64(recordHeaderSize + n))) }

// segmentHeader is the decoded form of the segment file header.
type segmentHeader struct {
	ID   uint32
	Size int64
}

func (h segmentHeader) encode(dst []byte) {
	_ = dst[segmentHeaderSize-1]
	clear(dst[:segmentHeaderSize])
	copy(dst[0:4], segmentMagic)
	dst[4] = formatVersion
	binary.LittleEndian.PutUint32(dst[8:12], h.ID)
	binary.LittleEndian.PutUint64(dst[16:24], uint64(h.Size))
	binary.LittleEndian.PutUint32(dst[24:28], crc32c.Checksum(dst[0:24]))
}

// decodeSegmentHeader validates and decodes a segment header. The returned
// error is a plain reason; callers wrap it in a CorruptionError.
func decodeSegmentHeader(src []byte) (segmentHeader, error) {
	if len(src) < segmentHeaderSize {
		return segmentHeader{}, errors.New("short segment header")
	}
	if string(src[0:4]) != segmentMagic {
		return segmentHeader{}, errors.New("bad magic")
	}
	if src[4] != formatVersion {
		return segmentHeader{}, fmt.Errorf("unsupported format version %d", src[4])
	}
	if got, want := binary.LittleEndian.Uint32(src[24:28]), crc32c.Checksum(src[0:24]); got != want {
		return segmentHeader{}, fmt.Errorf("header checksum mismatch (stored %08x, computed %08x)", got, want)
	}
	h := segmentHeader{
		ID:   binary.LittleEndian.Uint32(src[8:12]),
		Size: int64(binary.LittleEndian.Uint64(src[16:24])),
	}
	if h.Size < minSegmentSize || h.Size > maxSegmentSize {
		return segmentHeader{}, fmt.Errorf("segment size %d out of range", h.Size)
	}
	return h, nil
}

// recordHeader is the decoded fixed part of a record.
type recordHeader struct {
	CRC    uint32
	Length uint32
	Type   RecordType
	Flags  uint8
	KeyID  uint16
	TxnID  uint64
	WOID   uint64
}

func decodeRecordHeader(src []byte) recordHeader {
	_ = src[recordHeaderSize-1]
	return recordHeader{
		CRC:    binary.LittleEndian.Uint32(src[0:4]),
		Length: binary.LittleEndian.Uint32(src[4:8]),
		Type:   RecordType(src[8]),
		Flags:  src[9],
		KeyID:  binary.LittleEndian.Uint16(src[10:12]),
		TxnID:  binary.LittleEndian.Uint64(src[12:20]),
		WOID:   binary.LittleEndian.Uint64(src[20:28]),
	}
}

// putRecordHeader writes everything but the CRC and WOID, which are filled in
// by sealRecord when the record's place in the log is known.
func putRecordHeader(dst []byte, typ RecordType, flags uint8, keyID uint16, txnID uint64, length int) {
	_ = dst[recordHeaderSize-1]
	binary.LittleEndian.PutUint32(dst[0:4], 0)
	binary.LittleEndian.PutUint32(dst[4:8], uint32(length))
	dst[8] = byte(typ)
	dst[9] = flags
	binary.LittleEndian.PutUint16(dst[10:12], keyID)
	binary.LittleEndian.PutUint64(dst[12:20], txnID)
	binary.LittleEndian.PutUint64(dst[20:28], 0)
}

// recordCRC computes the checksum of an encoded record (header + payload,
// without padding) from its segment's seed (segmentSeed).
func recordCRC(seed uint32, rec []byte) uint32 {
	return crc32c.Update(seed, rec[4:])
}

// segmentSeed is the CRC state after the segment id, where every record
// checksum of the segment starts.
func segmentSeed(segID uint32) uint32 {
	var seed [4]byte
	binary.LittleEndian.PutUint32(seed[:], segID)
	return crc32c.Update(0, seed[:])
}

// finishRecord stamps the WOID into an encoded record (header + payload,
// without padding) and computes its CRC for segment segID.
func finishRecord(segID uint32, rec []byte, woid uint64) {
	binary.LittleEndian.PutUint64(rec[20:28], woid)
	checksumRecord(segmentSeed(segID), rec)
}

// checksumRecord stores the CRC of an encoded record whose WOID is set.
func checksumRecord(seed uint32, rec []byte) {
	binary.LittleEndian.PutUint32(rec[0:4], recordCRC(seed, rec))
}

// appendRecord appends one complete, checksummed record to dst.
func appendRecord(dst []byte, segID uint32, typ RecordType, flags uint8, keyID uint16, txnID, woid uint64, payload []byte) []byte {
	start := len(dst)
	n := encodedSize(len(payload))
	dst = append(dst, make([]byte, n)...)
	rec := dst[start : start+recordHeaderSize+len(payload)]
	putRecordHeader(rec, typ, flags, keyID, txnID, len(payload))
	copy(rec[recordHeaderSize:], payload)
	finishRecord(segID, rec, woid)
	return dst
}

// checkRecordHeader reports why a record header at offset off of a segment
// whose readable data ends at end cannot start a valid record, or "" if it is
// plausible (the CRC still has to be checked).
func checkRecordHeader(h recordHeader, off, end int64) string {
	if !h.Type.valid() {
		if h.Type == 0 && h.Length == 0 && h.CRC == 0 {
			return "end of data (zeroes)"
		}
		return fmt.Sprintf("unknown record type %d", h.Type)
	}
	if h.Type == RecordSeal && h.Length != 0 {
		return "seal record with payload"
	}
	if int64(h.Length) > end-off-recordHeaderSize {
		return fmt.Sprintf("record length %d exceeds the %d bytes left in the segment", h.Length, end-off-recordHeaderSize)
	}
	return ""
}

// decodeRecord validates the complete record in src (header + payload, at
// least recordHeaderSize+Length bytes) written in the segment whose
// segmentSeed is seed.
func decodeRecord(seed uint32, src []byte, off, end int64) (Record, string) {
	if len(src) < recordHeaderSize {
		return Record{}, "short record header"
	}
	h := decodeRecordHeader(src)
	if reason := checkRecordHeader(h, off, end); reason != "" {
		return Record{}, reason
	}
	n := recordHeaderSize + int(h.Length)
	if len(src) < n {
		return Record{}, "short record payload"
	}
	if crc := recordCRC(seed, src[:n]); crc != h.CRC {
		return Record{}, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", h.CRC, crc)
	}
	return Record{
		Type:    h.Type,
		Flags:   h.Flags,
		KeyID:   h.KeyID,
		TxnID:   h.TxnID,
		WOID:    h.WOID,
		Payload: src[recordHeaderSize:n:n],
	}, ""
}

// Codec transforms record payloads on their way to and from disk
// (compression, encryption). Encode returns the stored bytes (it may append
// to dst) and the flags and key id to record in the header; Decode receives
// them back. A nil Codec stores payloads as they are, with flags and key id 0.
type Codec interface {
	Encode(dst, payload []byte) (stored []byte, flags uint8, keyID uint16, err error)
	Decode(dst, stored []byte, flags uint8, keyID uint16) ([]byte, error)
}

// RecordInfo is the place of a record in the log that a RecordCodec may
// bind its payload to. Type and TxnID are known when encoding and decoding;
// Segment and WOID only when decoding (the WOID is stamped by Write after
// encoding, under the directory's write lock).
type RecordInfo struct {
	Type    RecordType
	TxnID   uint64
	Segment uint32
	WOID    uint64
}

// RecordCodec is a Codec that sees each record's RecordInfo: an encrypting
// codec binds the payload to the record type and transaction (associated
// data), and may refuse records by their place (e.g. an unsealed record in
// a segment written after encryption was switched on). When the Codec of a
// WAL implements it, Write and every reader use these methods instead of
// Encode and Decode. scratch is a buffer the codec may reuse across the
// records of one batch.
type RecordCodec interface {
	Codec
	EncodeRecord(dst, payload []byte, info RecordInfo, scratch *[]byte) (stored []byte, flags uint8, keyID uint16, err error)
	DecodeRecord(dst, stored []byte, flags uint8, keyID uint16, info RecordInfo) ([]byte, error)
}

// Batch is a transaction's records, encoded but not yet written. The zero
// value is an empty batch ready for use.
type Batch struct {
	buf []byte
	// offs holds each record's start in buf: Write walks the records by
	// them rather than by the lengths in the headers, whose loads would
	// chain one iteration to the next.
	offs []uint32
	open int // start of the record between Begin and End
}

// Add appends a record. The payload is copied; the WOID and CRC are filled in
// by Write.
func (b *Batch) Add(typ RecordType, txnID uint64, payload []byte) {
	b.End(typ, txnID, append(b.Begin(), payload...))
}

var zeroHeader [recordHeaderSize + recordAlign]byte

// Begin starts a record whose payload the caller encodes in place: it
// returns the batch buffer with room for the header reserved; append the
// payload to it and pass the result to End. Saves the copy Add makes.
func (b *Batch) Begin() []byte {
	b.open = len(b.buf)
	return append(b.buf, zeroHeader[:recordHeaderSize]...)
}

// End finishes the record started by Begin; buf is Begin's slice with the
// payload appended.
func (b *Batch) End(typ RecordType, txnID uint64, buf []byte) {
	start := b.open
	n := len(buf) - start - recordHeaderSize
	putRecordHeader(buf[start:], typ, 0, 0, txnID, n)
	b.buf = append(buf, zeroHeader[:encodedSize(n)-recordHeaderSize-n]...)
	b.offs = append(b.offs, uint32(start))
}

// PrefixCap bounds a Prefix: the record header plus at most
// PrefixCap-28 bytes of payload.
const PrefixCap = 64

// Prefix is a record header (type and transaction) plus the first bytes of
// the payload, shared by many records: AppendPrefixed lays it down with one
// fixed-size copy instead of encoding the header field by field.
type Prefix struct {
	b [PrefixCap]byte // header, payload prefix, zeroes
	n int             // header + payload prefix bytes
}

// MakePrefix returns the prefix of records of type typ in transaction txnID
// whose payloads start with payload. ok is false when payload is longer than
// PrefixCap-28 bytes.
func MakePrefix(typ RecordType, txnID uint64, payload []byte) (p Prefix, ok bool) {
	if len(payload) > PrefixCap-recordHeaderSize {
		return Prefix{}, false
	}
	putRecordHeader(p.b[:], typ, 0, 0, txnID, 0)
	p.n = recordHeaderSize + copy(p.b[recordHeaderSize:], payload)
	return p, true
}

// AppendPrefixed appends a record whose payload is p's payload bytes, then
// the midLen (at most 16) low-order bytes of the little-endian words m0, m1,
// then body. The words' bytes beyond midLen must be zero: the stores are
// fixed-size and their zero tails become padding or are overwritten by what
// follows. (Words in registers, not a byte array: reloading bytes just
// stored one by one stalls on store forwarding.)
func (b *Batch) AppendPrefixed(p *Prefix, m0, m1 uint64, midLen int, body []byte) {
	n := p.n - recordHeaderSize + midLen + len(body)
	size := encodedSize(n)
	off := len(b.buf)
	// The fixed-size stores may run past the record (into capacity only).
	const span = PrefixCap + 16
	if need := off + max(size, span); need > cap(b.buf) {
		b.buf = slices.Grow(b.buf, need-off+need/4)
	}
	r := b.buf[off : off+max(size, span)]
	binary.LittleEndian.PutUint64(r[size-recordAlign:], 0) // padding first: any later write may cover it
	*(*[PrefixCap]byte)(r) = p.b
	binary.LittleEndian.PutUint32(r[4:8], uint32(n))
	m := r[p.n : p.n+16]
	binary.LittleEndian.PutUint64(m[0:], m0)
	binary.LittleEndian.PutUint64(m[8:], m1)
	copy(r[p.n+midLen:], body)
	b.buf = b.buf[:off+size]
	b.offs = append(b.offs, uint32(off))
}

// SetTxnID changes the txn id of every record in the batch (a transaction
// that is given a new id before its first records are written).
func (b *Batch) SetTxnID(txnID uint64) {
	for _, o := range b.offs {
		binary.LittleEndian.PutUint64(b.buf[o+12:o+20], txnID)
	}
}

// Len returns the encoded size of the batch in bytes.
func (b *Batch) Len() int { return len(b.buf) }

// Count returns the number of records in the batch.
func (b *Batch) Count() int { return len(b.offs) }

// Reset empties the batch, keeping its buffer.
func (b *Batch) Reset() {
	b.buf = b.buf[:0]
	b.offs = b.offs[:0]
}

// encodeWith returns the batch's records passed through codec, as a new buffer,
// and their offsets in it (appended to offs).
func (b *Batch) encodeWith(codec Codec, dst []byte, offs []uint32) ([]byte, []uint32, error) {
	rc, _ := codec.(RecordCodec)
	var scratch []byte
	for _, o := range b.offs {
		off := int(o)
		h := decodeRecordHeader(b.buf[off:])
		payload := b.buf[off+recordHeaderSize : off+recordHeaderSize+int(h.Length)]
		// The codec appends the stored payload right after a reserved
		// header: no intermediate copy.
		start := len(dst)
		offs = append(offs, uint32(start))
		dst = append(dst, make([]byte, recordHeaderSize)...)
		var out []byte
		var flags uint8
		var keyID uint16
		var err error
		if rc != nil {
			out, flags, keyID, err = rc.EncodeRecord(dst, payload, RecordInfo{Type: h.Type, TxnID: h.TxnID}, &scratch)
		} else {
			out, flags, keyID, err = codec.Encode(dst, payload)
		}
		if err != nil {
			return nil, offs, fmt.Errorf("wal: encoding payload of txn %d: %w", h.TxnID, err)
		}
		dst = out
		n := len(dst) - start - recordHeaderSize
		putRecordHeader(dst[start:], h.Type, flags, keyID, h.TxnID, n)
		if pad := encodedSize(n) - recordHeaderSize - n; pad > 0 {
			dst = append(dst, make([]byte, pad)...)
		}
	}
	return dst, offs, nil
}
