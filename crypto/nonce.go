package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/sluicehq/sluice/crypto/internal/vgcm"
)

// counterGCM is AES-256-GCM that, like cipher.NewGCMWithRandomNonce, picks
// the nonce itself and stores it in front of the ciphertext (so the stored
// layout is nonce || ciphertext || tag either way and Open reads any
// record). The nonce is a random 96-bit base, drawn when the keyring is
// built, whose low 64 bits are XORed with a counter:
//
//   - within one keyring nonces never repeat (2^64 seals);
//   - two keyrings (restarts, reloads) built from the same key repeat a
//     nonce only if their bases agree in the high 32 bits and their counter
//     ranges meet in the low 64, far less likely than with a random nonce
//     per record, whose collisions limit a key to about 2^32 records;
//   - sealing costs no random draw per record.
type counterGCM struct {
	gcm  cipher.AEAD
	base [nonceSize]byte
	ctr  atomic.Uint64
}

var _ cipher.AEAD = (*counterGCM)(nil)

func newCounterGCM(secret []byte) (*counterGCM, error) {
	gcm, err := newGCM(secret)
	if err != nil {
		return nil, err
	}
	if gcm.NonceSize() != nonceSize || gcm.Overhead() != tagSize {
		return nil, fmt.Errorf("crypto: unexpected GCM nonce %d / tag %d sizes", gcm.NonceSize(), gcm.Overhead())
	}
	g := &counterGCM{gcm: gcm}
	if _, err := rand.Read(g.base[:]); err != nil {
		return nil, fmt.Errorf("crypto: drawing a nonce base: %w", err)
	}
	return g, nil
}

// NonceSize is 0: callers pass no nonce.
func (g *counterGCM) NonceSize() int { return 0 }

// Overhead is the stored nonce plus the tag.
func (g *counterGCM) Overhead() int { return nonceSize + tagSize }

// Seal appends nonce || ciphertext || tag to dst. nonce must be empty.
func (g *counterGCM) Seal(dst, nonce, plaintext, additionalData []byte) []byte {
	if len(nonce) != 0 {
		panic("crypto: counterGCM chooses its own nonce")
	}
	// The nonce is built in dst, where it is stored: a local array would
	// escape through the interface call (an allocation per record).
	start := len(dst)
	dst = append(dst, g.base[:]...)
	binary.LittleEndian.PutUint64(dst[start+4:], binary.LittleEndian.Uint64(g.base[4:])^g.ctr.Add(1))
	return g.gcm.Seal(dst, dst[start:start+nonceSize], plaintext, additionalData)
}

// newGCM returns AES-256-GCM (96-bit nonces, 16-byte tags) for secret: the
// VAES/VPCLMULQDQ implementation of crypto/internal/vgcm where the CPU has
// AVX-512 with those extensions (2.3-3.5x faster; its tests check it byte
// for byte against crypto/cipher), else crypto/cipher's. Both produce the
// same bytes, so either opens what the other sealed.
func newGCM(secret []byte) (cipher.AEAD, error) {
	if vgcm.Supported() {
		return vgcm.New(secret)
	}
	block, err := aes.NewCipher(secret)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

var errShortSealed = errors.New("crypto: sealed data shorter than its nonce")

// Open authenticates and decrypts nonce || ciphertext || tag.
func (g *counterGCM) Open(dst, nonce, ciphertext, additionalData []byte) ([]byte, error) {
	if len(nonce) != 0 {
		panic("crypto: counterGCM reads the nonce from the data")
	}
	if len(ciphertext) < nonceSize {
		return nil, errShortSealed
	}
	return g.gcm.Open(dst, ciphertext[:nonceSize], ciphertext[nonceSize:], additionalData)
}
