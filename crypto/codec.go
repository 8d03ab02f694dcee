package crypto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/sluicehq/sluice/wal"
)

// WAL record payloads. The Codec owns the record header's flags byte and key
// id (see wal/format.go):
//
//	flags:  bit 0      payload sealed with AES-256-GCM by key id (key id != 0)
//	        bits 1..2  compression applied before sealing: 00 none, 01 zstd,
//	                   10 s2 (11 invalid)
//	        bit 3      FlagBound: the associated data is format 2 (below),
//	                   binding the payload to its store, type and txn
//	        bits 4..7  zero (anything else is refused: written by a newer build)
//	key id: 0 when not sealed, else the key that sealed the payload
//
// Stored payload:
//
//	not sealed:  [compressed] payload
//	sealed:      +-----------+----------------------------------+---------+
//	             | nonce (12)| AES-256-GCM ciphertext of        | tag (16)|
//	             | random    | [compressed] payload             |         |
//	             +-----------+----------------------------------+---------+
//	             associated data, format 2 (FlagBound set, written since
//	             this build; see bind.go):
//	               "sluice wal v2" | flags | key id (uint16 LE) |
//	               store id (16) | record type (1) | txn id (uint64 LE)
//	             format 1 (FlagBound clear, older builds; still read, in
//	             segments written before the store's "bound since" point):
//	               "sluice wal v1" | flags | key id (uint16 LE)
//
// The associated data binds the flags and key id to the ciphertext, so a
// flipped compression bit fails authentication, and (format 2) binds the
// payload to the store it was written in, its record type and its
// transaction: a sealed record copied into another store, turned into
// another record type or moved under another txn id fails authentication.
// It does not bind the segment, offset or WOID (stamped by wal.Write after
// sealing, under the directory's write lock; sealing there would serialise
// encryption per directory): see bind.go for what that leaves open.
//
// Payloads are compressed only when that makes them smaller; otherwise the
// record says "none".
const (
	FlagSealed   = 0x01
	flagZstd     = 0x02
	flagS2       = 0x04
	flagCompMask = flagZstd | flagS2
	// FlagBound marks a sealed payload whose associated data is format 2.
	FlagBound = 0x08
	flagKnown = FlagSealed | flagCompMask | FlagBound

	nonceSize = 12
	tagSize   = 16
	// Overhead is what sealing adds to a payload.
	Overhead = nonceSize + tagSize

	walAD = "sluice wal v1"
	// minCompress: shorter payloads are never worth compressing.
	minCompress = 64
	// DefaultMaxDecoded bounds a decompressed payload.
	DefaultMaxDecoded = 1 << 30
)

// Compression names a payload compressor.
type Compression uint8

// Compressors.
const (
	CompressNone Compression = iota
	CompressZstd
	CompressS2
)

// ParseCompression maps "", "none", "zstd" and "s2" to a Compression.
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "none":
		return CompressNone, nil
	case "zstd":
		return CompressZstd, nil
	case "s2":
		return CompressS2, nil
	}
	return 0, fmt.Errorf("crypto: unknown compression %q (want \"\", \"zstd\" or \"s2\")", s)
}

func (c Compression) String() string {
	switch c {
	case CompressNone:
		return "none"
	case CompressZstd:
		return "zstd"
	case CompressS2:
		return "s2"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// ErrAuth is wrapped when AES-GCM authentication fails: the ciphertext, its
// nonce, tag, flags or key id were altered, or the key with this id is not
// the key that sealed it.
var ErrAuth = errors.New("crypto: authentication failed (tampered data or wrong key)")

// CorruptError is a payload that cannot be opened or decompressed. It
// unwraps to wal.ErrCorrupt (so the wal reports and skips the record) and,
// for an authentication failure, to ErrAuth.
type CorruptError struct {
	KeyID  uint16
	Reason string
	Auth   bool
}

func (e *CorruptError) Error() string {
	if e.Auth {
		return fmt.Sprintf("crypto: record sealed with key id %d failed authentication: %s", e.KeyID, e.Reason)
	}
	return "crypto: " + e.Reason
}

// Unwrap returns wal.ErrCorrupt, and ErrAuth for authentication failures.
func (e *CorruptError) Unwrap() []error {
	if e.Auth {
		return []error{wal.ErrCorrupt, ErrAuth}
	}
	return []error{wal.ErrCorrupt}
}

// CodecOptions configure a Codec.
type CodecOptions struct {
	// Keyring seals new payloads with its active key and opens old ones by
	// id; nil stores payloads unsealed (and cannot read sealed ones).
	Keyring *Keyring
	// Compression for new payloads. Every compressor is always available
	// for reading.
	Compression Compression
	// MaxDecoded bounds a decompressed payload (default DefaultMaxDecoded).
	MaxDecoded int
	// Policy binds sealed records and checkpoints to a store and says
	// which records to refuse (see Policy); nil is the zero Policy.
	Policy *Policy
	// TolerateAuthFailures makes authentication and policy failures of
	// WAL records *CorruptErrors wrapping wal.ErrCorrupt (reported and
	// skipped by the wal) instead of errors that stop a replay. For
	// offline tools (verify, salvage) only: the store fails closed.
	TolerateAuthFailures bool
}

// Codec implements wal.Codec and, through Sealer, checkpoint.Sealer. It is
// safe for concurrent use; SetKeyring swaps keys without stopping writers.
type Codec struct {
	ring       atomic.Pointer[Keyring]
	comp       Compression
	maxDecoded int

	zenc     *zstd.Encoder
	zdec     *zstd.Decoder
	zdecCap  *zstd.Decoder
	zdecOnce sync.Once
	zdecErr  error
	tmp      sync.Pool // *[]byte scratch for compress+seal

	sealed     sync.Map // uint16 -> *atomic.Int64
	lastSealed atomic.Pointer[sealCount]

	pol                     atomic.Pointer[Policy] // store binding and refusal rules (bind.go)
	tolerant                bool                   // authentication and policy failures are damage (offline tools)
	probe                   atomic.Bool            // DecodeRecord counts sealed records instead of opening them
	probeSealed, probeBound atomic.Int64
}

var _ wal.RecordCodec = (*Codec)(nil)

// NewCodec returns a Codec.
func NewCodec(o CodecOptions) (*Codec, error) {
	c := &Codec{comp: o.Compression, maxDecoded: o.MaxDecoded, tolerant: o.TolerateAuthFailures}
	if o.Policy != nil {
		c.SetPolicy(*o.Policy)
	} else {
		c.SetPolicy(Policy{})
	}
	if c.maxDecoded <= 0 {
		c.maxDecoded = DefaultMaxDecoded
	}
	switch o.Compression {
	case CompressNone, CompressS2:
	case CompressZstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		if err != nil {
			return nil, fmt.Errorf("crypto: zstd encoder: %w", err)
		}
		c.zenc = enc
	default:
		return nil, fmt.Errorf("crypto: unknown compression %d", o.Compression)
	}
	if o.Keyring != nil {
		c.ring.Store(o.Keyring)
	}
	return c, nil
}

// Keyring returns the current keyring (nil when not encrypting).
func (c *Codec) Keyring() *Keyring { return c.ring.Load() }

// SetKeyring installs kr: new payloads and checkpoints are sealed with its
// active key from now on. Sealed data whose key id is not in kr can no longer
// be read, so callers check that first.
func (c *Codec) SetKeyring(kr *Keyring) { c.ring.Store(kr) }

// Compression returns the compressor used for new payloads.
func (c *Codec) Compression() Compression { return c.comp }

// Passthrough reports that records are currently stored as they are: no
// active keyring and no compression (see wal.Passthrough).
func (c *Codec) Passthrough() bool { return c.ring.Load() == nil && c.comp == CompressNone }

// Sealed returns how many WAL payloads this Codec sealed with key id.
func (c *Codec) Sealed(id uint16) int64 {
	if n, ok := c.sealed.Load(id); ok {
		return n.(*atomic.Int64).Load()
	}
	return 0
}

// sealCount is a key id's seal counter, cached for the next countSealed.
type sealCount struct {
	id uint16
	n  *atomic.Int64
}

func (c *Codec) countSealed(id uint16) {
	// Nearly every seal is by the active key: skip the map (whose interface
	// hashing cost a third as much as sealing a 1 KiB payload).
	if last := c.lastSealed.Load(); last != nil && last.id == id {
		last.n.Add(1)
		return
	}
	n, ok := c.sealed.Load(id)
	if !ok {
		n, _ = c.sealed.LoadOrStore(id, new(atomic.Int64))
	}
	cnt := n.(*atomic.Int64)
	cnt.Add(1)
	c.lastSealed.Store(&sealCount{id: id, n: cnt})
}

func walAssociated(buf *[24]byte, flags uint8, keyID uint16) []byte {
	n := copy(buf[:], walAD)
	buf[n] = flags
	binary.LittleEndian.PutUint16(buf[n+1:], keyID)
	return buf[:n+3]
}

// compress appends the compressed payload to dst; ok is false when it would
// not be smaller (dst is then returned unchanged).
func (c *Codec) compress(dst, payload []byte) (out []byte, flag uint8, ok bool) {
	if c.comp == CompressNone || len(payload) < minCompress {
		return dst, 0, false
	}
	start := len(dst)
	switch c.comp {
	case CompressZstd:
		dst = c.zenc.EncodeAll(payload, dst)
		flag = flagZstd
	case CompressS2:
		need := s2.MaxEncodedLen(len(payload))
		dst = slices.Grow(dst, need)
		enc := s2.Encode(dst[start:start+need], payload)
		dst = append(dst[:start], enc...)
		flag = flagS2
	}
	if len(dst)-start >= len(payload) {
		return dst[:start], 0, false
	}
	return dst, flag, true
}

// compressForSeal compresses payload into a pooled buffer when compression
// is configured and useful: it returns what to seal, the compression flag
// and the buffer to give back to c.tmp after sealing (nil: none taken).
func (c *Codec) compressForSeal(payload []byte) (plain []byte, flag uint8, bp *[]byte) {
	if c.comp == CompressNone {
		return payload, 0, nil
	}
	if v := c.tmp.Get(); v != nil {
		bp = v.(*[]byte)
	} else {
		bp = new([]byte)
	}
	if out, f, ok := c.compress((*bp)[:0], payload); ok {
		*bp = out
		return out, f, bp
	}
	return payload, 0, bp
}

// Encode implements wal.Codec: compress (if configured and useful), then
// seal with the active key (if a keyring is set). The result is appended to
// dst; it never aliases payload.
func (c *Codec) Encode(dst, payload []byte) ([]byte, uint8, uint16, error) {
	kr := c.ring.Load()
	if kr == nil {
		out, flag, ok := c.compress(dst, payload)
		if !ok {
			return append(dst, payload...), 0, 0, nil
		}
		return out, flag, 0, nil
	}
	id, aead := kr.active, kr.activeAEAD
	plain, flag, bp := c.compressForSeal(payload)
	flags := FlagSealed | flag
	out := aead.Seal(dst, nil, plain, kr.activeAD[flags>>1&3])
	if bp != nil {
		c.tmp.Put(bp)
	}
	c.countSealed(id)
	return out, flags, id, nil
}

// Decode implements wal.Codec. A key id that is not in the keyring is a
// *KeyError (fail closed); an authentication or decompression failure is a
// *CorruptError wrapping wal.ErrCorrupt. The result is appended to dst and
// never aliases stored.
func (c *Codec) Decode(dst, stored []byte, flags uint8, keyID uint16) ([]byte, error) {
	if flags&^flagKnown != 0 || flags&flagCompMask == flagCompMask {
		return nil, fmt.Errorf("crypto: record flags %#x are not understood by this build (written by a newer version?)", flags)
	}
	sealed := flags&FlagSealed != 0
	if sealed != (keyID != 0) {
		return nil, &CorruptError{KeyID: keyID, Reason: fmt.Sprintf("record flags %#x inconsistent with key id %d", flags, keyID)}
	}
	if flags&FlagBound != 0 {
		return nil, &CorruptError{KeyID: keyID, Auth: true, Reason: "record sealed with bound associated data cannot be opened without its record info (DecodeRecord)"}
	}
	var adBuf [24]byte
	return c.decode(dst, stored, flags, keyID, walAssociated(&adBuf, flags, keyID), false)
}

// decode opens (when sealed, with associated data ad) and decompresses a
// stored payload whose flags were checked. failClosed makes an
// authentication failure an *AuthError (stops a replay) instead of a
// *CorruptError.
func (c *Codec) decode(dst, stored []byte, flags uint8, keyID uint16, ad []byte, failClosed bool) ([]byte, error) {
	sealed := flags&FlagSealed != 0
	data := stored
	var bp *[]byte
	if sealed {
		aead, err := c.ring.Load().aead(keyID, "a WAL record")
		if err != nil {
			return nil, err
		}
		if len(stored) < Overhead {
			if failClosed {
				return nil, &AuthError{KeyID: keyID, KeyFile: c.ring.Load().File(), Reason: fmt.Sprintf("sealed payload of %d bytes is shorter than nonce and tag", len(stored))}
			}
			return nil, &CorruptError{KeyID: keyID, Auth: true, Reason: fmt.Sprintf("sealed payload of %d bytes is shorter than nonce and tag", len(stored))}
		}
		var target []byte
		if flags&flagCompMask != 0 {
			if v := c.tmp.Get(); v != nil {
				bp = v.(*[]byte)
			} else {
				bp = new([]byte)
			}
			target = (*bp)[:0]
		} else {
			target = dst
		}
		plain, err := aead.Open(target, nil, stored, ad)
		if err != nil {
			if bp != nil {
				c.tmp.Put(bp)
			}
			if failClosed {
				return nil, &AuthError{KeyID: keyID, KeyFile: c.ring.Load().File(), Reason: err.Error()}
			}
			return nil, &CorruptError{KeyID: keyID, Auth: true, Reason: err.Error()}
		}
		if flags&flagCompMask == 0 {
			return plain, nil
		}
		*bp = plain
		data = plain
		defer c.tmp.Put(bp)
	}
	switch flags & flagCompMask {
	case 0:
		return append(dst, data...), nil
	case flagZstd:
		return c.unzstd(dst, data)
	default:
		return c.uns2(dst, data)
	}
}

// decoder returns the zstd decoder: capped, it never writes beyond
// cap(dst) (so a frame cannot allocate for a content size it claims);
// uncapped, its output grows with what it actually decodes, up to
// maxDecoded.
func (c *Codec) decoder(capped bool) (*zstd.Decoder, error) {
	c.zdecOnce.Do(func() {
		opts := []zstd.DOption{zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(uint64(c.maxDecoded)), zstd.WithDecoderLowmem(true)}
		if c.zdec, c.zdecErr = zstd.NewReader(nil, opts...); c.zdecErr != nil {
			return
		}
		c.zdecCap, c.zdecErr = zstd.NewReader(nil, append(opts, zstd.WithDecodeAllCapLimit(true))...)
	})
	if capped {
		return c.zdecCap, c.zdecErr
	}
	return c.zdec, c.zdecErr
}

// zstdMaxBlock is the largest block a zstd frame can hold; every block
// costs at least a 3-byte header and one byte of content (an RLE block), so
// n stored bytes never decode to more than zstdMaxDecoded(n).
const zstdMaxBlock = 128 << 10

func zstdMaxDecoded(n int) uint64 { return (uint64(n)/3 + 1) * zstdMaxBlock }

// unzstd decompresses src onto dst. The content size a frame header claims
// is checked against maxDecoded and against what len(src) bytes can decode
// to before anything is allocated for it; the output is then bounded by
// that size. A frame without a content size grows its output only with the
// bytes it actually decodes, up to maxDecoded.
func (c *Codec) unzstd(dst, src []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return nil, &CorruptError{Reason: fmt.Sprintf("zstd: %d-byte payload: frame header: %v", len(src), err)}
	}
	capped := h.HasFCS && !h.Skippable
	start := len(dst)
	if capped {
		if h.FrameContentSize > uint64(c.maxDecoded) {
			return nil, &CorruptError{Reason: fmt.Sprintf("zstd payload claims %d decoded bytes, limit %d", h.FrameContentSize, c.maxDecoded)}
		}
		if bound := zstdMaxDecoded(len(src)); h.FrameContentSize > bound {
			return nil, &CorruptError{Reason: fmt.Sprintf("zstd payload of %d bytes claims %d decoded bytes, more than it can hold (%d)", len(src), h.FrameContentSize, bound)}
		}
		// Room for the frame, so the decoder never allocates itself;
		// capped at it, so no later frame can make it allocate either.
		fcs := int(h.FrameContentSize)
		dst = slices.Grow(dst, fcs)[: start : start+fcs]
	}
	d, err := c.decoder(capped)
	if err != nil {
		return nil, fmt.Errorf("crypto: zstd decoder: %w", err)
	}
	out, err := d.DecodeAll(src, dst)
	if err != nil {
		return nil, &CorruptError{Reason: "zstd: " + err.Error()}
	}
	if len(out)-start > c.maxDecoded {
		return nil, &CorruptError{Reason: fmt.Sprintf("zstd payload decodes to %d bytes, limit %d", len(out)-start, c.maxDecoded)}
	}
	return out, nil
}

// s2CheckFrom is the decoded length from which uns2 walks the tags of a
// block before allocating for it: a smaller claimed length costs at most
// that much even when it is false.
const s2CheckFrom = 64 << 10

// uns2 decompresses the s2 block src onto dst. The decoded length its
// header claims is checked against maxDecoded and, when large, against the
// sum of the lengths its tags produce (s2Walk, which reads the tags only)
// before it is allocated: a 7-byte payload claiming 1 GiB costs nothing.
func (c *Codec) uns2(dst, src []byte) ([]byte, error) {
	n, err := s2.DecodedLen(src)
	if err != nil {
		return nil, &CorruptError{Reason: fmt.Sprintf("s2: %d-byte payload: %v", len(src), err)}
	}
	if n > c.maxDecoded {
		return nil, &CorruptError{Reason: fmt.Sprintf("s2 payload decodes to %d bytes, limit %d", n, c.maxDecoded)}
	}
	if n > s2CheckFrom {
		if got, err := s2Walk(src, n); err != nil {
			return nil, &CorruptError{Reason: fmt.Sprintf("s2: %d-byte payload claiming %d decoded bytes: %v", len(src), n, err)}
		} else if got != n {
			return nil, &CorruptError{Reason: fmt.Sprintf("s2: %d-byte payload claims %d decoded bytes, its tags produce %d", len(src), n, got)}
		}
	}
	start := len(dst)
	dst = slices.Grow(dst, n)
	out, err := s2.Decode(dst[start:start+n], src)
	if err != nil {
		return nil, &CorruptError{Reason: "s2: " + err.Error()}
	}
	return append(dst[:start], out...), nil
}

// s2Walk returns how many bytes the s2 block src decodes to, reading its
// tags (not the literals, writing nothing): the block format of
// github.com/klauspost/compress/s2 (Snappy's, plus repeat copies). It stops
// with an error at a malformed tag, a copy reaching before the start of the
// output, or once the output would exceed limit.
func s2Walk(src []byte, limit int) (int, error) {
	_, hdr := binary.Uvarint(src)
	if hdr <= 0 {
		return 0, errors.New("bad length header")
	}
	d, offset := 0, 0
	for s := hdr; s < len(src); {
		tag := src[s]
		var length int
		if tag&3 == 0 { // literal
			x := int(tag >> 2)
			if x >= 60 {
				k := x - 59
				if s+1+k > len(src) {
					return d, fmt.Errorf("literal header at %d truncated", s)
				}
				x = 0
				for i := range k {
					x |= int(src[s+1+i]) << (8 * i)
				}
				s += k
			}
			s++
			length = x + 1
			if length > len(src)-s {
				return d, fmt.Errorf("literal of %d bytes at %d runs past the end", length, s)
			}
			s += length
		} else {
			size := [4]int{0, 2, 3, 5}[tag&3]
			if s+size > len(src) {
				return d, fmt.Errorf("copy tag at %d truncated", s)
			}
			switch tag & 3 {
			case 1:
				toff := int(tag&0xe0)<<3 | int(src[s+1])
				length = int(tag>>2) & 7
				if toff == 0 { // repeat the last offset
					extra := [8]int{5: 1, 6: 2, 7: 3}[length]
					if s+size+extra > len(src) {
						return d, fmt.Errorf("repeat tag at %d truncated", s)
					}
					v := 0
					for i := range extra {
						v |= int(src[s+size+i]) << (8 * i)
					}
					switch length {
					case 5:
						length = v + 4
					case 6:
						length = v + 1<<8
					case 7:
						length = v + 1<<16
					}
					size += extra
				} else {
					offset = toff
				}
				length += 4
			case 2:
				offset = int(binary.LittleEndian.Uint16(src[s+1:]))
				length = 1 + int(tag>>2)
			case 3:
				offset = int(binary.LittleEndian.Uint32(src[s+1:]))
				length = 1 + int(tag>>2)
			}
			if offset <= 0 || offset > d {
				return d, fmt.Errorf("copy at %d from offset %d before the start of the output (%d bytes)", s, offset, d)
			}
			s += size
		}
		if d += length; d > limit {
			return d, fmt.Errorf("output exceeds %d bytes", limit)
		}
	}
	return d, nil
}

// Close releases the compressors' resources.
func (c *Codec) Close() {
	if c.zenc != nil {
		c.zenc.Close()
	}
	if c.zdec != nil {
		c.zdec.Close()
	}
	if c.zdecCap != nil {
		c.zdecCap.Close()
	}
}
