// Package queue implements the per-channel persistent queue of event
// pointers of the file channel.
//
// A queue is a circular array of 8-byte event pointers (uint64, not
// interpreted here) addressed by logical position: head H increases as
// events are taken, the element at logical position p lives in slot p mod C
// of a queue file of capacity C (layout in format.go).
//
// Each channel has two queue files, generation A (0, in Options.Dir) and B
// (1, in Options.BackupDir or Dir). The base file is the generation named by
// the last checkpoint; it is read-only between checkpoints. Every change
// since then lives in a RAM overlay (see overlay). A checkpoint:
//
//  1. Freeze (under the caller's exclusive lock, O(1)): the current overlay
//     becomes immutable in a Frozen handle, a new empty overlay starts.
//  2. WriteSnapshot (no lock, concurrent with mutations): writes the frozen
//     state into the other generation file, comparing before writing,
//     msync/fsync, and returns the State (with the live slots' digest) to
//     store in the checkpoint meta.
//  3. Install (after the meta is durable, under the caller's lock): the
//     written file becomes the base, the frozen overlay is dropped. Abort
//     instead merges the frozen overlay back if the checkpoint failed.
//
// A crash at any step leaves the file named by the last durable checkpoint
// untouched.
//
// Concurrency: Len, Capacity, Head, PushBack, PopFront, PushFront, At,
// Freeze, Install, Abort and Close must be serialized by the caller.
// WriteSnapshot may run concurrently with all of them except Install, Abort
// and Close (which must only be called after it returned) and a second
// WriteSnapshot.
package queue

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/internal/crc32c"
)

// Options configures a queue.
type Options struct {
	// Dir holds generation A; BackupDir (Dir if empty) holds generation B.
	Dir, BackupDir string
	// Name is the channel name (escaped into the file names).
	Name string
	// Capacity is the configured maximum number of queued events. Zero
	// with a State means "keep the State's capacity".
	Capacity uint64
	// FS is the file system; nil or vfs.Default means real files mapped
	// with mmap, anything else an in-memory image of the vfs file.
	FS     vfs.FS
	Logger *slog.Logger
	// DigestKey, when set, makes the digests of new snapshots keyed: the
	// first 4 bytes (little endian) of HMAC-SHA256(DigestKey, "sluice queue
	// digest v1" | live slots in logical order) instead of their CRC32C, so
	// that someone who can write the queue file but does not know the key
	// (kept in the sealed checkpoint) cannot make a forged file match the
	// checkpoint's digest. Encrypted stores set it.
	DigestKey []byte
	// CheckKey is the key the opened State's digest was computed with
	// (nil: CRC32C).
	CheckKey []byte
}

const digestContext = "sluice queue digest v1"

// newDigestMAC returns the keyed digest's hash, or nil without a key.
func newDigestMAC(key []byte) hash.Hash {
	if key == nil {
		return nil
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(digestContext))
	return m
}

func macDigest(m hash.Hash) uint32 { return binary.LittleEndian.Uint32(m.Sum(nil)) }

// State is what the checkpoint stores for a queue.
type State struct {
	Gen      uint8  // generation of the file holding the snapshot (0 = A, 1 = B)
	Head     uint64 // logical position of the head
	Size     uint64 // number of queued events
	Capacity uint64 // capacity of that file
	Digest   uint32 // CRC32C (or keyed, see Options.DigestKey) of the live slots in logical order (little-endian uint64s)
}

var (
	// ErrFull is returned when a push does not fit in the capacity.
	ErrFull = errors.New("queue: full")
	// ErrDigest means the queue file does not match the checkpoint.
	ErrDigest = errors.New("queue: file does not match checkpoint digest")
	// ErrEmpty is returned by operations that need a queued event.
	ErrEmpty = errors.New("queue: empty")
	// ErrHeadUnderflow is returned by PushFront when the head would go
	// below logical position 0.
	ErrHeadUnderflow = errors.New("queue: push front below logical position 0")
	// ErrFrozen is returned when a snapshot operation is called with a
	// Frozen handle that is not the queue's outstanding one (nil, already
	// installed or aborted).
	ErrFrozen = errors.New("queue: no such outstanding frozen snapshot")
	// ErrClosed is returned by operations on a closed queue.
	ErrClosed = errors.New("queue: closed")
)

// Queue is one channel's persistent queue. See the package comment for
// the concurrency contract.
type Queue struct {
	opts   Options
	st     storage
	log    *slog.Logger
	paths  [2]string
	capa   uint64 // logical capacity (immutable after Open)
	closed bool

	// files[g] is the open image of generation g, or nil. files[baseGen]
	// is never nil while open. The other one is only touched by
	// WriteSnapshot, Install, Abort and Close.
	files   [2]backing
	baseGen uint8
	base    baseFile // view of files[baseGen]
	// targetBad is set when a WriteSnapshot failed after touching the
	// target file: the next one recreates it from scratch instead of
	// trusting its image.
	targetBad bool

	head, size uint64
	cur        overlay
	frozen     *Frozen
	// pool holds the overlay blocks of the last installed snapshot (and
	// blocks emptied by pops since), for the current overlay to refill.
	pool blockPool
}

// baseFile is a read-only view of the slots of a file.
type baseFile struct {
	slots []byte // bytes()[headerSize:]
	c     uint64
}

func (b baseFile) at(p uint64) uint64 {
	return binary.LittleEndian.Uint64(b.slots[(p%b.c)*slotSize:])
}

// Frozen is an immutable snapshot handle returned by Freeze.
type Frozen struct {
	head, size uint64
	ov         overlay
	base       baseFile
	baseGen    uint8
}

// Head returns the frozen head.
func (f *Frozen) Head() uint64 { return f.head }

// Len returns the frozen size.
func (f *Frozen) Len() uint64 { return f.size }

// get returns the frozen value at live position p.
func (f *Frozen) get(p uint64) uint64 {
	if v, ok := f.ov.lookup(p); ok {
		return v
	}
	return f.base.at(p)
}

func (o Options) path(gen uint8) string {
	dir := o.Dir
	if gen == 1 && o.BackupDir != "" {
		dir = o.BackupDir
	}
	return newStorage(o).join(dir, fileName(o.Name, gen))
}

// Path returns the file name of generation gen (0 or 1) for opts.
func Path(opts Options, gen uint8) string { return opts.path(gen) }

// Open opens a queue. With st == nil it creates a new empty queue (head 0)
// whose base is a freshly created generation A file of opts.Capacity slots
// (any stale file is overwritten).
//
// With st != nil it opens generation st.Gen, checks its header (capacity,
// generation) and the digest of the live range [Head, Head+Size); a
// mismatch is an error wrapping ErrDigest naming the file.
//
// If opts.Capacity differs from st.Capacity (and is not zero) the queue is
// rebuilt with capacity max(opts.Capacity, st.Size) — no event is ever
// dropped. The rebuild is done lazily and crash-safely: the file st names
// stays the read-only base, untouched, and the next WriteSnapshot writes
// every live slot into the other generation file recreated with the new
// capacity; the State it returns is the one to persist. Until that
// checkpoint is durable, a crash reopens from st as before.
func Open(opts Options, st *State) (*Queue, error) {
	q := &Queue{opts: opts, st: newStorage(opts), log: opts.Logger}
	if q.log == nil {
		q.log = slog.New(slog.DiscardHandler)
	}
	q.paths = [2]string{opts.path(0), opts.path(1)}
	if st == nil {
		if opts.Capacity == 0 || opts.Capacity > maxCapacity {
			return nil, fmt.Errorf("queue %q: invalid capacity %d", opts.Name, opts.Capacity)
		}
		if err := q.st.mkdirAll(opts.Dir); err != nil {
			return nil, fmt.Errorf("queue %q: %w", opts.Name, err)
		}
		if opts.BackupDir != "" {
			if err := q.st.mkdirAll(opts.BackupDir); err != nil {
				return nil, fmt.Errorf("queue %q: %w", opts.Name, err)
			}
		}
		b, err := q.st.create(q.paths[0], opts.Capacity, 0)
		if err != nil {
			return nil, fmt.Errorf("queue %q: create %s: %w", opts.Name, q.paths[0], err)
		}
		q.capa = opts.Capacity
		q.setBase(0, b)
		q.cur = newOverlay(0, 0, &q.pool)
		return q, nil
	}

	if st.Gen > 1 {
		return nil, fmt.Errorf("queue %q: invalid generation %d in state", opts.Name, st.Gen)
	}
	if st.Capacity == 0 || st.Size > st.Capacity || st.Head+st.Size < st.Head || opts.Capacity > maxCapacity {
		return nil, fmt.Errorf("queue %q: invalid state %+v", opts.Name, *st)
	}
	path := q.paths[st.Gen]
	b, err := q.st.open(path)
	if err != nil {
		return nil, fmt.Errorf("queue %q: open %s: %w", opts.Name, path, err)
	}
	if err := checkFile(b, st, opts.CheckKey); err != nil {
		_ = b.close()
		return nil, fmt.Errorf("queue %q: %s: %w", opts.Name, path, err)
	}
	q.capa = st.Capacity
	if opts.Capacity != 0 && opts.Capacity != st.Capacity {
		q.capa = max(opts.Capacity, st.Size)
		q.log.Info("queue capacity changed; rebuilding at the next checkpoint",
			"channel", opts.Name, "file", path, "old", st.Capacity,
			"configured", opts.Capacity, "new", q.capa, "size", st.Size)
	}
	q.head, q.size = st.Head, st.Size
	q.setBase(st.Gen, b)
	q.cur = newOverlay(st.Head, st.Head+st.Size, &q.pool)
	return q, nil
}

// checkFile validates the header and size of an opened file against st
// and the digest of its live range.
func checkFile(b backing, st *State, key []byte) error {
	img := b.bytes()
	h, err := decodeHeader(img)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDigest, err)
	}
	if h.gen != st.Gen {
		return fmt.Errorf("%w: header generation %d, checkpoint says %d", ErrDigest, h.gen, st.Gen)
	}
	if h.capacity != st.Capacity {
		return fmt.Errorf("%w: header capacity %d, checkpoint says %d", ErrDigest, h.capacity, st.Capacity)
	}
	if int64(len(img)) != fileSize(h.capacity) {
		return fmt.Errorf("%w: file size %d, want %d", ErrDigest, len(img), fileSize(h.capacity))
	}
	if d := fileDigest(img[headerSize:], h.capacity, st.Head, st.Size, key); d != st.Digest {
		return fmt.Errorf("%w: live slots digest %08x, checkpoint says %08x", ErrDigest, d, st.Digest)
	}
	return nil
}

// fileDigest computes the digest of the live range [head, head+size) of a
// slot array of capacity c: keyed with key (see Options.DigestKey), else
// CRC32C.
func fileDigest(slots []byte, c, head, size uint64, key []byte) uint32 {
	var crc uint32
	m := newDigestMAC(key)
	s := head % c
	for size > 0 {
		n := min(size, c-s)
		if m != nil {
			m.Write(slots[s*slotSize : (s+n)*slotSize])
		} else {
			crc = crc32c.Update(crc, slots[s*slotSize:(s+n)*slotSize])
		}
		size -= n
		s = 0
	}
	if m != nil {
		return macDigest(m)
	}
	return crc
}

// Digest returns the digest of pointers, as State.Digest would be for a
// queue holding exactly ps in logical order.
func Digest(ps []uint64) uint32 {
	var crc uint32
	var buf [slotsPerPage * slotSize]byte
	for len(ps) > 0 {
		n := min(len(ps), slotsPerPage)
		for i, p := range ps[:n] {
			binary.LittleEndian.PutUint64(buf[i*slotSize:], p)
		}
		crc = crc32c.Update(crc, buf[:n*slotSize])
		ps = ps[n:]
	}
	return crc
}

func (q *Queue) setBase(gen uint8, b backing) {
	q.files[gen] = b
	q.baseGen = gen
	img := b.bytes()
	q.base = baseFile{slots: img[headerSize:], c: binary.LittleEndian.Uint64(img[8:])}
}

// Len returns the number of queued events.
func (q *Queue) Len() uint64 { return q.size }

// Capacity returns the maximum number of queued events: the configured
// capacity, or the size at open when that was larger (a shrink never drops
// events). It is the capacity of the file the next snapshot writes.
func (q *Queue) Capacity() uint64 { return q.capa }

// Head returns the logical position of the head.
func (q *Queue) Head() uint64 { return q.head }

// Gen returns the generation of the current base file.
func (q *Queue) Gen() uint8 { return q.baseGen }

// OverlayEntries returns the number of positions held in RAM (current and
// frozen overlays), for metrics and tests.
func (q *Queue) OverlayEntries() int {
	n := q.cur.entries()
	if q.frozen != nil {
		n += q.frozen.ov.entries()
	}
	return n
}

// ref returns the value at live position p of the state the current
// overlay is relative to: the frozen snapshot if any, else the base file.
func (q *Queue) ref(p uint64) uint64 {
	if q.frozen != nil {
		return q.frozen.get(p)
	}
	return q.base.at(p)
}

func (q *Queue) get(p uint64) uint64 {
	if v, ok := q.cur.lookup(p); ok {
		return v
	}
	return q.ref(p)
}

// At returns the i-th element from the head. It panics if i >= Len().
func (q *Queue) At(i uint64) uint64 {
	if i >= q.size {
		panic(fmt.Sprintf("queue: At(%d) with Len() == %d", i, q.size))
	}
	return q.get(q.head + i)
}

// PushBackN appends ps at the tail in order: all of them, or none when they
// do not fit (ErrFull).
func (q *Queue) PushBackN(ps []uint64) error {
	if q.closed {
		return ErrClosed
	}
	if uint64(len(ps)) > q.capa-min(q.size, q.capa) {
		return ErrFull
	}
	q.cur.post.pushBackN(ps)
	q.size += uint64(len(ps))
	return nil
}

// PushBack appends p at the tail.
func (q *Queue) PushBack(p uint64) error {
	if q.closed {
		return ErrClosed
	}
	if q.size >= q.capa {
		return ErrFull
	}
	q.cur.post.pushBack(p)
	q.size++
	return nil
}

// PopFront removes and returns the head element; false when empty.
func (q *Queue) PopFront() (uint64, bool) {
	if q.size == 0 || q.closed {
		return 0, false
	}
	o := &q.cur
	h := q.head
	var v uint64
	switch {
	case h < o.rH:
		v = o.pre.at(0)
		o.pre.popFront()
	case h >= o.postLo:
		v = o.post.at(0)
		o.post.popFront()
		o.postLo++
	default:
		v = q.ref(h)
	}
	q.head++
	q.size--
	return v, true
}

// PushFront puts ps back at the head: ps[0] becomes the head, ps keeps its
// order. ErrFull if they do not fit; ErrHeadUnderflow if the head would go
// below 0. Nothing is changed on error.
func (q *Queue) PushFront(ps []uint64) error {
	if q.closed {
		return ErrClosed
	}
	k := uint64(len(ps))
	if k > q.capa-q.size {
		return ErrFull
	}
	if k > q.head {
		return ErrHeadUnderflow
	}
	o := &q.cur
	for i := len(ps) - 1; i >= 0; i-- {
		v := ps[i]
		p := q.head - 1
		switch {
		case p < o.rH:
			o.pre.pushFront(v)
		case p+1 == o.postLo:
			o.post.pushFront(v)
			o.postLo--
		default:
			// p is in [rH, postLo-1): an unchanged position of the
			// reference. Rewriting the same value (the usual rollback)
			// costs nothing; otherwise extend post down to p, filling the
			// gap from the reference.
			if q.ref(p) != v {
				for r := o.postLo - 1; r > p; r-- {
					o.post.pushFront(q.ref(r))
				}
				o.post.pushFront(v)
				o.postLo = p
			}
		}
		q.head--
		q.size++
	}
	return nil
}

// Freeze captures the current state in an immutable handle in O(1): the
// current overlay moves into the handle and a new empty overlay starts,
// based at the current head and tail. It returns nil (and changes nothing)
// when a previous Frozen is neither installed nor aborted, or the queue is
// closed.
func (q *Queue) Freeze() *Frozen {
	if q.frozen != nil || q.closed {
		return nil
	}
	f := &Frozen{head: q.head, size: q.size, ov: q.cur, base: q.base, baseGen: q.baseGen}
	q.frozen = f
	q.cur = newOverlay(q.head, q.head+q.size, &q.pool)
	return f
}

// testHookBeforeSync, when set (tests only), runs in WriteSnapshot after
// every slot was written and before the target is synced.
var testHookBeforeSync func()

// WriteSnapshot writes the frozen state into the generation that is not the
// base and makes it durable, returning the State to store in the
// checkpoint. See the package comment for what may run concurrently.
//
// On error the target file is left in an unspecified state (the next
// WriteSnapshot recreates it); the caller should Abort f.
func (q *Queue) WriteSnapshot(f *Frozen) (State, error) {
	if f == nil || f != q.frozen {
		return State{}, ErrFrozen
	}
	tgen := 1 - f.baseGen
	path := q.paths[tgen]
	st, err := q.writeSnapshot(f, tgen)
	if err != nil {
		q.targetBad = true
		return State{}, fmt.Errorf("queue %q: snapshot to %s: %w", q.opts.Name, path, err)
	}
	return st, nil
}

// target returns an image of generation gen with the queue's capacity,
// reusing the open or existing file when its header is right.
func (q *Queue) target(gen uint8) (backing, error) {
	path := q.paths[gen]
	b := q.files[gen]
	if b != nil && (q.targetBad || !headerIs(b.bytes(), q.capa, gen)) {
		_ = b.close()
		b, q.files[gen] = nil, nil
	}
	if b == nil && !q.targetBad {
		ob, err := q.st.open(path)
		if err == nil {
			if headerIs(ob.bytes(), q.capa, gen) {
				b = ob
			} else {
				_ = ob.close()
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			q.log.Warn("queue file unreadable; recreating", "file", path, "err", err)
		}
	}
	if b == nil {
		nb, err := q.st.create(path, q.capa, gen)
		if err != nil {
			return nil, err
		}
		b = nb
	}
	q.files[gen] = b
	q.targetBad = false
	return b, nil
}

func headerIs(img []byte, c uint64, gen uint8) bool {
	h, err := decodeHeader(img)
	return err == nil && h.capacity == c && h.gen == gen && int64(len(img)) == fileSize(c)
}

func (q *Queue) writeSnapshot(f *Frozen, tgen uint8) (State, error) {
	b, err := q.target(tgen)
	if err != nil {
		return State{}, err
	}
	w := snapWriter{b: b, dst: b.bytes()[headerSize:], c: q.capa, mac: newDigestMAC(q.opts.DigestKey)}
	h, t := f.head, f.head+f.size
	o := &f.ov
	p := h
	// [h, rH): frozen pre.
	if p < o.rH {
		end := o.rH
		w.fromDeque(&o.pre, p, end, end-uint64(o.pre.len()))
		p = end
	}
	// [max(h, rH), postLo): unchanged, from the base file.
	if p < o.postLo {
		w.fromBase(f.base, p, o.postLo)
		p = o.postLo
	}
	// [postLo, t): frozen post.
	if p < t {
		w.fromDeque(&o.post, p, t, o.postLo)
	}
	if hook := testHookBeforeSync; hook != nil {
		hook()
	}
	if err := b.sync(); err != nil {
		return State{}, err
	}
	digest := w.crc
	if w.mac != nil {
		digest = macDigest(w.mac)
	}
	return State{Gen: tgen, Head: f.head, Size: f.size, Capacity: q.capa, Digest: digest}, nil
}

// snapWriter copies logical positions into a target slot array one page
// at a most, comparing first so unchanged pages are not dirtied, and
// accumulates the digest.
type snapWriter struct {
	b   backing
	dst []byte
	c   uint64
	crc uint32
	mac hash.Hash // keyed digest instead of crc (Options.DigestKey)
	buf [slotsPerPage * slotSize]byte
}

// chunk returns how many positions from p (at most n) map to consecutive
// target slots within one page.
func (w *snapWriter) chunk(p, n uint64) uint64 {
	s := p % w.c
	return min(n, slotsPerPage-s%slotsPerPage, w.c-s)
}

func (w *snapWriter) put(p uint64, src []byte) {
	if w.mac != nil {
		w.mac.Write(src)
	} else {
		w.crc = crc32c.Update(w.crc, src)
	}
	off := (p % w.c) * slotSize
	dst := w.dst[off : off+uint64(len(src))]
	if !bytes.Equal(dst, src) {
		copy(dst, src)
		w.b.markDirty(headerSize+int(off), len(src))
	}
}

// fromBase copies positions [p, end) from the base file.
func (w *snapWriter) fromBase(base baseFile, p, end uint64) {
	for p < end {
		n := w.chunk(p, end-p)
		bs := p % base.c
		n = min(n, base.c-bs)
		w.put(p, base.slots[bs*slotSize:(bs+n)*slotSize])
		p += n
	}
}

// fromDeque copies positions [p, end) from d, whose element 0 is at
// logical position lo.
func (w *snapWriter) fromDeque(d *deque, p, end, lo uint64) {
	for p < end {
		n := w.chunk(p, end-p)
		for i := uint64(0); i < n; i++ {
			binary.LittleEndian.PutUint64(w.buf[i*slotSize:], d.at(int(p+i-lo)))
		}
		w.put(p, w.buf[:n*slotSize])
		p += n
	}
}

// Install makes the snapshot's file the base once the checkpoint meta
// naming st is durable: reads of positions unchanged since the freeze now
// come from it and the frozen overlay is dropped. It must be called with
// the State WriteSnapshot returned for f. A stale or nil f is ignored.
func (q *Queue) Install(f *Frozen, st State) {
	if f == nil || f != q.frozen || q.closed {
		return
	}
	b := q.files[st.Gen]
	if st.Gen == f.baseGen || b == nil {
		// Not the State of a successful WriteSnapshot of f; keep the data.
		q.log.Error("queue: Install with a state not written by WriteSnapshot; aborting snapshot",
			"channel", q.opts.Name, "gen", st.Gen)
		q.Abort(f)
		return
	}
	q.setBase(st.Gen, b)
	q.frozen = nil
	// The next overlay will grow about as large as this one did.
	q.pool.keep = f.ov.blockCount() + 2
	f.ov.release()
	q.pool.trim()
	f.ov = overlay{} // f is spent
}

// Abort discards a frozen snapshot whose checkpoint failed: its overlay is
// merged back into the current one, so nothing is lost and the next Freeze
// includes those changes again. Cost: O(entries in both overlays). A stale
// or nil f is ignored.
func (q *Queue) Abort(f *Frozen) {
	if f == nil || f != q.frozen {
		return
	}
	// Rebuild the current overlay relative to the base (f.ov's reference)
	// from the merged view (current → frozen → base).
	h, t := q.head, q.head+q.size
	bo, co := &f.ov, &q.cur
	n := newOverlay(bo.rH, bo.rT, &q.pool)
	for p := min(bo.rH, t) - 1; p >= h && p < bo.rH; p-- {
		n.pre.pushFront(q.get(p))
	}
	// Lowest position ≥ rH that may differ from the base.
	lo := min(bo.postLo, co.postLo, bo.rT)
	if h < co.rH {
		lo = min(lo, h)
	}
	lo = max(lo, h, bo.rH)
	n.postLo = lo
	for p := lo; p < t; p++ {
		n.post.pushBack(q.get(p))
	}
	old := q.cur
	q.cur = n
	old.release()
	f.ov.release()
	f.ov = overlay{} // f is spent
	q.frozen = nil
}

// Close releases the files. The queue must not be used afterwards.
func (q *Queue) Close() error {
	if q.closed {
		return nil
	}
	q.closed = true
	var err error
	for i, b := range q.files {
		if b != nil {
			if cerr := b.close(); err == nil {
				err = cerr
			}
			q.files[i] = nil
		}
	}
	q.base = baseFile{}
	q.frozen = nil
	return err
}

// Remove deletes both generation files of opts' channel.
func Remove(opts Options) error {
	st := newStorage(opts)
	for gen := range uint8(2) {
		if err := st.remove(opts.path(gen)); err != nil {
			return fmt.Errorf("queue %q: remove %s: %w", opts.Name, opts.path(gen), err)
		}
	}
	return nil
}
