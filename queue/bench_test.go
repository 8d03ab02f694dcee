package queue

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func benchOpts(b *testing.B, c uint64) Options {
	d := b.TempDir()
	return Options{Dir: d, Name: "bench", Capacity: c, FS: vfs.Default}
}

// BenchmarkPushPop measures one PushBack plus one PopFront on a queue that
// holds 1000 events, with the overlay in use (no checkpoint in between).
func BenchmarkPushPop(b *testing.B) {
	q := mustOpen(b, benchOpts(b, 1<<20), nil)
	defer q.Close()
	fill(b, q, 0, 1000)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := q.PushBack(uint64(i)); err != nil {
			b.Fatal(err)
		}
		if _, ok := q.PopFront(); !ok {
			b.Fatal("empty")
		}
	}
}

// BenchmarkPushPopFromBase pops events that live in the base file.
func BenchmarkPushPopFromBase(b *testing.B) {
	const n = 1 << 20
	q := mustOpen(b, benchOpts(b, 2*n), nil)
	defer q.Close()
	fill(b, q, 0, n)
	checkpoint(b, q)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%n == 0 && i > 0 {
			checkpoint(b, q)
		}
		if err := q.PushBack(uint64(i)); err != nil {
			b.Fatal(err)
		}
		if _, ok := q.PopFront(); !ok {
			b.Fatal("empty")
		}
	}
}

// BenchmarkWriteSnapshot1M writes a snapshot of 1M queued entries of which
// 10% changed since the previous checkpoint (both generations exist).
func BenchmarkWriteSnapshot1M(b *testing.B) {
	const n = 1 << 20
	q := mustOpen(b, benchOpts(b, 2*n), nil)
	defer q.Close()
	fill(b, q, 0, n)
	checkpoint(b, q)
	checkpoint(b, q)
	next := uint64(n)
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		for range n / 10 {
			q.PopFront()
			_ = q.PushBack(next)
			next++
		}
		f := q.Freeze()
		b.StartTimer()
		st, err := q.WriteSnapshot(f)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		q.Install(f, st)
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "entries")
}

// BenchmarkWriteSnapshot1MFresh writes 1M entries into a newly created
// target file (every page written).
func BenchmarkWriteSnapshot1MFresh(b *testing.B) {
	const n = 1 << 20
	for b.Loop() {
		b.StopTimer()
		opts := benchOpts(b, n)
		q := mustOpen(b, opts, nil)
		fill(b, q, 0, n)
		f := q.Freeze()
		b.StartTimer()
		if _, err := q.WriteSnapshot(f); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		q.Close()
		b.StartTimer()
	}
}

// BenchmarkOpen10M opens (digest check included) a queue holding 10M events
// after a clean close.
func BenchmarkOpen10M(b *testing.B) {
	const n = 10_000_000
	opts := benchOpts(b, n)
	q := mustOpen(b, opts, nil)
	fill(b, q, 1, n)
	st := checkpoint(b, q)
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		q, err := Open(opts, &st)
		if err != nil {
			b.Fatal(err)
		}
		if q.Len() != n || q.At(n-1) != n {
			b.Fatal("bad contents")
		}
		b.StopTimer()
		q.Close()
		b.StartTimer()
	}
}

// BenchmarkOpen10MCold is BenchmarkOpen10M with the file's pages dropped
// from the page cache before each Open (posix_fadvise DONTNEED).
func BenchmarkOpen10MCold(b *testing.B) {
	const n = 10_000_000
	opts := benchOpts(b, n)
	q := mustOpen(b, opts, nil)
	fill(b, q, 1, n)
	st := checkpoint(b, q)
	if err := q.Close(); err != nil {
		b.Fatal(err)
	}
	drop := func() {
		f, err := os.Open(Path(opts, st.Gen))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		drop()
		b.StartTimer()
		q, err := Open(opts, &st)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		q.Close()
		b.StartTimer()
	}
}
