package queue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
	mmap "github.com/edsrzf/mmap-go"
	"golang.org/x/sys/unix"
)

// backing is the image of one queue file: either a shared read-write mmap of
// a real file or an in-memory copy of a vfs file that is written back on
// sync. Callers read and write the bytes directly and report the ranges they
// wrote with markDirty (a no-op for mmap).
type backing interface {
	// bytes returns the whole file image (header and slots).
	bytes() []byte
	// markDirty records that [off, off+n) of bytes() was modified.
	markDirty(off, n int)
	// sync makes every modification durable (msync, or WriteAt + fsync).
	sync() error
	close() error
}

// storage creates and opens backings for one Options.
type storage struct {
	fs vfs.FS // nil: real files + mmap
}

func newStorage(opts Options) storage {
	if opts.FS == nil || opts.FS == vfs.Default {
		return storage{}
	}
	return storage{fs: opts.FS}
}

func (s storage) join(dir, name string) string {
	if s.fs == nil {
		return filepath.Join(dir, name)
	}
	return s.fs.PathJoin(dir, name)
}

// create (re)creates path as an empty queue file of capacity c and
// generation gen, with its space reserved, durably (file and directory
// synced), and returns its image.
func (s storage) create(path string, c uint64, gen uint8) (backing, error) {
	if s.fs == nil {
		return createMmap(path, c, gen)
	}
	return createMem(s.fs, path, c, gen)
}

// open opens an existing queue file.
func (s storage) open(path string) (backing, error) {
	if s.fs == nil {
		return openMmap(path)
	}
	return openMem(s.fs, path)
}

// remove deletes path if it exists and syncs its directory.
func (s storage) remove(path string) error {
	if s.fs == nil {
		if err := os.Remove(path); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		return syncDir(filepath.Dir(path))
	}
	if err := s.fs.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	return syncVFSDir(s.fs, s.fs.PathDir(path))
}

// mkdirAll creates dir if needed; when it did not exist, its parent is
// synced so that the new directory entry is durable.
func (s storage) mkdirAll(dir string) error {
	if s.fs == nil {
		if _, err := os.Stat(dir); err == nil {
			return nil
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		return syncDir(filepath.Dir(filepath.Clean(dir)))
	}
	if _, err := s.fs.Stat(dir); err == nil {
		return nil
	}
	if err := s.fs.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return syncVFSDir(s.fs, s.fs.PathDir(dir))
}

// ---- mmap backing ----

type mmapBacking struct {
	f *os.File
	m mmap.MMap
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func createMmap(path string, c uint64, gen uint8) (backing, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	b, err := func() (backing, error) {
		size := fileSize(c)
		// Reserve the blocks now so that a full disk is an error here and
		// never a SIGBUS when a page of the mapping is first written.
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			if !errors.Is(err, unix.EOPNOTSUPP) {
				return nil, fmt.Errorf("reserve %d bytes: %w", size, err)
			}
			// No fallocate on this file system: writing zeros allocates
			// the blocks just as well.
			if err := writeZeros(f, size); err != nil {
				return nil, fmt.Errorf("reserve %d bytes: %w", size, err)
			}
		}
		hdr := make([]byte, headerSize)
		encodeHeader(hdr, c, gen)
		if _, err := f.WriteAt(hdr, 0); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, err
		}
		m, err := mmap.Map(f, mmap.RDWR, 0)
		if err != nil {
			return nil, err
		}
		return &mmapBacking{f: f, m: m}, nil
	}()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return b, nil
}

func writeZeros(f *os.File, size int64) error {
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(zeros)) {
		n := min(int64(len(zeros)), size-off)
		if _, err := f.WriteAt(zeros[:n], off); err != nil {
			return err
		}
	}
	return nil
}

func openMmap(path string) (backing, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if fi.Size() < headerSize {
		_ = f.Close()
		return nil, fmt.Errorf("%w: file too short: %d bytes", ErrDigest, fi.Size())
	}
	m, err := mmap.Map(f, mmap.RDWR, 0)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return &mmapBacking{f: f, m: m}, nil
}

func (b *mmapBacking) bytes() []byte      { return b.m }
func (b *mmapBacking) markDirty(int, int) {}
func (b *mmapBacking) sync() error        { return b.m.Flush() }

func (b *mmapBacking) close() error {
	err := b.m.Unmap()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ---- vfs (in-memory image) backing ----

type memBacking struct {
	f     vfs.File
	img   []byte
	dirty [][2]int // [off, end) ranges, in the order written
}

func syncVFSDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func createMem(fs vfs.FS, path string, c uint64, gen uint8) (backing, error) {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	img := make([]byte, fileSize(c))
	encodeHeader(img, c, gen)
	b, err := func() (backing, error) {
		if err := f.Preallocate(0, int64(len(img))); err != nil {
			return nil, fmt.Errorf("reserve %d bytes: %w", len(img), err)
		}
		if _, err := f.WriteAt(img, 0); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		if err := syncVFSDir(fs, fs.PathDir(path)); err != nil {
			return nil, err
		}
		return &memBacking{f: f, img: img}, nil
	}()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	return b, nil
}

func openMem(fs vfs.FS, path string) (backing, error) {
	// OpenReadWrite creates missing files; a missing file must stay an
	// os.ErrNotExist error.
	if _, err := fs.Stat(path); err != nil {
		return nil, err
	}
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	img := make([]byte, fi.Size())
	if _, err := f.ReadAt(img, 0); err != nil && !(errors.Is(err, io.EOF) && len(img) == 0) {
		_ = f.Close()
		return nil, err
	}
	if len(img) < headerSize {
		_ = f.Close()
		return nil, fmt.Errorf("%w: file too short: %d bytes", ErrDigest, len(img))
	}
	return &memBacking{f: f, img: img}, nil
}

func (b *memBacking) bytes() []byte { return b.img }

func (b *memBacking) markDirty(off, n int) {
	if k := len(b.dirty); k > 0 && b.dirty[k-1][1] == off {
		b.dirty[k-1][1] = off + n
		return
	}
	b.dirty = append(b.dirty, [2]int{off, off + n})
}

func (b *memBacking) sync() error {
	for _, r := range b.dirty {
		if _, err := b.f.WriteAt(b.img[r[0]:r[1]], int64(r[0])); err != nil {
			return err
		}
	}
	if err := b.f.Sync(); err != nil {
		return err
	}
	b.dirty = b.dirty[:0]
	return nil
}

func (b *memBacking) close() error { return b.f.Close() }
