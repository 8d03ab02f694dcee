//go:build !amd64 || purego

package vgcm

import "crypto/cipher"

const supported = false

func newGCM(key []byte) (cipher.AEAD, error) { return nil, errUnsupported }
