package queue

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/internal/crc32c"
)

// Queue file layout (all integers little endian):
//
//	offset  size  field
//	     0     7  magic "SLQUEUE"
//	     7     1  format version (formatVersion)
//	     8     8  capacity C (number of slots)
//	    16     1  generation (0 = A, 1 = B)
//	    17     3  reserved, zero
//	    20     4  CRC32C (Castagnoli) of bytes [0, 20)
//	    24  4072  zero padding up to headerSize
//	  4096   8*C  slots: slot s holds the pointer at every logical position p
//	              with p mod C == s, as a uint64
//
//	+---------+---+--------+---+-----+--------+----------//----+--------+--------+-----+----------+
//	| SLQUEUE | v | cap C  | g | 000 | crc32c |  zero pad      | slot 0 | slot 1 | ... | slot C-1 |
//	+---------+---+--------+---+-----+--------+----------//----+--------+--------+-----+----------+
//	0         7   8        16  17    20       24               4096     4104              4096+8C
//
// The header is padded to one page so that slot pages are page aligned: the
// snapshot writer compares and copies one page (slotsPerPage slots) at a
// time and never dirties a page whose content did not change.
//
// Head, size and the digest of the live slots are NOT in the file: they live
// in the checkpoint meta (State). A queue file is only meaningful together
// with the State naming it; stale slots outside the live range are ignored.
const (
	magic         = "SLQUEUE"
	formatVersion = 1
	headerSize    = 4096
	headerCRCOff  = 20
	slotSize      = 8
	slotsPerPage  = 4096 / slotSize
)

// fileSize returns the size in bytes of a queue file with capacity c.
func fileSize(c uint64) int64 { return headerSize + int64(c)*slotSize }

// encodeHeader fills b (at least headerSize bytes) with the header for a
// file of capacity c and generation gen; padding is zeroed.
func encodeHeader(b []byte, c uint64, gen uint8) {
	clear(b[:headerSize])
	copy(b, magic)
	b[7] = formatVersion
	binary.LittleEndian.PutUint64(b[8:], c)
	b[16] = gen
	binary.LittleEndian.PutUint32(b[headerCRCOff:], crc32c.Checksum(b[:headerCRCOff]))
}

// fileHeader is a decoded queue file header.
type fileHeader struct {
	capacity uint64
	gen      uint8
}

// decodeHeader validates and decodes a header.
func decodeHeader(b []byte) (fileHeader, error) {
	if len(b) < headerSize {
		return fileHeader{}, fmt.Errorf("short header: %d bytes", len(b))
	}
	if string(b[:7]) != magic {
		return fileHeader{}, fmt.Errorf("bad magic %q", b[:7])
	}
	if b[7] != formatVersion {
		return fileHeader{}, fmt.Errorf("unsupported format version %d", b[7])
	}
	want := binary.LittleEndian.Uint32(b[headerCRCOff:])
	if got := crc32c.Checksum(b[:headerCRCOff]); got != want {
		return fileHeader{}, fmt.Errorf("header checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	h := fileHeader{capacity: binary.LittleEndian.Uint64(b[8:]), gen: b[16]}
	if h.gen > 1 {
		return fileHeader{}, fmt.Errorf("bad generation %d", h.gen)
	}
	if h.capacity == 0 || h.capacity > maxCapacity {
		return fileHeader{}, fmt.Errorf("bad capacity %d", h.capacity)
	}
	return h, nil
}

// maxCapacity bounds the capacity so that file offsets fit in an int on
// 64-bit platforms with a wide margin (2^40 slots = 8 TiB).
const maxCapacity = 1 << 40

// escapeName maps a channel name to a string that is safe as part of a file
// name: [A-Za-z0-9._-] are kept, every other byte (including '%') becomes
// %XX. The mapping is injective. The "queue-" prefix keeps "." and ".." safe.
func escapeName(name string) string {
	var sb strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
			sb.WriteByte(c)
		default:
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// genLetter returns "A" for generation 0 and "B" for generation 1.
func genLetter(gen uint8) string {
	if gen == 0 {
		return "A"
	}
	return "B"
}

// fileName returns the base name of the queue file of the given generation.
func fileName(name string, gen uint8) string {
	return "queue-" + escapeName(name) + "." + genLetter(gen)
}
