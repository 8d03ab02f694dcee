package checkpoint

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/sluicehq/sluice/internal/crc32c"
)

// The checkpoint file format (version 4; versions 1 to 3 are still read). All fixed-width integers are
// little-endian; "uv" is an unsigned LEB128 varint (encoding/binary Uvarint)
// in its minimal encoding (non-minimal encodings are rejected, so every
// checkpoint has exactly one encoding).
//
// File:
//
//	+---------+---------+-------+-------------+-----------------------+---------+
//	| magic   | version | flags | body length | body                  | CRC32C  |
//	| 7 bytes | 1 byte  | 1 byte| uint32      | body length bytes     | uint32  |
//	+---------+---------+-------+-------------+-----------------------+---------+
//	 "SLCHKPT"    1       bit 0:                 Sealer output when     Castagnoli,
//	                      sealed;                sealed, else the       over every
//	                      other bits             plain body below       byte before it
//	                      must be 0
//
// The body length must reach exactly to the CRC: trailing bytes are corrupt.
// The CRC is checked before the body is opened or decoded, so a torn or
// damaged file is reported as ErrCorrupt, never handed to the Sealer.
//
// Plain body: fixed fields, then five length-prefixed sections in this
// order: frontier, channels, put txns, take txns, producers.
//
//	+------------+--------+-----------+--------------+-------+
//	| generation | WOID   | nextTxnID | timeUnixNano | clean |
//	| uint64     | uint64 | uint64    | int64        | 0 / 1 |
//	+------------+--------+-----------+--------------+-------+
//	+---------------------+---------------------------------------+
//	| section length (uv) | count (uv) | count × item             |  × 5
//	+---------------------+---------------------------------------+
//
// Items (str = uv length + bytes; bool = one byte, 0 or 1):
//
//	frontier:  segment uint32 | offset uint32
//	channel:   name str | capacity uv | head uv | size uv | bytes uv | gen uint8 | digest uint32
//	put txn:   txn id uv | committing bool | producer id str | sequence uv |
//	           n uv | n × (channel str | pointer uv | size uv ≤ MaxUint32)
//	take txn:  txn id uv | channel str | committing bool |
//	           n uv | n × (pointer uv | position uv | size uv ≤ MaxUint32)
//	producer:  id str | sequence uv | last used uv (unix ns; 0 unknown)
//
// Version 3 adds a sixth section after the producers: the queue digest key
// (str, empty or 32 bytes; see Checkpoint.DigestKey); it is written only
// when there is a key (encrypted stores), else the file is version 2. Versions 1 and 2 end
// after the producers (no key: CRC32C digests). Version 1 differs from 2
// only in its producer items, which end after sequence (read as last used
// 0).
//
// Version 4 always has the digest key section (empty without a key) and adds
// a seventh, the channel offsets (see Channel.NextOffset):
//
//	offsets:   count uv (= channels) × (next offset uv | runs uv | runs × (pos uv | offset uv)) |
//	           count uv (= put txns) × (n uv (= its entries) | n × offset uv) |
//	           count uv (= take txns) × (n uv (= its entries) | n × offset uv)
//
// Every section must be consumed exactly by its items, and the body by its
// sections. Every count is checked against the bytes that remain (times the
// smallest possible encoding of an item) before anything is allocated.
const (
	magic         = "SLCHKPT"
	formatVersion = 4
	// minVersion is the oldest format this build reads.
	minVersion   = 1
	flagSealed   = 1 << 0
	knownFlags   = flagSealed
	magicLen     = 7 // len(magic)
	headerLen    = magicLen + 1 + 1 + 4
	trailerLen   = 4
	fixedBodyLen = 8 + 8 + 8 + 8 + 1
	offVersion   = magicLen
	offFlags     = offVersion + 1
	offBodyLen   = offFlags + 1
	numSections  = 7
	minFrontier  = 8
	minChannel   = 1 + 1 + 1 + 1 + 1 + 1 + 4
	minPutTxn    = 1 + 1 + 1 + 1 + 1
	minPutEntry  = 1 + 1 + 1
	minTakeTxn   = 1 + 1 + 1 + 1
	minTakeEntry = 1 + 1 + 1
	minProducer  = 1 + 1 // version 1; version 2 items take a byte more
	maxBodyLen   = math.MaxUint32
)

// Compile-time check that magicLen matches magic.
var _ = [1]struct{}{}[len(magic)-magicLen]

// Marshal encodes c into the file format above, sealing the body with s when
// s is not nil.
func Marshal(c *Checkpoint, s Sealer) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("checkpoint: marshal: nil checkpoint")
	}
	var out []byte
	flags := byte(0)
	if s == nil {
		// Encode the body in place after the header.
		out = make([]byte, headerLen, headerLen+estimateBody(c)+trailerLen)
		out = appendBody(out, c)
	} else {
		sealed, err := s.Seal(appendBody(make([]byte, 0, estimateBody(c)), c))
		if err != nil {
			return nil, fmt.Errorf("checkpoint: seal: %w", err)
		}
		flags |= flagSealed
		out = make([]byte, headerLen, headerLen+len(sealed)+trailerLen)
		out = append(out, sealed...)
	}
	bodyLen := len(out) - headerLen
	if uint64(bodyLen) > maxBodyLen {
		return nil, fmt.Errorf("checkpoint: marshal: body of %d bytes exceeds %d", bodyLen, uint64(maxBodyLen))
	}
	copy(out, magic)
	out[offVersion] = formatVersion
	out[offFlags] = flags
	binary.LittleEndian.PutUint32(out[offBodyLen:], uint32(bodyLen))
	out = binary.LittleEndian.AppendUint32(out, crc32c.Checksum(out))
	return out, nil
}

// appendBody appends the plain body of c to b.
func appendBody(b []byte, c *Checkpoint) []byte {
	b = binary.LittleEndian.AppendUint64(b, c.Generation)
	b = binary.LittleEndian.AppendUint64(b, c.WOID)
	b = binary.LittleEndian.AppendUint64(b, c.NextTxnID)
	b = binary.LittleEndian.AppendUint64(b, uint64(c.TimeUnixNano))
	b = appendBool(b, c.Clean)

	// section appends a length-prefixed section: the content is encoded
	// after room for the longest length varint, then moved down next to the
	// (minimal) varint actually written.
	section := func(fill func([]byte) []byte) {
		const room = binary.MaxVarintLen64
		start := len(b)
		b = append(b, make([]byte, room)...)
		b = fill(b)
		n := len(b) - start - room
		var lb [room]byte
		k := binary.PutUvarint(lb[:], uint64(n))
		copy(b[start:], lb[:k])
		copy(b[start+k:], b[start+room:])
		b = b[:start+k+n]
	}
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.Frontier)))
		for _, p := range c.Frontier {
			s = binary.LittleEndian.AppendUint32(s, p.Segment)
			s = binary.LittleEndian.AppendUint32(s, p.Offset)
		}
		return s
	})
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.Channels)))
		for _, ch := range c.Channels {
			s = appendString(s, ch.Name)
			s = binary.AppendUvarint(s, ch.Capacity)
			s = binary.AppendUvarint(s, ch.Head)
			s = binary.AppendUvarint(s, ch.Size)
			s = binary.AppendUvarint(s, ch.Bytes)
			s = append(s, ch.Gen)
			s = binary.LittleEndian.AppendUint32(s, ch.Digest)
		}
		return s
	})
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.PutTxns)))
		for _, t := range c.PutTxns {
			s = binary.AppendUvarint(s, t.TxnID)
			s = appendBool(s, t.Committing)
			s = appendString(s, t.ProducerID)
			s = binary.AppendUvarint(s, t.Sequence)
			s = binary.AppendUvarint(s, uint64(len(t.Entries)))
			for _, e := range t.Entries {
				s = appendString(s, e.Channel)
				s = binary.AppendUvarint(s, e.Pointer)
				s = binary.AppendUvarint(s, uint64(e.Size))
			}
		}
		return s
	})
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.TakeTxns)))
		for _, t := range c.TakeTxns {
			s = binary.AppendUvarint(s, t.TxnID)
			s = appendString(s, t.Channel)
			s = appendBool(s, t.Committing)
			s = binary.AppendUvarint(s, uint64(len(t.Entries)))
			for _, e := range t.Entries {
				s = binary.AppendUvarint(s, e.Pointer)
				s = binary.AppendUvarint(s, e.Position)
				s = binary.AppendUvarint(s, uint64(e.Size))
			}
		}
		return s
	})
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.Producers)))
		for _, p := range c.Producers {
			s = appendString(s, p.ID)
			s = binary.AppendUvarint(s, p.Sequence)
			s = binary.AppendUvarint(s, uint64(max(p.LastUsed, 0)))
		}
		return s
	})
	section(func(s []byte) []byte { return appendString(s, string(c.DigestKey)) })
	section(func(s []byte) []byte {
		s = binary.AppendUvarint(s, uint64(len(c.Channels)))
		for _, ch := range c.Channels {
			s = binary.AppendUvarint(s, ch.NextOffset)
			s = binary.AppendUvarint(s, uint64(len(ch.Offsets)))
			for _, r := range ch.Offsets {
				s = binary.AppendUvarint(s, r.Pos)
				s = binary.AppendUvarint(s, r.Offset)
			}
		}
		s = binary.AppendUvarint(s, uint64(len(c.PutTxns)))
		for _, t := range c.PutTxns {
			s = binary.AppendUvarint(s, uint64(len(t.Entries)))
			for _, e := range t.Entries {
				s = binary.AppendUvarint(s, e.Offset)
			}
		}
		s = binary.AppendUvarint(s, uint64(len(c.TakeTxns)))
		for _, t := range c.TakeTxns {
			s = binary.AppendUvarint(s, uint64(len(t.Entries)))
			for _, e := range t.Entries {
				s = binary.AppendUvarint(s, e.Offset)
			}
		}
		return s
	})
	return b
}

// estimateBody returns an upper bound of the plain body size so encodeBody
// appends without regrowing.
func estimateBody(c *Checkpoint) int {
	const v = binary.MaxVarintLen64
	n := fixedBodyLen + numSections*2*v
	n += len(c.Frontier) * 8
	for _, ch := range c.Channels {
		n += v + len(ch.Name) + 4*v + 1 + 4
	}
	for _, t := range c.PutTxns {
		n += 4*v + 1 + len(t.ProducerID)
		for _, e := range t.Entries {
			n += 3*v + len(e.Channel)
		}
	}
	for _, t := range c.TakeTxns {
		n += 3*v + 1 + len(t.Channel) + len(t.Entries)*3*v
	}
	for _, p := range c.Producers {
		n += 3*v + len(p.ID)
	}
	n += v + len(c.DigestKey)
	n += 3 * v
	for _, ch := range c.Channels {
		n += 2*v + len(ch.Offsets)*2*v
	}
	for _, t := range c.PutTxns {
		n += v + len(t.Entries)*v
	}
	for _, t := range c.TakeTxns {
		n += v + len(t.Entries)*v
	}
	return n
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// Unmarshal decodes a checkpoint file's bytes. s must be the Sealer the file
// was written with (nil for a plaintext file). Malformed input yields a
// *CorruptError (errors.Is(err, ErrCorrupt)); a sealed file without a Sealer
// ErrSealed; a plaintext file with a Sealer ErrNotSealed; a body the Sealer
// cannot open ErrOpen. Unmarshal never panics and allocates at most a
// constant factor of len(b) (plus what the Sealer's Open allocates).
func Unmarshal(b []byte, s Sealer) (*Checkpoint, error) {
	if len(b) < headerLen+trailerLen {
		if len(b) < magicLen || string(b[:magicLen]) != magic {
			return nil, corruptf(0, "bad magic or file too short (%d bytes)", len(b))
		}
		return nil, corruptf(int64(len(b)), "truncated: %d bytes, header and CRC need %d", len(b), headerLen+trailerLen)
	}
	if string(b[:magicLen]) != magic {
		return nil, corruptf(0, "bad magic %q", b[:magicLen])
	}
	version := b[offVersion]
	if version < minVersion || version > formatVersion {
		e := corruptf(offVersion, "format version %d, this build reads %d to %d", version, minVersion, formatVersion)
		e.Err = ErrUnsupportedVersion
		return nil, e
	}
	flags := b[offFlags]
	if flags&^knownFlags != 0 {
		return nil, corruptf(offFlags, "unknown flags %#x", flags)
	}
	bodyLen := uint64(binary.LittleEndian.Uint32(b[offBodyLen:]))
	if have := uint64(len(b) - headerLen - trailerLen); bodyLen != have {
		if bodyLen > have {
			return nil, corruptf(int64(len(b)), "truncated: body length %d, %d bytes present", bodyLen, have)
		}
		return nil, corruptf(int64(headerLen+trailerLen+bodyLen), "%d trailing bytes after the CRC", have-bodyLen)
	}
	crcOff := len(b) - trailerLen
	if want, got := binary.LittleEndian.Uint32(b[crcOff:]), crc32c.Checksum(b[:crcOff]); want != got {
		return nil, corruptf(int64(crcOff), "CRC32C mismatch: stored %#08x, computed %#08x", want, got)
	}
	body := b[headerLen:crcOff]
	sealed := flags&flagSealed != 0
	switch {
	case sealed && s == nil:
		return nil, ErrSealed
	case !sealed && s != nil:
		return nil, ErrNotSealed
	case sealed:
		plain, err := s.Open(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrOpen, err)
		}
		body = plain
	}
	d := decoder{b: body, base: headerLen, sealed: sealed, version: version}
	c := d.body()
	if d.err != nil {
		return nil, d.err
	}
	return c, nil
}

func corruptf(off int64, format string, args ...any) *CorruptError {
	return &CorruptError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// decoder reads the plain body. Errors are sticky: after the first one every
// read returns zero values and the caller checks err once.
type decoder struct {
	b       []byte
	off     int
	base    int64 // file offset of b[0] (for error messages)
	sealed  bool  // b is an opened sealed body: offsets are not file offsets
	version byte  // of the file format
	err     *CorruptError
	intern  map[string]string // decoded strings, reused when seen again
}

const (
	maxInterned    = 1024
	maxInternedLen = 256
)

func (d *decoder) fail(format string, args ...any) {
	if d.err != nil {
		return
	}
	reason := fmt.Sprintf(format, args...)
	if d.sealed {
		d.err = corruptf(d.base, "sealed body offset %d: %s", d.off, reason)
		return
	}
	d.err = corruptf(d.base+int64(d.off), "%s", reason)
}

func (d *decoder) remaining() int { return len(d.b) - d.off }

func (d *decoder) u64(what string) uint64 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 8 {
		d.fail("truncated %s", what)
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v
}

func (d *decoder) u32(what string) uint32 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 4 {
		d.fail("truncated %s", what)
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v
}

func (d *decoder) u8(what string) uint8 {
	if d.err != nil {
		return 0
	}
	if d.remaining() < 1 {
		d.fail("truncated %s", what)
		return 0
	}
	v := d.b[d.off]
	d.off++
	return v
}

func (d *decoder) boolean(what string) bool {
	switch v := d.u8(what); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.off--
		d.fail("%s: invalid boolean %d", what, v)
		return false
	}
}

func (d *decoder) uvarint(what string) uint64 { return d.uvarintOf(what, "") }

// uvarintOf reads a uvarint described as what+suffix; the two are only
// joined on error, so the hot path does not allocate.
func (d *decoder) uvarintOf(what, suffix string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		if n == 0 {
			d.fail("truncated %s%s", what, suffix)
		} else {
			d.fail("%s%s: varint overflows 64 bits", what, suffix)
		}
		return 0
	}
	if n > 1 && d.b[d.off+n-1] == 0 {
		d.fail("%s%s: non-minimal varint", what, suffix)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) uvarint32(what string) uint32 {
	v := d.uvarint(what)
	if v > math.MaxUint32 {
		d.fail("%s: %d exceeds uint32", what, v)
		return 0
	}
	return uint32(v)
}

// count reads an item count and checks that count items of at least minSize
// bytes each fit in the bytes that remain.
func (d *decoder) count(what string, minSize int) int {
	start := d.off
	v := d.uvarintOf(what, " count")
	if d.err != nil {
		return 0
	}
	if v > uint64(d.remaining()/minSize) {
		d.off = start
		d.fail("%s count %d larger than the %d bytes that remain allow", what, v, d.remaining())
		return 0
	}
	return int(v)
}

func (d *decoder) str(what string) string {
	start := d.off
	n := d.uvarintOf(what, " length")
	if d.err != nil {
		return ""
	}
	if n > uint64(d.remaining()) {
		d.off = start
		d.fail("%s length %d exceeds the %d bytes that remain", what, n, d.remaining())
		return ""
	}
	raw := d.b[d.off : d.off+int(n)]
	d.off += int(n)
	// Channel names repeat in every put entry and take txn: reuse one
	// string per distinct value (the map lookup does not allocate).
	if v, ok := d.intern[string(raw)]; ok {
		return v
	}
	v := string(raw)
	if len(d.intern) < maxInterned && len(v) <= maxInternedLen {
		if d.intern == nil {
			d.intern = make(map[string]string)
		}
		d.intern[v] = v
	}
	return v
}

// section reads a section length prefix and runs items on a decoder limited
// to the section, which must consume it exactly.
func (d *decoder) section(what string, items func(*decoder)) {
	start := d.off
	n := d.uvarintOf(what, " section length")
	if d.err != nil {
		return
	}
	if n > uint64(d.remaining()) {
		d.off = start
		d.fail("%s section length %d exceeds the %d bytes that remain", what, n, d.remaining())
		return
	}
	sub := decoder{b: d.b[:d.off+int(n)], off: d.off, base: d.base, sealed: d.sealed, version: d.version, intern: d.intern}
	items(&sub)
	if sub.err == nil && sub.remaining() != 0 {
		sub.fail("%d unused bytes at the end of the %s section", sub.remaining(), what)
	}
	if sub.err != nil {
		d.err = sub.err
		return
	}
	d.off = sub.off
	d.intern = sub.intern
}

func (d *decoder) body() *Checkpoint {
	c := &Checkpoint{}
	c.Generation = d.u64("generation")
	c.WOID = d.u64("WOID")
	c.NextTxnID = d.u64("next txn id")
	c.TimeUnixNano = int64(d.u64("time"))
	c.Clean = d.boolean("clean flag")

	d.section("frontier", func(d *decoder) {
		n := d.count("frontier", minFrontier)
		if n > 0 {
			c.Frontier = make([]Position, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			c.Frontier[i] = Position{Segment: d.u32("frontier segment"), Offset: d.u32("frontier offset")}
		}
	})
	d.section("channels", func(d *decoder) {
		n := d.count("channel", minChannel)
		if n > 0 {
			c.Channels = make([]Channel, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			ch := &c.Channels[i]
			ch.Name = d.str("channel name")
			ch.Capacity = d.uvarint("channel capacity")
			ch.Head = d.uvarint("channel head")
			ch.Size = d.uvarint("channel size")
			ch.Bytes = d.uvarint("channel bytes")
			ch.Gen = d.u8("channel queue generation")
			ch.Digest = d.u32("channel digest")
		}
	})
	d.section("put txns", func(d *decoder) {
		n := d.count("put txn", minPutTxn)
		if n > 0 {
			c.PutTxns = make([]PutTxn, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			t := &c.PutTxns[i]
			t.TxnID = d.uvarint("put txn id")
			t.Committing = d.boolean("put txn committing flag")
			t.ProducerID = d.str("put txn producer id")
			t.Sequence = d.uvarint("put txn sequence")
			m := d.count("put entry", minPutEntry)
			if m > 0 {
				t.Entries = make([]PutEntry, m)
			}
			for j := 0; j < m && d.err == nil; j++ {
				t.Entries[j] = PutEntry{
					Channel: d.str("put entry channel"),
					Pointer: d.uvarint("put entry pointer"),
					Size:    d.uvarint32("put entry size"),
				}
			}
		}
	})
	d.section("take txns", func(d *decoder) {
		n := d.count("take txn", minTakeTxn)
		if n > 0 {
			c.TakeTxns = make([]TakeTxn, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			t := &c.TakeTxns[i]
			t.TxnID = d.uvarint("take txn id")
			t.Channel = d.str("take txn channel")
			t.Committing = d.boolean("take txn committing flag")
			m := d.count("take entry", minTakeEntry)
			if m > 0 {
				t.Entries = make([]TakeEntry, m)
			}
			for j := 0; j < m && d.err == nil; j++ {
				t.Entries[j] = TakeEntry{
					Pointer:  d.uvarint("take entry pointer"),
					Position: d.uvarint("take entry position"),
					Size:     d.uvarint32("take entry size"),
				}
			}
		}
	})
	d.section("producers", func(d *decoder) {
		n := d.count("producer", minProducer)
		if n > 0 {
			c.Producers = make([]Producer, n)
		}
		for i := 0; i < n && d.err == nil; i++ {
			c.Producers[i] = Producer{ID: d.str("producer id"), Sequence: d.uvarint("producer sequence")}
			if d.version >= 2 {
				last := d.uvarint("producer last used")
				if last > math.MaxInt64 {
					d.fail("producer last used %d out of range", last)
				}
				c.Producers[i].LastUsed = int64(last)
			}
		}
	})
	if d.version >= 3 {
		d.section("digest key", func(d *decoder) {
			k := d.str("digest key")
			switch len(k) {
			case 0:
			case DigestKeySize:
				c.DigestKey = []byte(k)
			default:
				d.fail("digest key of %d bytes (want 0 or %d)", len(k), DigestKeySize)
			}
		})
	}
	if d.version >= 4 {
		d.section("offsets", func(d *decoder) {
			if n := d.count("channel offsets", 2); d.err == nil && n != len(c.Channels) {
				d.fail("offsets of %d channels, the checkpoint has %d", n, len(c.Channels))
			}
			for i := 0; i < len(c.Channels) && d.err == nil; i++ {
				ch := &c.Channels[i]
				ch.NextOffset = d.uvarint("channel next offset")
				m := d.count("offset run", 2)
				if m > 0 {
					ch.Offsets = make([]OffsetRun, m)
				}
				for j := 0; j < m && d.err == nil; j++ {
					ch.Offsets[j] = OffsetRun{Pos: d.uvarint("offset run position"), Offset: d.uvarint("offset run offset")}
				}
			}
			if n := d.count("put txn offsets", 1); d.err == nil && n != len(c.PutTxns) {
				d.fail("offsets of %d put txns, the checkpoint has %d", n, len(c.PutTxns))
			}
			for i := 0; i < len(c.PutTxns) && d.err == nil; i++ {
				es := c.PutTxns[i].Entries
				if m := d.count("put entry offset", 1); d.err == nil && m != len(es) {
					d.fail("put txn %d: %d offsets for %d entries", c.PutTxns[i].TxnID, m, len(es))
				}
				for j := 0; j < len(es) && d.err == nil; j++ {
					es[j].Offset = d.uvarint("put entry offset")
				}
			}
			if n := d.count("take txn offsets", 1); d.err == nil && n != len(c.TakeTxns) {
				d.fail("offsets of %d take txns, the checkpoint has %d", n, len(c.TakeTxns))
			}
			for i := 0; i < len(c.TakeTxns) && d.err == nil; i++ {
				es := c.TakeTxns[i].Entries
				if m := d.count("take entry offset", 1); d.err == nil && m != len(es) {
					d.fail("take txn %d: %d offsets for %d entries", c.TakeTxns[i].TxnID, m, len(es))
				}
				for j := 0; j < len(es) && d.err == nil; j++ {
					es[j].Offset = d.uvarint("take entry offset")
				}
			}
		})
	}
	if d.err == nil && d.remaining() != 0 {
		d.fail("%d trailing bytes after the last section", d.remaining())
	}
	if d.err != nil {
		return nil
	}
	return c
}
