package filestore

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	sluicecrypto "github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/wal"
)

// Encryption and compression at rest.
//
// Every WAL payload goes through a crypto.Codec (compress, then seal with the
// active key; the record header names the key id) and, when a keyring is
// configured, every checkpoint is sealed by the same keyring's active key.
//
// The crypto manifest remembers what the store needs so that a wrong,
// missing or removed key fails the open (and Rekey) instead of turning into
// "damaged records" that are skipped, and what an attacker who can write the
// directories but has no key must not be able to change. It is written to
// <dir>/crypto.manifest in the checkpoint directory, the backup checkpoint
// directory and every data directory (so losing the checkpoint directory
// does not lose the store id that every sealed record is bound to), each
// copy atomically (tmp, fsync, rename, fsync of the directory), before the
// first checkpoint of every open and after every checkpoint:
//
//	sluice crypto manifest v2
//	store <store id, 32 hex>               random, created with the manifest
//	seq <n>                                 +1 per write; the highest verified copy wins
//	encrypted-since <segment> <woid>        first segment written encrypted, last WOID before it
//	bound-since <segment> <woid>            first segment written with bound records
//	generation <g>                          newest checkpoint generation written
//	migration-plaintext <0|1>               (only while generation is 0) see below
//	key <id> <fingerprint> <retired at>     one line per key that sealed data
//	quarantine <segment id>                 a segment where a record failed authentication
//	mac <key id> <HMAC-SHA256, 64 hex>      over every byte above and "mac <key id>"
//
// The MAC key is derived from the key with that id (crypto.Keyring.MAC,
// HKDF-SHA256): without the key, a manifest cannot be forged or edited, and
// a copy whose MAC fails refuses the open, naming the file and key id. The
// fingerprint is public (crypto.Keyring.CheckValue, a truncated HMAC of a
// constant under the key): a key file entry with the same id but other
// bytes is a wrong key, found before anything is replayed. "retired at" is
// 0 while the key may still seal new records; once another key becomes
// active it is the largest segment id that can hold a record sealed with
// it, so the key is needed exactly while a segment with an id at or below
// it exists. No secret is stored in the manifest.
//
// With a manifest v2, the store is encrypted: plaintext checkpoints are
// refused, unsealed WAL records in segments >= encrypted-since and records
// sealed by older builds in segments >= bound-since are refused (the Codec's
// Policy), checkpoints older than generation-1 are refused (rollback), and
// opening without a key file is refused.
//
// Migration (the one open of a store that has no manifest v2 while a key
// file is configured): a plaintext store being encrypted, or an encrypted
// store written by an older build (manifest v1, only checksummed, in the
// checkpoint directory; format below). The whole WAL is scanned first: if
// it holds records sealed by this build, a manifest v2 existed and was
// deleted or replaced, and the open is refused; if it holds sealed records
// and there is no manifest v1 either, the open is refused too (no silent
// downgrade). Otherwise plaintext checkpoints load only if neither the WAL
// nor a manifest v1 says the store was encrypted, checkpoints sealed by an
// older build load (this once), a new store id is drawn, and the manifest v2
// records encrypted-since and bound-since as the first segment this open
// writes. Until the first checkpoint under the new manifest is written
// (generation 0: a crash during the migration's first checkpoint), the next
// open still reads the old checkpoints as the migration did
// (migration-plaintext says whether plaintext ones were acceptable).
// Records before those points are read as they are: they were not
// authenticated (plaintext) or not bound (older build) when written, and
// still are not. Turning encryption off again is refused (the open fails,
// naming the manifest).
//
// Manifest v1 (read for migration only):
//
//	sluice crypto manifest v1
//	sealed <0|1>                          a sealed checkpoint was written
//	key <id> <check value> <retired at>   one line per key that sealed data
//	crc <CRC32C of the lines above, %08x>
//
// Nothing is written by an open that is refused: the manifest is written
// only once recovery succeeded, before its checkpoint.
const cryptoManifestName = "crypto.manifest"

type manifestKey struct {
	check   string
	retired uint32 // 0: may seal new records; else the last segment id that can hold it
}

type cryptoManifest struct {
	version    int // 1 or 2, as read
	sealed     bool
	store      sluicecrypto.StoreID
	seq        uint64
	encSeg     uint32
	encWOID    uint64
	boundSeg   uint32
	boundWOID  uint64
	generation uint64
	migPlain   bool // migration-plaintext (generation 0 only)
	keys       map[uint16]manifestKey
	quarantine map[uint32]bool // segments never garbage collected (noteAuthFailure)
	path       string          // the copy it was read from
}

// keyIDs returns the manifest's key ids in ascending order.
func (m *cryptoManifest) keyIDs() []uint16 { return slices.Sorted(maps.Keys(m.keys)) }

func (m *cryptoManifest) clone() *cryptoManifest {
	c := *m
	c.keys = maps.Clone(m.keys)
	c.quarantine = maps.Clone(m.quarantine)
	return &c
}

// body is the manifest v2 without its mac line.
func (m *cryptoManifest) body() []byte {
	var b bytes.Buffer
	b.WriteString("sluice crypto manifest v2\n")
	fmt.Fprintf(&b, "store %s\n", hex.EncodeToString(m.store[:]))
	fmt.Fprintf(&b, "seq %d\n", m.seq)
	fmt.Fprintf(&b, "encrypted-since %d %d\n", m.encSeg, m.encWOID)
	fmt.Fprintf(&b, "bound-since %d %d\n", m.boundSeg, m.boundWOID)
	fmt.Fprintf(&b, "generation %d\n", m.generation)
	if m.generation == 0 {
		fmt.Fprintf(&b, "migration-plaintext %d\n", map[bool]int{false: 0, true: 1}[m.migPlain])
	}
	for _, id := range m.keyIDs() {
		k := m.keys[id]
		fmt.Fprintf(&b, "key %d %s %d\n", id, k.check, k.retired)
	}
	for _, seg := range slices.Sorted(maps.Keys(m.quarantine)) {
		fmt.Fprintf(&b, "quarantine %d\n", seg)
	}
	return b.Bytes()
}

// marshal renders the manifest v2, authenticated with kr's active key.
func (m *cryptoManifest) marshal(kr *sluicecrypto.Keyring) ([]byte, error) {
	b := m.body()
	id := kr.Active()
	mac, err := kr.MAC(id, append(slices.Clip(b), fmt.Sprintf("mac %d", id)...))
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(b, "mac %d %s\n", id, hex.EncodeToString(mac)), nil
}

// parseCryptoManifest parses a manifest v1 (checking its CRC) or v2
// (checking its MAC with kr; a v2 manifest cannot be read without the key).
func parseCryptoManifest(path string, data []byte, kr *sluicecrypto.Keyring) (*cryptoManifest, error) {
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("file channel: crypto manifest %s line %d: %s", path, line, fmt.Sprintf(format, args...))
	}
	m := &cryptoManifest{keys: map[uint16]manifestKey{}, path: path}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var consumed int
	sawEnd, sawStore := false, false
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		f := strings.Fields(text)
		switch {
		case sawEnd:
			return nil, bad(line, "data after the last line")
		case line == 1:
			switch text {
			case "sluice crypto manifest v1":
				m.version = 1
			case "sluice crypto manifest v2":
				m.version = 2
			default:
				return nil, bad(line, "not a crypto manifest (or an unsupported version): %q", text)
			}
		case m.version == 1 && len(f) == 2 && f[0] == "sealed" && (f[1] == "0" || f[1] == "1"):
			m.sealed = f[1] == "1"
		case m.version == 2 && len(f) == 2 && f[0] == "store":
			id, err := hex.DecodeString(f[1])
			if err != nil || len(id) != sluicecrypto.StoreIDSize {
				return nil, bad(line, "malformed store id %q", f[1])
			}
			copy(m.store[:], id)
			sawStore = true
		case m.version == 2 && len(f) == 2 && (f[0] == "seq" || f[0] == "generation"):
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return nil, bad(line, "malformed %s %q", f[0], f[1])
			}
			if f[0] == "seq" {
				m.seq = v
			} else {
				m.generation = v
			}
		case m.version == 2 && len(f) == 3 && (f[0] == "encrypted-since" || f[0] == "bound-since"):
			seg, err1 := strconv.ParseUint(f[1], 10, 32)
			woid, err2 := strconv.ParseUint(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				return nil, bad(line, "malformed line %q", text)
			}
			if f[0] == "encrypted-since" {
				m.encSeg, m.encWOID = uint32(seg), woid
			} else {
				m.boundSeg, m.boundWOID = uint32(seg), woid
			}
		case m.version == 2 && len(f) == 2 && f[0] == "migration-plaintext" && (f[1] == "0" || f[1] == "1"):
			m.migPlain = f[1] == "1"
		case m.version == 2 && len(f) == 2 && f[0] == "quarantine":
			seg, err := strconv.ParseUint(f[1], 10, 32)
			if err != nil {
				return nil, bad(line, "malformed line %q", text)
			}
			if m.quarantine == nil {
				m.quarantine = map[uint32]bool{}
			}
			m.quarantine[uint32(seg)] = true
		case len(f) == 4 && f[0] == "key":
			id, err1 := strconv.ParseUint(f[1], 10, 16)
			ret, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil || id == 0 || len(f[2]) != 16 {
				return nil, bad(line, "malformed key line %q", text)
			}
			m.keys[uint16(id)] = manifestKey{check: f[2], retired: uint32(ret)}
		case m.version == 1 && len(f) == 2 && f[0] == "crc":
			want := fmt.Sprintf("%08x", crc32.Checksum(data[:consumed], crc32.MakeTable(crc32.Castagnoli)))
			if f[1] != want {
				return nil, bad(line, "checksum %s does not match the content (%s)", f[1], want)
			}
			sawEnd = true
		case m.version == 2 && len(f) == 3 && f[0] == "mac":
			id, err := strconv.ParseUint(f[1], 10, 16)
			got, err2 := hex.DecodeString(f[2])
			if err != nil || err2 != nil || id == 0 {
				return nil, bad(line, "malformed mac line %q", text)
			}
			if kr == nil {
				return nil, fmt.Errorf("file channel: the store is encrypted (crypto manifest %s, authenticated with key id %d) but no encryption key file is configured; refusing to open, nothing was changed", path, id)
			}
			want, err := kr.MAC(uint16(id), append(slices.Clip(data[:consumed]), fmt.Sprintf("mac %d", id)...))
			if err != nil {
				return nil, fmt.Errorf("file channel: crypto manifest %s is authenticated with key id %d: %w; restore the key; refusing to open, nothing was changed", path, id, err)
			}
			if !hmac.Equal(got, want) {
				return nil, fmt.Errorf("file channel: crypto manifest %s failed authentication with key id %d from key file %s (wrong key for that id, or the manifest was tampered with); refusing to open, nothing was changed",
					path, id, kr.File())
			}
			sawEnd = true
		default:
			return nil, bad(line, "unexpected line %q", text)
		}
		consumed += len(text) + 1
	}
	if !sawEnd {
		return nil, fmt.Errorf("file channel: crypto manifest %s is truncated (no %s line)", path, map[int]string{1: "crc", 2: "mac"}[m.version])
	}
	if m.version == 2 && !sawStore {
		return nil, fmt.Errorf("file channel: crypto manifest %s has no store id", path)
	}
	return m, nil
}

// fileCrypto is the store's encryption state.
type fileCrypto struct {
	codec *sluicecrypto.Codec
	path  string // manifest path in the checkpoint directory
	paths []string

	mu  sync.Mutex // guards man, dirty and manifest writes
	man *cryptoManifest
	// dirty: man differs from what is on disk (or nothing is): written
	// before the next checkpoint.
	dirty bool
	// authBad: segments where a take found a record failing
	// authentication; never garbage collected. Guarded by badMu.
	badMu   sync.Mutex
	authBad map[uint32]bool
}

// initCrypto builds the Codec from the options. It is always installed: with
// neither a keyring nor compression it stores payloads as they are but still
// reads compressed records (compression may be switched off) and names the
// key of sealed ones.
func (s *Store) initCrypto() error {
	comp, err := sluicecrypto.ParseCompression(s.opts.Compression)
	if err != nil {
		return fmt.Errorf("file channel: compression: %w", err)
	}
	codec, err := sluicecrypto.NewCodec(sluicecrypto.CodecOptions{
		Keyring:     s.opts.Encryption,
		Compression: comp,
		// MaxDecoded stays at its default (1 GiB, the largest segment): a
		// lower MaxEventSize today must not turn old records into "damage".
	})
	if err != nil {
		return fmt.Errorf("file channel: %w", err)
	}
	s.crypt = &fileCrypto{codec: codec, path: s.fs.PathJoin(s.opts.CheckpointDir, cryptoManifestName),
		paths: manifestPaths(s.fs, s.opts), authBad: map[uint32]bool{}}
	if s.opts.Encryption != nil && !s.opts.legacyFormat {
		// Queue digests become keyed: a random key per open, written
		// only inside sealed checkpoints.
		s.digestKey = make([]byte, checkpoint.DigestKeySize)
		if _, err := rand.Read(s.digestKey); err != nil {
			return fmt.Errorf("file channel: drawing the queue digest key: %w", err)
		}
	}
	return nil
}

// manifestPaths lists every copy of the crypto manifest: checkpoint
// directory first.
func manifestPaths(fs vfs.FS, o Options) []string {
	var out []string
	for _, d := range append([]string{o.CheckpointDir, o.BackupCheckpointDir}, o.DataDirs...) {
		if d != "" {
			out = append(out, fs.PathJoin(d, cryptoManifestName))
		}
	}
	return out
}

// walCodec is what wal.Open gets.
func (s *Store) walCodec() wal.Codec {
	if s.opts.legacyFormat {
		return legacyCodec{s.crypt.codec}
	}
	return s.crypt.codec
}

// legacyCodec hides the Codec's RecordCodec methods: records are sealed as
// builds before store binding sealed them (tests of the migration).
type legacyCodec struct{ c *sluicecrypto.Codec }

func (l legacyCodec) Encode(dst, p []byte) ([]byte, uint8, uint16, error) { return l.c.Encode(dst, p) }
func (l legacyCodec) Decode(dst, p []byte, flags uint8, key uint16) ([]byte, error) {
	return l.c.Decode(dst, p, flags, key)
}

// checkpointSealer is the Sealer for the next checkpoint: the current
// keyring's, or nil when not encrypting.
func (s *Store) checkpointSealer() checkpoint.Sealer {
	if s.crypt == nil || s.crypt.codec.Keyring() == nil {
		return nil
	}
	if s.opts.legacyFormat {
		return s.crypt.codec.Sealer().Legacy()
	}
	return s.crypt.codec.Sealer()
}

func readSmallFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > 4<<20 {
		return nil, fmt.Errorf("%d bytes: not a manifest", st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, err
	}
	return data, nil
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) || oserror.IsNotExist(err) }

// readManifests reads every copy of the manifest: cur is the verified v2
// copy with the highest seq (nil when there is none), legacy the v1
// manifest of the checkpoint directory (nil when there is none). Any copy
// that is not a valid manifest, fails authentication or names another
// store refuses the open.
func readManifests(fs vfs.FS, paths []string, kr *sluicecrypto.Keyring) (cur, legacy *cryptoManifest, err error) {
	for i, p := range paths {
		data, err := readSmallFile(fs, p)
		if err != nil {
			if isNotExist(err) {
				continue
			}
			return nil, nil, fmt.Errorf("file channel: reading crypto manifest %s: %w", p, err)
		}
		m, err := parseCryptoManifest(p, data, kr)
		if err != nil {
			return nil, nil, err
		}
		if m.version == 1 {
			if i != 0 {
				return nil, nil, fmt.Errorf("file channel: crypto manifest %s: a version 1 manifest outside the checkpoint directory was not written by sluice; refusing to open, nothing was changed", p)
			}
			legacy = m
			continue
		}
		if cur != nil && cur.store != m.store {
			return nil, nil, fmt.Errorf("file channel: crypto manifests %s and %s name different stores (%x, %x): directories of two stores are mixed; refusing to open, nothing was changed",
				cur.path, p, cur.store, m.store)
		}
		if cur == nil || m.seq > cur.seq {
			cur = m
		}
	}
	return cur, legacy, nil
}

// writeManifestLocked writes m (authenticated with the active key) to
// every manifest path. fc.mu is held.
func (fc *fileCrypto) writeManifestLocked(fs vfs.FS, m *cryptoManifest) error {
	kr := fc.codec.Keyring()
	if kr == nil {
		return nil
	}
	m.seq++
	data, err := m.marshal(kr)
	if err != nil {
		m.seq--
		return fmt.Errorf("file channel: writing crypto manifest: %w", err)
	}
	for _, p := range fc.paths {
		// vfs.File.Write may modify its argument: a copy per file.
		if err := writeFileAtomic(fs, p, slices.Clone(data)); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic replaces path (tmp, fsync, rename, fsync of the
// directory), mode 0600 where the FS supports it.
func writeFileAtomic(fs vfs.FS, path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("file channel: writing crypto manifest %s: %w", tmp, err)
	}
	restrictMode(f)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, path)
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(fs.PathDir(path)); err == nil {
			err = d.Sync()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("file channel: writing crypto manifest %s: %w", path, err)
	}
	return nil
}

// restrictMode makes a file the store created readable by its owner only,
// when the FS hands out *os.File-like files.
func restrictMode(f vfs.File) {
	if c, ok := f.(interface{ Chmod(os.FileMode) error }); ok {
		_ = c.Chmod(0o600)
	}
}

// segmentRange returns the smallest and largest WAL segment id (ok false
// when there is none).
func (s *Store) segmentRange() (lo, hi uint32, ok bool) {
	for _, sg := range s.wal.Segments() {
		if !ok {
			lo, hi, ok = sg.ID, sg.ID, true
			continue
		}
		lo, hi = min(lo, sg.ID), max(hi, sg.ID)
	}
	return lo, hi, ok
}

// checkKeys verifies that kr (nil: no encryption) holds, with the right key
// material, every key that a WAL segment may still need according to m.
func (s *Store) checkKeys(m *cryptoManifest, kr *sluicecrypto.Keyring) error {
	lo, _, have := s.segmentRange()
	file := "(no encryption key file is configured)"
	if kr != nil {
		file = kr.File()
	}
	for _, id := range m.keyIDs() {
		k := m.keys[id]
		if kr != nil {
			if check, ok := kr.CheckValue(id); ok && check != k.check {
				return fmt.Errorf("file channel: key id %d in key file %s is not the key this store was written with (fingerprint %s, manifest %s says %s); refusing to open, nothing was changed",
					id, file, check, m.path, k.check)
			}
		}
		needed := have && (k.retired == 0 || lo <= k.retired)
		if needed && (kr == nil || !kr.Has(id)) {
			return fmt.Errorf("file channel: WAL segments may hold records sealed with key id %d, which is not in key file %s (manifest %s); restore the key; refusing to open, nothing was changed",
				id, file, m.path)
		}
	}
	if kr == nil && (m.sealed || m.version == 2) {
		return fmt.Errorf("file channel: the store is encrypted (manifest %s says so) but no encryption key file is configured; refusing to open, nothing was changed", m.path)
	}
	return nil
}

// probeWAL scans the whole WAL without opening sealed records and counts
// the sealed and the bound ones (migration only: before anything is
// replayed or written).
func (s *Store) probeWAL() (sealed, bound int64, err error) {
	c := s.crypt.codec
	c.SetProbe(true)
	defer c.SetProbe(false)
	if _, err := s.wal.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil); err != nil {
		return 0, 0, fmt.Errorf("file channel: scanning the WAL before enabling encryption: %w", err)
	}
	sealed, bound = c.ProbeCounts()
	return sealed, bound, nil
}

// loadCheckpoints is checkpoint.Load with the store's Sealer, failing closed
// on key problems: a checkpoint sealed with a key id the keyring lacks, a
// sealed checkpoint without a keyring, or every sealed checkpoint failing
// authentication (a wrong key, not damage) is an error, not a fallback to a
// full replay. It reads and verifies the crypto manifest, sets the Codec's
// Policy before anything is replayed, refuses checkpoints the manifest says
// are rolled back, and decides (migration only) whether plaintext
// checkpoints may be read. It writes nothing.
func (s *Store) loadCheckpoints() ([]checkpoint.Candidate, error) {
	fc := s.crypt
	kr := fc.codec.Keyring()
	man, legacy, err := readManifests(s.fs, fc.paths, kr)
	if err != nil {
		return nil, err
	}
	acceptPlain := false
	var next *cryptoManifest
	switch {
	case man != nil:
		if err := s.checkKeys(man, kr); err != nil {
			return nil, err
		}
		// generation 0: the migration's first checkpoint was not written
		// (a crash); its old checkpoints are read as it read them.
		fc.codec.SetPolicy(sluicecrypto.Policy{Store: man.store, EncryptedSince: man.encSeg, BoundSince: man.boundSeg, LegacyCheckpoints: man.generation == 0})
		acceptPlain = man.generation == 0 && man.migPlain
		next = man.clone()
		fc.badMu.Lock()
		for seg := range man.quarantine {
			fc.authBad[seg] = true
		}
		fc.badMu.Unlock()
	case kr == nil:
		if legacy != nil {
			if err := s.checkKeys(legacy, nil); err != nil {
				return nil, err
			}
		}
		acceptPlain = true
	default:
		// Migration: a plaintext store, or one written by an older build.
		if legacy != nil {
			if err := s.checkKeys(legacy, kr); err != nil {
				return nil, err
			}
		}
		sealed, bound, err := s.probeWAL()
		if err != nil {
			return nil, err
		}
		switch {
		case bound > 0:
			return nil, fmt.Errorf("file channel: the WAL holds %d records sealed and bound to a store id, but no valid crypto manifest (%s) names it: the manifest was deleted or replaced; restore it from a copy; refusing to open, nothing was changed",
				bound, strings.Join(fc.paths, ", "))
		case sealed > 0 && legacy == nil:
			return nil, fmt.Errorf("file channel: the WAL holds %d sealed (encrypted) records but the crypto manifest %s is missing; restore it; refusing to open, nothing was changed",
				sealed, fc.path)
		}
		acceptPlain = sealed == 0 && (legacy == nil || !legacy.sealed)
		next = &cryptoManifest{version: 2, keys: map[uint16]manifestKey{}, migPlain: acceptPlain}
		if legacy != nil {
			next.keys = maps.Clone(legacy.keys)
		}
		if _, err := rand.Read(next.store[:]); err != nil {
			return nil, fmt.Errorf("file channel: drawing a store id: %w", err)
		}
		fc.codec.SetPolicy(sluicecrypto.Policy{Store: next.store, LegacyCheckpoints: true})
		s.log.Warn("file channel: no crypto manifest: enabling authenticated encryption for this store (a migration); if it was encrypted before, its manifests and sealed files were removed: stop and restore them",
			"key_file", kr.File(), "plaintext_checkpoints_accepted", acceptPlain, "legacy_manifest", legacy != nil, "manifests", strings.Join(fc.paths, ", "))
	}
	sealer := s.checkpointSealer()
	cands := checkpoint.Load(s.fs, s.opts.CheckpointDir, s.opts.BackupCheckpointDir, sealer)
	present, authFailed := 0, 0
	for i := range cands {
		c := &cands[i]
		if c.Err == nil {
			present++
			continue
		}
		var ke *sluicecrypto.KeyError
		switch {
		case errors.Is(c.Err, os.ErrNotExist):
			continue
		case errors.As(c.Err, &ke):
			return nil, fmt.Errorf("file channel: checkpoint %s: %w; restore the key; refusing to open, nothing was changed", c.Path, ke)
		case errors.Is(c.Err, checkpoint.ErrSealed):
			return nil, fmt.Errorf("file channel: checkpoint %s is sealed (encrypted) but no encryption key file is configured; refusing to open, nothing was changed", c.Path)
		case errors.Is(c.Err, checkpoint.ErrUnsupportedVersion):
			// Written by a newer build: falling back to an older checkpoint
			// or a full replay would deliver events again and lose what
			// the newer format records.
			return nil, fmt.Errorf("file channel: checkpoint %s: %w; it was written by a newer build of sluice: run that build (downgrading a store is not supported); refusing to open, nothing was changed", c.Path, c.Err)
		case errors.Is(c.Err, checkpoint.ErrNotSealed) && acceptPlain:
			c.Checkpoint, c.Err = checkpoint.Read(s.fs, c.Path, nil)
			if c.Err == nil {
				s.log.Info("file channel: loading a plaintext checkpoint; the next checkpoint will be sealed", "file", c.Path)
			}
		case errors.Is(c.Err, sluicecrypto.ErrAuth):
			authFailed++
		}
		present++
	}
	if man == nil && kr != nil && authFailed > 0 {
		// A migration reads plaintext checkpoints or ones sealed by an
		// older build with the right key: one failing authentication was
		// sealed by this build (its manifest removed), or with another key.
		return nil, fmt.Errorf("file channel: opening with key file %s for the first time (no crypto manifest): %v; a checkpoint sealed by this build means the manifest was deleted (restore it), otherwise the key is wrong; refusing to open, nothing was changed",
			kr.File(), firstAuthErr(cands))
	}
	if authFailed > 0 && authFailed == present {
		return nil, fmt.Errorf("file channel: no checkpoint could be opened with key file %s (wrong key, or every checkpoint was tampered with: %v); refusing to open, nothing was changed. If the keys are right, move the checkpoint files away to force a full WAL replay",
			kr.File(), firstErr(cands))
	}
	// Rollback: a checkpoint older than the backup of the newest one the
	// manifest recorded is refused (a full replay of the authenticated WAL
	// is the fallback, as for a lost checkpoint).
	if man != nil && man.generation > 1 {
		for i := range cands {
			c := &cands[i]
			if c.Checkpoint != nil && c.Checkpoint.Generation+1 < man.generation {
				c.Err = fmt.Errorf("file channel: checkpoint %s has generation %d but the authenticated manifest %s records generation %d: an older checkpoint was restored (rollback); refused",
					c.Path, c.Checkpoint.Generation, man.path, man.generation)
				c.Checkpoint = nil
			}
		}
	}
	// Checkpoints only opened once the Sealer is given were read without one
	// above; keep the newest first.
	slices.SortStableFunc(cands, func(a, b checkpoint.Candidate) int {
		switch {
		case a.Checkpoint != nil && b.Checkpoint != nil:
			return -cmpU64(a.Checkpoint.Generation, b.Checkpoint.Generation)
		case a.Checkpoint != nil:
			return -1
		case b.Checkpoint != nil:
			return 1
		}
		return 0
	})
	fc.adoptActiveKey(s, next, kr)
	return cands, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func firstAuthErr(cands []checkpoint.Candidate) error {
	for _, c := range cands {
		if errors.Is(c.Err, sluicecrypto.ErrAuth) {
			return c.Err
		}
	}
	return nil
}

func firstErr(cands []checkpoint.Candidate) error {
	for _, c := range cands {
		if c.Err != nil && !errors.Is(c.Err, os.ErrNotExist) {
			return c.Err
		}
	}
	return nil
}

// adoptActiveKey prepares (in memory; written before the first checkpoint)
// the manifest saying that kr's active key may seal records from now on and
// that every other key is retired at the newest existing segment; keys no
// segment needs any more are forgotten. No manifest is kept for a store
// without a keyring.
func (fc *fileCrypto) adoptActiveKey(s *Store, man *cryptoManifest, kr *sluicecrypto.Keyring) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if kr == nil || man == nil {
		fc.man = nil
		return
	}
	lo, hi, have := s.segmentRange()
	for id, k := range man.keys {
		if id == kr.Active() {
			continue
		}
		if k.retired == 0 {
			k.retired = hi
		}
		if !have || k.retired < lo {
			delete(man.keys, id)
			continue
		}
		man.keys[id] = k
	}
	check, _ := kr.CheckValue(kr.Active())
	man.keys[kr.Active()] = manifestKey{check: check}
	fc.man = man
	fc.dirty = true
}

// beforeCheckpoint runs before checkpoint cp is written with the WAL
// frontier given. Its generation is raised above the newest one the
// manifest recorded (the checkpoints may have been lost: their successors
// must not look rolled back). A pending manifest is written: the first
// checkpoint of an open records, for a migrated store, where encryption and
// binding start (the segments this open writes; no record was written yet).
func (s *Store) beforeCheckpoint(cp *checkpoint.Checkpoint, frontier []wal.Position, w uint64) error {
	fc := s.crypt
	if fc == nil || fc.codec.Keyring() == nil {
		return nil
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.man == nil {
		return nil
	}
	if cp.Generation <= fc.man.generation {
		cp.Generation = fc.man.generation + 1
	}
	if !fc.dirty {
		return nil
	}
	m := fc.man.clone()
	fc.addQuarantine(m)
	if m.encSeg == 0 || m.boundSeg == 0 {
		first := uint32(0)
		for _, p := range frontier {
			if first == 0 || p.Segment < first {
				first = p.Segment
			}
		}
		if first == 0 {
			return errors.New("file channel: recording where encryption starts: the WAL has no active segment")
		}
		if m.encSeg == 0 {
			m.encSeg, m.encWOID = first, w
		}
		if m.boundSeg == 0 {
			m.boundSeg, m.boundWOID = first, w
		}
	}
	if err := fc.writeManifestLocked(s.fs, m); err != nil {
		return err
	}
	fc.man, fc.dirty = m, false
	fc.codec.SetPolicy(sluicecrypto.Policy{Store: m.store, EncryptedSince: m.encSeg, BoundSince: m.boundSeg, LegacyCheckpoints: m.generation == 0})
	return nil
}

// afterCheckpoint records generation gen in the manifest, so that an older
// checkpoint restored later is refused.
func (s *Store) afterCheckpoint(gen uint64) {
	fc := s.crypt
	if fc == nil || fc.codec.Keyring() == nil {
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.man == nil || fc.man.generation >= gen {
		return
	}
	m := fc.man.clone()
	m.generation = gen
	fc.addQuarantine(m)
	if err := fc.writeManifestLocked(s.fs, m); err != nil {
		s.log.Error("file channel: recording the checkpoint generation in the crypto manifest", "generation", gen, "err", err)
		return
	}
	fc.man = m
	fc.codec.SetPolicy(sluicecrypto.Policy{Store: m.store, EncryptedSince: m.encSeg, BoundSince: m.boundSeg})
}

// noteAuthFailure records that segment seg holds a record that failed
// authentication (or was refused by the encryption policy): it is never
// garbage collected or recycled, so the evidence, and the data if the key
// was wrong, stays.
func (s *Store) noteAuthFailure(seg uint32, err error) {
	fc := s.crypt
	fc.badMu.Lock()
	first := !fc.authBad[seg]
	fc.authBad[seg] = true
	fc.badMu.Unlock()
	if first {
		s.log.Error("file channel: a WAL record failed authentication; its segment is kept (never garbage collected)", "segment", seg, "err", err)
	}
}

// addQuarantine copies the segments that had authentication failures into
// m, so they stay out of GC after a restart too.
func (fc *fileCrypto) addQuarantine(m *cryptoManifest) {
	fc.badMu.Lock()
	defer fc.badMu.Unlock()
	for seg := range fc.authBad {
		if m.quarantine == nil {
			m.quarantine = map[uint32]bool{}
		}
		m.quarantine[seg] = true
	}
}

// keepSegment says whether GC must keep segment seg.
func (s *Store) keepSegment(seg uint32) bool {
	fc := s.crypt
	fc.badMu.Lock()
	defer fc.badMu.Unlock()
	return fc.authBad[seg]
}

// Rekey installs a new keyring without stopping the store (e.g. on SIGHUP
// after `sluice keygen` appended a key): records written from now on are
// sealed with kr's active key, older ones keep opening with the key their
// header names. kr must hold, with the same key material, every key that a
// WAL segment or a checkpoint still needs; otherwise Rekey fails and nothing
// changes. Rekey then writes two checkpoints so that both checkpoint
// generations are sealed with the new key; after that, an old key is needed
// only until the WAL segments sealed with it are garbage collected.
func (s *Store) Rekey(kr *sluicecrypto.Keyring) error {
	if kr == nil {
		return errors.New("file channel: rekey: a keyring is required (encryption cannot be turned off while running)")
	}
	if s.isClosed.Load() {
		return channel.ErrClosed
	}
	fc := s.crypt
	fc.mu.Lock()
	man := fc.man
	if man == nil {
		fc.mu.Unlock()
		return errors.New("file channel: rekey: the store was opened without encryption; encryption cannot be switched on while running (restart with the key file configured: that open migrates the store)")
	}
	if err := s.checkKeys(man, kr); err != nil {
		fc.mu.Unlock()
		return fmt.Errorf("file channel: rekey: %w", err)
	}
	// Every checkpoint on disk must still open with the new keys.
	pol := fc.codec.Policy()
	probe, err := sluicecrypto.NewCodec(sluicecrypto.CodecOptions{Keyring: kr, Policy: &pol})
	if err != nil {
		fc.mu.Unlock()
		return err
	}
	for _, c := range checkpoint.Load(s.fs, s.opts.CheckpointDir, s.opts.BackupCheckpointDir, probe.Sealer()) {
		var ke *sluicecrypto.KeyError
		if errors.As(c.Err, &ke) {
			fc.mu.Unlock()
			return fmt.Errorf("file channel: rekey: checkpoint %s: %w", c.Path, ke)
		}
	}
	// 1. The new active key may seal records from now on.
	next := man.clone()
	check, _ := kr.CheckValue(kr.Active())
	next.keys[kr.Active()] = manifestKey{check: check}
	if err := fc.writeManifestLocked(s.fs, next); err != nil {
		fc.mu.Unlock()
		return fmt.Errorf("file channel: rekey: %w", err)
	}
	fc.man = next
	// 2. Switch between two WAL appends (they hold cpMu shared): every
	// record sealed with the old key is in a segment at or below the
	// current frontier.
	s.cpMu.Lock()
	old := fc.codec.Keyring()
	fc.codec.SetKeyring(kr)
	frontier, _ := s.wal.Frontier()
	s.cpMu.Unlock()
	if old != nil && old.Active() != kr.Active() {
		var hi uint32
		for _, p := range frontier {
			hi = max(hi, p.Segment)
		}
		if _, hiSeg, ok := s.segmentRange(); ok {
			hi = max(hi, hiSeg)
		}
		retired := next.clone()
		if k, ok := retired.keys[old.Active()]; ok {
			k.retired = hi
			retired.keys[old.Active()] = k
		}
		if err := fc.writeManifestLocked(s.fs, retired); err != nil {
			// The manifest still says the old key may be in use: safe.
			s.log.Warn("file channel: rekey: recording the retired key", "key_id", old.Active(), "err", err)
		} else {
			fc.man = retired
		}
	}
	fc.mu.Unlock()
	s.log.Info("file channel: active encryption key changed", "key_id", kr.Active(), "key_file", kr.File())
	// 3. Reseal both checkpoint generations.
	for range 2 {
		if err := s.Checkpoint(); err != nil {
			return fmt.Errorf("file channel: rekey: resealing checkpoint: %w", err)
		}
	}
	return nil
}

// SetActiveKey makes key id of the current keyring the active one (see
// Rekey).
func (s *Store) SetActiveKey(id uint16) error {
	kr := s.crypt.codec.Keyring()
	if kr == nil {
		return errors.New("file channel: set active key: encryption is not configured")
	}
	next, err := kr.WithActive(id)
	if err != nil {
		return fmt.Errorf("file channel: set active key: %w", err)
	}
	return s.Rekey(next)
}

// EncryptionKey returns the active key id (0 when not encrypting).
func (s *Store) EncryptionKey() uint16 {
	if kr := s.crypt.codec.Keyring(); kr != nil {
		return kr.Active()
	}
	return 0
}

// commitSet is the replay's set of committed txn ids for an encrypted store
// (nil for a plaintext one, which anybody can forge anyway).
func (s *Store) commitSet() map[uint64]struct{} {
	if s.crypt == nil || s.crypt.codec.Keyring() == nil {
		return nil
	}
	return make(map[uint64]struct{})
}

// noteCommit refuses a txn id that commits twice in the replayed WAL: sealed
// records are bound to their txn id but not to their position (see
// crypto/bind.go), so a copied transaction shows as a second commit.
func (rs *replayState) noteCommit(txn uint64, ptr wal.Pointer) error {
	if rs.commits == nil {
		return nil
	}
	if _, dup := rs.commits[txn]; dup {
		return fmt.Errorf("file channel: txn %d commits a second time (record %v): its sealed records were copied by someone with write access to the data directory; refusing to open, nothing was changed", txn, ptr)
	}
	rs.commits[txn] = struct{}{}
	return nil
}

// noteCheckpointTxns remembers, for checkTxn, which txn ids may still write
// records after the checkpoint.
func (rs *replayState) noteCheckpointTxns(cp *checkpoint.Checkpoint) {
	if rs.commits == nil {
		return
	}
	rs.txnFloor = cp.NextTxnID
	rs.ckptTxns = make(map[uint64]bool, len(cp.PutTxns)+len(cp.TakeTxns))
	for _, p := range cp.PutTxns {
		rs.ckptTxns[p.TxnID] = true
	}
	for _, t := range cp.TakeTxns {
		rs.ckptTxns[t.TxnID] = true
	}
}

// checkTxn refuses (encrypted stores) a record replayed after the
// checkpoint whose txn id is below the checkpoint's NextTxnID but not one
// of its in-flight txns: the store gives such a txn a new id before its
// first record (filePut.flush, fileTake.Take), so the record is a copy of
// a transaction from before the checkpoint.
func (rs *replayState) checkTxn(rec wal.Record, ptr wal.Pointer) error {
	if rs.commits == nil || rec.TxnID >= rs.txnFloor || rs.ckptTxns[rec.TxnID] {
		return nil
	}
	return fmt.Errorf("file channel: %s record %v of txn %d, which predates the checkpoint (next txn id %d) and was not in flight then: its sealed records were copied by someone with write access to the data directory; refusing to open, nothing was changed",
		rec.Type, ptr, rec.TxnID, rs.txnFloor)
}

// ReadCryptoPolicy is for offline tools (verify, salvage, inspect): it reads
// and verifies every copy of a closed store's crypto manifest and returns the
// Policy its records and checkpoints must be read with, and whether the
// store is encrypted (plaintext checkpoints are then not to be trusted). A
// manifest that fails authentication, or that cannot be checked because no
// key is given, is an error. Without a manifest v2 (a plaintext store, or
// one written by an older build) the Policy reads legacy checkpoints.
func ReadCryptoPolicy(fs vfs.FS, o Options, kr *sluicecrypto.Keyring) (pol sluicecrypto.Policy, encrypted bool, err error) {
	if fs == nil {
		fs = vfs.Default
	}
	man, legacy, err := readManifests(fs, manifestPaths(fs, o), kr)
	if err != nil {
		return sluicecrypto.Policy{}, false, err
	}
	if man == nil {
		return sluicecrypto.Policy{LegacyCheckpoints: true}, legacy != nil && legacy.sealed, nil
	}
	return sluicecrypto.Policy{Store: man.store, EncryptedSince: man.encSeg, BoundSince: man.boundSeg}, true, nil
}
