package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/channel"
)

// tinyTmpfs mounts a size-limited tmpfs for the test. Mounting needs root;
// where it is refused the test skips, unless SLUICE_REQUIRE_ALL is set (CI).
func tinyTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if os.Getenv("SLUICE_REQUIRE_ALL") != "" {
			t.Fatalf("mount tmpfs (required by SLUICE_REQUIRE_ALL): %v", err)
		}
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func resizeTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_REMOUNT, "size="+size); err != nil {
		t.Fatalf("remount tmpfs: %v", err)
	}
}

func tmpfsOptions(root string, minFree int64) Options {
	return Options{
		FS:                 vfs.Default,
		DataDirs:           []string{filepath.Join(root, "data")},
		CheckpointDir:      filepath.Join(root, "ckpt"),
		Channels:           []channel.ChannelConfig{{Name: "c1", Capacity: 100_000, TransactionCapacity: 100}},
		SegmentSize:        1 << 20,
		MaxEventSize:       64 << 10,
		CheckpointInterval: -1,
		MinFreeBytes:       minFree,
		Logger:             testLogger(),
	}
}

// fillUntilRefused puts 1 KiB events in batches of 10 until a commit fails,
// then tries a few more times; every failure must be a clear disk-space
// error. It returns the acknowledged ids.
func fillUntilRefused(t *testing.T, s *Store, next *int) []int {
	t.Helper()
	var acked []int
	failures := 0
	for failures < 5 && *next < 100_000 {
		tx, err := s.BeginPut(context.Background(), channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ids := []int{}
		for range 10 {
			e := ev(*next)
			e.Headers["pad"] = strings.Repeat("p", 1000)
			if err := tx.Put("c1", e); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, *next)
			*next++
		}
		if err := tx.Commit(context.Background()); err != nil {
			if !errors.Is(err, channel.ErrDiskSpace) && !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("put on a full disk failed with an unclear error: %v", err)
			}
			failures++
			continue
		}
		if failures > 0 {
			t.Fatalf("a put succeeded after the disk was reported full (ids %v)", ids)
		}
		acked = append(acked, ids...)
	}
	if failures == 0 {
		t.Fatal("the disk never filled up")
	}
	return acked
}

// A real, size-limited file system filled to the brim: the mmap'd queue files
// never SIGBUS (their space is reserved with fallocate before mapping), puts
// fail with a clear error, nothing acknowledged is lost, and puts resume once
// space returns.
func TestFileTinyTmpfsFull(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("SLUICE_REQUIRE_ALL") == "" {
		t.Skip("mounting a tmpfs needs root")
	}
	for _, guard := range []bool{true, false} {
		t.Run(fmt.Sprintf("minFreeGuard=%v", guard), func(t *testing.T) {
			root := tinyTmpfs(t, "8m")
			minFree := int64(-1)
			if guard {
				minFree = 2 << 20
			}
			o := tmpfsOptions(root, minFree)
			s := mustOpen(t, o)
			next := 0
			acked := fillUntilRefused(t, s, &next)
			if guard {
				// The guard refuses puts before the disk is full, so the
				// store can still drain and checkpoint.
				got := drain(t, s, "c1")
				if !slices.Equal(got, acked) {
					t.Fatalf("drained %d events, %d were acknowledged", len(got), len(acked))
				}
				if err := s.Checkpoint(); err != nil {
					t.Fatalf("checkpoint on a guarded disk: %v", err)
				}
				acked = nil
			}
			s.Close() // may fail to write its final checkpoint when truly full
			// Space returns: everything acknowledged is there and puts work.
			resizeTmpfs(t, root, "64m")
			s = mustOpen(t, o)
			defer s.Close()
			putRange(t, s, "c1", next, next+50, 10)
			want := append(slices.Clone(acked), seq(next, next+50)...)
			if got := drain(t, s, "c1"); !slices.Equal(got, want) {
				t.Fatalf("after space returned: %d events, want %d", len(got), len(want))
			}
		})
	}
}
