package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestFileFor(t *testing.T) {
	for _, tc := range []struct {
		dir, backup string
		g           uint64
		d, name     string
	}{
		{"/c", "", 0, "/c", FileA},
		{"/c", "", 1, "/c", FileB},
		{"/c", "", 2, "/c", FileA},
		{"/c", "/b", 2, "/c", FileA},
		{"/c", "/b", 3, "/b", FileB},
		{"/c", "/b", 1<<64 - 1, "/b", FileB},
	} {
		d, name := FileFor(tc.dir, tc.backup, tc.g)
		if d != tc.d || name != tc.name {
			t.Errorf("FileFor(%q,%q,%d) = %q,%q want %q,%q", tc.dir, tc.backup, tc.g, d, name, tc.d, tc.name)
		}
	}
	if FileA != "checkpoint.A" || FileB != "checkpoint.B" {
		t.Fatal("file names changed")
	}
}

// newCrashFS returns a crashable MemFS with the given directories created
// and durable.
func newCrashFS(t testing.TB, dirs ...string) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewCrashableMem()
	for _, d := range dirs {
		if err := fs.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Make the directory entries durable, root included.
	for _, d := range append([]string{"/"}, dirs...) {
		if err := syncDir(fs, d); err != nil {
			t.Fatal(err)
		}
	}
	return fs
}

func gen(g uint64) *Checkpoint {
	c := fullCheckpoint()
	c.Generation = g
	c.WOID = 1000 + g
	return c
}

func mustRead(t *testing.T, fs vfs.FS, path string, s Sealer) *Checkpoint {
	t.Helper()
	c, err := Read(fs, path, s)
	if err != nil {
		t.Fatalf("Read %s: %v", path, err)
	}
	return c
}

func TestWriteRead(t *testing.T) {
	fs := newCrashFS(t, "/ckpt")
	for _, s := range []Sealer{nil, xorSealer{key: 9}} {
		c := gen(4)
		if err := Write(fs, "/ckpt", FileA, c, s); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, fs, "/ckpt/checkpoint.A", s); !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("got %+v", got)
		}
		if _, err := fs.Stat("/ckpt/checkpoint.A.tmp"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("tmp file left behind: %v", err)
		}
	}
}

func TestReadMissing(t *testing.T) {
	fs := newCrashFS(t, "/ckpt")
	_, err := Read(fs, "/ckpt/checkpoint.A", nil)
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("memfs: %v", err)
	}
	dir := t.TempDir()
	_, err = Read(vfs.Default, vfs.Default.PathJoin(dir, FileA), nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("os fs: %v", err)
	}
	if !strings.Contains(err.Error(), FileA) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func TestReadCorruptNamesFile(t *testing.T) {
	fs := newCrashFS(t, "/ckpt")
	if err := Write(fs, "/ckpt", FileA, gen(2), nil); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenReadWrite("/ckpt/checkpoint.A", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xee}, 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Read(fs, "/ckpt/checkpoint.A", nil)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.File != "/ckpt/checkpoint.A" {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "/ckpt/checkpoint.A") {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func TestWriteOnRealFS(t *testing.T) {
	dir := t.TempDir()
	c := largeCheckpoint(1000)
	if err := Write(vfs.Default, dir, FileB, c, xorSealer{key: 1}); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, vfs.Default, vfs.Default.PathJoin(dir, FileB), xorSealer{key: 1})
	if !reflect.DeepEqual(got, normalize(c)) {
		t.Fatal("mismatch")
	}
	if err := Write(vfs.Default, vfs.Default.PathJoin(dir, "missing"), FileA, c, nil); err == nil ||
		!strings.Contains(err.Error(), "checkpoint.A") {
		t.Fatalf("write into a missing directory: %v", err)
	}
}

func TestWriteDurableAfterReturn(t *testing.T) {
	fs := newCrashFS(t, "/ckpt", "/backup")
	for g := uint64(1); g <= 6; g++ {
		d, name := FileFor("/ckpt", "/backup", g)
		c := gen(g)
		if err := Write(fs, d, name, c, nil); err != nil {
			t.Fatal(err)
		}
		clone := fs.CrashClone(vfs.CrashCloneCfg{})
		if got := mustRead(t, clone, fs.PathJoin(d, name), nil); !reflect.DeepEqual(got, normalize(c)) {
			t.Fatalf("generation %d not durable after Write returned", g)
		}
		cands := Load(clone, "/ckpt", "/backup", nil)
		if cands[0].Err != nil || cands[0].Checkpoint.Generation != g {
			t.Fatalf("Load on crash clone after gen %d: %+v", g, cands[0])
		}
		if g > 1 && (cands[1].Err != nil || cands[1].Checkpoint.Generation != g-1) {
			t.Fatalf("Load on crash clone: previous generation %+v", cands[1])
		}
	}
}

// hookFS wraps a vfs.FS and calls hook before and after every mutating
// operation Write performs, so tests can crash (clone) or fail at each step.
type hookFS struct {
	vfs.FS
	hook func(op string, after bool) error
}

type hookFile struct {
	vfs.File
	h    *hookFS
	name string
}

func (h *hookFS) do(op string, f func() error) error {
	if err := h.hook(op, false); err != nil {
		return err
	}
	err := f()
	_ = h.hook(op, true)
	return err
}

func (h *hookFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	var f vfs.File
	err := h.do("create "+name, func() (err error) { f, err = h.FS.Create(name, c); return err })
	if err != nil {
		return nil, err
	}
	return &hookFile{File: f, h: h, name: name}, nil
}

func (h *hookFS) OpenDir(name string) (vfs.File, error) {
	var f vfs.File
	err := h.do("opendir "+name, func() (err error) { f, err = h.FS.OpenDir(name); return err })
	if err != nil {
		return nil, err
	}
	return &hookFile{File: f, h: h, name: name}, nil
}

func (h *hookFS) Rename(from, to string) error {
	return h.do("rename "+from, func() error { return h.FS.Rename(from, to) })
}

func (h *hookFS) Remove(name string) error {
	return h.do("remove "+name, func() error { return h.FS.Remove(name) })
}

func (f *hookFile) Write(p []byte) (n int, err error) {
	// Write in two halves so a crash can also land between partial writes.
	err = f.h.do("write1 "+f.name, func() (err error) { n, err = f.File.Write(p[:len(p)/2]); return err })
	if err != nil {
		return n, err
	}
	var m int
	err = f.h.do("write2 "+f.name, func() (err error) { m, err = f.File.Write(p[len(p)/2:]); return err })
	return n + m, err
}

func (f *hookFile) Sync() error {
	return f.h.do("sync "+f.name, f.File.Sync)
}

func (f *hookFile) SyncData() error {
	return f.h.do("syncdata "+f.name, f.File.SyncData)
}

func (f *hookFile) Close() error {
	return f.h.do("close "+f.name, f.File.Close)
}

// TestWriteAtomicUnderCrash takes crash clones, with a random share of the
// unsynced data kept, before and after every step of Write overwriting a
// checkpoint. Every clone must hold the old or the new checkpoint, whole.
func TestWriteAtomicUnderCrash(t *testing.T) {
	seeds := 200
	if testing.Short() {
		seeds = 30
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
		haveOld := seed%4 != 0 // sometimes no checkpoint was ever written
		sealer := Sealer(nil)
		if seed%3 == 0 {
			sealer = xorSealer{key: byte(seed)}
		}
		mem := newCrashFS(t, "/ckpt")
		old := largeCheckpoint(500 + rng.IntN(3000)) // spans several 4 KiB blocks
		old.Generation = 2
		if haveOld {
			if err := Write(mem, "/ckpt", FileA, old, sealer); err != nil {
				t.Fatal(err)
			}
		}
		nw := largeCheckpoint(500 + rng.IntN(3000))
		nw.Generation = 4
		nw.WOID = 99999

		type clone struct {
			fs *vfs.MemFS
			op string
		}
		var clones []clone
		h := &hookFS{FS: mem, hook: func(op string, after bool) error {
			cfg := vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}
			if after {
				op += " (after)"
			}
			clones = append(clones, clone{mem.CrashClone(cfg), op})
			return nil
		}}
		if err := Write(h, "/ckpt", FileA, nw, sealer); err != nil {
			t.Fatal(err)
		}
		clones = append(clones, clone{mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng}), "returned"})

		for i, cl := range clones {
			got, err := Read(cl.fs, "/ckpt/checkpoint.A", sealer)
			desc := fmt.Sprintf("seed %d clone %d (%s)", seed, i, cl.op)
			switch {
			case err != nil && errors.Is(err, os.ErrNotExist):
				if haveOld {
					t.Fatalf("%s: old checkpoint lost: %v", desc, err)
				}
			case err != nil:
				t.Fatalf("%s: torn checkpoint: %v", desc, err)
			case reflect.DeepEqual(got, normalize(nw)):
			case haveOld && reflect.DeepEqual(got, normalize(old)):
				if cl.op == "returned" {
					t.Fatalf("%s: new checkpoint not durable after Write returned", desc)
				}
			default:
				t.Fatalf("%s: checkpoint is neither old nor new (generation %d)", desc, got.Generation)
			}
			// A leftover tmp file must not stop the next Write.
			if i%7 == 0 {
				next := gen(6)
				if err := Write(cl.fs, "/ckpt", FileA, next, sealer); err != nil {
					t.Fatalf("%s: Write after crash: %v", desc, err)
				}
				if got := mustRead(t, cl.fs, "/ckpt/checkpoint.A", sealer); got.Generation != 6 {
					t.Fatalf("%s: Write after crash gave generation %d", desc, got.Generation)
				}
			}
		}
	}
}

// TestWriteFailureAtEveryStep injects an error at each step of Write: the
// error names the file and the previous checkpoint stays readable (or the
// new one, once the rename happened).
func TestWriteFailureAtEveryStep(t *testing.T) {
	for k := 0; ; k++ {
		mem := newCrashFS(t, "/ckpt")
		old := gen(2)
		if err := Write(mem, "/ckpt", FileA, old, nil); err != nil {
			t.Fatal(err)
		}
		step := 0
		var failed string
		renamed := false
		h := &hookFS{FS: mem, hook: func(op string, after bool) error {
			if after {
				return nil
			}
			step++
			if step == k+1 {
				failed = op
				return errors.New("injected EIO")
			}
			if strings.HasPrefix(op, "rename") {
				renamed = true
			}
			return nil
		}}
		nw := gen(4)
		err := Write(h, "/ckpt", FileA, nw, nil)
		if failed == "" {
			if err != nil {
				t.Fatalf("no injection, still failed: %v", err)
			}
			if k < 6 {
				t.Fatalf("only %d steps", k)
			}
			return
		}
		if err == nil {
			t.Fatalf("step %d (%s): error not reported", k, failed)
		}
		if !strings.Contains(err.Error(), "/ckpt/checkpoint.A") || !strings.Contains(err.Error(), "injected EIO") {
			t.Fatalf("step %d (%s): error does not name the file and cause: %v", k, failed, err)
		}
		got := mustRead(t, mem, "/ckpt/checkpoint.A", nil)
		want := uint64(2)
		if renamed {
			want = 4
		}
		if got.Generation != want {
			t.Fatalf("step %d (%s): generation %d, want %d", k, failed, got.Generation, want)
		}
		if !renamed {
			if _, err := mem.Stat("/ckpt/checkpoint.A.tmp"); err == nil {
				t.Fatalf("step %d (%s): tmp file left behind", k, failed)
			}
		}
	}
}

func TestLoad(t *testing.T) {
	write := func(fs vfs.FS, dir, backup string, g uint64) {
		t.Helper()
		d, name := FileFor(dir, backup, g)
		if err := Write(fs, d, name, gen(g), nil); err != nil {
			t.Fatal(err)
		}
	}
	gens := func(cands []Candidate) string {
		var parts []string
		for _, c := range cands {
			switch {
			case c.Err != nil && errors.Is(c.Err, os.ErrNotExist):
				parts = append(parts, c.Path+":absent")
			case c.Err != nil && errors.Is(c.Err, ErrCorrupt):
				parts = append(parts, c.Path+":corrupt")
			case c.Err != nil:
				parts = append(parts, c.Path+":err")
			default:
				parts = append(parts, fmt.Sprintf("%s:%d", c.Path, c.Checkpoint.Generation))
			}
		}
		return strings.Join(parts, " ")
	}
	corrupt := func(fs vfs.FS, path string) {
		t.Helper()
		f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{0xff, 0xff}, 40); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}

	t.Run("none", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		if got, want := gens(Load(fs, "/c", "/b", nil)), "/c/checkpoint.A:absent /b/checkpoint.B:absent"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("B newest", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		write(fs, "/c", "/b", 4)
		write(fs, "/c", "/b", 5)
		if got, want := gens(Load(fs, "/c", "/b", nil)), "/b/checkpoint.B:5 /c/checkpoint.A:4"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("A newest", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		write(fs, "/c", "/b", 5)
		write(fs, "/c", "/b", 6)
		if got, want := gens(Load(fs, "/c", "/b", nil)), "/c/checkpoint.A:6 /b/checkpoint.B:5"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("newest corrupt falls back", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		write(fs, "/c", "/b", 6)
		write(fs, "/c", "/b", 7)
		corrupt(fs, "/b/checkpoint.B")
		if got, want := gens(Load(fs, "/c", "/b", nil)), "/c/checkpoint.A:6 /b/checkpoint.B:corrupt"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("only one", func(t *testing.T) {
		fs := newCrashFS(t, "/c")
		write(fs, "/c", "", 1)
		if got, want := gens(Load(fs, "/c", "", nil)), "/c/checkpoint.B:1 /c/checkpoint.A:absent"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("no backup dir", func(t *testing.T) {
		fs := newCrashFS(t, "/c")
		write(fs, "/c", "", 8)
		write(fs, "/c", "", 9)
		corrupt(fs, "/c/checkpoint.A")
		if got, want := gens(Load(fs, "/c", "", nil)), "/c/checkpoint.B:9 /c/checkpoint.A:corrupt"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("both corrupt", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		write(fs, "/c", "/b", 2)
		write(fs, "/c", "/b", 3)
		corrupt(fs, "/c/checkpoint.A")
		corrupt(fs, "/b/checkpoint.B")
		if got, want := gens(Load(fs, "/c", "/b", nil)), "/c/checkpoint.A:corrupt /b/checkpoint.B:corrupt"; got != want {
			t.Fatalf("got %s want %s", got, want)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		fs := newCrashFS(t, "/c", "/b")
		if err := Write(fs, "/c", FileA, gen(2), xorSealer{key: 1}); err != nil {
			t.Fatal(err)
		}
		cands := Load(fs, "/c", "/b", xorSealer{key: 2})
		if !errors.Is(cands[0].Err, ErrOpen) || !strings.Contains(cands[0].Err.Error(), "/c/checkpoint.A") {
			t.Fatalf("wrong key: %+v", cands[0])
		}
	})
}
