package crypto

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"testing"

	"github.com/sluicehq/sluice/crypto/internal/vgcm"
)

func TestCounterGCM(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	block, err := aes.NewCipher(secret)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newCounterGCM(secret)
	if err != nil {
		t.Fatal(err)
	}
	b, err := newCounterGCM(secret) // another process or reload, same key
	if err != nil {
		t.Fatal(err)
	}
	if a.base == b.base {
		t.Fatal("two keyrings drew the same nonce base")
	}
	random, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		t.Fatal(err)
	}
	ad := []byte("ad")
	seen := map[string]bool{}
	for i := range 20_000 {
		plain := []byte{byte(i), byte(i >> 8), 1, 2, 3}
		sealedA := a.Seal(nil, nil, plain, ad)
		sealedB := b.Seal([]byte("prefix"), nil, plain, ad)[len("prefix"):]
		for _, s := range [][]byte{sealedA, sealedB} {
			if len(s) != len(plain)+a.Overhead() {
				t.Fatalf("sealed %d bytes, want %d", len(s), len(plain)+a.Overhead())
			}
			n := string(s[:nonceSize])
			if seen[n] {
				t.Fatalf("seal %d: nonce repeated", i)
			}
			seen[n] = true
		}
		// Any keyring opens any record of the same key, and the layout is
		// the one cipher.NewGCMWithRandomNonce reads and writes.
		for _, o := range []cipher.AEAD{a, b, random} {
			for _, s := range [][]byte{sealedA, sealedB} {
				if got, err := o.Open(nil, nil, s, ad); err != nil || !bytes.Equal(got, plain) {
					t.Fatalf("seal %d: open = %q, %v", i, got, err)
				}
			}
		}
		if i%1000 == 0 {
			old := random.Seal(nil, nil, plain, ad)
			if got, err := a.Open(nil, nil, old, ad); err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("record of a random-nonce build: %q, %v", got, err)
			}
		}
	}
	sealed := a.Seal(nil, nil, []byte("x"), ad)
	sealed[nonceSize-1] ^= 1 // nonce is authenticated
	if _, err := a.Open(nil, nil, sealed, ad); err == nil {
		t.Fatal("tampered nonce accepted")
	}
	if _, err := a.Open(nil, nil, sealed[:5], ad); err == nil {
		t.Fatal("short input accepted")
	}
}

// TestGCMMatchesStdlib checks that the AES-GCM the keyring uses (vgcm where
// the CPU has VAES) seals exactly as crypto/cipher does, across the record
// sizes a WAL holds, and opens crypto/cipher's output.
func TestGCMMatchesStdlib(t *testing.T) {
	secret := bytes.Repeat([]byte{9}, 32)
	ours, err := newGCM(secret)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("AES-GCM implementation: %T (vgcm supported: %v)", ours, vgcm.Supported())
	block, err := aes.NewCipher(secret)
	if err != nil {
		t.Fatal(err)
	}
	std, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	ad := []byte("sluice wal v1\x01\x02\x00")
	for n := 0; n <= 5000; n += 1 + n/7 {
		plain := bytes.Repeat([]byte{byte(n)}, n)
		nonce[0], nonce[11] = byte(n), byte(n>>8)
		got, want := ours.Seal(nil, nonce, plain, ad), std.Seal(nil, nonce, plain, ad)
		if !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: sealed differently from crypto/cipher", n)
		}
		if back, err := ours.Open(nil, nonce, want, ad); err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("%d bytes: opening crypto/cipher's output: %v", n, err)
		}
	}
}
