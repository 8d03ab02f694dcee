// Package vgcm implements AES-256-GCM (96-bit nonce, 16-byte tag) using
// VAES and VPCLMULQDQ on AVX-512 capable amd64 CPUs.
//
// The AEAD returned by New is byte-for-byte compatible with
// cipher.NewGCM(aes.NewCipher(key)) for 32-byte keys.
package vgcm

import (
	"crypto/cipher"
	"errors"
	"unsafe"
)

const (
	keySize   = 32
	nonceSize = 12
	tagSize   = 16
	blockSize = 16

	// maxPlaintext is the GCM limit for 96-bit nonces: 2^32-2 blocks.
	maxPlaintext = ((1 << 32) - 2) * blockSize
)

var (
	errUnsupported = errors.New("vgcm: CPU lacks AVX-512 VAES/VPCLMULQDQ support")
	errKeySize     = errors.New("vgcm: key must be 32 bytes (AES-256)")
	errOpen        = errors.New("cipher: message authentication failed")
)

// Supported reports whether the accelerated implementation can run on this
// machine. New fails when it returns false.
func Supported() bool { return supported }

// New returns an AES-256-GCM AEAD with 12-byte nonces and 16-byte tags.
func New(key []byte) (cipher.AEAD, error) {
	if !supported {
		return nil, errUnsupported
	}
	if len(key) != keySize {
		return nil, errKeySize
	}
	return newGCM(key)
}

// sliceForAppend returns in extended by n bytes (reallocating if needed) and
// the n-byte tail of it.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	tail = head[len(in):]
	return
}

// anyOverlap reports whether x and y share memory at any index.
func anyOverlap(x, y []byte) bool {
	return len(x) > 0 && len(y) > 0 &&
		uintptr(unsafe.Pointer(&x[0])) <= uintptr(unsafe.Pointer(&y[len(y)-1])) &&
		uintptr(unsafe.Pointer(&y[0])) <= uintptr(unsafe.Pointer(&x[len(x)-1]))
}

// inexactOverlap reports whether x and y share memory at any
// non-corresponding index.
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	return anyOverlap(x, y)
}
