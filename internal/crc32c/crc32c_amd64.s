#include "textflag.h"

// func foldUpdate(crc uint32, p []byte, k *[18]uint64) uint32
//
// CRC-32C by folding. The message is a polynomial over GF(2) whose first bit
// (bit 0 of byte 0) is the highest power; its checksum state is M·x^32 mod P.
// A 16-byte lane of a vector register holds a chunk C of 128 message bits
// (byte 0 bit 0 in register bit 0). Folding replaces C, followed by f more
// message bits, by a chunk congruent to C·x^f at the position f bits later:
// C·x^f = H·x^(64+f) + L·x^f, one VPCLMULQDQ per quadword with the
// constants of foldPair (crc32c.go), and the result is XORed into the data
// found there. Nothing is reduced modulo P until the end: the folded chunk
// has at most 96 significant bits and stays a lane.
//
// Steps:
//  1. The incoming state is XORed into the first 4 bytes (that is what a
//     non-zero initial state means for a reflected CRC).
//  2. len >= 256: four ZMM accumulators take 256 bytes a step (k[0:2]); then
//     accumulators 0..2 are folded onto 3 (k[14:16], k[16:18], k[2:4]).
//  3. One ZMM accumulator takes 64 bytes a step (k[2:4]).
//  4. Its four lanes are folded onto lane 3 with per-lane constants
//     (k[6:14], lane 3's multipliers zero; lane 3 is added under mask K1).
//  5. One lane takes 16 bytes a step (k[4:6]).
//  6. The last chunk C is reduced by running the CRC32 instruction over its
//     two quadwords from state 0, which computes C·x^32 mod P; the CRC32
//     instruction then finishes the last 0..15 bytes.
//
// Registers: SI data, CX bytes left, DX constants, Z0..Z3 accumulators,
// Z4..Z7 products, Z8 constants, AX state.
TEXT ·foldUpdate(SB), NOSPLIT, $0-44
	MOVL crc+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX
	MOVQ k+32(FP), DX

	VMOVDQU64 (SI), Z0
	VMOVD     AX, X8
	VPXORQ    Z8, Z0, Z0
	CMPQ      CX, $256
	JB        single

	VMOVDQU64       64(SI), Z1
	VMOVDQU64       128(SI), Z2
	VMOVDQU64       192(SI), Z3
	ADDQ            $256, SI
	SUBQ            $256, CX
	VBROADCASTI32X4 0(DX), Z8

loop4:
	CMPQ       CX, $256
	JB         combine4
	VPCLMULQDQ $0x00, Z8, Z0, Z4
	VPCLMULQDQ $0x11, Z8, Z0, Z0
	VPCLMULQDQ $0x00, Z8, Z1, Z5
	VPCLMULQDQ $0x11, Z8, Z1, Z1
	VPCLMULQDQ $0x00, Z8, Z2, Z6
	VPCLMULQDQ $0x11, Z8, Z2, Z2
	VPCLMULQDQ $0x00, Z8, Z3, Z7
	VPCLMULQDQ $0x11, Z8, Z3, Z3
	VPTERNLOGD $0x96, (SI), Z4, Z0
	VPTERNLOGD $0x96, 64(SI), Z5, Z1
	VPTERNLOGD $0x96, 128(SI), Z6, Z2
	VPTERNLOGD $0x96, 192(SI), Z7, Z3
	ADDQ       $256, SI
	SUBQ       $256, CX
	JMP        loop4

combine4:
	VBROADCASTI32X4 112(DX), Z8
	VPCLMULQDQ      $0x00, Z8, Z0, Z4
	VPCLMULQDQ      $0x11, Z8, Z0, Z0
	VBROADCASTI32X4 128(DX), Z8
	VPCLMULQDQ      $0x00, Z8, Z1, Z5
	VPCLMULQDQ      $0x11, Z8, Z1, Z1
	VBROADCASTI32X4 16(DX), Z8
	VPCLMULQDQ      $0x00, Z8, Z2, Z6
	VPCLMULQDQ      $0x11, Z8, Z2, Z2
	VPTERNLOGD      $0x96, Z4, Z0, Z3
	VPTERNLOGD      $0x96, Z5, Z1, Z3
	VPTERNLOGD      $0x96, Z6, Z2, Z3
	VMOVDQA64       Z3, Z0
	JMP             loop1

single:
	ADDQ            $64, SI
	SUBQ            $64, CX
	VBROADCASTI32X4 16(DX), Z8

loop1:
	CMPQ       CX, $64
	JB         lanes
	VPCLMULQDQ $0x00, Z8, Z0, Z4
	VPCLMULQDQ $0x11, Z8, Z0, Z0
	VPTERNLOGD $0x96, (SI), Z4, Z0
	ADDQ       $64, SI
	SUBQ       $64, CX
	JMP        loop1

lanes:
	VMOVDQU64     48(DX), Z8
	VPCLMULQDQ    $0x00, Z8, Z0, Z4
	VPCLMULQDQ    $0x11, Z8, Z0, Z5
	VPXORQ        Z5, Z4, Z4
	MOVL          $0xc0, AX
	KMOVW         AX, K1
	VPXORQ        Z0, Z4, K1, Z4
	VEXTRACTI64X4 $1, Z4, Y5
	VPXORQ        Y5, Y4, Y4
	VEXTRACTI32X4 $1, Y4, X5
	VPXORQ        X5, X4, X4
	VMOVDQU64     32(DX), X8

loop16:
	CMPQ       CX, $16
	JB         reduce
	VPCLMULQDQ $0x00, X8, X4, X5
	VPCLMULQDQ $0x11, X8, X4, X4
	VPTERNLOGD $0x96, (SI), X5, X4
	ADDQ       $16, SI
	SUBQ       $16, CX
	JMP        loop16

reduce:
	VMOVQ  X4, R8
	VPEXTRQ $1, X4, R9
	XORL   AX, AX
	CRC32Q R8, AX
	CRC32Q R9, AX

tail8:
	CMPQ   CX, $8
	JB     tail1
	CRC32Q (SI), AX
	ADDQ   $8, SI
	SUBQ   $8, CX
	JMP    tail8

tail1:
	TESTQ  CX, CX
	JZ     done
	CRC32B (SI), AX
	INCQ   SI
	DECQ   CX
	JMP    tail1

done:
	VZEROUPPER
	MOVL AX, ret+40(FP)
	RET
