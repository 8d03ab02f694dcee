//go:build amd64 && !purego

package vgcm

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/cpu"
)

// supported is computed once at package initialisation and never modified.
var supported = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL &&
	cpu.X86.HasAVX512VAES && cpu.X86.HasAVX512VPCLMULQDQ &&
	cpu.X86.HasAVX && cpu.X86.HasAVX2 && cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ &&
	cpu.X86.HasBMI2

// hpEntries is the number of 16-byte entries of the GHASH key-power table.
// Entries 0..16 hold H^17..H^1; entries 17..22 are zero padding so that the
// assembly can always load whole 64-byte (4-lane) rows of the table.
const hpEntries = 23

// gcmCtx is the per-key state read by the assembly. Its layout is mirrored by
// the offsets in vgcm_amd64.s: rk at 0, hp at 240.
type gcmCtx struct {
	rk [15][16]byte        // AES-256 encryption round keys
	hp [hpEntries][16]byte // hp[i] = H^(17-i) in the asm representation (see .s)
}

type gcm struct {
	ctx gcmCtx
}

//go:noescape
func expandKeyAsm(key *byte, rk *[15][16]byte)

//go:noescape
func sealAsm(ctx *gcmCtx, dst, src *byte, n int, j0 *[16]byte, ad *byte, adLen int, tag *[16]byte)

//go:noescape
func openAsm(ctx *gcmCtx, dst, src *byte, n int, j0 *[16]byte, ad *byte, adLen int, tag *[16]byte)

func newGCM(key []byte) (cipher.AEAD, error) {
	g := new(gcm)
	expandKeyAsm(&key[0], &g.ctx.rk)

	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	var hb [16]byte
	blk.Encrypt(hb[:], hb[:])
	h := fieldElem{binary.BigEndian.Uint64(hb[0:8]), binary.BigEndian.Uint64(hb[8:16])}
	p := h
	for i := 1; i <= 17; i++ { // p = H^i
		lo, hi := asmRep(p)
		binary.LittleEndian.PutUint64(g.ctx.hp[17-i][0:8], lo)
		binary.LittleEndian.PutUint64(g.ctx.hp[17-i][8:16], hi)
		p = gfMul(p, h)
	}
	return g, nil
}

// fieldElem is an element of GF(2^128) in GCM's convention: hi holds bytes
// 0..7 of the block (big-endian), so the most significant bit of hi is the
// coefficient of x^0.
type fieldElem struct{ hi, lo uint64 }

// gfMul multiplies in GF(2^128) with GCM's bit order (NIST SP 800-38D,
// Algorithm 1). It is only used at key setup, so it is simple rather than fast
// (it has no secret-dependent branches or memory accesses).
func gfMul(x, y fieldElem) fieldElem {
	var z fieldElem
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = (x.hi >> (63 - i)) & 1
		} else {
			bit = (x.lo >> (127 - i)) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ (0xe100000000000000 & -lsb)
	}
	return z
}

// asmRep converts a field element a into the representation the assembly
// multiplies by: the byte-reflected value of a·x^-1 (see vgcm_amd64.s).
// Returned as the low and high 64-bit halves of the 128-bit register value.
func asmRep(a fieldElem) (lo, hi uint64) {
	// The big-endian integer of the block is the byte-swapped register value.
	hi, lo = a.hi, a.lo
	carry := hi >> 63
	hi = hi<<1 | lo>>63
	lo <<= 1
	hi ^= 0xc200000000000000 & -carry
	lo ^= 1 & -carry
	return lo, hi
}

func (g *gcm) NonceSize() int { return nonceSize }
func (g *gcm) Overhead() int  { return tagSize }

func (g *gcm) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != nonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if uint64(len(plaintext)) > maxPlaintext {
		panic("crypto/cipher: message too large for GCM")
	}
	ret, out := sliceForAppend(dst, len(plaintext)+tagSize)
	if inexactOverlap(out, plaintext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}
	var j0 [16]byte
	copy(j0[:12], nonce)
	j0[15] = 1
	n := len(plaintext)
	sealAsm(&g.ctx, unsafe.SliceData(out), unsafe.SliceData(plaintext), n, &j0,
		unsafe.SliceData(additionalData), len(additionalData), (*[16]byte)(out[n:]))
	return ret
}

func (g *gcm) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != nonceSize {
		panic("crypto/cipher: incorrect nonce length given to GCM")
	}
	if len(ciphertext) < tagSize {
		return nil, errOpen
	}
	if uint64(len(ciphertext)) > maxPlaintext+tagSize {
		return nil, errOpen
	}
	n := len(ciphertext) - tagSize
	tag := ciphertext[n:]
	ret, out := sliceForAppend(dst, n)
	if inexactOverlap(out, ciphertext) {
		panic("crypto/cipher: invalid buffer overlap of output and input")
	}
	if anyOverlap(out, additionalData) {
		panic("crypto/cipher: invalid buffer overlap of output and additional data")
	}
	var j0, expected [16]byte
	copy(j0[:12], nonce)
	j0[15] = 1
	openAsm(&g.ctx, unsafe.SliceData(out), unsafe.SliceData(ciphertext), n, &j0,
		unsafe.SliceData(additionalData), len(additionalData), &expected)
	if subtle.ConstantTimeCompare(expected[:], tag) != 1 {
		clear(out)
		return nil, errOpen
	}
	return ret, nil
}
