package crypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/sluicehq/sluice/wal"
)

func allocDuring(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeClaimedLengthAllocatesLittle: a compressed payload whose header
// claims a huge decoded length (within MaxDecoded) but cannot produce it is
// found corrupt before anything of that size is allocated.
func TestDecodeClaimedLengthAllocatesLittle(t *testing.T) {
	c, err := NewCodec(CodecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const claim = 1<<30 - 1

	// s2: varint length, then a one-byte literal: 7 bytes.
	s2Bomb := binary.AppendUvarint(nil, claim)
	s2Bomb = append(s2Bomb, 0x00, 'x')
	// zstd: magic, single-segment frame with a 4-byte content size, one
	// empty last raw block: 12 bytes.
	zBomb := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xa0}
	zBomb = binary.LittleEndian.AppendUint32(zBomb, claim)
	zBomb = append(zBomb, 0x01, 0x00, 0x00)

	for _, tc := range []struct {
		name    string
		payload []byte
		flags   uint8
	}{{"s2", s2Bomb, flagS2}, {"zstd", zBomb, flagZstd}} {
		t.Run(tc.name, func(t *testing.T) {
			var derr error
			n := allocDuring(func() { _, derr = c.Decode(nil, tc.payload, tc.flags, 0) })
			t.Logf("%d-byte payload: %v; allocated %d bytes", len(tc.payload), derr, n)
			var ce *CorruptError
			if !errors.As(derr, &ce) || !errors.Is(derr, wal.ErrCorrupt) {
				t.Fatalf("got %v, want a *CorruptError", derr)
			}
			if n > 1<<20 {
				t.Fatalf("decoding a %d-byte payload claiming %d bytes allocated %d bytes", len(tc.payload), claim, n)
			}
		})
	}
}

// TestS2WalkMatchesDecoder: the tag walk that guards large s2 payloads
// computes exactly the decoded length for blocks of every encoder level
// (literals, copies of every size, repeats).
func TestS2WalkMatchesDecoder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	random := make([]byte, 300<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := bytes.Repeat([]byte("sluice event body, somewhat repetitive: 0123456789 "), 8<<10)
	mixed := append(append(append([]byte{}, random[:100<<10]...), make([]byte, 2<<20)...), text...)
	for i := 0; i < len(mixed); i += 4096 {
		mixed[i] = byte(i >> 12)
	}
	for _, in := range [][]byte{random, text, make([]byte, 4<<20), mixed} {
		for lvl, enc := range []func(dst, src []byte) []byte{s2.Encode, s2.EncodeBetter, s2.EncodeBest} {
			blk := enc(nil, in)
			got, err := s2Walk(blk, len(in))
			if err != nil || got != len(in) {
				t.Fatalf("level %d, %d bytes: walk says %d, %v", lvl, len(in), got, err)
			}
			c, _ := NewCodec(CodecOptions{})
			out, err := c.uns2(nil, blk)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("level %d: round trip failed: %v", lvl, err)
			}
			// A claimed length one more than the tags produce is corrupt.
			bad := binary.AppendUvarint(nil, uint64(len(in)+1))
			_, hdr := binary.Uvarint(blk)
			bad = append(bad, blk[hdr:]...)
			if _, err := c.uns2(nil, bad); !errors.Is(err, wal.ErrCorrupt) {
				t.Fatalf("level %d: wrong length accepted: %v", lvl, err)
			}
		}
	}
}
