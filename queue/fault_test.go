package queue

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

var errInjected = errors.New("injected EIO")

// faultFS fails Sync and WriteAt of queue files of generation B while fail
// is set.
type faultFS struct {
	vfs.FS
	fail atomic.Bool
}

type faultFile struct {
	vfs.File
	fs *faultFS
}

func (f faultFile) Sync() error {
	if f.fs.fail.Load() {
		return errInjected
	}
	return f.File.Sync()
}

func (f faultFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.fail.Load() {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

func (fs *faultFS) wrap(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.HasSuffix(name, ".B") {
		return f, err
	}
	return faultFile{File: f, fs: fs}, nil
}

func (fs *faultFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return fs.wrap(name, f, err)
}

func (fs *faultFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return fs.wrap(name, f, err)
}

// TestSnapshotError: a failed WriteSnapshot followed by Abort loses nothing,
// and the next snapshot (which recreates the target) is correct.
func TestSnapshotError(t *testing.T) {
	mem := vfs.NewCrashableMem()
	fs := &faultFS{FS: mem}
	opts := Options{Dir: "a", BackupDir: "b", Name: "fault", Capacity: 64, FS: fs}
	q := mustOpen(t, opts, nil)
	defer q.Close()
	fill(t, q, 1, 40)
	st0 := checkpoint(t, q) // gen B
	for range 10 {
		q.PopFront()
	}
	fill(t, q, 100, 20)
	st1 := checkpoint(t, q) // gen A
	for range 5 {
		q.PopFront()
	}
	fill(t, q, 200, 7)
	want := contents(q)

	fs.fail.Store(true)
	f := q.Freeze()
	if _, err := q.WriteSnapshot(f); !errors.Is(err, errInjected) {
		t.Fatalf("err = %v", err)
	}
	q.PopFront() // mutate between failure and abort
	want = want[1:]
	q.Abort(f)
	fs.fail.Store(false)
	if got := contents(q); !slices.Equal(got, want) {
		t.Fatalf("after abort %v want %v", got, want)
	}
	// The last durable state still opens from a crash image.
	crash := opts
	crash.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	q2 := mustOpen(t, crash, &st1)
	q2.Close()
	// The older one (gen B) may be destroyed; it must not open silently wrong.
	if q3, err := Open(crash, &st0); err == nil {
		q3.Close()
	}

	st2 := checkpoint(t, q)
	if st2.Gen != 1 || st2.Digest != Digest(want) {
		t.Fatalf("state %+v", st2)
	}
	crash.FS = mem.CrashClone(vfs.CrashCloneCfg{})
	q2 = mustOpen(t, crash, &st2)
	defer q2.Close()
	if got := contents(q2); !slices.Equal(got, want) {
		t.Fatalf("reopen %v want %v", got, want)
	}
}
