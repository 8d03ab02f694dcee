// Package crc32c computes CRC-32C (Castagnoli), the checksum of every WAL
// record, giving the same results as hash/crc32 with the Castagnoli table.
//
// On amd64 CPUs with AVX-512 and VPCLMULQDQ, buffers of 64 bytes or more are
// folded 256 bytes at a time with carry-less multiplication (see
// crc32c_amd64.s), about twice the rate of the CRC32 instruction that
// hash/crc32 uses. Everything else goes to hash/crc32.
package crc32c

import "hash/crc32"

// poly is the Castagnoli polynomial, bit-reflected (x^32 implied).
const poly = 0x82f63b78

var table = crc32.MakeTable(crc32.Castagnoli)

// Update returns the CRC-32C of p appended to data whose CRC-32C is crc, as
// crc32.Update(crc, crc32.MakeTable(crc32.Castagnoli), p) does.
func Update(crc uint32, p []byte) uint32 {
	if len(p) >= foldMin && hasFold {
		return ^foldUpdate(^crc, p, &foldK)
	}
	return crc32.Update(crc, table, p)
}

// Checksum returns the CRC-32C of p.
func Checksum(p []byte) uint32 { return Update(0, p) }

// xpow returns x^e mod P in the reflected 32-bit form (bit 31-d holds the
// coefficient of x^d).
func xpow(e int) uint32 {
	v := uint32(1) << 31 // x^0
	for range e {
		if v&1 != 0 {
			v = v>>1 ^ poly
		} else {
			v >>= 1
		}
	}
	return v
}

// foldPair returns the two multipliers that move a 128-bit chunk f bits
// further along the message. A chunk C is two little-endian quadwords:
// the low one (first 8 bytes) is the polynomial H of its first 64 message
// bits, the high one L of the last 64, so C = H·x^64 + L. Then
// C·x^f = H·x^(64+f) + L·x^f (mod P). PCLMULQDQ of two bit-reflected
// 64-bit operands yields their product bit-reflected in 127 bits, one power
// of x short of the 128-bit chunk layout, hence the exponents minus one. The
// constants are reflected into the high half of the quadword (bit 63-d holds
// x^d).
func foldPair(f int) [2]uint64 {
	return [2]uint64{uint64(xpow(64+f-1)) << 32, uint64(xpow(f-1)) << 32}
}

// foldConstants is the table foldUpdate reads; the layout is documented in
// crc32c_amd64.s.
func foldConstants() (k [18]uint64) {
	put := func(i, f int) { p := foldPair(f); k[i], k[i+1] = p[0], p[1] }
	put(0, 2048) // four accumulators, 256 bytes a step
	put(2, 512)  // one accumulator, 64 bytes a step
	put(4, 128)  // one lane, 16 bytes a step
	put(6, 384)  // lane 0 of 4 onto lane 3
	put(8, 256)  // lane 1
	put(10, 128) // lane 2; lane 3 (k[12], k[13]) stays zero
	put(14, 1536)
	put(16, 1024)
	return k
}

// foldK is computed once and only read.
var foldK = foldConstants()
