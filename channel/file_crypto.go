package channel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
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
// The crypto manifest, <CheckpointDir>/crypto.manifest, remembers what the
// store needs so that a wrong, missing or removed key fails the open (and
// Rekey) instead of turning into "damaged records" that are skipped:
//
//	sluice crypto manifest v1
//	sealed <0|1>                          a sealed checkpoint was written
//	key <id> <check value> <retired at>   one line per key that sealed data
//	crc <CRC32C of the lines above, %08x>
//
// The check value is a public fingerprint of the key (crypto.Keyring
// CheckValue): a key file entry with the same id but other bytes is a wrong
// key. "retired at" is 0 while the key may still seal new records; once
// another key becomes active it is the largest segment id that can hold a
// record sealed with it, so the key is needed exactly while a segment with an
// id at or below it exists. No secret is stored in the manifest.
//
// Turning encryption on for an existing store: the plaintext checkpoints
// still load while "sealed" is 0 (checkpoint.Read refuses them with
// ErrNotSealed once a Sealer is given; we read them again without one only
// then); after the first sealed checkpoint the manifest says "sealed 1" and a
// plaintext checkpoint is refused like a corrupt one, so nobody can bypass
// the seal by dropping in a plaintext file. Turning encryption off again is
// refused (the open fails, naming the manifest).
const cryptoManifestName = "crypto.manifest"

type manifestKey struct {
	check   string
	retired uint32 // 0: may seal new records; else the last segment id that can hold it
}

type cryptoManifest struct {
	sealed bool
	keys   map[uint16]manifestKey
}

// keyIDs returns the manifest's key ids in ascending order.
func (m *cryptoManifest) keyIDs() []uint16 { return slices.Sorted(maps.Keys(m.keys)) }

func (m *cryptoManifest) empty() bool { return !m.sealed && len(m.keys) == 0 }

func (m *cryptoManifest) marshal() []byte {
	var b bytes.Buffer
	b.WriteString("sluice crypto manifest v1\n")
	fmt.Fprintf(&b, "sealed %d\n", map[bool]int{false: 0, true: 1}[m.sealed])
	for _, id := range m.keyIDs() {
		k := m.keys[id]
		fmt.Fprintf(&b, "key %d %s %d\n", id, k.check, k.retired)
	}
	fmt.Fprintf(&b, "crc %08x\n", crc32.Checksum(b.Bytes(), crc32.MakeTable(crc32.Castagnoli)))
	return b.Bytes()
}

func parseCryptoManifest(path string, data []byte) (*cryptoManifest, error) {
	bad := func(line int, format string, args ...any) error {
		return fmt.Errorf("file channel: crypto manifest %s line %d: %s", path, line, fmt.Sprintf(format, args...))
	}
	m := &cryptoManifest{keys: map[uint16]manifestKey{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	var consumed int
	sawCRC := false
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		f := strings.Fields(text)
		switch {
		case sawCRC:
			return nil, bad(line, "data after the crc line")
		case line == 1:
			if text != "sluice crypto manifest v1" {
				return nil, bad(line, "not a crypto manifest (or an unsupported version): %q", text)
			}
		case len(f) == 2 && f[0] == "sealed" && (f[1] == "0" || f[1] == "1"):
			m.sealed = f[1] == "1"
		case len(f) == 4 && f[0] == "key":
			id, err1 := strconv.ParseUint(f[1], 10, 16)
			ret, err2 := strconv.ParseUint(f[3], 10, 32)
			if err1 != nil || err2 != nil || id == 0 || len(f[2]) != 16 {
				return nil, bad(line, "malformed key line %q", text)
			}
			m.keys[uint16(id)] = manifestKey{check: f[2], retired: uint32(ret)}
		case len(f) == 2 && f[0] == "crc":
			want := fmt.Sprintf("%08x", crc32.Checksum(data[:consumed], crc32.MakeTable(crc32.Castagnoli)))
			if f[1] != want {
				return nil, bad(line, "checksum %s does not match the content (%s)", f[1], want)
			}
			sawCRC = true
		default:
			return nil, bad(line, "unexpected line %q", text)
		}
		consumed += len(text) + 1
	}
	if !sawCRC {
		return nil, fmt.Errorf("file channel: crypto manifest %s is truncated (no crc line)", path)
	}
	return m, nil
}

// fileCrypto is the store's encryption state.
type fileCrypto struct {
	codec *sluicecrypto.Codec
	path  string // manifest path

	mu  sync.Mutex // guards man and manifest writes
	man *cryptoManifest
}

// initCrypto builds the Codec from the options. It is always installed: with
// neither a keyring nor compression it stores payloads as they are but still
// reads compressed records (compression may be switched off) and names the
// key of sealed ones.
func (s *File) initCrypto() error {
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
	s.crypt = &fileCrypto{codec: codec, path: s.fs.PathJoin(s.opts.CheckpointDir, cryptoManifestName)}
	return nil
}

// walCodec is what wal.Open gets.
func (s *File) walCodec() wal.Codec { return s.crypt.codec }

// checkpointSealer is the Sealer for the next checkpoint: the current
// keyring's, or nil when not encrypting.
func (s *File) checkpointSealer() checkpoint.Sealer {
	if s.crypt == nil || s.crypt.codec.Keyring() == nil {
		return nil
	}
	return s.crypt.codec.Sealer()
}

func (fc *fileCrypto) readManifest(fs vfs.FS) (*cryptoManifest, error) {
	f, err := fs.Open(fc.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || os.IsNotExist(err) {
			return &cryptoManifest{keys: map[uint16]manifestKey{}}, nil
		}
		return nil, fmt.Errorf("file channel: reading crypto manifest %s: %w", fc.path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("file channel: reading crypto manifest %s: %w", fc.path, err)
	}
	if st.Size() > 4<<20 {
		return nil, fmt.Errorf("file channel: crypto manifest %s is %d bytes: not a manifest", fc.path, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("file channel: reading crypto manifest %s: %w", fc.path, err)
	}
	return parseCryptoManifest(fc.path, data)
}

// writeManifest replaces the manifest atomically (tmp, fsync, rename, fsync
// of the directory).
func (fc *fileCrypto) writeManifest(fs vfs.FS, m *cryptoManifest) error {
	tmp := fc.path + ".tmp"
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("file channel: writing crypto manifest %s: %w", tmp, err)
	}
	_, err = f.Write(m.marshal())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = fs.Rename(tmp, fc.path)
	}
	if err == nil {
		var d vfs.File
		if d, err = fs.OpenDir(fs.PathDir(fc.path)); err == nil {
			err = d.Sync()
			if cerr := d.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("file channel: writing crypto manifest %s: %w", fc.path, err)
	}
	return nil
}

// segmentRange returns the smallest and largest WAL segment id (ok false
// when there is none).
func (s *File) segmentRange() (lo, hi uint32, ok bool) {
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
func (s *File) checkKeys(m *cryptoManifest, kr *sluicecrypto.Keyring) error {
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
					id, file, check, s.crypt.path, k.check)
			}
		}
		needed := have && (k.retired == 0 || lo <= k.retired)
		if needed && (kr == nil || !kr.Has(id)) {
			return fmt.Errorf("file channel: WAL segments may hold records sealed with key id %d, which is not in key file %s (manifest %s); restore the key; refusing to open, nothing was changed",
				id, file, s.crypt.path)
		}
	}
	if kr == nil && m.sealed {
		return fmt.Errorf("file channel: the store is encrypted (manifest %s says its checkpoints are sealed) but no encryption key file is configured; refusing to open, nothing was changed", s.crypt.path)
	}
	return nil
}

// loadCheckpoints is checkpoint.Load with the store's Sealer, failing closed
// on key problems: a checkpoint sealed with a key id the keyring lacks, a
// sealed checkpoint without a keyring, or every sealed checkpoint failing
// authentication (a wrong key, not damage) is an error, not a fallback to a
// full replay. A plaintext checkpoint of a store that never wrote a sealed
// one is read without the Sealer (turning encryption on). It also checks
// and updates the crypto manifest before anything is written.
func (s *File) loadCheckpoints() ([]checkpoint.Candidate, error) {
	fc := s.crypt
	man, err := fc.readManifest(s.fs)
	if err != nil {
		return nil, err
	}
	kr := fc.codec.Keyring()
	if err := s.checkKeys(man, kr); err != nil {
		return nil, err
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
		case errors.Is(c.Err, checkpoint.ErrNotSealed) && !man.sealed:
			c.Checkpoint, c.Err = checkpoint.Read(s.fs, c.Path, nil)
			if c.Err == nil {
				s.log.Info("file channel: loading a plaintext checkpoint; the next checkpoint will be sealed", "file", c.Path)
			}
		case errors.Is(c.Err, sluicecrypto.ErrAuth):
			authFailed++
		}
		present++
	}
	if authFailed > 0 && authFailed == present {
		return nil, fmt.Errorf("file channel: no checkpoint could be opened with key file %s (wrong key, or every checkpoint was tampered with: %v); refusing to open, nothing was changed. If the keys are right, move the checkpoint files away to force a full WAL replay",
			kr.File(), firstErr(cands))
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
	if err := fc.adoptActiveKey(s, man, kr); err != nil {
		return nil, err
	}
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

func firstErr(cands []checkpoint.Candidate) error {
	for _, c := range cands {
		if c.Err != nil && !errors.Is(c.Err, os.ErrNotExist) {
			return c.Err
		}
	}
	return nil
}

// adoptActiveKey records in the manifest, before any record is written, that
// kr's active key may seal records from now on and that every other key is
// retired at the newest existing segment; keys no segment needs any more are
// forgotten. No manifest is written for a store that never used a key.
func (fc *fileCrypto) adoptActiveKey(s *File, man *cryptoManifest, kr *sluicecrypto.Keyring) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	old := man.marshal()
	lo, hi, have := s.segmentRange()
	for id, k := range man.keys {
		if kr != nil && id == kr.Active() {
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
	if kr != nil {
		check, _ := kr.CheckValue(kr.Active())
		man.keys[kr.Active()] = manifestKey{check: check}
	}
	fc.man = man
	if man.empty() || bytes.Equal(old, man.marshal()) {
		return nil
	}
	return fc.writeManifest(s.fs, man)
}

// noteCheckpointSealed is called after every checkpoint write; the first
// sealed one turns off the acceptance of plaintext checkpoints.
func (s *File) noteCheckpointSealed(sealer checkpoint.Sealer) {
	fc := s.crypt
	if fc == nil || sealer == nil {
		return
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.man == nil || fc.man.sealed {
		return
	}
	m := *fc.man
	m.sealed = true
	if err := fc.writeManifest(s.fs, &m); err != nil {
		s.log.Error("file channel: recording the first sealed checkpoint", "err", err)
		return
	}
	fc.man = &m
}

// Rekey installs a new keyring without stopping the store (e.g. on SIGHUP
// after `sluice keygen` appended a key): records written from now on are
// sealed with kr's active key, older ones keep opening with the key their
// header names. kr must hold, with the same key material, every key that a
// WAL segment or a checkpoint still needs; otherwise Rekey fails and nothing
// changes. Rekey then writes two checkpoints so that both checkpoint
// generations are sealed with the new key; after that, an old key is needed
// only until the WAL segments sealed with it are garbage collected.
func (s *File) Rekey(kr *sluicecrypto.Keyring) error {
	if kr == nil {
		return errors.New("file channel: rekey: a keyring is required (encryption cannot be turned off while running)")
	}
	if s.isClosed.Load() {
		return ErrClosed
	}
	fc := s.crypt
	fc.mu.Lock()
	man := fc.man
	if err := s.checkKeys(man, kr); err != nil {
		fc.mu.Unlock()
		return fmt.Errorf("file channel: rekey: %w", err)
	}
	// Every checkpoint on disk must still open with the new keys.
	probe, err := sluicecrypto.NewCodec(sluicecrypto.CodecOptions{Keyring: kr})
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
	next := &cryptoManifest{sealed: man.sealed, keys: map[uint16]manifestKey{}}
	for id, k := range man.keys {
		next.keys[id] = k
	}
	check, _ := kr.CheckValue(kr.Active())
	next.keys[kr.Active()] = manifestKey{check: check}
	if err := fc.writeManifest(s.fs, next); err != nil {
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
		retired := &cryptoManifest{sealed: next.sealed, keys: map[uint16]manifestKey{}}
		for id, k := range next.keys {
			retired.keys[id] = k
		}
		if k, ok := retired.keys[old.Active()]; ok {
			k.retired = hi
			retired.keys[old.Active()] = k
		}
		if err := fc.writeManifest(s.fs, retired); err != nil {
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
func (s *File) SetActiveKey(id uint16) error {
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
func (s *File) EncryptionKey() uint16 {
	if kr := s.crypt.codec.Keyring(); kr != nil {
		return kr.Active()
	}
	return 0
}
