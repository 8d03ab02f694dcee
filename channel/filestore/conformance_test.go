package filestore_test

import (
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/channeltest"
	"github.com/sluicehq/sluice/channel/filestore"
)

// The file channel on the real disk (mmap'd queues) and on the crashable
// memory FS (queue images through vfs) must both pass the shared suite,
// including its restart rules (reopen).
func TestFileConformance(t *testing.T) {
	for _, mem := range []bool{false, true} {
		name := "disk"
		if mem {
			name = "memfs"
		}
		t.Run(name, func(t *testing.T) {
			channeltest.Run(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
				root := t.TempDir()
				fs := vfs.Default
				if mem {
					fs = vfs.NewCrashableMem()
					root = "/store"
				}
				o := filestore.Options{
					FS:            fs,
					DataDirs:      []string{filepath.Join(root, "d1"), filepath.Join(root, "d2")},
					CheckpointDir: filepath.Join(root, "ckpt"),
					Channels:      cfgs,
					SegmentSize:   4 << 20,
					MinFreeBytes:  -1,
					Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
				}
				return openReopenable(t, o)
			})
		})
	}
}

// reopenable is a file store the suite can restart (channeltest.Reopener).
type reopenable struct {
	*filestore.Store
	o filestore.Options
}

func openReopenable(t testing.TB, o filestore.Options) *reopenable {
	s, err := filestore.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return &reopenable{Store: s, o: o}
}

// Reopen implements channeltest.Reopener.
func (r *reopenable) Reopen(t testing.TB) channel.Store { return openReopenable(t, r.o) }
