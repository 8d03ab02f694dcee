package filestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/wal"
)

// WAL record payloads of the file channel. The wal package treats payloads
// as opaque bytes; these are the layouts inside them (all integers are
// unsigned varints unless noted):
//
//	Put      | len(channel) | channel | size | putTime (8 bytes LE, unix ns) |
//	         | nHeaders | (len(k) | k | len(v) | v)* | body (rest of payload) |
//
//	Take     | len(channel) | channel | n | (pointer (8 bytes LE) | size)*  |
//
//	Commit   | len(producerID) | producerID | sequence | nEvents |
//
//	Rollback | (empty)                                                      |
//
// size is Event.Size() so byte accounting survives replay without decoding
// bodies. Take records are written only at commit time: an uncommitted take
// is redelivered after a crash anyway.

var errPayload = errors.New("malformed record payload")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendPutPayload(b []byte, ch string, ev channel.Event, size int, putTime int64) []byte {
	b = appendString(b, ch)
	b = binary.AppendUvarint(b, uint64(size))
	b = binary.LittleEndian.AppendUint64(b, uint64(putTime))
	b = binary.AppendUvarint(b, uint64(len(ev.Headers)))
	if len(ev.Headers) == 0 {
		return append(b, ev.Body...) // skips the map iterator's setup
	}
	for k, v := range ev.Headers {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	return append(b, ev.Body...)
}

// putPrefix is the record prefix shared by the put records of a txn into
// channel ch: the header and the channel name (appendPutPayload's first
// field). ok is false for a name too long for a wal.Prefix.
func putPrefix(txnID uint64, ch string) (wal.Prefix, bool) {
	var b [wal.PrefixCap]byte
	n := binary.PutUvarint(b[:], uint64(len(ch)))
	if len(ch) > len(b)-n {
		return wal.Prefix{}, false
	}
	n += copy(b[n:], ch)
	return wal.MakePrefix(wal.RecordPut, txnID, b[:n])
}

// putMiddle returns what follows the channel name in the put payload of a
// headerless event of size bytes (size varint, put time, zero header
// count) as two little-endian words and its length, for
// wal.Batch.AppendPrefixed.
func putMiddle(size uint32, putTime int64) (m0, m1 uint64, n int) {
	var v uint64 // the varint's bytes, little endian
	x := uint64(size)
	for n = 0; x >= 0x80; n++ {
		v |= (x&0x7f | 0x80) << (8 * n)
		x >>= 7
	}
	v |= x << (8 * n)
	n++ // at most 5 bytes for a uint32
	t := uint64(putTime)
	return v | t<<(8*n), t >> (64 - 8*n), n + 9
}

type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errPayload
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) bytes(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errPayload
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *payloadReader) str() string { return string(r.bytes(r.uvarint())) }

func (r *payloadReader) u64() uint64 {
	b := r.bytes(8)
	if r.err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// putHeader is the part of a put payload replay needs.
type putHeader struct {
	channel string
	size    uint32
	putTime int64
}

func decodePutHeader(p []byte) (putHeader, payloadReader, error) {
	r := payloadReader{b: p}
	h := putHeader{channel: r.str()}
	size := r.uvarint()
	h.putTime = int64(r.u64())
	if r.err == nil && size > 1<<32-1 {
		r.err = errPayload
	}
	h.size = uint32(size)
	return h, r, r.err
}

// decodePut decodes a whole put payload into an event that owns its memory.
func decodePut(p []byte) (putHeader, channel.Event, error) {
	return decodePutSlab(p, nil)
}

// bodySlab hands out event bodies from shared blocks: one allocation serves
// many small bodies of a take. A body is capped at its length, so appending
// to it never writes into its neighbour; a block stays alive as long as any
// body cut from it.
type bodySlab struct{ block []byte }

const bodySlabBlock = 32 << 10

func (sl *bodySlab) copy(b []byte) []byte {
	if len(b) > bodySlabBlock/4 {
		return append([]byte(nil), b...) // large bodies get their own
	}
	if cap(sl.block)-len(sl.block) < len(b) {
		sl.block = make([]byte, 0, bodySlabBlock)
	}
	n := len(sl.block)
	sl.block = append(sl.block, b...)
	return sl.block[n : n+len(b) : n+len(b)]
}

// decodePutSlab is decodePut with the body copied from slab (nil: its own
// allocation).
func decodePutSlab(p []byte, slab *bodySlab) (putHeader, channel.Event, error) {
	h, r, err := decodePutHeader(p)
	if err != nil {
		return h, channel.Event{}, err
	}
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)) { // every header takes at least 2 bytes
		return h, channel.Event{}, errPayload
	}
	var ev channel.Event
	if n > 0 {
		ev.Headers = make(map[string]string, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			k := r.str()
			ev.Headers[k] = r.str()
		}
	}
	if r.err != nil {
		return h, channel.Event{}, r.err
	}
	if slab != nil {
		ev.Body = slab.copy(r.b)
	} else {
		ev.Body = append([]byte(nil), r.b...)
	}
	if ev.Size() != int(h.size) {
		return h, channel.Event{}, fmt.Errorf("%w: event size %d, header says %d", errPayload, ev.Size(), h.size)
	}
	return h, ev, nil
}

type takeEntryRec struct {
	ptr  uint64
	size uint32
}

func appendTakePayload(b []byte, ch string, entries []takeEntryRec) []byte {
	b = appendString(b, ch)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint64(b, e.ptr)
		b = binary.AppendUvarint(b, uint64(e.size))
	}
	return b
}

func decodeTake(p []byte) (string, []takeEntryRec, error) {
	r := &payloadReader{b: p}
	ch := r.str()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b))/9 {
		return "", nil, errPayload
	}
	out := make([]takeEntryRec, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		ptr := r.u64()
		size := r.uvarint()
		out = append(out, takeEntryRec{ptr: ptr, size: uint32(size)})
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errPayload
	}
	return ch, out, r.err
}

type commitInfo struct {
	producer string
	sequence uint64
	events   uint64
}

func appendCommitPayload(b []byte, c commitInfo) []byte {
	b = appendString(b, c.producer)
	b = binary.AppendUvarint(b, c.sequence)
	return binary.AppendUvarint(b, c.events)
}

func decodeCommit(p []byte) (commitInfo, error) {
	r := &payloadReader{b: p}
	c := commitInfo{producer: r.str(), sequence: r.uvarint(), events: r.uvarint()}
	if r.err == nil && len(r.b) != 0 {
		r.err = errPayload
	}
	return c, r.err
}
