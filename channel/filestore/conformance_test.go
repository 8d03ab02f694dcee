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
// memory FS (queue images through vfs) must both pass the shared suite.
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
				s, err := filestore.Open(filestore.Options{
					FS:            fs,
					DataDirs:      []string{filepath.Join(root, "d1"), filepath.Join(root, "d2")},
					CheckpointDir: filepath.Join(root, "ckpt"),
					Channels:      cfgs,
					SegmentSize:   4 << 20,
					MinFreeBytes:  -1,
					Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
				})
				if err != nil {
					t.Fatal(err)
				}
				return s
			})
		})
	}
}
