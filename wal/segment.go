package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Segment files, spares and allocation.
//
// A new segment is created under a temporary name, preallocated, given its
// header (synced), then renamed to <id>.wal and the directory synced: a .wal
// file always has a durable, valid header. Its body is then zeroed by the
// directory's allocator goroutine in ZeroChunk pieces, each synced (zeroing
// turns the preallocated extents into written ones, so an fdatasync after an
// append there does not also have to commit extent metadata). Zeroing is only
// a speed-up: when the writer catches up with it, the segment is "overtaken",
// its zeroing stops and appends go on into the preallocated (unwritten) rest,
// whose fdatasyncs then commit the extent changes too. So the writer never
// waits longer than one chunk, and the allocator moves on to the next
// segment, which has a whole segment's worth of appends to get ahead. A
// removed segment becomes a spare (<old id>.spare) unless the directory
// already keeps Options.Spares; a spare is recycled by rewriting its header
// with a new id and renaming it. Its stale records never validate
// because record checksums are seeded with the segment id.

const (
	segmentSuffix = ".wal"
	spareSuffix   = ".spare"
	tempSuffix    = ".tmp"
)

func segmentName(id uint32) string { return fmt.Sprintf("%010d%s", id, segmentSuffix) }
func spareName(id uint32) string   { return fmt.Sprintf("%010d%s", id, spareSuffix) }

func parseIDName(name, suffix string) (uint32, bool) {
	base, ok := strings.CutSuffix(name, suffix)
	if !ok || len(base) != 10 {
		return 0, false
	}
	id, err := strconv.ParseUint(base, 10, 32)
	if err != nil || id == 0 {
		return 0, false
	}
	return uint32(id), true
}

func parseSegmentName(name string) (uint32, bool) { return parseIDName(name, segmentSuffix) }
func parseSpareName(name string) (uint32, bool)   { return parseIDName(name, spareSuffix) }

// segment is one segment file. Segments of earlier processes only have the
// read side; segments created by this process also have the write side.
type segment struct {
	id   uint32
	dir  *dirState
	path string
	// size is the segment size recorded in the header (its capacity).
	size int64
	// badHeader is why the header did not validate ("" if it did).
	badHeader string
	maxWOID   atomic.Uint64
	// current is true while the segment is its directory's active or
	// prepared next segment.
	current atomic.Bool

	// Read side: a cached handle, opened lazily, closed by Remove/Close.
	rmu     sync.RWMutex
	rf      vfs.File
	rclosed bool

	// Write side. wf is protected by fmu: the writer uses it under dir.mu
	// (never while it could be closed); the zeroer and syncer hold fmu shared.
	fmu sync.RWMutex
	wf  vfs.File
	// off is the next append offset (under dir.mu).
	off int64
	// writeFailed is set after a failed WriteAt (under dir.mu).
	writeFailed bool
	// written is the end of completed appends; durable the end of synced ones.
	written atomic.Int64
	durable atomic.Int64
	// zeroed: [0, zeroed) is zeroed (or recycled) and synced.
	zeroed atomic.Int64
	// zeroing is true while the allocator zeroes the chunk after zeroed;
	// overtaken is set once the writer needs space beyond zeroed and stops
	// all further zeroing of the segment (both under dir.amu).
	zeroing   bool
	overtaken bool
	// poisoned: a write or sync failed; no more appends.
	poisoned atomic.Bool
	// syncMu serialises the fdatasyncs of the segment (group-commit leader,
	// retirement, zeroer, SyncAll): Linux reports a writeback error once
	// per open file, to whichever fdatasync collects it, so two overlapping
	// ones could see success and failure for the same lost page. Under
	// syncMu a failing fdatasync sets syncErr before the next one starts,
	// and every later one sees it. Lock order: syncMu, then fmu.
	syncMu sync.Mutex
	// syncErr is the sticky sync failure (under dir.smu): once set, the
	// segment never reports anything beyond durable as synced again.
	syncErr error
	// inherited is set for a segment of an earlier process until one
	// fdatasync made whatever that process left in the page cache durable
	// (it may have died before syncing it; Replay reads those bytes).
	inherited atomic.Bool
	// validEnd is the end of the last valid record Replay read in a segment
	// of an earlier process (0 if it read none): no record a pointer the
	// store still holds can end beyond it (see readEnd).
	validEnd atomic.Int64
}

// stickyErr returns the segment's sticky sync error, if any.
func (s *segment) stickyErr() error {
	s.dir.smu.Lock()
	defer s.dir.smu.Unlock()
	return s.syncErr
}

// reader returns the cached read handle, holding it until release is called.
func (s *segment) reader() (f vfs.File, release func(), err error) {
	for {
		s.rmu.RLock()
		if s.rf != nil {
			return s.rf, s.rmu.RUnlock, nil
		}
		closed := s.rclosed
		s.rmu.RUnlock()
		if closed {
			return nil, nil, fmt.Errorf("wal: segment %d (%s) was removed", s.id, s.path)
		}
		s.rmu.Lock()
		if s.rf == nil && !s.rclosed {
			f, err := s.dir.w.fs.Open(s.path)
			if err != nil {
				s.rmu.Unlock()
				return nil, nil, fmt.Errorf("wal: opening segment %s: %w", s.path, err)
			}
			s.rf = f
		}
		s.rmu.Unlock()
	}
}

// removed reports whether closeFiles ran (Remove or Close).
func (s *segment) removed() bool {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	return s.rclosed
}

// closeFiles closes both handles; the segment can no longer be read.
func (s *segment) closeFiles() {
	s.rmu.Lock()
	if s.rf != nil {
		s.rf.Close()
		s.rf = nil
	}
	s.rclosed = true
	s.rmu.Unlock()
	s.closeWriter()
}

func (s *segment) closeWriter() {
	s.fmu.Lock()
	if s.wf != nil {
		if err := s.wf.Close(); err != nil {
			s.dir.w.logger.Warn("wal: closing segment", "file", s.path, "err", err)
		}
		s.wf = nil
	}
	s.fmu.Unlock()
}

type spare struct {
	path  string
	oldID uint32
}

// dirState is everything about one data directory.
type dirState struct {
	w    *WAL
	idx  int
	path string
	lock io.Closer

	// segments found at Open, in id order.
	segments []*segment
	temps    []string

	// Writer (writer.go).
	mu     sync.Mutex
	active *segment
	closed bool

	// Allocator state, under amu.
	amu         sync.Mutex
	acond       *sync.Cond
	next        *segment
	nextErr     error
	waitingNext bool
	zeroQ       []*segment
	spares      []spare
	stopping    bool

	// Group commit state (writer.go), under smu: syncing while a leader's
	// fdatasync is in flight; syncDone is closed when it ends.
	smu      sync.Mutex
	syncing  bool
	syncDone chan struct{}

	wg sync.WaitGroup
}

func newDirState(w *WAL, idx int, path string, lock io.Closer) *dirState {
	d := &dirState{
		w:        w,
		idx:      idx,
		path:     path,
		lock:     lock,
		syncDone: make(chan struct{}),
	}
	d.acond = sync.NewCond(&d.amu)
	return d
}

// scan lists the directory and validates segment headers.
func (d *dirState) scan() error {
	fs := d.w.fs
	names, err := fs.List(d.path)
	if err != nil {
		return fmt.Errorf("wal: listing directory %s: %w", d.path, err)
	}
	slices.Sort(names)
	for _, name := range names {
		full := fs.PathJoin(d.path, name)
		if id, ok := parseSegmentName(name); ok {
			s, err := d.openExisting(id, full)
			if err != nil {
				return err
			}
			d.segments = append(d.segments, s)
		} else if id, ok := parseSpareName(name); ok {
			d.spares = append(d.spares, spare{path: full, oldID: id})
		} else if strings.HasSuffix(name, tempSuffix) {
			d.temps = append(d.temps, full)
		}
	}
	return nil
}

// openExisting opens a segment left by an earlier process and reads its
// header. A bad header does not fail Open: the segment is reported as damaged
// by Replay and otherwise kept untouched.
func (d *dirState) openExisting(id uint32, path string) (*segment, error) {
	s := &segment{id: id, dir: d, path: path, size: d.w.opts.SegmentSize}
	f, err := d.w.fs.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wal: opening segment %s: %w", path, err)
	}
	var buf [segmentHeaderSize]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
		if !errors.Is(err, io.EOF) {
			f.Close()
			return nil, fmt.Errorf("wal: reading header of %s at offset 0: %w", path, err)
		}
		s.badHeader = fmt.Sprintf("file too short for a segment header (%d bytes)", n)
	} else if h, herr := decodeSegmentHeader(buf[:]); herr != nil {
		s.badHeader = herr.Error()
	} else if h.ID != id {
		s.badHeader = fmt.Sprintf("header names segment %d, file name %d", h.ID, id)
	} else {
		s.size = h.Size
	}
	if s.badHeader != "" {
		d.w.logger.Warn("wal: segment header invalid", "file", path, "offset", 0, "reason", s.badHeader)
	}
	s.rf = f
	s.inherited.Store(true)
	return s, nil
}

// removeTemps deletes creation leftovers (they never held records).
func (d *dirState) removeTemps() {
	for _, p := range d.temps {
		if err := d.w.fs.Remove(p); err != nil {
			d.w.logger.Warn("wal: removing temporary file", "file", p, "err", err)
		}
	}
	d.temps = nil
}

func (d *dirState) startBackground() {
	d.wg.Add(1)
	go d.allocLoop()
}

// allocLoop prepares the next segment and zeroes new segments, one chunk at
// a time so that a writer waiting for the next segment is served promptly.
func (d *dirState) allocLoop() {
	defer d.wg.Done()
	d.amu.Lock()
	defer d.amu.Unlock()
	for {
		switch {
		case d.stopping:
			return
		case d.next == nil && d.nextErr == nil && (d.waitingNext || len(d.zeroQ) == 0):
			d.amu.Unlock()
			s, err := d.prepare()
			d.amu.Lock()
			if err != nil {
				d.w.logger.Error("wal: preparing segment", "dir", d.path, "err", err)
				d.nextErr = err
			} else if d.stopping {
				d.next = s // handed back to the spares by close
			} else {
				d.next = s
				if s.zeroed.Load() < s.size {
					d.zeroQ = append(d.zeroQ, s)
				}
			}
			d.acond.Broadcast()
		case len(d.zeroQ) > 0:
			s := d.zeroQ[0]
			if s.overtaken {
				d.zeroQ = d.zeroQ[1:]
				continue
			}
			if g := d.w.opts.zeroGate; g != nil {
				// Each receive lets one chunk through.
				d.amu.Unlock()
				<-g
				d.amu.Lock()
				if d.stopping || s.overtaken || len(d.zeroQ) == 0 || d.zeroQ[0] != s {
					continue
				}
			}
			s.zeroing = true
			d.amu.Unlock()
			done := d.zeroChunk(s)
			d.amu.Lock()
			s.zeroing = false
			if (done || s.overtaken) && len(d.zeroQ) > 0 && d.zeroQ[0] == s {
				d.zeroQ = d.zeroQ[1:]
			}
			d.acond.Broadcast()
		default:
			d.acond.Wait()
		}
	}
}

var zeroes = make([]byte, 1<<20)

// zeroChunk zeroes and syncs the next chunk of s. It returns true when s
// needs no more zeroing (done, closed or failed). The fdatasync runs under
// s.syncMu like every other sync of s: it may be the one that collects the
// writeback error of an appended record, which then poisons s for its waiters.
func (d *dirState) zeroChunk(s *segment) bool {
	s.fmu.RLock()
	if s.wf == nil || s.poisoned.Load() {
		s.fmu.RUnlock()
		return true
	}
	from := s.zeroed.Load()
	to := min(from+d.w.opts.ZeroChunk, s.size)
	for off := from; off < to; {
		n := min(int64(len(zeroes)), to-off)
		if _, err := s.wf.WriteAt(zeroes[:n], off); err != nil {
			s.fmu.RUnlock()
			// Zeroing is only a speed-up, and these bytes lie beyond
			// every record: stop zeroing s (appends go on into the
			// preallocated rest), poison nothing.
			d.w.logger.Warn("wal: zeroing failed; segment left unzeroed", "file", s.path, "offset", off, "err", err)
			return true
		}
		off += n
	}
	s.fmu.RUnlock()

	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.stickyErr() != nil {
		return true
	}
	s.fmu.RLock()
	if s.wf == nil {
		s.fmu.RUnlock()
		return true
	}
	err := s.wf.SyncData()
	s.fmu.RUnlock()
	if err != nil {
		d.failSegment(s, fmt.Errorf("%w: fdatasync %s after zeroing from offset %d to %d: %w", ErrSyncFailed, s.path, from, to, err))
		return true
	}
	s.zeroed.Store(to)
	return to >= s.size
}

// prepare makes a new segment ready for appends: a recycled spare or a new
// preallocated file, with a durable header under its final name.
func (d *dirState) prepare() (*segment, error) {
	fs := d.w.fs
	size := d.w.opts.SegmentSize
	id := d.w.nextSegID.Add(1) - 1
	path := fs.PathJoin(d.path, segmentName(id))
	s := &segment{id: id, dir: d, path: path, size: size}
	var hdr [segmentHeaderSize]byte
	segmentHeader{ID: id, Size: size}.encode(hdr[:])

	d.amu.Lock()
	var sp spare
	haveSpare := len(d.spares) > 0
	if haveSpare {
		sp = d.spares[len(d.spares)-1]
		d.spares = d.spares[:len(d.spares)-1]
	}
	d.amu.Unlock()

	var f vfs.File
	var err error
	if haveSpare {
		f, err = d.recycle(sp, path, hdr[:])
		if err != nil {
			d.w.logger.Warn("wal: recycling spare failed, creating a new segment", "file", sp.path, "err", err)
		} else {
			fi, serr := f.Stat()
			if serr != nil {
				f.Close()
				return nil, fmt.Errorf("wal: stat %s: %w", path, serr)
			}
			s.zeroed.Store(max(segmentHeaderSize, min(fi.Size()&^(recordAlign-1), size)))
		}
	}
	if f == nil {
		f, err = d.create(path, hdr[:])
		if err != nil {
			return nil, err
		}
		s.zeroed.Store(segmentHeaderSize)
	}
	s.wf = f
	s.off = segmentHeaderSize
	s.written.Store(segmentHeaderSize)
	s.durable.Store(segmentHeaderSize)
	s.current.Store(true)
	d.w.mu.Lock()
	d.w.segs[id] = s
	d.w.mu.Unlock()
	return s, nil
}

// create makes a new segment file under a temporary name and renames it.
func (d *dirState) create(path string, hdr []byte) (vfs.File, error) {
	fs := d.w.fs
	size := d.w.opts.SegmentSize
	if min := d.w.opts.MinFreeBytes; min > 0 {
		du, err := fs.GetDiskUsage(d.path)
		if err == nil && int64(du.AvailBytes)-size < min {
			return nil, fmt.Errorf("wal: directory %s: %d bytes free, a %d-byte segment would leave less than MinFreeBytes (%d): %w",
				d.path, du.AvailBytes, size, min, ErrDiskSpace)
		} else if err != nil && !errors.Is(err, vfs.ErrUnsupported) {
			return nil, fmt.Errorf("wal: directory %s: checking free space: %w", d.path, err)
		}
	}
	tmp := path + tempSuffix
	f, err := fs.Create(tmp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("wal: creating %s: %w", tmp, err)
	}
	if c, ok := f.(interface{ Chmod(os.FileMode) error }); ok {
		_ = c.Chmod(0o600) // segments are readable by the owner only
	}
	fail := func(err error) (vfs.File, error) {
		f.Close()
		fs.Remove(tmp)
		return nil, err
	}
	if err := f.Preallocate(0, size); err != nil {
		return fail(fmt.Errorf("wal: preallocating %d bytes for %s: %w", size, tmp, err))
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fail(fmt.Errorf("wal: writing header of %s at offset 0: %w", tmp, err))
	}
	if err := f.SyncData(); err != nil {
		return fail(fmt.Errorf("wal: syncing header of %s: %w", tmp, err))
	}
	if err := fs.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("wal: renaming %s to %s: %w", tmp, path, err))
	}
	if err := syncDir(fs, d.path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// recycle rewrites a spare's header for a new id and renames it into place.
func (d *dirState) recycle(sp spare, path string, hdr []byte) (vfs.File, error) {
	fs := d.w.fs
	f, err := fs.OpenReadWrite(sp.path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("wal: opening spare %s: %w", sp.path, err)
	}
	fail := func(err error) (vfs.File, error) {
		f.Close()
		fs.Remove(sp.path)
		return nil, err
	}
	if _, err := f.WriteAt(hdr, 0); err != nil {
		return fail(fmt.Errorf("wal: writing header of spare %s at offset 0: %w", sp.path, err))
	}
	if err := f.SyncData(); err != nil {
		return fail(fmt.Errorf("wal: syncing header of spare %s: %w", sp.path, err))
	}
	if err := fs.Rename(sp.path, path); err != nil {
		return fail(fmt.Errorf("wal: renaming %s to %s: %w", sp.path, path, err))
	}
	if err := syncDir(fs, d.path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// retire turns a no longer needed segment file into a spare, or deletes it,
// and syncs the directory. The segment's handles must be closed.
func (d *dirState) retire(s *segment) error {
	fs := d.w.fs
	d.amu.Lock()
	keep := len(d.spares) < d.w.opts.Spares && s.badHeader == ""
	d.amu.Unlock()
	if keep {
		sp := spare{path: fs.PathJoin(d.path, spareName(s.id)), oldID: s.id}
		if err := fs.Rename(s.path, sp.path); err != nil {
			return fmt.Errorf("wal: renaming %s to %s: %w", s.path, sp.path, err)
		}
		d.amu.Lock()
		d.spares = append(d.spares, sp)
		d.amu.Unlock()
	} else if err := fs.Remove(s.path); err != nil {
		return fmt.Errorf("wal: removing %s: %w", s.path, err)
	}
	return syncDir(fs, d.path)
}

// failSegment records a write or sync failure on s: it is never synced or
// appended to again, and every waiter not yet covered gets err.
func (d *dirState) failSegment(s *segment, err error) {
	d.smu.Lock()
	if s.syncErr == nil {
		s.syncErr = err
	}
	s.poisoned.Store(true)
	close(d.syncDone)
	d.syncDone = make(chan struct{})
	d.smu.Unlock()
	d.amu.Lock()
	d.acond.Broadcast()
	d.amu.Unlock()
	d.w.logger.Error("wal: segment poisoned", "file", s.path, "err", err)
}
