// Package checkpoint reads and writes the store's checkpoint metadata: one
// small file per generation, written atomically (tmp file, fsync, rename,
// fsync of the directory), protected by a CRC32C and optionally sealed
// (encrypted and authenticated) by a Sealer.
//
// Two generations are kept: even generations are written to "checkpoint.A" in
// the checkpoint directory, odd generations to "checkpoint.B" in the backup
// checkpoint directory (or the checkpoint directory when no backup directory
// is configured). Writing generation g therefore never touches generation
// g-1, which stays the fallback if g turns out to be unusable.
//
// The on-disk layout is drawn in format.go.
package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/cockroachdb/errors/oserror"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// File names of the two checkpoint generations.
const (
	FileA = "checkpoint.A" // even generations, in the checkpoint directory
	FileB = "checkpoint.B" // odd generations, in the backup directory (or the checkpoint directory)

	tmpSuffix = ".tmp"
)

// Position is a WAL data directory's append frontier: the segment id and the
// offset of the next append.
type Position struct {
	Segment uint32
	Offset  uint32
}

// Channel is the state of one channel's queue at the checkpoint.
type Channel struct {
	Name     string
	Capacity uint64
	Head     uint64 // logical position of the head
	Size     uint64 // number of queued events
	Bytes    uint64 // payload bytes of the queued events
	Gen      uint8  // queue file generation holding the snapshot
	Digest   uint32 // CRC32C of the live slots in logical order
	// NextOffset is the channel offset the next committed event gets, and
	// Offsets the offsets of the queued events (version 4; a version-3
	// file has neither: NextOffset 0).
	NextOffset uint64
	Offsets    []OffsetRun
}

// OffsetRun says that the queued events from logical queue position Pos up
// to the next run's Pos (or the end of the queue) have the channel offsets
// Offset, Offset+1, ….
type OffsetRun struct {
	Pos, Offset uint64
}

// PutEntry is one event of an in-flight put transaction.
type PutEntry struct {
	Channel string
	Pointer uint64
	Size    uint32
	Offset  uint64 // channel offset, given when the commit record was written (committing txns; else 0)
}

// PutTxn is a put transaction that was open at the checkpoint.
type PutTxn struct {
	TxnID      uint64
	Committing bool // commit record appended, sync not yet returned
	ProducerID string
	Sequence   uint64
	Entries    []PutEntry
}

// TakeEntry is one event of an in-flight take transaction.
type TakeEntry struct {
	Pointer  uint64
	Position uint64 // logical queue position the event was taken from
	Size     uint32
	Offset   uint64 // channel offset (version 4; else 0)
}

// TakeTxn is a take transaction that was open at the checkpoint.
type TakeTxn struct {
	TxnID      uint64
	Channel    string
	Committing bool
	Entries    []TakeEntry
}

// Producer is one entry of the producer-sequence table.
type Producer struct {
	ID       string
	Sequence uint64
	// LastUsed is when the producer last committed (unix ns); 0 when not
	// known (a version-1 file).
	LastUsed int64
}

// Checkpoint is the content of one checkpoint file.
type Checkpoint struct {
	Generation   uint64 // increases by one per checkpoint
	WOID         uint64 // write-order id W: WAL records with WOID > W are replayed
	Clean        bool   // written by a clean close
	NextTxnID    uint64
	TimeUnixNano int64
	Frontier     []Position
	Channels     []Channel
	PutTxns      []PutTxn
	TakeTxns     []TakeTxn
	Producers    []Producer
	// DigestKey keys the queue digests of Channels (encrypted stores: a
	// random key per store open, DigestKeySize bytes, only ever written
	// sealed); empty: the digests are CRC32C.
	DigestKey []byte
}

// DigestKeySize is the size of a Checkpoint.DigestKey.
const DigestKeySize = 32

// Sealer transforms the encoded body of a checkpoint: Seal on write, Open on
// read. A nil Sealer is the identity. Open must fail on any input that Seal
// did not produce with the same key (AES-GCM does).
type Sealer interface {
	Seal(plain []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

// FileSealer is a Sealer that binds a checkpoint to the file it is written
// to: Write and Read seal and open through ForFile(file name).
type FileSealer interface {
	ForFile(name string) Sealer
}

func sealerFor(s Sealer, name string) Sealer {
	if fsl, ok := s.(FileSealer); ok {
		return fsl.ForFile(name)
	}
	return s
}

var (
	// ErrCorrupt is wrapped by every error caused by bytes that are not a
	// valid checkpoint (bad magic, CRC mismatch, truncation, trailing bytes,
	// malformed body, unknown version).
	ErrCorrupt = errors.New("checkpoint: corrupt")
	// ErrUnsupportedVersion is wrapped (together with ErrCorrupt) when the
	// format version byte is not one this code reads.
	ErrUnsupportedVersion = errors.New("checkpoint: unsupported format version")
	// ErrSealed: the file is sealed but no Sealer was given.
	ErrSealed = errors.New("checkpoint: file is sealed but no Sealer (key) was given")
	// ErrNotSealed: a Sealer was given but the file is plaintext. Accepting
	// it would let anyone who can write the directory bypass the seal, so
	// it is refused.
	ErrNotSealed = errors.New("checkpoint: file is not sealed but a Sealer (key) was given")
	// ErrOpen: the Sealer could not open the body (wrong key or tampered
	// file whose CRC was recomputed).
	ErrOpen = errors.New("checkpoint: cannot open sealed body (wrong key or tampered)")
)

// CorruptError describes where a checkpoint is malformed. It unwraps to
// ErrCorrupt (and to Err when set).
type CorruptError struct {
	File   string // path, when known
	Offset int64  // byte offset in the file; for a sealed body, offset of the body
	Reason string
	Err    error // optional additional cause, e.g. ErrUnsupportedVersion
}

func (e *CorruptError) Error() string {
	f := e.File
	if f == "" {
		f = "<buffer>"
	}
	return fmt.Sprintf("checkpoint: corrupt: %s at offset %d: %s", f, e.Offset, e.Reason)
}

// Unwrap returns ErrCorrupt and the optional cause.
func (e *CorruptError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrCorrupt, e.Err}
	}
	return []error{ErrCorrupt}
}

// FileFor says where generation g is written: FileA in dir for even g, FileB
// in backupDir (or dir when backupDir is empty) for odd g.
func FileFor(dir, backupDir string, g uint64) (d, name string) {
	if g%2 == 0 {
		return dir, FileA
	}
	if backupDir == "" {
		return dir, FileB
	}
	return backupDir, FileB
}

// Write atomically replaces dir/name with the encoding of c: it writes
// dir/name.tmp, syncs it, renames it over dir/name and syncs dir. When Write
// returns nil the new checkpoint is durable; if it fails or the process dies
// during Write, dir/name holds either the previous or the new checkpoint,
// never a mix. The directory must exist.
func Write(fs vfs.FS, dir, name string, c *Checkpoint, s Sealer) error {
	path := fs.PathJoin(dir, name)
	data, err := Marshal(c, sealerFor(s, name))
	if err != nil {
		return fmt.Errorf("checkpoint: write %s: %w", path, err)
	}
	tmp := path + tmpSuffix
	if err := writeSynced(fs, tmp, data); err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("checkpoint: write %s: %w", tmp, err)
	}
	if err := fs.Rename(tmp, path); err != nil {
		_ = fs.Remove(tmp)
		return fmt.Errorf("checkpoint: rename %s to %s: %w", tmp, path, err)
	}
	if err := syncDir(fs, dir); err != nil {
		return fmt.Errorf("checkpoint: write %s: sync directory %s: %w", path, dir, err)
	}
	return nil
}

func writeSynced(fs vfs.FS, path string, data []byte) (err error) {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if c, ok := f.(interface{ Chmod(os.FileMode) error }); ok {
		_ = c.Chmod(0o600) // owner only, like the WAL and queue files
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	// vfs.File.Write may modify its argument; data is ours, so that is fine.
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Sync (not SyncData): the file is new, so its size and allocation must
	// be durable too; for a file this small the difference costs nothing.
	return f.Sync()
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		_ = d.Close()
		return err
	}
	return d.Close()
}

// maxFileSize bounds what Read loads into memory: the header's body length
// is a uint32, so no valid file is larger.
const maxFileSize = headerLen + (1<<32 - 1) + trailerLen

// Read reads and decodes the checkpoint at path. A missing file yields an
// error for which errors.Is(err, os.ErrNotExist) holds; malformed contents
// yield an error wrapping ErrCorrupt (a *CorruptError naming the file).
func Read(fs vfs.FS, path string, s Sealer) (*Checkpoint, error) {
	b, err := readFile(fs, path)
	if err != nil {
		if oserror.IsNotExist(err) && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("checkpoint: read %s: %w (%w)", path, os.ErrNotExist, err)
		}
		return nil, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	c, err := Unmarshal(b, sealerFor(s, filepath.Base(path)))
	if err != nil {
		var ce *CorruptError
		if errors.As(err, &ce) {
			ce.File = path
			return nil, ce
		}
		return nil, fmt.Errorf("checkpoint: read %s: %w", path, err)
	}
	return c, nil
}

func readFile(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 0 || size > maxFileSize {
		return nil, &CorruptError{File: path, Offset: 0, Reason: fmt.Sprintf("file size %d out of range", size)}
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return nil, &CorruptError{File: path, Offset: 0, Reason: "file shorter than its size"}
		}
		return nil, err
	}
	return b, nil
}

// Candidate is one checkpoint file found by Load: either Checkpoint or Err is
// set.
type Candidate struct {
	Path       string
	Checkpoint *Checkpoint
	Err        error
}

// Load reads both generations (FileA in dir, FileB in backupDir, or dir when
// backupDir is empty) and returns two candidates: the readable ones first,
// newest (highest Generation) first, then the unreadable ones with their
// error (a missing file's error satisfies errors.Is(err, os.ErrNotExist)).
// The caller tries them in order and falls back to the next.
func Load(fs vfs.FS, dir, backupDir string, s Sealer) []Candidate {
	da, na := FileFor(dir, backupDir, 0)
	db, nb := FileFor(dir, backupDir, 1)
	cands := []Candidate{
		{Path: fs.PathJoin(da, na)},
		{Path: fs.PathJoin(db, nb)},
	}
	for i := range cands {
		cands[i].Checkpoint, cands[i].Err = Read(fs, cands[i].Path, s)
	}
	sort.SliceStable(cands, func(i, j int) bool {
		ci, cj := cands[i].Checkpoint, cands[j].Checkpoint
		switch {
		case ci != nil && cj != nil:
			return ci.Generation > cj.Generation
		default:
			return ci != nil && cj == nil
		}
	})
	return cands
}
