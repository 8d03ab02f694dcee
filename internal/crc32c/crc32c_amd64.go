package crc32c

import "golang.org/x/sys/cpu"

// foldMin is the shortest buffer foldUpdate takes.
const foldMin = 64

var hasFold = cpu.X86.HasAVX512F && cpu.X86.HasAVX512VL && cpu.X86.HasAVX512VPCLMULQDQ &&
	cpu.X86.HasPCLMULQDQ && cpu.X86.HasSSE42

// foldUpdate updates the raw (uncomplemented) CRC-32C state crc with p,
// len(p) >= foldMin.
//
//go:noescape
func foldUpdate(crc uint32, p []byte, k *[18]uint64) uint32
