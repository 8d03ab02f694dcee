package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const (
	minSegmentSize     = 64 << 10
	maxSegmentSize     = 1 << 30
	defaultSegmentSize = 1 << 30
	defaultZeroChunk   = 4 << 20
	// defaultSpares is how many removed segments a directory keeps for
	// recycling unless Options.Spares says otherwise.
	defaultSpares = 2
	maxSpares     = 1 << 16
	lockFileName  = "LOCK"
)

// Options configures a WAL. The zero value of every field means its default.
type Options struct {
	// FS is the file system; default vfs.Default.
	FS vfs.FS
	// Dirs are the data directories (at least one), created if missing.
	Dirs []string
	// SegmentSize is the size of every new segment file: default 1 GiB,
	// at least 64 KiB, at most 1 GiB.
	SegmentSize int64
	// MinFreeBytes is the free space a directory must keep: creating a new
	// segment that would leave less fails with ErrDiskSpace. 0 disables it.
	MinFreeBytes int64
	// Spares is how many removed segments each directory keeps (renamed to
	// <id>.spare) for new segments to recycle: default 2, negative none.
	// A recycled segment is already zeroed and usually still in the page
	// cache, so appends into it cost what overwriting a file costs; a new
	// segment must be zeroed first (see segment.go). Spares hold disk space:
	// Spares × SegmentSize per directory at most.
	Spares int
	// ZeroChunk is the granularity of progressive pre-zeroing of new
	// segments; default 4 MiB.
	ZeroChunk int64
	// Codec transforms payloads (compression, encryption); nil = plaintext.
	Codec Codec
	// Logger receives damage reports and background errors; default
	// slog.Default().
	Logger *slog.Logger

	// zeroGate, set by tests, parks the allocator before each zero chunk
	// until it can receive (one receive, one chunk; close it to let zeroing
	// run).
	zeroGate chan struct{}
}

// EnsureDefaults fills in defaults for unset fields.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = defaultSegmentSize
	}
	if o.ZeroChunk == 0 {
		o.ZeroChunk = defaultZeroChunk
	}
	switch {
	case o.Spares == 0:
		o.Spares = defaultSpares
	case o.Spares < 0:
		o.Spares = -1
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Validate checks the options, naming the offending field.
func (o *Options) Validate() error {
	if len(o.Dirs) == 0 {
		return errors.New("wal: Options.Dirs: at least one directory is required")
	}
	if len(o.Dirs) > 1<<16 {
		return fmt.Errorf("wal: Options.Dirs: %d directories is too many", len(o.Dirs))
	}
	seen := map[string]bool{}
	for _, d := range o.Dirs {
		if d == "" {
			return errors.New("wal: Options.Dirs: empty directory name")
		}
		if seen[d] {
			return fmt.Errorf("wal: Options.Dirs: %q listed twice", d)
		}
		seen[d] = true
	}
	if o.SegmentSize < minSegmentSize || o.SegmentSize > maxSegmentSize {
		return fmt.Errorf("wal: Options.SegmentSize %d out of range [%d, %d]", o.SegmentSize, minSegmentSize, maxSegmentSize)
	}
	if o.SegmentSize%recordAlign != 0 {
		return fmt.Errorf("wal: Options.SegmentSize %d is not a multiple of %d", o.SegmentSize, recordAlign)
	}
	if o.MinFreeBytes < 0 {
		return fmt.Errorf("wal: Options.MinFreeBytes %d is negative", o.MinFreeBytes)
	}
	if o.Spares > maxSpares {
		return fmt.Errorf("wal: Options.Spares %d is more than %d", o.Spares, maxSpares)
	}
	if o.ZeroChunk < 4<<10 {
		return fmt.Errorf("wal: Options.ZeroChunk %d is below 4096", o.ZeroChunk)
	}
	return nil
}

// WAL is an open write-ahead log over one or more data directories.
type WAL struct {
	opts   Options
	fs     vfs.FS
	logger *slog.Logger
	dirs   []*dirState

	// woid is the last assigned write-order id.
	woid atomic.Uint64
	// nextSegID is the next segment id to hand out (store-wide).
	nextSegID atomic.Uint32
	// replayMaxWOID is the largest WOID Replay saw; Start never goes below it.
	replayMaxWOID atomic.Uint64

	mu      sync.RWMutex
	segs    map[uint32]*segment // every known segment, by id
	started bool
	// running is set once Start has started the segment allocators: a
	// Write before that would wait for a segment forever.
	running  atomic.Bool
	closed   bool
	closeErr error

	// encBufs pools the buffers Write encodes batches into through the Codec.
	encBufs sync.Pool
}

// encBuf is a batch after the Codec: records and their offsets.
type encBuf struct {
	buf  []byte
	offs []uint32
}

// Position is a directory's append frontier: the next record goes to Offset
// of Segment. The zero Position means "no frontier".
type Position struct {
	Segment uint32
	Offset  uint32
}

// SegmentInfo describes one segment file.
type SegmentInfo struct {
	ID   uint32
	Dir  int
	Path string
	// MaxWOID is the largest WOID known to be in the segment: written by this
	// process or seen by Replay. 0 when unknown (a segment of an earlier
	// process that Replay skipped because it lies before the frontier).
	MaxWOID uint64
	// Active is true for a directory's active segment and for the prepared
	// next one; those cannot be removed.
	Active bool
	Size   int64
}

// Open locks every directory, lists its segments and validates their
// headers. It writes nothing except creating missing directories and their
// lock files.
func Open(opts Options) (*WAL, error) {
	opts.EnsureDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	w := &WAL{
		opts:    opts,
		fs:      opts.FS,
		logger:  opts.Logger,
		encBufs: sync.Pool{New: func() any { return new(encBuf) }},
		segs:    map[uint32]*segment{},
	}
	var maxID uint32
	for i, path := range opts.Dirs {
		d, err := w.openDir(i, path)
		if err != nil {
			w.releaseLocks()
			return nil, err
		}
		w.dirs = append(w.dirs, d)
		for _, s := range d.segments {
			w.segs[s.id] = s
			maxID = max(maxID, s.id)
		}
		for _, sp := range d.spares {
			maxID = max(maxID, sp.oldID)
		}
	}
	w.nextSegID.Store(maxID + 1)
	return w, nil
}

func (w *WAL) openDir(i int, path string) (*dirState, error) {
	if err := w.fs.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("wal: creating directory %s: %w", path, err)
	}
	if err := syncDir(w.fs, w.fs.PathDir(path)); err != nil {
		return nil, err
	}
	lock, err := w.fs.Lock(w.fs.PathJoin(path, lockFileName))
	if err != nil {
		return nil, fmt.Errorf("wal: locking directory %s: %w (%v)", path, ErrLocked, err)
	}
	d := newDirState(w, i, path, lock)
	if err := d.scan(); err != nil {
		lock.Close()
		return nil, err
	}
	return d, nil
}

func (w *WAL) releaseLocks() {
	for _, d := range w.dirs {
		if d.lock != nil {
			if err := d.lock.Close(); err != nil {
				w.logger.Warn("wal: releasing directory lock", "dir", d.path, "err", err)
			}
			d.lock = nil
		}
	}
}

// NumDirs returns the number of data directories.
func (w *WAL) NumDirs() int { return len(w.dirs) }

// Start prepares every directory for writing: each gets a fresh active
// segment (recycled from a spare if one exists) and a background allocator
// and syncer. Records written afterwards get WOIDs from nextWOID on (or from
// just after the largest WOID Replay saw, whichever is larger). Start must be
// called once, before Write.
func (w *WAL) Start(nextWOID uint64) error { return w.StartAt(nextWOID, 0) }

// StartAt is Start with a floor for new segment ids: the caller passes one
// more than the highest segment id any of its durable state (a checkpoint's
// queues or frontier) may still name, so a pointer into a segment that GC
// removed can never alias a record of a new segment, even if every segment
// file is gone.
func (w *WAL) StartAt(nextWOID uint64, minSegmentID uint32) error {
	for {
		cur := w.nextSegID.Load()
		if cur >= minSegmentID || w.nextSegID.CompareAndSwap(cur, minSegmentID) {
			break
		}
	}

	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	if w.started {
		w.mu.Unlock()
		return errors.New("wal: Start called twice")
	}
	w.started = true
	w.mu.Unlock()

	if nextWOID == 0 {
		nextWOID = 1
	}
	last := max(nextWOID-1, w.replayMaxWOID.Load())
	w.woid.Store(last)
	for _, d := range w.dirs {
		d.removeTemps()
		d.startBackground()
	}
	w.running.Store(true)
	for _, d := range w.dirs {
		d.mu.Lock()
		err := d.rotateLocked()
		d.mu.Unlock()
		if err != nil {
			return fmt.Errorf("wal: starting directory %s: %w", d.path, err)
		}
	}
	return nil
}

// Frontier returns each directory's append position (in Options.Dirs order)
// and the last assigned WOID. The caller guarantees no Write runs
// concurrently.
func (w *WAL) Frontier() ([]Position, uint64) {
	pos := make([]Position, len(w.dirs))
	for i, d := range w.dirs {
		d.mu.Lock()
		if s := d.active; s != nil {
			pos[i] = Position{Segment: s.id, Offset: uint32(s.off)}
		}
		d.mu.Unlock()
	}
	return pos, w.woid.Load()
}

// SyncAll makes everything written so far durable in every directory; it is
// SyncUpTo with no bound.
func (w *WAL) SyncAll(ctx context.Context) error { return w.SyncUpTo(ctx, nil) }

// SyncUpTo makes every segment up to the frontier durable: in each directory
// whose frontier is in upTo (a Position naming one of its segments, as
// Frontier returns), the segments with ids up to the frontier's; in the
// other directories (or all of them when upTo is nil) every segment. A
// segment this process wrote is fdatasynced if it has bytes not yet synced
// (the active one through group commit, so concurrent commits share the
// fdatasync); a segment an earlier process left is fdatasynced once (that
// process may have died before syncing what Replay has since read).
//
// It returns the sticky sync error (wrapping ErrSyncFailed) of every
// covered segment that has one and holds records in doubt, written but not
// durable: a segment whose fdatasync failed (for a commit, its retirement,
// the zeroer or an earlier SyncUpTo) while it had unsynced records fails
// every later SyncUpTo covering it for as long as it exists, because Linux
// reports a writeback error only once per open file and a later successful
// fdatasync does not mean the data is on disk; a checkpoint relying on those
// records must not be written. (A failure that found every record already
// durable, e.g. the zeroer's in a segment not yet appended to, poisons the
// segment for appends only: durable only ever advances by an fdatasync that
// succeeded with no failing one overlapping it.)
func (w *WAL) SyncUpTo(ctx context.Context, upTo []Position) error {
	limit := make([]uint32, len(w.dirs))
	for i := range limit {
		limit[i] = ^uint32(0)
	}
	w.mu.RLock()
	for _, p := range upTo {
		if s, ok := w.segs[p.Segment]; ok && p.Segment != 0 {
			limit[s.dir.idx] = p.Segment
		}
	}
	segs := make([][]*segment, len(w.dirs))
	for _, s := range w.segs {
		if i := s.dir.idx; s.id <= limit[i] {
			segs[i] = append(segs[i], s)
		}
	}
	w.mu.RUnlock()

	var errs []error
	for i, d := range w.dirs {
		slices.SortFunc(segs[i], func(a, b *segment) int { return int(a.id) - int(b.id) })
		d.mu.Lock()
		active := d.active
		d.mu.Unlock()
		for _, s := range segs[i] {
			var err error
			switch end := s.written.Load(); {
			case s.inherited.Load():
				err = d.syncInherited(s)
			case s == active:
				err = w.Sync(ctx, SyncToken{seg: s, end: end})
			case end > s.durable.Load():
				err = d.syncSegment(s, end)
			}
			if err == nil && s.written.Load() > s.durable.Load() {
				// Records in doubt: written, not durable, and a
				// failed fdatasync means they may never be.
				err = s.stickyErr()
			}
			if err != nil {
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return err
				}
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Segments lists every segment in id order.
func (w *WAL) Segments() []SegmentInfo {
	w.mu.RLock()
	out := make([]SegmentInfo, 0, len(w.segs))
	for _, s := range w.segs {
		out = append(out, SegmentInfo{
			ID:      s.id,
			Dir:     s.dir.idx,
			Path:    s.path,
			MaxWOID: s.maxWOID.Load(),
			Active:  s.current.Load(),
			Size:    s.size,
		})
	}
	w.mu.RUnlock()
	slices.SortFunc(out, func(a, b SegmentInfo) int { return int(a.ID) - int(b.ID) })
	return out
}

// Remove deletes segment id, or keeps its file as a spare for recycling, and
// syncs the directory. The active (or prepared next) segment cannot be
// removed.
func (w *WAL) Remove(id uint32) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	s, ok := w.segs[id]
	if !ok {
		w.mu.Unlock()
		return fmt.Errorf("wal: remove: unknown segment %d", id)
	}
	if s.current.Load() {
		w.mu.Unlock()
		return fmt.Errorf("wal: remove: segment %d (%s) is active", id, s.path)
	}
	delete(w.segs, id)
	w.mu.Unlock()

	s.closeFiles()
	return s.dir.retire(s)
}

// DiskUsage returns, per directory, the bytes of its segment and spare files.
func (w *WAL) DiskUsage() []int64 {
	out := make([]int64, len(w.dirs))
	for i, d := range w.dirs {
		names, err := w.fs.List(d.path)
		if err != nil {
			continue
		}
		for _, name := range names {
			if _, ok := parseSegmentName(name); !ok {
				if _, ok := parseSpareName(name); !ok {
					continue
				}
			}
			if fi, err := w.fs.Stat(w.fs.PathJoin(d.path, name)); err == nil {
				out[i] += fi.Size()
			}
		}
	}
	return out
}

// Close stops the background goroutines, seals and syncs the active
// segments, returns prepared segments to the spares and releases the
// directory locks. It is idempotent.
func (w *WAL) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return w.closeErr
	}
	w.closed = true
	w.mu.Unlock()

	var errs []error
	for _, d := range w.dirs {
		if err := d.close(); err != nil {
			errs = append(errs, err)
		}
	}
	w.mu.Lock()
	for _, s := range w.segs {
		s.closeFiles()
	}
	w.mu.Unlock()
	w.releaseLocks()
	w.closeErr = errors.Join(errs...)
	return w.closeErr
}

func (w *WAL) isClosed() bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.closed
}

// syncDir fsyncs a directory so that entries created or renamed in it are
// durable.
func syncDir(fs vfs.FS, path string) error {
	if path == "" {
		path = "."
	}
	d, err := fs.OpenDir(path)
	if err != nil {
		return fmt.Errorf("wal: opening directory %s for sync: %w", path, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wal: syncing directory %s: %w", path, err)
	}
	return nil
}

var _ io.Closer = (*WAL)(nil)
