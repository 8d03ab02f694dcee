package crypto

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/wal"
)

func TestRecordBinding(t *testing.T) {
	kr := testRing(t, 1)
	store := StoreID{1, 2, 3}
	for _, comp := range []Compression{CompressNone, CompressZstd} {
		c, _ := NewCodec(CodecOptions{Keyring: kr, Compression: comp, Policy: &Policy{Store: store}})
		p := bytes.Repeat([]byte("bound payload "), 20)
		info := wal.RecordInfo{Type: wal.RecordPut, TxnID: 42, Segment: 3}
		var scratch []byte
		stored, flags, keyID, err := c.EncodeRecord(nil, p, info, &scratch)
		if err != nil || flags&FlagBound == 0 || keyID != 1 {
			t.Fatalf("encode: flags %#x key %d %v", flags, keyID, err)
		}
		if got, err := c.DecodeRecord(nil, stored, flags, keyID, info); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("decode: %v", err)
		}
		// Another type, txn or store: authentication fails, fail closed
		// (not a wal.ErrCorrupt that a replay would skip).
		other := *c.pol.Load()
		other.Store[0] ^= 1
		c2, _ := NewCodec(CodecOptions{Keyring: kr, Policy: &other})
		for name, try := range map[string]func() error{
			"type": func() error {
				_, err := c.DecodeRecord(nil, stored, flags, keyID, wal.RecordInfo{Type: wal.RecordCommit, TxnID: 42})
				return err
			},
			"txn": func() error {
				_, err := c.DecodeRecord(nil, stored, flags, keyID, wal.RecordInfo{Type: wal.RecordPut, TxnID: 43})
				return err
			},
			"store": func() error { _, err := c2.DecodeRecord(nil, stored, flags, keyID, info); return err },
		} {
			err := try()
			var ae *AuthError
			if !errors.As(err, &ae) || errors.Is(err, wal.ErrCorrupt) || ae.KeyID != 1 || ae.KeyFile != "test-keys" {
				t.Fatalf("%s changed: %v", name, err)
			}
		}
		// A bound record cannot be opened by the legacy Decode.
		if _, err := c.Decode(nil, stored, flags, keyID); err == nil {
			t.Fatal("legacy Decode opened a bound record")
		}
		// Tolerant (offline tools): the same failure is damage.
		ct, _ := NewCodec(CodecOptions{Keyring: kr, Policy: &other, TolerateAuthFailures: true})
		if _, err := ct.DecodeRecord(nil, stored, flags, keyID, info); !errors.Is(err, wal.ErrCorrupt) || !errors.Is(err, ErrAuth) {
			t.Fatalf("tolerant: %v", err)
		}
	}
}

func TestRecordPolicy(t *testing.T) {
	kr := testRing(t, 1)
	c, _ := NewCodec(CodecOptions{Keyring: kr, Policy: &Policy{EncryptedSince: 10, BoundSince: 12}})
	plain := []byte("plaintext")
	legacy, lflags, lkey, _ := c.Encode(nil, plain) // an older build's sealed record
	for _, tc := range []struct {
		name   string
		stored []byte
		flags  uint8
		key    uint16
		seg    uint32
		ok     bool
	}{
		{"plaintext before encryption", plain, 0, 0, 9, true},
		{"plaintext after encryption", plain, 0, 0, 10, false},
		{"legacy sealed before binding", legacy, lflags, lkey, 11, true},
		{"legacy sealed after binding", legacy, lflags, lkey, 12, false},
	} {
		_, err := c.DecodeRecord(nil, tc.stored, tc.flags, tc.key, wal.RecordInfo{Type: wal.RecordPut, TxnID: 1, Segment: tc.seg})
		if tc.ok != (err == nil) || (!tc.ok && (!errors.Is(err, ErrPolicy) || errors.Is(err, wal.ErrCorrupt))) {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	// Probe mode counts sealed records without opening them.
	c.SetProbe(true)
	var scratch []byte
	bound, bflags, bkey, _ := c.EncodeRecord(nil, plain, wal.RecordInfo{Type: wal.RecordPut, TxnID: 1}, &scratch)
	for _, r := range []struct {
		s []byte
		f uint8
		k uint16
	}{{legacy, lflags, lkey}, {bound, bflags, bkey}, {plain, 0, 0}} {
		if _, err := c.DecodeRecord(nil, r.s, r.f, r.k, wal.RecordInfo{Type: wal.RecordPut, TxnID: 9, Segment: 1}); err != nil {
			t.Fatal(err)
		}
	}
	c.SetProbe(false)
	if s, b := c.ProbeCounts(); s != 2 || b != 1 {
		t.Fatalf("probe counted %d sealed, %d bound", s, b)
	}
}

func TestCheckpointBinding(t *testing.T) {
	kr := testRing(t, 1)
	c, _ := NewCodec(CodecOptions{Keyring: kr, Policy: &Policy{Store: StoreID{9}}})
	sealed, err := c.Sealer().ForFile(checkpoint.FileA).Seal([]byte("body"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.Sealer().ForFile(checkpoint.FileA).Open(sealed); err != nil || string(got) != "body" {
		t.Fatalf("open: %v", err)
	}
	if _, err := c.Sealer().ForFile(checkpoint.FileB).Open(sealed); !errors.Is(err, ErrAuth) {
		t.Fatalf("opened as another file: %v", err)
	}
	other, _ := NewCodec(CodecOptions{Keyring: kr, Policy: &Policy{Store: StoreID{8}}})
	if _, err := other.Sealer().ForFile(checkpoint.FileA).Open(sealed); !errors.Is(err, ErrAuth) {
		t.Fatalf("opened in another store: %v", err)
	}
	// A version-1 checkpoint opens only during a migration.
	v1 := append([]byte{sealVersionV1, 1, 0}, kr.aeads[1].Seal(nil, nil, []byte("old"), checkpointAssociated(nil, sealVersionV1, 1, nil, ""))...)
	if _, err := c.Sealer().Open(v1); !errors.Is(err, ErrLegacyCheckpoint) {
		t.Fatalf("legacy checkpoint outside a migration: %v", err)
	}
	c.SetPolicy(Policy{Store: StoreID{9}, LegacyCheckpoints: true})
	if got, err := c.Sealer().Open(v1); err != nil || string(got) != "old" {
		t.Fatalf("legacy checkpoint during a migration: %v", err)
	}
}

func TestKeyringMAC(t *testing.T) {
	kr := testRing(t, 1, 2)
	a, _ := kr.MAC(1, []byte("x"))
	b, _ := kr.MAC(2, []byte("x"))
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatal("MAC keys are not per key id")
	}
	var ke *KeyError
	if _, err := kr.MAC(3, []byte("x")); !errors.As(err, &ke) || ke.ID != 3 {
		t.Fatalf("missing key: %v", err)
	}
}
