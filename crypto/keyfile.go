// Package crypto encrypts and compresses what the store writes at rest: every
// WAL record payload (a wal.Codec) and the checkpoint body (a
// checkpoint.Sealer), with AES-256-GCM and keys from a key file.
//
// # Key file
//
// A key file is UTF-8 text, one key per line; blank lines and lines starting
// with '#' are ignored:
//
//	# sluice key file: <key id> <base64 (standard, padded) of 32 random bytes>
//	1 q4bVNnB2rXz8Jm7b0gkz7Fh0Yt0n8V+qf2iBxQ8d3mA=
//	2 3Wc1tR0mXn6zQ5lGm0cE5o7sMDyyQn2mX7a1uYx0bJk=
//
// A key is named by its id, a decimal integer in 1..65535: the id is what a
// WAL record header (16 bits) and a sealed checkpoint store to say which key
// sealed them, so ids are never reused for different key material. Key id 0
// means "not encrypted". Duplicate ids, malformed lines, keys that are not
// exactly 32 bytes and trailing fields are errors naming the file and line
// (never the key material).
//
// The file must not be readable or writable by group or others
// (mode & 0o077 == 0): LoadKeyFile refuses it otherwise. WriteKeyFile and
// AppendKey write it atomically (temporary file with mode 0600, fsync,
// rename, fsync of the directory). AppendKey gives the new key the largest id
// in the file plus one, so "the highest id" is the newest key; a Keyring
// whose active id is 0 picks it.
//
// # Rotation
//
// New records and checkpoints are sealed with the Keyring's active key; old
// ones are opened with the key their header names, so after a rotation every
// key that still seals a WAL segment or checkpoint must stay in the file until
// the segment is garbage collected and the checkpoint rewritten. A missing
// key is an error naming the key id and file (KeyError), never a skip.
//
// # Binding and tampering
//
// A WAL record sealed by this build is bound to the store id, its record
// type and its txn id, a checkpoint to the store id and its file name (see
// bind.go and sealer.go). A Policy, set from the store's authenticated
// crypto manifest before replay, refuses unsealed records written after
// encryption was switched on and old-format sealed records written after the
// store was bound. Authentication failures of WAL records are *AuthErrors
// that stop a replay (fail closed) rather than damage that is skipped.
// Keyring.MAC authenticates the manifest under an HKDF-derived key.
//
// # Limits
//
// A nonce is a random 96-bit base, drawn each time a keyring is built,
// XORed with a per-key counter (see counterGCM): it never repeats within a
// process and is far less likely to repeat across restarts than random
// per-record nonces, which limit a key to about 2^32 records (NIST SP
// 800-38D). Rotating keys from time to time (AppendKey + reload) is still
// good practice; Codec.Sealed reports how many records this process sealed
// per key.
package crypto

import (
	"bufio"
	"bytes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// KeySize is the size of every key: AES-256.
const KeySize = 32

// Key is one key of a key file.
type Key struct {
	ID     uint16
	Secret [KeySize]byte
}

// KeyFile is the parsed content of a key file.
type KeyFile struct {
	Path string
	Keys []Key // in file order
}

// GenerateKey returns KeySize bytes from crypto/rand.
func GenerateKey() ([KeySize]byte, error) {
	var k [KeySize]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("crypto: generating key: %w", err)
	}
	return k, nil
}

// checkMode refuses a key file that group or others may read or write.
func checkMode(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("crypto: key file %s is not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("crypto: key file %s has mode %04o, which lets group or others access it; refusing to use it (chmod 600 %s)", path, perm, path)
	}
	return nil
}

// LoadKeyFile reads and parses a key file, refusing one whose permissions let
// group or others read or write it.
func LoadKeyFile(path string) (*KeyFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("crypto: opening key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("crypto: key file %s: %w", path, err)
	}
	if err := checkMode(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > 4<<20 {
		return nil, fmt.Errorf("crypto: key file %s is %d bytes; too large to be a key file", path, fi.Size())
	}
	data := make([]byte, fi.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("crypto: reading key file %s: %w", path, err)
	}
	keys, err := ParseKeys(path, data)
	if err != nil {
		return nil, err
	}
	return &KeyFile{Path: path, Keys: keys}, nil
}

// ParseKeys parses key file content; name is used in error messages.
func ParseKeys(name string, data []byte) ([]Key, error) {
	var keys []Key
	seen := map[uint16]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("crypto: key file %s line %d: want \"<id> <base64 key>\", found %d fields", name, line, len(fields))
		}
		id, err := strconv.ParseUint(fields[0], 10, 16)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("crypto: key file %s line %d: key id %q is not an integer in 1..65535", name, line, fields[0])
		}
		if prev, dup := seen[uint16(id)]; dup {
			return nil, fmt.Errorf("crypto: key file %s line %d: key id %d already defined on line %d", name, line, id, prev)
		}
		raw, err := base64.StdEncoding.DecodeString(fields[1])
		if err != nil {
			return nil, fmt.Errorf("crypto: key file %s line %d: key %d is not valid base64", name, line, id)
		}
		if len(raw) != KeySize {
			return nil, fmt.Errorf("crypto: key file %s line %d: key %d is %d bytes, want %d", name, line, id, len(raw), KeySize)
		}
		k := Key{ID: uint16(id)}
		copy(k.Secret[:], raw)
		clear(raw)
		keys = append(keys, k)
		seen[k.ID] = line
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("crypto: key file %s: %w", name, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("crypto: key file %s holds no keys", name)
	}
	return keys, nil
}

// FormatKeys renders keys in the key file format.
func FormatKeys(keys []Key) []byte {
	var b bytes.Buffer
	b.WriteString("# sluice key file: <key id> <base64 of 32 random bytes>. Keep mode 0600.\n")
	b.WriteString("# Never reuse an id; keep old keys until no WAL segment or checkpoint uses them.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k.ID, base64.StdEncoding.EncodeToString(k.Secret[:]))
	}
	return b.Bytes()
}

// WriteKeyFile atomically writes keys to path with mode 0600: a temporary
// file in the same directory, fsync, rename over path, fsync of the
// directory.
func WriteKeyFile(path string, keys []Key) error {
	if len(keys) == 0 {
		return fmt.Errorf("crypto: writing key file %s: no keys", path)
	}
	ids := map[uint16]bool{}
	for _, k := range keys {
		if k.ID == 0 || ids[k.ID] {
			return fmt.Errorf("crypto: writing key file %s: key id %d is zero or duplicated", path, k.ID)
		}
		ids[k.ID] = true
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("crypto: writing key file %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("crypto: writing key file %s: %w", path, err)
	}
	// CreateTemp uses 0600 already; make it explicit against odd umasks.
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if _, err := f.Write(FormatKeys(keys)); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("crypto: writing key file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("crypto: writing key file %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("crypto: syncing directory of key file %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("crypto: syncing directory of key file %s: %w", path, err)
	}
	return nil
}

// AppendKey adds a newly generated key to the key file at path, creating the
// file (mode 0600) if it does not exist. The new key's id is the largest id
// in the file plus one (1 for a new file). An existing file must pass the
// same checks as LoadKeyFile.
func AppendKey(path string) (Key, error) {
	var keys []Key
	kf, err := LoadKeyFile(path)
	switch {
	case err == nil:
		keys = kf.Keys
	case errors.Is(err, fs.ErrNotExist):
	default:
		return Key{}, err
	}
	var maxID uint16
	for _, k := range keys {
		maxID = max(maxID, k.ID)
	}
	if maxID == 65535 {
		return Key{}, fmt.Errorf("crypto: key file %s already uses key id 65535; no id left", path)
	}
	secret, err := GenerateKey()
	if err != nil {
		return Key{}, err
	}
	k := Key{ID: maxID + 1, Secret: secret}
	if err := WriteKeyFile(path, append(keys, k)); err != nil {
		return Key{}, err
	}
	return k, nil
}

// KeyError says that a key id needed to read stored data is not available.
// It is never a reason to skip data: the store refuses to open.
type KeyError struct {
	ID   uint16
	File string // key file, "" when none is configured
	What string // what needed it, e.g. "WAL record", "checkpoint"
}

func (e *KeyError) Error() string {
	what := e.What
	if what == "" {
		what = "stored data"
	}
	if e.File == "" {
		return fmt.Sprintf("crypto: %s is encrypted with key id %d but no key file is configured", what, e.ID)
	}
	return fmt.Sprintf("crypto: %s is encrypted with key id %d, which is not in key file %s", what, e.ID, e.File)
}

// Keyring is an immutable set of keys with one active key (the one new data
// is sealed with). It is safe for concurrent use.
type Keyring struct {
	file   string
	active uint16
	ids    []uint16 // sorted
	aeads  map[uint16]cipher.AEAD
	checks map[uint16]string
	macs   map[uint16][]byte // manifest MAC keys, HKDF-derived (never the key itself)

	// The active key's AEAD and WAL associated data per compression
	// (index flags>>1), so sealing a record needs no map lookup and builds
	// nothing.
	activeAEAD cipher.AEAD
	activeAD   [4][]byte
}

// setActive makes id, which must be in k.aeads, the active key.
func (k *Keyring) setActive(id uint16) {
	k.active = id
	k.activeAEAD = k.aeads[id]
	for i := range k.activeAD {
		var buf [24]byte
		k.activeAD[i] = slices.Clone(walAssociated(&buf, FlagSealed|uint8(i)<<1, id))
	}
}

// Keyring returns a Keyring of the file's keys with the given active id (0:
// the highest id in the file).
func (f *KeyFile) Keyring(active uint16) (*Keyring, error) {
	return NewKeyring(f.Path, f.Keys, active)
}

// LoadKeyring is LoadKeyFile followed by KeyFile.Keyring.
func LoadKeyring(path string, active uint16) (*Keyring, error) {
	kf, err := LoadKeyFile(path)
	if err != nil {
		return nil, err
	}
	return kf.Keyring(active)
}

// NewKeyring builds a Keyring; file names the key source in errors. active 0
// picks the highest id.
func NewKeyring(file string, keys []Key, active uint16) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("crypto: key file %s holds no keys", file)
	}
	kr := &Keyring{file: file, aeads: map[uint16]cipher.AEAD{}, checks: map[uint16]string{}, macs: map[uint16][]byte{}}
	for _, k := range keys {
		if k.ID == 0 {
			return nil, fmt.Errorf("crypto: key file %s: key id 0 is reserved", file)
		}
		if _, dup := kr.aeads[k.ID]; dup {
			return nil, fmt.Errorf("crypto: key file %s: key id %d defined twice", file, k.ID)
		}
		aead, err := newCounterGCM(k.Secret[:])
		if err != nil {
			return nil, fmt.Errorf("crypto: key %d of %s: %w", k.ID, file, err)
		}
		kr.aeads[k.ID] = aead
		kr.checks[k.ID] = checkValue(k.Secret[:])
		mk, err := hkdf.Key(sha256.New, k.Secret[:], []byte("sluice"), "sluice manifest mac v1", 32)
		if err != nil {
			return nil, fmt.Errorf("crypto: key %d of %s: deriving the manifest key: %w", k.ID, file, err)
		}
		kr.macs[k.ID] = mk
		kr.ids = append(kr.ids, k.ID)
	}
	slices.Sort(kr.ids)
	if active == 0 {
		active = kr.ids[len(kr.ids)-1]
	}
	if _, ok := kr.aeads[active]; !ok {
		return nil, &KeyError{ID: active, File: file, What: "the configured active key"}
	}
	kr.setActive(active)
	return kr, nil
}

// checkValue is a public fingerprint of a key: the first 8 bytes of
// HMAC-SHA256(key, "sluice key check v1"), hex. It tells a wrong key from the
// right one without revealing anything useful about it.
func checkValue(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("sluice key check v1"))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// WithActive returns a copy of the keyring whose active key is id.
func (k *Keyring) WithActive(id uint16) (*Keyring, error) {
	if _, ok := k.aeads[id]; !ok {
		return nil, &KeyError{ID: id, File: k.file, What: "the requested active key"}
	}
	c := *k
	c.setActive(id)
	return &c, nil
}

// Active returns the id of the key new data is sealed with.
func (k *Keyring) Active() uint16 { return k.active }

// File returns the key file the keys came from.
func (k *Keyring) File() string { return k.file }

// IDs returns the key ids, ascending.
func (k *Keyring) IDs() []uint16 { return slices.Clone(k.ids) }

// Has says whether the keyring holds key id.
func (k *Keyring) Has(id uint16) bool { _, ok := k.aeads[id]; return ok }

// CheckValue returns key id's public fingerprint (see the store's crypto
// manifest) and whether the key exists.
func (k *Keyring) CheckValue(id uint16) (string, bool) {
	v, ok := k.checks[id]
	return v, ok
}

// MAC returns HMAC-SHA256 of data under a key derived (HKDF-SHA256, info
// "sluice manifest mac v1") from key id, for authenticating the store's
// crypto manifest. A missing key is a *KeyError.
func (k *Keyring) MAC(id uint16, data []byte) ([]byte, error) {
	if k == nil {
		return nil, &KeyError{ID: id, What: "the crypto manifest"}
	}
	mk, ok := k.macs[id]
	if !ok {
		return nil, &KeyError{ID: id, File: k.file, What: "the crypto manifest"}
	}
	m := hmac.New(sha256.New, mk)
	m.Write(data)
	return m.Sum(nil), nil
}

func (k *Keyring) aead(id uint16, what string) (cipher.AEAD, error) {
	if k == nil {
		return nil, &KeyError{ID: id, What: what}
	}
	a, ok := k.aeads[id]
	if !ok {
		return nil, &KeyError{ID: id, File: k.file, What: what}
	}
	return a, nil
}
