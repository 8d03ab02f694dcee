package filestore

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// E: the files of a store (WAL segments, checkpoints, queue files, the crypto
// manifest) are created readable by their owner only, and its directories
// 0700.
func TestFileModes(t *testing.T) {
	dir := t.TempDir()
	o := testFileOptions(vfs.Default, 1)
	o.DataDirs = []string{filepath.Join(dir, "data")}
	o.CheckpointDir, o.BackupCheckpointDir = filepath.Join(dir, "ckpt"), filepath.Join(dir, "ckpt-backup")
	o.Encryption = testKeyring(t, cryptoKeys(t, 1), 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 20, 5)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range append([]string{o.CheckpointDir, o.BackupCheckpointDir}, o.DataDirs...) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s: mode %04o, want 0700", d, perm)
		}
		err = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() == "LOCK" {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			n++
			if perm := fi.Mode().Perm(); perm&0o077 != 0 {
				t.Errorf("%s: mode %04o, want 0600", p, perm)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 6 {
		t.Fatalf("only %d files checked", n)
	}
}
