package crypto

import (
	"encoding/binary"
	"fmt"

	"github.com/sluicehq/sluice/checkpoint"
)

// Checkpoint bodies. The sealed body handed to the checkpoint package (which
// adds its own header and CRC, see checkpoint/format.go) is:
//
//	+---------+-----------------+-----------+------------------------+---------+
//	| version | key id          | nonce     | AES-256-GCM ciphertext | tag     |
//	| 1 byte  | uint16 LE       | 12 bytes  | of the plain body      | 16 bytes|
//	+---------+-----------------+-----------+------------------------+---------+
//	associated data: "sluice checkpoint v1" | version | key id (uint16 LE)
//
// The key id travels with the checkpoint, so a checkpoint sealed before a
// rotation opens as long as its key is still in the key file.
const (
	sealVersion  = 1
	sealHeader   = 1 + 2
	checkpointAD = "sluice checkpoint v1"
)

// Sealer seals checkpoint bodies with a Codec's current keyring.
type Sealer struct{ c *Codec }

var _ checkpoint.Sealer = Sealer{}

// Sealer returns a checkpoint.Sealer that uses the Codec's keyring (and
// follows SetKeyring). It is nil-safe only in the sense that sealing without
// a keyring fails; callers pass a nil checkpoint.Sealer when not encrypting.
func (c *Codec) Sealer() Sealer { return Sealer{c: c} }

func checkpointAssociated(buf *[32]byte, keyID uint16) []byte {
	n := copy(buf[:], checkpointAD)
	buf[n] = sealVersion
	binary.LittleEndian.PutUint16(buf[n+1:], keyID)
	return buf[:n+3]
}

// Seal implements checkpoint.Sealer with the active key.
func (s Sealer) Seal(plain []byte) ([]byte, error) {
	kr := s.c.ring.Load()
	if kr == nil {
		return nil, fmt.Errorf("crypto: sealing a checkpoint: no keyring")
	}
	id := kr.active
	out := make([]byte, sealHeader, sealHeader+len(plain)+Overhead)
	out[0] = sealVersion
	binary.LittleEndian.PutUint16(out[1:], id)
	var ad [32]byte
	return kr.aeads[id].Seal(out, nil, plain, checkpointAssociated(&ad, id)), nil
}

// Open implements checkpoint.Sealer. A key id missing from the keyring is a
// *KeyError; a failed authentication wraps ErrAuth.
func (s Sealer) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < sealHeader+Overhead {
		return nil, fmt.Errorf("%w: sealed checkpoint body of %d bytes is too short", ErrAuth, len(sealed))
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("crypto: sealed checkpoint version %d, this build reads %d", sealed[0], sealVersion)
	}
	id := binary.LittleEndian.Uint16(sealed[1:])
	aead, err := s.c.ring.Load().aead(id, "the checkpoint")
	if err != nil {
		return nil, err
	}
	var ad [32]byte
	plain, err := aead.Open(nil, nil, sealed[sealHeader:], checkpointAssociated(&ad, id))
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint sealed with key id %d: %v", ErrAuth, id, err)
	}
	return plain, nil
}

// SealedKeyID returns the key id a sealed checkpoint body names.
func SealedKeyID(sealed []byte) (uint16, bool) {
	if len(sealed) < sealHeader || sealed[0] != sealVersion {
		return 0, false
	}
	return binary.LittleEndian.Uint16(sealed[1:]), true
}
