package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/wal"
)

func testRing(t testing.TB, ids ...uint16) *Keyring {
	t.Helper()
	var keys []Key
	for _, id := range ids {
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, Key{ID: id, Secret: k})
	}
	kr, err := NewKeyring("test-keys", keys, 0)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func TestKeyFileAppendLoadAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	k1, err := AppendKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := AppendKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1.ID != 1 || k2.ID != 2 || k1.Secret == k2.Secret {
		t.Fatalf("ids %d %d, distinct secrets %v", k1.ID, k2.ID, k1.Secret != k2.Secret)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", fi.Mode().Perm())
	}
	kf, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(kf.Keys) != 2 || kf.Keys[0] != k1 || kf.Keys[1] != k2 {
		t.Fatalf("loaded %d keys, want the two appended", len(kf.Keys))
	}
	kr, err := kf.Keyring(0)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Active() != 2 || !kr.Has(1) || kr.Has(3) {
		t.Fatalf("active %d", kr.Active())
	}
	if _, err := kf.Keyring(7); err == nil || !strings.Contains(err.Error(), "key id 7") || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing active key: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}

	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o602, 0o644, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprintf("%04o", mode)) {
			t.Fatalf("mode %04o: want an error naming the file and mode, got %v", mode, err)
		}
		if _, err := AppendKey(path); err == nil {
			t.Fatalf("mode %04o: AppendKey accepted an open key file", mode)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadKeyFile(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
}

func TestParseKeysErrors(t *testing.T) {
	good := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	for _, tc := range []struct{ in, want string }{
		{"", "no keys"},
		{"# only a comment\n", "no keys"},
		{"1 " + good + "\n1 " + good + "\n", "line 2: key id 1 already defined on line 1"},
		{"0 " + good + "\n", "line 1: key id \"0\""},
		{"65536 " + good + "\n", "line 1: key id \"65536\""},
		{"x " + good + "\n", "line 1: key id \"x\""},
		{"1 AAAA\n", "line 1: key 1 is 3 bytes, want 32"},
		{"1 !!!!\n", "line 1: key 1 is not valid base64"},
		{"1 " + good + " extra\n", "line 1: want"},
	} {
		_, err := ParseKeys("kf", []byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "kf") {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), good) {
			t.Errorf("error leaks key material: %v", err)
		}
	}
	keys, err := ParseKeys("kf", []byte("\n# c\n  7 "+good+"  \n"))
	if err != nil || len(keys) != 1 || keys[0].ID != 7 {
		t.Fatalf("%v %v", keys, err)
	}
}

func payloads() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 1024)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	return map[string][]byte{
		"empty":        {},
		"short":        []byte("hello"),
		"compressible": bytes.Repeat([]byte("sluice event body "), 60),
		"random":       random,
	}
}

func TestCodecRoundTrips(t *testing.T) {
	for _, enc := range []bool{false, true} {
		for _, comp := range []Compression{CompressNone, CompressZstd, CompressS2} {
			t.Run(fmt.Sprintf("encrypt=%v/%s", enc, comp), func(t *testing.T) {
				var kr *Keyring
				if enc {
					kr = testRing(t, 1, 2)
				}
				c, err := NewCodec(CodecOptions{Keyring: kr, Compression: comp})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for name, p := range payloads() {
					orig := bytes.Clone(p)
					stored, flags, keyID, err := c.Encode([]byte("prefix"), p)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(p, orig) {
						t.Fatalf("%s: Encode modified its input", name)
					}
					if string(stored[:6]) != "prefix" {
						t.Fatalf("%s: Encode did not append to dst", name)
					}
					stored = stored[6:]
					if enc != (keyID == 2) || enc != (flags&FlagSealed != 0) {
						t.Fatalf("%s: flags %#x key %d", name, flags, keyID)
					}
					compressed := flags&flagCompMask != 0
					if name == "compressible" && comp != CompressNone && !compressed {
						t.Fatalf("%s: not compressed", name)
					}
					if (name == "random" || name == "short" || comp == CompressNone) && compressed {
						t.Fatalf("%s: compressed flag %#x although it does not help", name, flags)
					}
					if enc && bytes.Contains(stored, []byte("sluice event")) {
						t.Fatalf("%s: plaintext visible in sealed payload", name)
					}
					got, err := c.Decode([]byte("xx"), stored, flags, keyID)
					if err != nil {
						t.Fatalf("%s: decode: %v", name, err)
					}
					if string(got[:2]) != "xx" || !bytes.Equal(got[2:], p) {
						t.Fatalf("%s: round trip mismatch", name)
					}
					// Every compressor decodes with any configuration.
					other, _ := NewCodec(CodecOptions{Keyring: kr})
					if got, err := other.Decode(nil, stored, flags, keyID); err != nil || !bytes.Equal(got, p) {
						t.Fatalf("%s: decode by a codec without compression: %v", name, err)
					}
				}
			})
		}
	}
}

func TestCodecTamperAndMissingKey(t *testing.T) {
	kr := testRing(t, 1, 2)
	for _, comp := range []Compression{CompressNone, CompressZstd} {
		c, _ := NewCodec(CodecOptions{Keyring: kr, Compression: comp})
		p := payloads()["compressible"]
		stored, flags, keyID, _ := c.Encode(nil, p)
		for i := 0; i < len(stored); i += 7 {
			bad := bytes.Clone(stored)
			bad[i] ^= 0x10
			_, err := c.Decode(nil, bad, flags, keyID)
			if !errors.Is(err, wal.ErrCorrupt) || !errors.Is(err, ErrAuth) {
				t.Fatalf("flipped byte %d: %v", i, err)
			}
		}
		// The flags and key id are authenticated too.
		if _, err := c.Decode(nil, stored, flags^flagCompMask&flagS2|flags&FlagSealed, keyID); err == nil {
			t.Fatal("changed compression flag accepted")
		}
		if _, err := c.Decode(nil, stored, flags, 1); !errors.Is(err, ErrAuth) {
			t.Fatalf("other key id: %v", err)
		}
		var ke *KeyError
		if _, err := c.Decode(nil, stored, flags, 9); !errors.As(err, &ke) || ke.ID != 9 || errors.Is(err, wal.ErrCorrupt) ||
			!strings.Contains(err.Error(), "key id 9") || !strings.Contains(err.Error(), "test-keys") {
			t.Fatalf("missing key: %v", err)
		}
		plain, _ := NewCodec(CodecOptions{})
		if _, err := plain.Decode(nil, stored, flags, keyID); !errors.As(err, &ke) || !strings.Contains(err.Error(), "no key file") {
			t.Fatalf("no keyring: %v", err)
		}
		if _, err := c.Decode(nil, stored, 0x80|flags, keyID); err == nil || errors.Is(err, wal.ErrCorrupt) {
			t.Fatalf("unknown flag: %v", err)
		}
	}
	// A wrong key with the right id fails authentication.
	c1, _ := NewCodec(CodecOptions{Keyring: kr})
	c2, _ := NewCodec(CodecOptions{Keyring: testRing(t, 1, 2)})
	stored, flags, keyID, _ := c1.Encode(nil, []byte("secret"))
	if _, err := c2.Decode(nil, stored, flags, keyID); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestCodecRotation(t *testing.T) {
	kr := testRing(t, 1, 2, 3)
	c, _ := NewCodec(CodecOptions{Keyring: kr, Compression: CompressS2})
	type rec struct {
		stored []byte
		flags  uint8
		key    uint16
		plain  []byte
	}
	var recs []rec
	for _, id := range []uint16{1, 2, 3} {
		next, err := kr.WithActive(id)
		if err != nil {
			t.Fatal(err)
		}
		c.SetKeyring(next)
		p := []byte(fmt.Sprintf("record under key %d", id))
		s, f, k, err := c.Encode(nil, p)
		if err != nil || k != id {
			t.Fatalf("key %d: got key %d, %v", id, k, err)
		}
		recs = append(recs, rec{s, f, k, p})
	}
	for _, r := range recs {
		got, err := c.Decode(nil, r.stored, r.flags, r.key)
		if err != nil || !bytes.Equal(got, r.plain) {
			t.Fatalf("key %d: %v", r.key, err)
		}
	}
	if c.Sealed(1) != 1 || c.Sealed(3) != 1 {
		t.Fatalf("sealed counts %d %d", c.Sealed(1), c.Sealed(3))
	}
}

func TestSealer(t *testing.T) {
	kr := testRing(t, 4, 5)
	c, _ := NewCodec(CodecOptions{Keyring: kr})
	cp := &checkpoint.Checkpoint{Generation: 3, WOID: 99, Producers: []checkpoint.Producer{{ID: "p", Sequence: 7}}}
	b, err := checkpoint.Marshal(cp, c.Sealer())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte{'p', 7}) {
		t.Log("note: marker bytes visible (may be coincidence)")
	}
	// Rotate: the old checkpoint still opens.
	k4, _ := kr.WithActive(4)
	c.SetKeyring(k4)
	got, err := checkpoint.Unmarshal(b, c.Sealer())
	if err != nil || got.WOID != 99 || got.Producers[0].ID != "p" {
		t.Fatalf("after rotation: %v", err)
	}
	b4, _ := checkpoint.Marshal(cp, c.Sealer())
	if id, ok := SealedKeyID(b4[13:]); !ok || id != 4 {
		t.Fatalf("sealed key id %d", id)
	}
	// Missing key: KeyError naming the id.
	only5, _ := NewKeyring("kf5", []Key{{ID: 5}}, 5)
	c5, _ := NewCodec(CodecOptions{Keyring: only5})
	_, err = checkpoint.Unmarshal(b4, c5.Sealer())
	var ke *KeyError
	if !errors.As(err, &ke) || ke.ID != 4 || !strings.Contains(err.Error(), "kf5") {
		t.Fatalf("missing key: %v", err)
	}
	// Wrong key bytes with the right id: ErrAuth (wrapped in ErrOpen).
	_, err = checkpoint.Unmarshal(b, c5.Sealer())
	if !errors.Is(err, checkpoint.ErrOpen) || !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
	// A plaintext file is refused when a Sealer is given.
	plain, _ := checkpoint.Marshal(cp, nil)
	if _, err := checkpoint.Unmarshal(plain, c.Sealer()); !errors.Is(err, checkpoint.ErrNotSealed) {
		t.Fatalf("plaintext: %v", err)
	}
}
