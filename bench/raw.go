package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func isDeadline(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	c := status.Code(err)
	return c == codes.DeadlineExceeded || c == codes.Canceled
}

// rawFile is a preallocated, pre-zeroed, synced file shared by every
// raw-preallocated case of one data dir.
type rawFile struct {
	dir  string
	f    *os.File
	size int64
	off  int64
}

func (r *Runner) closeRaw() {
	for _, rf := range r.raw {
		rf.f.Close()
		os.RemoveAll(rf.dir)
	}
	r.raw = map[string]*rawFile{}
}

func benchTemp(parent string) (string, error) {
	if parent == "" {
		parent = os.TempDir()
	}
	return os.MkdirTemp(parent, "sluice-bench-raw-")
}

func (r *Runner) preallocated(dataDir string) (*rawFile, error) {
	if rf := r.raw[dataDir]; rf != nil {
		return rf, nil
	}
	dir, err := benchTemp(dataDir)
	if err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "preallocated"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < r.cfg.RawFileBytes; off += int64(len(zero)) {
		if _, err := f.Write(zero); err != nil {
			f.Close()
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	rf := &rawFile{dir: dir, f: f, size: r.cfg.RawFileBytes}
	r.raw[dataDir] = rf
	return rf, nil
}

// runRaw measures write + fdatasync of c.BytesPerCommit() bytes per
// commit: into the preallocated file (wrapping around at its end), or
// appended to a new file that grows (truncated to empty when it reaches
// RawFileBytes).
func (r *Runner) runRaw(ctx context.Context, c Case) (*sample, error) {
	buf := body(c.BytesPerCommit())
	var write func() error
	switch c.Kind {
	case RawPreallocated:
		rf, err := r.preallocated(c.DataDir)
		if err != nil {
			return nil, err
		}
		write = func() error {
			if rf.off+int64(len(buf)) > rf.size {
				rf.off = 0
			}
			if _, err := rf.f.WriteAt(buf, rf.off); err != nil {
				return err
			}
			rf.off += int64(len(buf))
			return fdatasync(rf.f)
		}
	case RawAppend:
		dir, err := benchTemp(c.DataDir)
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		f, err := os.Create(filepath.Join(dir, "append"))
		if err != nil {
			return nil, err
		}
		defer f.Close()
		var size int64
		write = func() error {
			if size+int64(len(buf)) > r.cfg.RawFileBytes {
				if err := f.Truncate(0); err != nil {
					return err
				}
				if _, err := f.Seek(0, 0); err != nil {
					return err
				}
				size = 0
			}
			if _, err := f.Write(buf); err != nil {
				return err
			}
			size += int64(len(buf))
			return fdatasync(f)
		}
	}
	loop := func(d time.Duration, s *sample) error {
		start := time.Now()
		deadline := start.Add(d)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			t0 := time.Now()
			if err := write(); err != nil {
				return err
			}
			if s != nil {
				s.hist.Record(time.Since(t0))
				s.events += int64(c.Batch)
			}
		}
		if s != nil {
			s.elapsed = time.Since(start)
		}
		return nil
	}
	if err := loop(r.cfg.Warmup, nil); err != nil {
		return nil, err
	}
	s := &sample{}
	u0 := cpuTime()
	if err := loop(r.cfg.Duration, s); err != nil {
		return nil, err
	}
	s.cpu = cpuTime() - u0
	return s, nil
}
