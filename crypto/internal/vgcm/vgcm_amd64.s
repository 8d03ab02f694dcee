//go:build amd64 && !purego

// AES-256-GCM with VAES + VPCLMULQDQ on 512-bit (ZMM) registers.
//
// DATA REPRESENTATION
//
// GHASH works in GF(2^128) = GF(2)[x]/P, P = x^128 + x^7 + x^2 + x + 1, with
// GCM's bit order: bit 7 (0x80) of byte 0 of a block is the coefficient of
// x^0 and bit 0 of byte 15 is the coefficient of x^127.
//
// Every GHASH input block is byte-reversed with VPSHUFB (bswapMask) before
// use, so a 128-bit lane holds the block's big-endian integer: register bit i
// is the coefficient of x^(127-i) ("reflected" representation, R(a)).
//
// For reflected operands, the 256-bit carry-less product
// clmul(R(a), R(c)) has the coefficient of x^k in bit 254-k; read with the
// 256-bit reflected convention (bit j <-> x^(255-j)) it therefore represents
// a*c*x. The key powers are thus stored pre-divided by x:
//     hp[i] = R(H^(17-i) * x^-1 mod P),   i = 0..16,   hp[17..22] = 0,
// computed in Go as (R(H^k) << 1) ^ (carry ? 0xC2000000000000000000000000000001 : 0).
// Then clmul(R(X), hp[17-k]) represents X*H^k exactly, unreduced, 256 bits.
//
// Each product is formed schoolbook-style from four VPCLMULQDQs into three
// accumulators (per 128-bit lane): LO = a0*b0, HI = a1*b1, MID = a0*b1 ^ a1*b0
// (the 256-bit value is HI:0 ^ 0:MID:0 ^ 0:LO). Many products (up to 16
// blocks, plus the length block) are summed before one reduction
// ("aggregated reduction": X' = sum D_i * H^(n-i) with X folded into D_0).
//
// REDUCTION. Read a register as a polynomial in y (bit j = coefficient of
// y^j). A 256-bit product T that represents t(x) (bit j <-> x^(255-j)) is
// T(y) = y^255 t(1/y), and t = q*P + r (deg r < 128) turns into
//     T = Q*(y) * P*(y) + y^128 * R(r),   P*(y) = y^128 P(1/y)
//                                              = y^128 + y^127 + y^126 + y^121 + 1,
// so R(r) = T / y^128 mod P*, a Montgomery reduction. Since P* = 1 (mod y^64)
// it is done in two 64-bit folds. With K = 0xC200000000000000
// (y^63 + y^62 + y^57, i.e. (P* - 1 - y^128) / y^64) and T0..T3 the qwords of
// the product (T0 lowest; T1, T2 are spread over LO.hi/MID.lo, HI.lo/MID.hi):
//     M1 = clmul(LO.lo, K);  MID ^= swap64(LO) ^ M1     (adds T0*P*; clears T0)
//     M2 = clmul(MID.lo, K); HI  ^= swap64(MID) ^ M2    (adds T1'*P*y^64)
// after which HI is the reduced R(result). The four lanes are then XORed
// together (the reduction is linear, so reducing per lane first is fine).
//
// PIPELINING. The 256-byte main loops interleave, instruction by instruction,
// the 56 VAESENC/VAESENCLAST of 16 counter blocks with the GHASH of 16 blocks
// (Seal: the previous group's ciphertext; Open: the current group's input),
// so VAES and VPCLMULQDQ work overlaps. The final group of 1..256 bytes is
// hashed together with the length block (key powers H^(nb+1)..H^2 for the
// nb data blocks, H^1 for the length block) under a single reduction.
// Additional data is hashed 64 bytes at a time before the message.
//
// COUNTERS. J0 = nonce || 0x00000001. Counter blocks are kept in Z12 with the
// last dword byte-swapped (ctrMask) so VPADDD increments the 32-bit big-endian
// counter (inc32 semantics); VPSHUFB with the same mask restores the block
// before encryption. Lane i of a ZMM holds the i-th consecutive block.
//
// REGISTERS (seal/open)
//     Z16..Z30  AES round keys 0..14, each broadcast to all four lanes
//     Z31       E_K(J0) (lane 0), XORed into the tag at the end
//     Z15       byte-reversal shuffle mask      Z14  counter shuffle mask
//     Z13       temporary                       Z12  next counter blocks
//     Z11       GHASH state X (lane 0 only; upper lanes always zero)
//     Z8,Z9,Z10 GHASH accumulators LO, HI, MID
//     Z0..Z7    AES states, data, temporaries
//     K2, K3    byte masks for the final partial 64-byte chunks
//     AX ctx, SI src, DI dst, BX bytes left, R8/R9 AD pointer/bytes left,
//     R10 tag, R11 key-power row pointer, R12 n, R13 adLen, CX DX temps.
//
// Tails use masked (fault-suppressing) loads and stores, so no byte outside
// src[0:n], dst[0:n], ad[0:adLen] is ever read or written.

#include "textflag.h"

#define HP 240            // offset of gcmCtx.hp
#define HP_H1 496         // offset of hp[16] = H^1 (= HP + 16*16)

DATA bswapMask<>+0(SB)/8, $0x08090a0b0c0d0e0f
DATA bswapMask<>+8(SB)/8, $0x0001020304050607
GLOBL bswapMask<>(SB), RODATA|NOPTR, $16

DATA ctrMask<>+0(SB)/8, $0x0706050403020100
DATA ctrMask<>+8(SB)/8, $0x0c0d0e0f0b0a0908
GLOBL ctrMask<>(SB), RODATA|NOPTR, $16

DATA inc4<>+0(SB)/8, $0
DATA inc4<>+8(SB)/8, $0x0000000400000000
DATA inc4<>+16(SB)/8, $0
DATA inc4<>+24(SB)/8, $0x0000000400000000
DATA inc4<>+32(SB)/8, $0
DATA inc4<>+40(SB)/8, $0x0000000400000000
DATA inc4<>+48(SB)/8, $0
DATA inc4<>+56(SB)/8, $0x0000000400000000
GLOBL inc4<>(SB), RODATA|NOPTR, $64

// Lane i: dword 3 = i+1 (J0 has counter 1; data starts at counter 2).
DATA ctrInit<>+0(SB)/8, $0
DATA ctrInit<>+8(SB)/8, $0x0000000100000000
DATA ctrInit<>+16(SB)/8, $0
DATA ctrInit<>+24(SB)/8, $0x0000000200000000
DATA ctrInit<>+32(SB)/8, $0
DATA ctrInit<>+40(SB)/8, $0x0000000300000000
DATA ctrInit<>+48(SB)/8, $0
DATA ctrInit<>+56(SB)/8, $0x0000000400000000
GLOBL ctrInit<>(SB), RODATA|NOPTR, $64

DATA polyK<>+0(SB)/8, $0xc200000000000000
DATA polyK<>+8(SB)/8, $0xc200000000000000
DATA polyK<>+16(SB)/8, $0xc200000000000000
DATA polyK<>+24(SB)/8, $0xc200000000000000
DATA polyK<>+32(SB)/8, $0xc200000000000000
DATA polyK<>+40(SB)/8, $0xc200000000000000
DATA polyK<>+48(SB)/8, $0xc200000000000000
DATA polyK<>+56(SB)/8, $0xc200000000000000
GLOBL polyK<>(SB), RODATA|NOPTR, $64

// ---------------------------------------------------------------------------
// Key expansion (AES-256), standard AESKEYGENASSIST schedule.

// Even round key: X1 = prefix-xor(X1) ^ RotWord(SubWord(X3.w3)) ^ rcon.
#define EXPA(rcon, off) \
	VAESKEYGENASSIST rcon, X3, X2; \
	VPSHUFD $0xff, X2, X2; \
	VPSLLDQ $4, X1, X4; \
	VPXOR X4, X1, X1; \
	VPSLLDQ $4, X4, X4; \
	VPXOR X4, X1, X1; \
	VPSLLDQ $4, X4, X4; \
	VPXOR X4, X1, X1; \
	VPXOR X2, X1, X1; \
	VMOVDQU X1, off(DX)

// Odd round key: X3 = prefix-xor(X3) ^ SubWord(X1.w3).
#define EXPB(off) \
	VAESKEYGENASSIST $0, X1, X2; \
	VPSHUFD $0xaa, X2, X2; \
	VPSLLDQ $4, X3, X4; \
	VPXOR X4, X3, X3; \
	VPSLLDQ $4, X4, X4; \
	VPXOR X4, X3, X3; \
	VPSLLDQ $4, X4, X4; \
	VPXOR X4, X3, X3; \
	VPXOR X2, X3, X3; \
	VMOVDQU X3, off(DX)

// ---------------------------------------------------------------------------
// Shared macros for seal/open.

#define ROUND4(k) \
	VAESENC k, Z0, Z0; \
	VAESENC k, Z1, Z1; \
	VAESENC k, Z2, Z2; \
	VAESENC k, Z3, Z3

// AES-256 on Z0..Z3 (16 blocks).
#define AES4 \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	VPXORQ Z16, Z2, Z2; \
	VPXORQ Z16, Z3, Z3; \
	ROUND4(Z17); ROUND4(Z18); ROUND4(Z19); ROUND4(Z20); \
	ROUND4(Z21); ROUND4(Z22); ROUND4(Z23); ROUND4(Z24); \
	ROUND4(Z25); ROUND4(Z26); ROUND4(Z27); ROUND4(Z28); \
	ROUND4(Z29); \
	VAESENCLAST Z30, Z0, Z0; \
	VAESENCLAST Z30, Z1, Z1; \
	VAESENCLAST Z30, Z2, Z2; \
	VAESENCLAST Z30, Z3, Z3

#define ROUND2(k) \
	VAESENC k, Z0, Z0; \
	VAESENC k, Z1, Z1

// AES-256 on Z0, Z1 (8 blocks).
#define AES2 \
	VPXORQ Z16, Z0, Z0; \
	VPXORQ Z16, Z1, Z1; \
	ROUND2(Z17); ROUND2(Z18); ROUND2(Z19); ROUND2(Z20); \
	ROUND2(Z21); ROUND2(Z22); ROUND2(Z23); ROUND2(Z24); \
	ROUND2(Z25); ROUND2(Z26); ROUND2(Z27); ROUND2(Z28); \
	ROUND2(Z29); \
	VAESENCLAST Z30, Z0, Z0; \
	VAESENCLAST Z30, Z1, Z1

// AES-256 on Z0 (4 blocks).
#define AES1 \
	VPXORQ Z16, Z0, Z0; \
	VAESENC Z17, Z0, Z0; VAESENC Z18, Z0, Z0; VAESENC Z19, Z0, Z0; \
	VAESENC Z20, Z0, Z0; VAESENC Z21, Z0, Z0; VAESENC Z22, Z0, Z0; \
	VAESENC Z23, Z0, Z0; VAESENC Z24, Z0, Z0; VAESENC Z25, Z0, Z0; \
	VAESENC Z26, Z0, Z0; VAESENC Z27, Z0, Z0; VAESENC Z28, Z0, Z0; \
	VAESENC Z29, Z0, Z0; \
	VAESENCLAST Z30, Z0, Z0

// Next 16 / 8 / 4 counter blocks into Z0..Z3 / Z0,Z1 / Z0.
#define CTR4 \
	VPSHUFB Z14, Z12, Z0; \
	VPADDD inc4<>(SB), Z12, Z12; \
	VPSHUFB Z14, Z12, Z1; \
	VPADDD inc4<>(SB), Z12, Z12; \
	VPSHUFB Z14, Z12, Z2; \
	VPADDD inc4<>(SB), Z12, Z12; \
	VPSHUFB Z14, Z12, Z3; \
	VPADDD inc4<>(SB), Z12, Z12

#define CTR2 \
	VPSHUFB Z14, Z12, Z0; \
	VPADDD inc4<>(SB), Z12, Z12; \
	VPSHUFB Z14, Z12, Z1

#define CTR1 \
	VPSHUFB Z14, Z12, Z0

// GHASH products of the 4 (byte-reversed) blocks in D with the key-power row
// at off(B). GH_FIRST initialises LO/HI/MID (Z8/Z9/Z10), GH_NEXT accumulates.
// D is clobbered.
#define GH_FIRST(off, B, D) \
	VPCLMULQDQ $0x00, off(B), D, Z8; \
	VPCLMULQDQ $0x11, off(B), D, Z9; \
	VPCLMULQDQ $0x01, off(B), D, Z10; \
	VPCLMULQDQ $0x10, off(B), D, D; \
	VPXORQ D, Z10, Z10

#define GH_NEXT(off, B, D, T) \
	VPCLMULQDQ $0x00, off(B), D, T; \
	VPXORQ T, Z8, Z8; \
	VPCLMULQDQ $0x11, off(B), D, T; \
	VPXORQ T, Z9, Z9; \
	VPCLMULQDQ $0x01, off(B), D, T; \
	VPCLMULQDQ $0x10, off(B), D, D; \
	VPTERNLOGD $0x96, T, D, Z10

// Reduce LO/HI/MID (per lane) and sum the four lanes into X11. Clobbers Z0,
// Z8, Z9, Z10.
#define REDUCE \
	VPCLMULQDQ $0x00, polyK<>(SB), Z8, Z0; \
	VPSHUFD $0x4e, Z8, Z8; \
	VPTERNLOGD $0x96, Z0, Z8, Z10; \
	VPCLMULQDQ $0x00, polyK<>(SB), Z10, Z0; \
	VPSHUFD $0x4e, Z10, Z10; \
	VPTERNLOGD $0x96, Z0, Z10, Z9; \
	VEXTRACTI64X4 $1, Z9, Y0; \
	VPXOR Y0, Y9, Y9; \
	VEXTRACTI128 $1, Y9, X0; \
	VPXOR X0, X9, X11

#define BSWAP4(a, b, c, d) \
	VPSHUFB Z15, a, a; \
	VPSHUFB Z15, b, b; \
	VPSHUFB Z15, c, c; \
	VPSHUFB Z15, d, d

// With the arguments loaded (see register list): load round keys and
// constants, compute E_K(J0) into X31 and the first counters into Z12,
// set X11 = 0 and DX = -1 (for BZHI masks).
#define SETUP \
	MOVQ BX, R12; \
	MOVQ R9, R13; \
	VBROADCASTI32X4 0(AX), Z16; \
	VBROADCASTI32X4 16(AX), Z17; \
	VBROADCASTI32X4 32(AX), Z18; \
	VBROADCASTI32X4 48(AX), Z19; \
	VBROADCASTI32X4 64(AX), Z20; \
	VBROADCASTI32X4 80(AX), Z21; \
	VBROADCASTI32X4 96(AX), Z22; \
	VBROADCASTI32X4 112(AX), Z23; \
	VBROADCASTI32X4 128(AX), Z24; \
	VBROADCASTI32X4 144(AX), Z25; \
	VBROADCASTI32X4 160(AX), Z26; \
	VBROADCASTI32X4 176(AX), Z27; \
	VBROADCASTI32X4 192(AX), Z28; \
	VBROADCASTI32X4 208(AX), Z29; \
	VBROADCASTI32X4 224(AX), Z30; \
	VBROADCASTI32X4 bswapMask<>(SB), Z15; \
	VBROADCASTI32X4 ctrMask<>(SB), Z14; \
	VMOVDQU64 0(DX), X31; \
	VBROADCASTI32X4 0(DX), Z12; \
	VPXORQ X16, X31, X31; \
	VAESENC X17, X31, X31; \
	VAESENC X18, X31, X31; \
	VAESENC X19, X31, X31; \
	VAESENC X20, X31, X31; \
	VAESENC X21, X31, X31; \
	VAESENC X22, X31, X31; \
	VAESENC X23, X31, X31; \
	VAESENC X24, X31, X31; \
	VAESENC X25, X31, X31; \
	VAESENC X26, X31, X31; \
	VAESENC X27, X31, X31; \
	VAESENC X28, X31, X31; \
	VAESENC X29, X31, X31; \
	VAESENCLAST X30, X31, X31; \
	VPSHUFB Z14, Z12, Z12; \
	VPADDD ctrInit<>(SB), Z12, Z12; \
	VPXOR X11, X11, X11; \
	MOVQ $-1, DX

// GHASH one chunk of up to 64 bytes of additional data (R8, R9 bytes left)
// into X11, using key powers H^nb..H^1 for its nb blocks.
#define AD_CHUNK \
	MOVQ $64, CX; \
	CMPQ R9, CX; \
	CMOVQLT R9, CX; \
	BZHIQ CX, DX, R11; \
	KMOVQ R11, K1; \
	VMOVDQU8.Z 0(R8), K1, Z1; \
	VPSHUFB Z15, Z1, Z1; \
	VPXORQ Z11, Z1, Z1; \
	LEAQ 15(CX), R11; \
	ANDQ $-16, R11; \
	NEGQ R11; \
	ADDQ AX, R11; \
	GH_FIRST(HP_H1+16, R11, Z1); \
	REDUCE; \
	ADDQ CX, R8; \
	SUBQ CX, R9

// Length block: R(len(A)*8 || len(C)*8) = [lo: n*8, hi: adLen*8] into X7.
#define LENBLOCK \
	MOVQ R12, CX; \
	SHLQ $3, CX; \
	MOVQ CX, X7; \
	MOVQ R13, CX; \
	SHLQ $3, CX; \
	VPINSRQ $1, CX, X7, X7

// Multiply the length block (X7) by H^1 and add into the accumulators, then
// reduce into X11. Used after a final data group.
#define FINAL_WITH_DATA \
	LENBLOCK; \
	VPCLMULQDQ $0x00, HP_H1(AX), X7, X4; \
	VPCLMULQDQ $0x11, HP_H1(AX), X7, X5; \
	VPXORQ Z4, Z8, Z8; \
	VPXORQ Z5, Z9, Z9; \
	VPCLMULQDQ $0x01, HP_H1(AX), X7, X4; \
	VPCLMULQDQ $0x10, HP_H1(AX), X7, X5; \
	VPTERNLOGD $0x96, Z4, Z5, Z10; \
	REDUCE

// No data: X11 = (X11 ^ L) * H.
#define FINAL_NO_DATA \
	LENBLOCK; \
	VPXOR X11, X7, X7; \
	VPCLMULQDQ $0x00, HP_H1(AX), X7, X8; \
	VPCLMULQDQ $0x11, HP_H1(AX), X7, X9; \
	VPCLMULQDQ $0x01, HP_H1(AX), X7, X10; \
	VPCLMULQDQ $0x10, HP_H1(AX), X7, X4; \
	VPXOR X4, X10, X10; \
	REDUCE

// R11 = key-power row for the final group of nb = ceil(BX/16) blocks plus
// the length block: H^(nb+1) is at hp[16-nb].
#define TAIL_SETUP \
	LEAQ 15(BX), CX; \
	ANDQ $-16, CX; \
	NEGQ CX; \
	LEAQ HP_H1(AX)(CX*1), R11; \
	MOVQ $-1, DX

// WRITE_TAG stores the tag and returns. Z16..Z31 (round keys, E_K(J0)) are
// zeroed first: no key material is left in registers that VZEROUPPER does
// not clear.
#define WRITE_TAG \
	VPSHUFB X15, X11, X11; \
	VPXORQ X31, X11, X11; \
	VMOVDQU X11, 0(R10); \
	VPXORD Z16, Z16, Z16; \
	VPXORD Z17, Z17, Z17; \
	VPXORD Z18, Z18, Z18; \
	VPXORD Z19, Z19, Z19; \
	VPXORD Z20, Z20, Z20; \
	VPXORD Z21, Z21, Z21; \
	VPXORD Z22, Z22, Z22; \
	VPXORD Z23, Z23, Z23; \
	VPXORD Z24, Z24, Z24; \
	VPXORD Z25, Z25, Z25; \
	VPXORD Z26, Z26, Z26; \
	VPXORD Z27, Z27, Z27; \
	VPXORD Z28, Z28, Z28; \
	VPXORD Z29, Z29, Z29; \
	VPXORD Z30, Z30, Z30; \
	VPXORD Z31, Z31, Z31; \
	VZEROUPPER; \
	RET

// ---------------------------------------------------------------------------
// func sealAsm(ctx *gcmCtx, dst, src *byte, n int, j0 *[16]byte, ad *byte, adLen int, tag *[16]byte)
TEXT ·sealAsm(SB), NOSPLIT, $0-64
	MOVQ ctx+0(FP), AX
	MOVQ dst+8(FP), DI
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), BX
	MOVQ j0+32(FP), DX
	MOVQ ad+40(FP), R8
	MOVQ adLen+48(FP), R9
	MOVQ tag+56(FP), R10
	SETUP

sealAdLoop:
	TESTQ R9, R9
	JZ    sealAdDone
	AD_CHUNK
	JMP   sealAdLoop

sealAdDone:
	LEAQ (HP+16)(AX), R11

	// The main loop is software-pipelined: each iteration GHASHes the
	// previous 16 ciphertext blocks (byte-reversed in Z4..Z7) while
	// encrypting the next 16.
	CMPQ BX, $256
	JBE  sealTail
	CTR4
	AES4
	VPXORQ    0(SI), Z0, Z0
	VPXORQ    64(SI), Z1, Z1
	VPXORQ    128(SI), Z2, Z2
	VPXORQ    192(SI), Z3, Z3
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	VPSHUFB   Z15, Z0, Z4
	VPSHUFB   Z15, Z1, Z5
	VPSHUFB   Z15, Z2, Z6
	VPSHUFB   Z15, Z3, Z7
	ADDQ      $256, SI
	ADDQ      $256, DI
	SUBQ      $256, BX

sealLoop:
	CMPQ BX, $256
	JBE  sealLoopDone
	// Interleaved: CTR4 + AES4 of this group, GH + REDUCE of the previous one.
	VPSHUFB Z14, Z12, Z0
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z1
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z2
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z3
	VPADDD inc4<>(SB), Z12, Z12
	VPXORQ Z16, Z0, Z0
	VPXORQ Z16, Z1, Z1
	VPXORQ Z16, Z2, Z2
	VPXORQ Z16, Z3, Z3
	VAESENC Z17, Z0, Z0
	VAESENC Z17, Z1, Z1
	VAESENC Z17, Z2, Z2
	VAESENC Z17, Z3, Z3
	VPXORQ Z11, Z4, Z4
	VPCLMULQDQ $0x00, 0(R11), Z4, Z8
	VPCLMULQDQ $0x11, 0(R11), Z4, Z9
	VAESENC Z18, Z0, Z0
	VAESENC Z18, Z1, Z1
	VAESENC Z18, Z2, Z2
	VAESENC Z18, Z3, Z3
	VPCLMULQDQ $0x01, 0(R11), Z4, Z10
	VPCLMULQDQ $0x10, 0(R11), Z4, Z4
	VPXORQ Z4, Z10, Z10
	VAESENC Z19, Z0, Z0
	VAESENC Z19, Z1, Z1
	VAESENC Z19, Z2, Z2
	VAESENC Z19, Z3, Z3
	VPCLMULQDQ $0x00, 64(R11), Z5, Z13
	VPXORQ Z13, Z8, Z8
	VPCLMULQDQ $0x11, 64(R11), Z5, Z13
	VAESENC Z20, Z0, Z0
	VAESENC Z20, Z1, Z1
	VAESENC Z20, Z2, Z2
	VAESENC Z20, Z3, Z3
	VPXORQ Z13, Z9, Z9
	VPCLMULQDQ $0x01, 64(R11), Z5, Z13
	VPCLMULQDQ $0x10, 64(R11), Z5, Z5
	VAESENC Z21, Z0, Z0
	VAESENC Z21, Z1, Z1
	VAESENC Z21, Z2, Z2
	VAESENC Z21, Z3, Z3
	VPTERNLOGD $0x96, Z13, Z5, Z10
	VPCLMULQDQ $0x00, 128(R11), Z6, Z13
	VPXORQ Z13, Z8, Z8
	VAESENC Z22, Z0, Z0
	VAESENC Z22, Z1, Z1
	VAESENC Z22, Z2, Z2
	VAESENC Z22, Z3, Z3
	VPCLMULQDQ $0x11, 128(R11), Z6, Z13
	VPXORQ Z13, Z9, Z9
	VPCLMULQDQ $0x01, 128(R11), Z6, Z13
	VAESENC Z23, Z0, Z0
	VAESENC Z23, Z1, Z1
	VAESENC Z23, Z2, Z2
	VAESENC Z23, Z3, Z3
	VPCLMULQDQ $0x10, 128(R11), Z6, Z6
	VPTERNLOGD $0x96, Z13, Z6, Z10
	VPCLMULQDQ $0x00, 192(R11), Z7, Z13
	VAESENC Z24, Z0, Z0
	VAESENC Z24, Z1, Z1
	VAESENC Z24, Z2, Z2
	VAESENC Z24, Z3, Z3
	VPXORQ Z13, Z8, Z8
	VPCLMULQDQ $0x11, 192(R11), Z7, Z13
	VPXORQ Z13, Z9, Z9
	VAESENC Z25, Z0, Z0
	VAESENC Z25, Z1, Z1
	VAESENC Z25, Z2, Z2
	VAESENC Z25, Z3, Z3
	VPCLMULQDQ $0x01, 192(R11), Z7, Z13
	VPCLMULQDQ $0x10, 192(R11), Z7, Z7
	VPTERNLOGD $0x96, Z13, Z7, Z10
	VAESENC Z26, Z0, Z0
	VAESENC Z26, Z1, Z1
	VAESENC Z26, Z2, Z2
	VAESENC Z26, Z3, Z3
	VPCLMULQDQ $0x00, polyK<>(SB), Z8, Z13
	VPSHUFD $0x4e, Z8, Z8
	VPTERNLOGD $0x96, Z13, Z8, Z10
	VAESENC Z27, Z0, Z0
	VAESENC Z27, Z1, Z1
	VAESENC Z27, Z2, Z2
	VAESENC Z27, Z3, Z3
	VPCLMULQDQ $0x00, polyK<>(SB), Z10, Z13
	VPSHUFD $0x4e, Z10, Z10
	VPTERNLOGD $0x96, Z13, Z10, Z9
	VAESENC Z28, Z0, Z0
	VAESENC Z28, Z1, Z1
	VAESENC Z28, Z2, Z2
	VAESENC Z28, Z3, Z3
	VEXTRACTI64X4 $1, Z9, Y13
	VPXOR Y13, Y9, Y9
	VAESENC Z29, Z0, Z0
	VAESENC Z29, Z1, Z1
	VAESENC Z29, Z2, Z2
	VAESENC Z29, Z3, Z3
	VEXTRACTI128 $1, Y9, X13
	VPXOR X13, X9, X11
	VAESENCLAST Z30, Z0, Z0
	VAESENCLAST Z30, Z1, Z1
	VAESENCLAST Z30, Z2, Z2
	VAESENCLAST Z30, Z3, Z3
	VPXORQ    0(SI), Z0, Z0
	VPXORQ    64(SI), Z1, Z1
	VPXORQ    128(SI), Z2, Z2
	VPXORQ    192(SI), Z3, Z3
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	VPSHUFB   Z15, Z0, Z4
	VPSHUFB   Z15, Z1, Z5
	VPSHUFB   Z15, Z2, Z6
	VPSHUFB   Z15, Z3, Z7
	ADDQ      $256, SI
	ADDQ      $256, DI
	SUBQ      $256, BX
	JMP       sealLoop

sealLoopDone:
	// GHASH the last pending 16 blocks.
	VPXORQ Z11, Z4, Z4
	GH_FIRST(0, R11, Z4)
	GH_NEXT(64, R11, Z5, Z13)
	GH_NEXT(128, R11, Z6, Z13)
	GH_NEXT(192, R11, Z7, Z13)
	REDUCE

sealTail:
	TAIL_SETUP
	TESTQ BX, BX
	JZ    sealNoData
	CMPQ  BX, $64
	JBE   sealTail1
	CMPQ  BX, $128
	JBE   sealTail2

	// 129..256 bytes: chunks 0,1 full; chunk 2 has min(BX-128, 64) bytes
	// (BZHI leaves all bits for indices >= 64), chunk 3 max(BX-192, 0).
	LEAQ    -128(BX), CX
	BZHIQ   CX, DX, R9
	KMOVQ   R9, K2
	LEAQ    -192(BX), CX
	XORQ    R9, R9
	CMPQ    CX, $0
	CMOVQLT R9, CX
	BZHIQ   CX, DX, R9
	KMOVQ   R9, K3
	CTR4
	AES4
	VPXORQ     0(SI), Z0, Z0
	VPXORQ     64(SI), Z1, Z1
	VMOVDQU8.Z 128(SI), K2, Z4
	VMOVDQU8.Z 192(SI), K3, Z5
	VPXORQ     Z4, Z2, Z2
	VPXORQ     Z5, Z3, Z3
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU64  Z1, 64(DI)
	VMOVDQU8   Z2, K2, 128(DI)
	VMOVDQU8   Z3, K3, 192(DI)
	VMOVDQU8.Z Z2, K2, Z2
	VMOVDQU8.Z Z3, K3, Z3
	BSWAP4(Z0, Z1, Z2, Z3)
	VPXORQ     Z11, Z0, Z0
	GH_FIRST(0, R11, Z0)
	GH_NEXT(64, R11, Z1, Z4)
	GH_NEXT(128, R11, Z2, Z4)
	GH_NEXT(192, R11, Z3, Z4)
	FINAL_WITH_DATA
	WRITE_TAG

sealTail2:
	// 65..128 bytes.
	LEAQ       -64(BX), CX
	BZHIQ      CX, DX, R9
	KMOVQ      R9, K2
	CTR2
	AES2
	VPXORQ     0(SI), Z0, Z0
	VMOVDQU8.Z 64(SI), K2, Z4
	VPXORQ     Z4, Z1, Z1
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU8   Z1, K2, 64(DI)
	VMOVDQU8.Z Z1, K2, Z1
	VPSHUFB    Z15, Z0, Z0
	VPSHUFB    Z15, Z1, Z1
	VPXORQ     Z11, Z0, Z0
	GH_FIRST(0, R11, Z0)
	GH_NEXT(64, R11, Z1, Z4)
	FINAL_WITH_DATA
	WRITE_TAG

sealTail1:
	// 1..64 bytes.
	BZHIQ      BX, DX, R9
	KMOVQ      R9, K2
	CTR1
	AES1
	VMOVDQU8.Z 0(SI), K2, Z4
	VPXORQ     Z4, Z0, Z0
	VMOVDQU8   Z0, K2, 0(DI)
	VMOVDQU8.Z Z0, K2, Z0
	VPSHUFB    Z15, Z0, Z0
	VPXORQ     Z11, Z0, Z0
	GH_FIRST(0, R11, Z0)
	FINAL_WITH_DATA
	WRITE_TAG

sealNoData:
	FINAL_NO_DATA
	WRITE_TAG

// ---------------------------------------------------------------------------
// func openAsm(ctx *gcmCtx, dst, src *byte, n int, j0 *[16]byte, ad *byte, adLen int, tag *[16]byte)
// Decrypts src[0:n] into dst and writes the expected tag to *tag.
TEXT ·openAsm(SB), NOSPLIT, $0-64
	MOVQ ctx+0(FP), AX
	MOVQ dst+8(FP), DI
	MOVQ src+16(FP), SI
	MOVQ n+24(FP), BX
	MOVQ j0+32(FP), DX
	MOVQ ad+40(FP), R8
	MOVQ adLen+48(FP), R9
	MOVQ tag+56(FP), R10
	SETUP

openAdLoop:
	TESTQ R9, R9
	JZ    openAdDone
	AD_CHUNK
	JMP   openAdLoop

openAdDone:
	LEAQ (HP+16)(AX), R11

openLoop:
	CMPQ BX, $256
	JBE  openTail
	VMOVDQU64 0(SI), Z4
	VMOVDQU64 64(SI), Z5
	VMOVDQU64 128(SI), Z6
	VMOVDQU64 192(SI), Z7
	BSWAP4(Z4, Z5, Z6, Z7)
	// Interleaved: CTR4 + AES4 and GH + REDUCE of this group's ciphertext.
	VPSHUFB Z14, Z12, Z0
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z1
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z2
	VPADDD inc4<>(SB), Z12, Z12
	VPSHUFB Z14, Z12, Z3
	VPADDD inc4<>(SB), Z12, Z12
	VPXORQ Z16, Z0, Z0
	VPXORQ Z16, Z1, Z1
	VPXORQ Z16, Z2, Z2
	VPXORQ Z16, Z3, Z3
	VAESENC Z17, Z0, Z0
	VAESENC Z17, Z1, Z1
	VAESENC Z17, Z2, Z2
	VAESENC Z17, Z3, Z3
	VPXORQ Z11, Z4, Z4
	VPCLMULQDQ $0x00, 0(R11), Z4, Z8
	VPCLMULQDQ $0x11, 0(R11), Z4, Z9
	VAESENC Z18, Z0, Z0
	VAESENC Z18, Z1, Z1
	VAESENC Z18, Z2, Z2
	VAESENC Z18, Z3, Z3
	VPCLMULQDQ $0x01, 0(R11), Z4, Z10
	VPCLMULQDQ $0x10, 0(R11), Z4, Z4
	VPXORQ Z4, Z10, Z10
	VAESENC Z19, Z0, Z0
	VAESENC Z19, Z1, Z1
	VAESENC Z19, Z2, Z2
	VAESENC Z19, Z3, Z3
	VPCLMULQDQ $0x00, 64(R11), Z5, Z13
	VPXORQ Z13, Z8, Z8
	VPCLMULQDQ $0x11, 64(R11), Z5, Z13
	VAESENC Z20, Z0, Z0
	VAESENC Z20, Z1, Z1
	VAESENC Z20, Z2, Z2
	VAESENC Z20, Z3, Z3
	VPXORQ Z13, Z9, Z9
	VPCLMULQDQ $0x01, 64(R11), Z5, Z13
	VPCLMULQDQ $0x10, 64(R11), Z5, Z5
	VAESENC Z21, Z0, Z0
	VAESENC Z21, Z1, Z1
	VAESENC Z21, Z2, Z2
	VAESENC Z21, Z3, Z3
	VPTERNLOGD $0x96, Z13, Z5, Z10
	VPCLMULQDQ $0x00, 128(R11), Z6, Z13
	VPXORQ Z13, Z8, Z8
	VAESENC Z22, Z0, Z0
	VAESENC Z22, Z1, Z1
	VAESENC Z22, Z2, Z2
	VAESENC Z22, Z3, Z3
	VPCLMULQDQ $0x11, 128(R11), Z6, Z13
	VPXORQ Z13, Z9, Z9
	VPCLMULQDQ $0x01, 128(R11), Z6, Z13
	VAESENC Z23, Z0, Z0
	VAESENC Z23, Z1, Z1
	VAESENC Z23, Z2, Z2
	VAESENC Z23, Z3, Z3
	VPCLMULQDQ $0x10, 128(R11), Z6, Z6
	VPTERNLOGD $0x96, Z13, Z6, Z10
	VPCLMULQDQ $0x00, 192(R11), Z7, Z13
	VAESENC Z24, Z0, Z0
	VAESENC Z24, Z1, Z1
	VAESENC Z24, Z2, Z2
	VAESENC Z24, Z3, Z3
	VPXORQ Z13, Z8, Z8
	VPCLMULQDQ $0x11, 192(R11), Z7, Z13
	VPXORQ Z13, Z9, Z9
	VAESENC Z25, Z0, Z0
	VAESENC Z25, Z1, Z1
	VAESENC Z25, Z2, Z2
	VAESENC Z25, Z3, Z3
	VPCLMULQDQ $0x01, 192(R11), Z7, Z13
	VPCLMULQDQ $0x10, 192(R11), Z7, Z7
	VPTERNLOGD $0x96, Z13, Z7, Z10
	VAESENC Z26, Z0, Z0
	VAESENC Z26, Z1, Z1
	VAESENC Z26, Z2, Z2
	VAESENC Z26, Z3, Z3
	VPCLMULQDQ $0x00, polyK<>(SB), Z8, Z13
	VPSHUFD $0x4e, Z8, Z8
	VPTERNLOGD $0x96, Z13, Z8, Z10
	VAESENC Z27, Z0, Z0
	VAESENC Z27, Z1, Z1
	VAESENC Z27, Z2, Z2
	VAESENC Z27, Z3, Z3
	VPCLMULQDQ $0x00, polyK<>(SB), Z10, Z13
	VPSHUFD $0x4e, Z10, Z10
	VPTERNLOGD $0x96, Z13, Z10, Z9
	VAESENC Z28, Z0, Z0
	VAESENC Z28, Z1, Z1
	VAESENC Z28, Z2, Z2
	VAESENC Z28, Z3, Z3
	VEXTRACTI64X4 $1, Z9, Y13
	VPXOR Y13, Y9, Y9
	VAESENC Z29, Z0, Z0
	VAESENC Z29, Z1, Z1
	VAESENC Z29, Z2, Z2
	VAESENC Z29, Z3, Z3
	VEXTRACTI128 $1, Y9, X13
	VPXOR X13, X9, X11
	VAESENCLAST Z30, Z0, Z0
	VAESENCLAST Z30, Z1, Z1
	VAESENCLAST Z30, Z2, Z2
	VAESENCLAST Z30, Z3, Z3
	VPXORQ 0(SI), Z0, Z0
	VPXORQ 64(SI), Z1, Z1
	VPXORQ 128(SI), Z2, Z2
	VPXORQ 192(SI), Z3, Z3
	VMOVDQU64 Z0, 0(DI)
	VMOVDQU64 Z1, 64(DI)
	VMOVDQU64 Z2, 128(DI)
	VMOVDQU64 Z3, 192(DI)
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $256, BX
	JMP  openLoop

openTail:
	TAIL_SETUP
	TESTQ BX, BX
	JZ    openNoData
	CMPQ  BX, $64
	JBE   openTail1
	CMPQ  BX, $128
	JBE   openTail2

	// 129..256 bytes (see sealTail).
	LEAQ    -128(BX), CX
	BZHIQ   CX, DX, R9
	KMOVQ   R9, K2
	LEAQ    -192(BX), CX
	XORQ    R9, R9
	CMPQ    CX, $0
	CMOVQLT R9, CX
	BZHIQ   CX, DX, R9
	KMOVQ   R9, K3
	VMOVDQU64  0(SI), Z4
	VMOVDQU64  64(SI), Z5
	VMOVDQU8.Z 128(SI), K2, Z6
	VMOVDQU8.Z 192(SI), K3, Z7
	CTR4
	AES4
	VPXORQ     Z4, Z0, Z0
	VPXORQ     Z5, Z1, Z1
	VPXORQ     Z6, Z2, Z2
	VPXORQ     Z7, Z3, Z3
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU64  Z1, 64(DI)
	VMOVDQU8   Z2, K2, 128(DI)
	VMOVDQU8   Z3, K3, 192(DI)
	BSWAP4(Z4, Z5, Z6, Z7)
	VPXORQ     Z11, Z4, Z4
	GH_FIRST(0, R11, Z4)
	GH_NEXT(64, R11, Z5, Z0)
	GH_NEXT(128, R11, Z6, Z0)
	GH_NEXT(192, R11, Z7, Z0)
	FINAL_WITH_DATA
	WRITE_TAG

openTail2:
	// 65..128 bytes.
	LEAQ       -64(BX), CX
	BZHIQ      CX, DX, R9
	KMOVQ      R9, K2
	VMOVDQU64  0(SI), Z4
	VMOVDQU8.Z 64(SI), K2, Z5
	CTR2
	AES2
	VPXORQ     Z4, Z0, Z0
	VPXORQ     Z5, Z1, Z1
	VMOVDQU64  Z0, 0(DI)
	VMOVDQU8   Z1, K2, 64(DI)
	VPSHUFB    Z15, Z4, Z4
	VPSHUFB    Z15, Z5, Z5
	VPXORQ     Z11, Z4, Z4
	GH_FIRST(0, R11, Z4)
	GH_NEXT(64, R11, Z5, Z0)
	FINAL_WITH_DATA
	WRITE_TAG

openTail1:
	// 1..64 bytes.
	BZHIQ      BX, DX, R9
	KMOVQ      R9, K2
	VMOVDQU8.Z 0(SI), K2, Z4
	CTR1
	AES1
	VPXORQ     Z4, Z0, Z0
	VMOVDQU8   Z0, K2, 0(DI)
	VPSHUFB    Z15, Z4, Z4
	VPXORQ     Z11, Z4, Z4
	GH_FIRST(0, R11, Z4)
	FINAL_WITH_DATA
	WRITE_TAG

openNoData:
	FINAL_NO_DATA
	WRITE_TAG

// ---------------------------------------------------------------------------
// func expandKeyAsm(key *byte, rk *[15][16]byte)
TEXT ·expandKeyAsm(SB), NOSPLIT, $0-16
	MOVQ key+0(FP), AX
	MOVQ rk+8(FP), DX
	VMOVDQU 0(AX), X1
	VMOVDQU 16(AX), X3
	VMOVDQU X1, 0(DX)
	VMOVDQU X3, 16(DX)
	EXPA($0x01, 32)
	EXPB(48)
	EXPA($0x02, 64)
	EXPB(80)
	EXPA($0x04, 96)
	EXPB(112)
	EXPA($0x08, 128)
	EXPB(144)
	EXPA($0x10, 160)
	EXPB(176)
	EXPA($0x20, 192)
	EXPB(208)
	EXPA($0x40, 224)
	VPXOR X1, X1, X1
	VPXOR X2, X2, X2
	VPXOR X3, X3, X3
	VPXOR X4, X4, X4
	RET
