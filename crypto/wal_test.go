package crypto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/wal"
)

func openWAL(t *testing.T, fs vfs.FS, c *Codec) *wal.WAL {
	t.Helper()
	w, err := wal.Open(wal.Options{FS: fs, Dirs: []string{"/d"}, SegmentSize: 64 << 10, Codec: c,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestWALWithCodec: records written under two keys replay and read back; a
// missing key stops Replay and fails ReadRecord with a KeyError (never a
// skip).
func TestWALWithCodec(t *testing.T) {
	fs := vfs.NewMem()
	kr := testRing(t, 1, 2)
	k1, _ := kr.WithActive(1)
	c, _ := NewCodec(CodecOptions{Keyring: k1, Compression: CompressZstd})
	w := openWAL(t, fs, c)
	if _, err := w.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	var ptrs []wal.Pointer
	for i := range 20 {
		if i == 10 {
			c.SetKeyring(kr) // active 2
		}
		var b wal.Batch
		b.Add(wal.RecordPut, uint64(i+1), []byte(strings.Repeat(fmt.Sprintf("payload %d ", i), 20)))
		p, tok, err := w.Write(0, &b, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		ptrs = append(ptrs, p...)
	}
	for i, p := range ptrs {
		rec, err := w.ReadRecord(p, nil)
		if err != nil || rec.KeyID != uint16(1+i/10) || !strings.HasPrefix(string(rec.Payload), fmt.Sprintf("payload %d ", i)) {
			t.Fatalf("record %d: key %d %v", i, rec.KeyID, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen with both keys: everything replays.
	w = openWAL(t, fs, c)
	n := 0
	if _, err := w.Replay(nil, func(rec wal.Record, _ wal.Pointer) error { n++; return nil }, nil); err != nil || n != 20 {
		t.Fatalf("replayed %d: %v", n, err)
	}
	w.Close()

	// Only a (wrong) key 1: Replay stops at the first record, failing
	// authentication (fail closed: not a skipped "damaged" record).
	only1, _ := NewKeyring("kf", []Key{{ID: 1}}, 1)
	c1, _ := NewCodec(CodecOptions{Keyring: only1})
	w = openWAL(t, fs, c1)
	_, err := w.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil)
	var ae *AuthError
	if !errors.As(err, &ae) || ae.KeyID != 1 || errors.Is(err, wal.ErrCorrupt) || !strings.Contains(err.Error(), "kf") {
		t.Fatalf("replay with a wrong key: %v", err)
	}
	var ke *KeyError
	if _, err := w.ReadRecord(ptrs[15], nil); !errors.As(err, &ke) || errors.Is(err, wal.ErrCorrupt) {
		t.Fatalf("read with a missing key: %v", err)
	}
	w.Close()
}
