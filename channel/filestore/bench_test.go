package filestore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel"
)

// Benchmarks run on the real disk (SLUICE_BENCH_DIR, default a temp dir).
// BenchmarkRawDiskLimit measures write+fdatasync into a preallocated, zeroed
// file with the same bytes per commit as BenchmarkFilePut, so the ratio
// FilePut MB/s ÷ RawDiskLimit MB/s is read from one run.

func benchDir(b *testing.B) string {
	if d := os.Getenv("SLUICE_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "bench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		return dir
	}
	return b.TempDir()
}

// recordOverhead approximates the WAL bytes one event costs beyond its size.
const recordOverhead = 28 + 24

func BenchmarkRawDiskLimit(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				raw := newRawWriter(b, batch*(size+recordOverhead))
				b.SetBytes(int64(batch * size))
				b.ResetTimer()
				for range b.N {
					raw.commit(b)
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// rawWriter is the raw disk limit: writes of one commit's bytes, each
// followed by fdatasync, cycling through a preallocated, zeroed 256 MiB file.
type rawWriter struct {
	f   *os.File
	buf []byte
	off int64
}

const rawFileSize = 256 << 20

func newRawWriter(b *testing.B, perCommit int) *rawWriter {
	f, err := os.Create(filepath.Join(benchDir(b), "raw"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	zero := make([]byte, 1<<20)
	for off := 0; off < rawFileSize; off += len(zero) {
		if _, err := f.Write(zero); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return &rawWriter{f: f, buf: make([]byte, perCommit)}
}

func (r *rawWriter) commit(b *testing.B) {
	if r.off+int64(len(r.buf)) > rawFileSize {
		r.off = 0
	}
	if _, err := r.f.WriteAt(r.buf, r.off); err != nil {
		b.Fatal(err)
	}
	if err := fdatasync(r.f); err != nil {
		b.Fatal(err)
	}
	r.off += int64(len(r.buf))
}

func benchStoreWith(b *testing.B, mutate func(*Options)) *Store {
	root := benchDir(b)
	o := Options{
		FS:            vfs.Default,
		DataDirs:      []string{filepath.Join(root, "data0")},
		CheckpointDir: filepath.Join(root, "ckpt"),
		Channels:      []channel.ChannelConfig{{Name: "c", Capacity: 50_000_000, TransactionCapacity: 10_000}},
		SegmentSize:   256 << 20,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinFreeBytes:  -1,
	}
	mutate(&o)
	s, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// Put benchmarks run in one of two regimes:
//
//   - steady (BenchmarkFilePut): the store has been filled and drained once,
//     so its WAL segments are recycled spares: already zeroed and in the page
//     cache, as the raw limit's file is. The timed puts run in rounds of at
//     most benchCycleBytes; between rounds, untimed, the channel is drained
//     and checkpointed so emptied segments go back to the spares. This is a
//     durable buffer whose consumer keeps up, or catches up after bursts.
//   - growth (BenchmarkFilePutGrowth): a fresh store whose backlog only grows,
//     so every segment is new and the allocator pre-zeroes it while puts run.
const (
	benchCycleBytes   = 512 << 20
	benchCycleSegment = 64 << 20
)

func benchSteadyStore(b *testing.B, mutate func(*Options)) *Store {
	return benchStoreWith(b, func(o *Options) {
		o.SegmentSize = benchCycleSegment
		o.SpareSegments = benchCycleBytes/benchCycleSegment + 4
		mutate(o)
	})
}

func benchBody(size int) []byte {
	body := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range body {
		// Half random, half text: compressible but not trivially.
		if i%2 == 0 {
			body[i] = byte(rng.Uint32())
		} else {
			body[i] = 'a' + byte(i%26)
		}
	}
	return body
}

// benchPut runs b.N put commits of batch events from producers goroutines.
// With steady set, the commits run in rounds of at most benchCycleBytes of
// WAL, the channel drained (untimed) after each, after one untimed warm-up
// round.
func benchPut(b *testing.B, s *Store, size, batch, producers int, steady bool) {
	body := benchBody(size)
	round := b.N
	if steady {
		perCommit := batch * (size + recordOverhead)
		round = max(1, benchCycleBytes/perCommit)
		// Warm-up: as much WAL as the timed rounds will cycle through,
		// written fast (1000-event commits), then drained into spares.
		warm := min(benchCycleBytes, b.N*perCommit) / (1000 * (size + recordOverhead))
		benchPutRound(b, s, body, 1000, 1, warm+1)
		benchDrain(b, s)
	}
	b.SetBytes(int64(batch * size))
	b.ResetTimer()
	for left := b.N; left > 0; {
		n := min(left, round)
		benchPutRound(b, s, body, batch, producers, n)
		left -= n
		if left > 0 {
			b.StopTimer()
			benchDrain(b, s)
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
}

func benchPutRound(b *testing.B, s *Store, body []byte, batch, producers, commits int) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			events := make([]channel.Event, batch)
			for i := range events {
				events[i] = channel.Event{Body: body}
			}
			for next.Add(1) <= int64(commits) {
				tx, _ := s.BeginPut(ctx, channel.PutOptions{})
				if err := tx.Put("c", events...); err != nil {
					b.Error(err)
					return
				}
				if err := tx.Commit(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// benchDrain takes every queued event of channel "c", then checkpoints twice
// so the emptied segments are collected (turned into spares).
func benchDrain(b *testing.B, s *Store) {
	ctx := context.Background()
	for {
		if st, err := s.Stats(context.Background(), "c"); err != nil {
			b.Fatal(err)
		} else if st.Size == 0 {
			break
		}
		tx, _ := s.BeginTake(ctx, "c")
		_, err := tx.Take(ctx, 10_000)
		if err == nil {
			err = tx.Commit(ctx)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	for range 2 {
		if err := s.checkpoint(false); err != nil {
			b.Fatal(err)
		}
	}
}

func benchPutCases(b *testing.B, f func(b *testing.B, size, batch, producers int)) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 100, 1000} {
			for _, producers := range []int{1, 16, 64} {
				if batch == 1000 && producers == 64 {
					continue // 64k events in flight per round: not a useful point
				}
				b.Run(fmt.Sprintf("size=%d/batch=%d/producers=%d", size, batch, producers), func(b *testing.B) {
					f(b, size, batch, producers)
				})
			}
		}
	}
}

// BenchmarkFilePut is put throughput in the steady regime (recycled
// segments); compare with BenchmarkRawDiskLimit.
func BenchmarkFilePut(b *testing.B) {
	benchPutCases(b, func(b *testing.B, size, batch, producers int) {
		benchPut(b, benchSteadyStore(b, func(*Options) {}), size, batch, producers, true)
	})
}

// BenchmarkFilePutGrowth is put throughput into a fresh store whose backlog
// only grows (new segments, pre-zeroed while the puts run); compare with
// BenchmarkRawDiskLimitFresh.
func BenchmarkFilePutGrowth(b *testing.B) {
	benchPutCases(b, func(b *testing.B, size, batch, producers int) {
		benchPut(b, benchStoreWith(b, func(*Options) {}), size, batch, producers, false)
	})
}

// BenchmarkFileTake measures take commits on a store in steady state: in
// rounds of at most an eighth of benchCycleBytes, the round's events are
// put (untimed, 1000 a commit) and then taken (timed), so the segments are
// recycled spares as in a long-running store, not new files still being
// zeroed in the background.
func BenchmarkFileTake(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				s := benchSteadyStore(b, func(*Options) {})
				body := benchBody(size)
				benchPutRound(b, s, body, 1000, 1, benchCycleBytes/(1000*(size+recordOverhead))+1)
				benchDrain(b, s)
				ctx := context.Background()
				round := max(1, benchCycleBytes/8/(batch*(size+recordOverhead)))
				b.SetBytes(int64(batch * size))
				b.ResetTimer()
				for left := b.N; left > 0; {
					n := min(left, round)
					b.StopTimer()
					if err := benchFill(s, body, n*batch); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					for range n {
						tx, _ := s.BeginTake(ctx, "c")
						evs, err := tx.Take(ctx, batch)
						if err != nil || len(evs) != batch {
							b.Fatalf("take: %d %v", len(evs), err)
						}
						if err := tx.Commit(ctx); err != nil {
							b.Fatal(err)
						}
					}
					left -= n
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// benchFill puts n events of body into channel "c", 1000 a commit.
func benchFill(s *Store, body []byte, n int) error {
	ctx := context.Background()
	for i := 0; i < n; i += 1000 {
		tx, _ := s.BeginPut(ctx, channel.PutOptions{})
		for range min(1000, n-i) {
			if err := tx.Put("c", channel.Event{Body: body}); err != nil {
				return err
			}
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkFileReopen measures open after a clean close with many queued
// events (SLUICE_BENCH_REOPEN_EVENTS, default 10 million). Target: < 2 s.
func BenchmarkFileReopen(b *testing.B) {
	n := 10_000_000
	if v := os.Getenv("SLUICE_BENCH_REOPEN_EVENTS"); v != "" {
		fmt.Sscan(v, &n)
	}
	root := benchDir(b)
	o := Options{
		FS:            vfs.Default,
		DataDirs:      []string{filepath.Join(root, "data")},
		CheckpointDir: filepath.Join(root, "ckpt"),
		Channels:      []channel.ChannelConfig{{Name: "c", Capacity: int64(n), TransactionCapacity: 10_000}},
		SegmentSize:   256 << 20,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		MinFreeBytes:  -1,
	}
	s, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	body := make([]byte, 16)
	events := make([]channel.Event, 10_000)
	for i := range events {
		events[i] = channel.Event{Body: body}
	}
	for i := 0; i < n; i += len(events) {
		tx, _ := s.BeginPut(ctx, channel.PutOptions{})
		if err := tx.Put("c", events[:min(len(events), n-i)]...); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	var heap uint64
	b.ResetTimer()
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := Open(o)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = after.HeapAlloc - min(before.HeapAlloc, after.HeapAlloc)
		if st, _ := s.Stats(context.Background(), "c"); st.Size != int64(n) {
			b.Fatalf("reopened with %d events, want %d", st.Size, n)
		}
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "events")
	// Go heap held by the open store per queued event (the mmap'd queue
	// file is not heap).
	b.ReportMetric(float64(heap)/float64(n), "heap-B/event")
}

// BenchmarkFilePutTake is the steady state of a buffer that keeps up: one
// producer and one consumer at the same batch size. Taken segments are
// recycled, so puts write into already-zeroed blocks like the raw limit.
func BenchmarkFilePutTake(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				root := benchDir(b)
				s, err := Open(Options{
					FS:              vfs.Default,
					DataDirs:        []string{filepath.Join(root, "data")},
					CheckpointDir:   filepath.Join(root, "ckpt"),
					Channels:        []channel.ChannelConfig{{Name: "c", Capacity: 10_000_000, TransactionCapacity: 10_000}},
					SegmentSize:     64 << 20,
					CheckpointBytes: 64 << 20,
					Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
					MinFreeBytes:    -1,
				})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				ctx := context.Background()
				events := make([]channel.Event, batch)
				for i := range events {
					events[i] = channel.Event{Body: make([]byte, size)}
				}
				b.SetBytes(int64(batch * size))
				b.ResetTimer()
				done := make(chan error, 1)
				go func() {
					for taken := 0; taken < b.N*batch; {
						tx, _ := s.BeginTake(ctx, "c")
						evs, err := tx.Take(ctx, batch)
						if err == nil {
							err = tx.Commit(ctx)
						}
						if err != nil {
							done <- err
							return
						}
						taken += len(evs)
					}
					done <- nil
				}()
				for range b.N {
					tx, _ := s.BeginPut(ctx, channel.PutOptions{})
					tx.Put("c", events...)
					if err := tx.Commit(ctx); err != nil {
						b.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

// BenchmarkFilePutVsRaw is the put-to-raw-limit ratio with the disk's drift
// cancelled out: one producer's puts (steady regime) and the raw limit's
// write+fdatasync of the same bytes per commit take turns, round by round
// (at most benchCycleBytes/8 of WAL each; the store is drained untimed in
// between). It reports both rates and ratio = store / raw.
func BenchmarkFilePutVsRaw(b *testing.B) {
	for _, size := range []int{100, 1024} {
		for _, batch := range []int{100, 1000} {
			b.Run(fmt.Sprintf("size=%d/batch=%d/producers=1", size, batch), func(b *testing.B) {
				perCommit := batch * (size + recordOverhead)
				raw := newRawWriter(b, perCommit)
				s := benchSteadyStore(b, func(*Options) {})
				body := benchBody(size)
				benchPutRound(b, s, body, 1000, 1, benchCycleBytes/(1000*(size+recordOverhead))+1)
				benchDrain(b, s)
				round := max(1, benchCycleBytes/8/perCommit)
				var rawTime, putTime time.Duration
				b.ResetTimer()
				for left := b.N; left > 0; {
					n := min(left, round)
					start := time.Now()
					for range n {
						raw.commit(b)
					}
					rawTime += time.Since(start)
					start = time.Now()
					benchPutRound(b, s, body, batch, 1, n)
					putTime += time.Since(start)
					b.StopTimer()
					benchDrain(b, s)
					b.StartTimer()
					left -= n
				}
				events := float64(b.N * batch)
				b.ReportMetric(events/rawTime.Seconds(), "raw-events/s")
				b.ReportMetric(events/putTime.Seconds(), "put-events/s")
				b.ReportMetric(rawTime.Seconds()/putTime.Seconds(), "ratio")
			})
		}
	}
}
