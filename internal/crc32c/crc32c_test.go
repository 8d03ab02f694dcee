package crc32c

import (
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func ref(crc uint32, p []byte) uint32 {
	return crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), p)
}

// TestUpdateMatchesHashCRC32 compares every length up to 2 KiB and random
// longer ones, at every alignment within a word and with random incoming
// states, against hash/crc32.
func TestUpdateMatchesHashCRC32(t *testing.T) {
	if !hasFold {
		t.Log("no AVX-512 VPCLMULQDQ here: checking the hash/crc32 fallback only")
	}
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70_000)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	check := func(crc uint32, p []byte) {
		t.Helper()
		if got, want := Update(crc, p), ref(crc, p); got != want {
			t.Fatalf("Update(%08x, %d bytes at %p) = %08x, hash/crc32 says %08x", crc, len(p), p, got, want)
		}
	}
	for n := 0; n <= 2048; n++ {
		for align := range 8 {
			check(r.Uint32(), buf[align:align+n])
		}
		check(0, buf[:n])
		check(0xffffffff, buf[:n])
	}
	for range 2000 {
		n := r.IntN(len(buf) - 16)
		off := r.IntN(len(buf) - n)
		check(r.Uint32(), buf[off:off+n])
	}
}

// TestUpdateSingleBits flips each bit of a 300-byte message in turn: every
// position must reach the result, with the right weight.
func TestUpdateSingleBits(t *testing.T) {
	for _, n := range []int{64, 79, 255, 256, 300, 600} {
		p := make([]byte, n)
		for bit := range n * 8 {
			p[bit/8] = 1 << (bit % 8)
			if got, want := Update(0, p), ref(0, p); got != want {
				t.Fatalf("%d bytes, bit %d set: %08x, want %08x", n, bit, got, want)
			}
			p[bit/8] = 0
		}
	}
}

// TestUpdateChained checks that splitting a message anywhere gives the same
// checksum as one call (records are checksummed as seed + header + payload).
func TestUpdateChained(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := make([]byte, 5000)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	want := ref(0, p)
	for range 500 {
		a := r.IntN(len(p))
		b := a + r.IntN(len(p)-a+1)
		if got := Update(Update(Update(0, p[:a]), p[a:b]), p[b:]); got != want {
			t.Fatalf("split at %d, %d: %08x, want %08x", a, b, got, want)
		}
	}
}

func TestChecksumKnownValue(t *testing.T) {
	// RFC 3720 (iSCSI) test vector: 32 bytes of zeros -> 0x8a9136aa.
	if got := Checksum(make([]byte, 32)); got != 0x8a9136aa {
		t.Fatalf("Checksum(32 zero bytes) = %08x, want 8a9136aa", got)
	}
	// And 4 KiB of 0xff, through the folding path.
	p := make([]byte, 4096)
	for i := range p {
		p[i] = 0xff
	}
	if got, want := Checksum(p), ref(0, p); got != want {
		t.Fatalf("Checksum(4 KiB of ff) = %08x, want %08x", got, want)
	}
}

func FuzzUpdate(f *testing.F) {
	f.Add(uint32(0), []byte("hello"))
	f.Add(uint32(7), make([]byte, 300))
	f.Fuzz(func(t *testing.T, crc uint32, p []byte) {
		if got, want := Update(crc, p), ref(crc, p); got != want {
			t.Fatalf("Update(%08x, %d bytes) = %08x, want %08x", crc, len(p), got, want)
		}
	})
}

func BenchmarkUpdate(b *testing.B) {
	for _, n := range []int{128, 1076, 4096, 256 << 10} {
		p := make([]byte, n)
		b.Run(fmt.Sprintf("hash-crc32/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			tab := crc32.MakeTable(crc32.Castagnoli)
			for b.Loop() {
				crc32.Update(0, tab, p)
			}
		})
		b.Run(fmt.Sprintf("crc32c/%d", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				Update(0, p)
			}
		})
	}
}
