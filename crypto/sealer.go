package crypto

import (
	"encoding/binary"
	"errors"
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
//	associated data, version 2 (this build):
//	  "sluice checkpoint v2" | version | key id (uint16 LE) | store id (16) |
//	  len(file name) (1) | file name ("checkpoint.A" or "checkpoint.B")
//	version 1 (older builds): "sluice checkpoint v1" | version | key id
//
// The key id travels with the checkpoint, so a checkpoint sealed before a
// rotation opens as long as its key is still in the key file. Version 2
// binds the checkpoint to its store and file: a checkpoint copied from
// another store sharing the key, or moved from checkpoint.B to checkpoint.A,
// fails authentication. Its generation is inside the ciphertext; rollback to
// an older checkpoint of the same store is refused by the generation
// recorded in the store's authenticated crypto manifest. Version 1 is opened
// only while the Policy allows LegacyCheckpoints (the first open of a store
// written by an older build).
const (
	sealVersion    = 2
	sealVersionV1  = 1
	sealHeader     = 1 + 2
	checkpointAD   = "sluice checkpoint v2"
	checkpointADv1 = "sluice checkpoint v1"
)

// ErrLegacyCheckpoint: a checkpoint sealed by an older build (not bound to
// its store and file) outside a migration.
var ErrLegacyCheckpoint = errors.New("crypto: checkpoint sealed by an older build (not bound to this store); refused outside a migration")

// Sealer seals checkpoint bodies with a Codec's current keyring, bound to
// the Codec's store id and to the file name given by ForFile.
type Sealer struct {
	c    *Codec
	name string
}

var _ checkpoint.Sealer = Sealer{}
var _ checkpoint.FileSealer = Sealer{}

// Sealer returns a checkpoint.Sealer that uses the Codec's keyring (and
// follows SetKeyring). It is nil-safe only in the sense that sealing without
// a keyring fails; callers pass a nil checkpoint.Sealer when not encrypting.
func (c *Codec) Sealer() Sealer { return Sealer{c: c} }

// ForFile implements checkpoint.FileSealer: the checkpoint is bound to the
// file name.
func (s Sealer) ForFile(name string) checkpoint.Sealer { return Sealer{c: s.c, name: name} }

func checkpointAssociated(buf []byte, version uint8, keyID uint16, store *StoreID, name string) []byte {
	if version == sealVersionV1 {
		buf = append(buf, checkpointADv1...)
		buf = append(buf, version)
		return binary.LittleEndian.AppendUint16(buf, keyID)
	}
	buf = append(buf, checkpointAD...)
	buf = append(buf, version)
	buf = binary.LittleEndian.AppendUint16(buf, keyID)
	buf = append(buf, store[:]...)
	buf = append(buf, byte(len(name)))
	return append(buf, name...)
}

// Seal implements checkpoint.Sealer with the active key.
func (s Sealer) Seal(plain []byte) ([]byte, error) {
	kr := s.c.ring.Load()
	if kr == nil {
		return nil, fmt.Errorf("crypto: sealing a checkpoint: no keyring")
	}
	if len(s.name) > 255 {
		return nil, fmt.Errorf("crypto: sealing checkpoint %q: name too long", s.name)
	}
	id := kr.active
	out := make([]byte, sealHeader, sealHeader+len(plain)+Overhead)
	out[0] = sealVersion
	binary.LittleEndian.PutUint16(out[1:], id)
	ad := checkpointAssociated(make([]byte, 0, 64), sealVersion, id, &s.c.pol.Load().Store, s.name)
	return kr.aeads[id].Seal(out, nil, plain, ad), nil
}

// Open implements checkpoint.Sealer. A key id missing from the keyring is a
// *KeyError; a failed authentication wraps ErrAuth; a version-1 checkpoint
// outside a migration wraps ErrLegacyCheckpoint.
func (s Sealer) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < sealHeader+Overhead {
		return nil, fmt.Errorf("%w: sealed checkpoint body of %d bytes is too short", ErrAuth, len(sealed))
	}
	v := sealed[0]
	if v != sealVersion && v != sealVersionV1 {
		return nil, fmt.Errorf("crypto: sealed checkpoint version %d, this build reads %d and %d", v, sealVersionV1, sealVersion)
	}
	pol := s.c.pol.Load()
	if v == sealVersionV1 && !pol.LegacyCheckpoints {
		return nil, ErrLegacyCheckpoint
	}
	id := binary.LittleEndian.Uint16(sealed[1:])
	kr := s.c.ring.Load()
	aead, err := kr.aead(id, "the checkpoint")
	if err != nil {
		return nil, err
	}
	ad := checkpointAssociated(make([]byte, 0, 64), v, id, &pol.Store, s.name)
	plain, err := aead.Open(nil, nil, sealed[sealHeader:], ad)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint sealed with key id %d (key file %s): wrong key for that id, tampered, or copied from another store or file: %v", ErrAuth, id, kr.File(), err)
	}
	return plain, nil
}

// SealedKeyID returns the key id a sealed checkpoint body names.
func SealedKeyID(sealed []byte) (uint16, bool) {
	if len(sealed) < sealHeader || (sealed[0] != sealVersion && sealed[0] != sealVersionV1) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(sealed[1:]), true
}

// Legacy returns a checkpoint.Sealer that seals in the version-1 format of
// builds before store binding (associated data "sluice checkpoint v1" |
// version | key id) and opens like s. For compatibility tests of migrations
// only: a store never writes it.
func (s Sealer) Legacy() checkpoint.Sealer { return legacySealer{s} }

type legacySealer struct{ s Sealer }

func (l legacySealer) Seal(plain []byte) ([]byte, error) {
	kr := l.s.c.ring.Load()
	if kr == nil {
		return nil, fmt.Errorf("crypto: sealing a checkpoint: no keyring")
	}
	id := kr.active
	out := make([]byte, sealHeader, sealHeader+len(plain)+Overhead)
	out[0] = sealVersionV1
	binary.LittleEndian.PutUint16(out[1:], id)
	return kr.aeads[id].Seal(out, nil, plain, checkpointAssociated(nil, sealVersionV1, id, nil, "")), nil
}

func (l legacySealer) Open(sealed []byte) ([]byte, error) { return l.s.Open(sealed) }
