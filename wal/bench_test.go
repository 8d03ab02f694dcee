package wal

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// benchSegmentSize keeps benchmark files modest while still rotating rarely.
const benchSegmentSize = 64 << 20

var benchCases = []struct{ size, batch int }{
	{100, 1}, {100, 100}, {100, 1000},
	{1024, 1}, {1024, 100}, {1024, 1000},
}

// BenchmarkWriteSync measures one writer appending a batch and waiting for
// its fdatasync, on the real file system.
func BenchmarkWriteSync(b *testing.B) {
	for _, c := range benchCases {
		b.Run(fmt.Sprintf("rec=%d/batch=%d", c.size, c.batch), func(b *testing.B) {
			opts := Options{FS: vfs.Default, Dirs: []string{b.TempDir()}, SegmentSize: benchSegmentSize, Logger: quietLogger}
			w := mustOpen(b, opts)
			defer w.Close()
			if err := w.Start(1); err != nil {
				b.Fatal(err)
			}
			var batch Batch
			payload := make([]byte, c.size)
			for i := range c.batch {
				batch.Add(RecordPut, uint64(i), payload)
			}
			ptrs := make([]Pointer, 0, c.batch)
			b.SetBytes(int64(batch.Len()))
			b.ResetTimer()
			for b.Loop() {
				var tok SyncToken
				var err error
				ptrs, tok, err = w.Write(0, &batch, ptrs[:0])
				if err != nil {
					b.Fatal(err)
				}
				if err := w.Sync(context.Background(), tok); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*c.batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkRawDiskLimit is the ceiling for BenchmarkWriteSync: the same bytes
// per commit written with WriteAt into a preallocated, zeroed file and
// fdatasynced, with no log format or bookkeeping.
func BenchmarkRawDiskLimit(b *testing.B) {
	for _, c := range benchCases {
		b.Run(fmt.Sprintf("rec=%d/batch=%d", c.size, c.batch), func(b *testing.B) {
			fs := vfs.Default
			path := fs.PathJoin(b.TempDir(), "raw")
			f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := f.Preallocate(0, benchSegmentSize); err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < benchSegmentSize; off += int64(len(zeroes)) {
				if _, err := f.WriteAt(zeroes, off); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, c.batch*encodedSize(c.size))
			b.SetBytes(int64(len(buf)))
			var off int64
			b.ResetTimer()
			for b.Loop() {
				if off+int64(len(buf)) > benchSegmentSize {
					off = 0
				}
				if _, err := f.WriteAt(buf, off); err != nil {
					b.Fatal(err)
				}
				if err := f.SyncData(); err != nil {
					b.Fatal(err)
				}
				off += int64(len(buf))
			}
			b.ReportMetric(float64(b.N*c.batch)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
