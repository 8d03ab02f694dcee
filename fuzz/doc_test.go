// Package fuzz holds Go fuzz targets for Sluice's decoders of untrusted or
// damaged input: WAL segments, checkpoint metadata, queue files and the
// configuration parser. Each target's seed corpus is built from real
// encodings in the test itself, so `go test ./fuzz/` (and `make test`) runs
// the seeds; `go test -fuzz FuzzX ./fuzz/` (or `make fuzz`) explores further.
// The property everywhere: never panic, never hang, and fail with an error
// rather than trusting a length read from the input.
package fuzz

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// writeFile stores data at path on fs, creating its directory.
func writeFile(t testing.TB, fs vfs.FS, path string, data []byte) {
	t.Helper()
	if err := fs.MkdirAll(fs.PathDir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(append([]byte(nil), data...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readFile returns the contents of path on fs.
func readFile(t testing.TB, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// watchdog crashes the fuzz worker when one input runs longer than d, so the
// fuzzer records a hang as a failing input (testdata/fuzz) instead of
// silently stalling. Call the returned stop when the input is done.
func watchdog(name string, d time.Duration) (stop func() bool) {
	return time.AfterFunc(d, func() { panic(name + ": one input ran longer than " + d.String() + " (hang)") }).Stop
}
