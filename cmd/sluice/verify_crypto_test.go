package main

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/wal"
)

// TestVerifyUnsealedRecordInEncryptedStore: a plaintext put+commit that
// someone without the key appended to an encrypted store makes `sluice
// verify` report the store as not intact.
func TestVerifyUnsealedRecordInEncryptedStore(t *testing.T) {
	dir := t.TempDir()
	data, ckpt, keys := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt"), filepath.Join(dir, "keys")
	secret, err := crypto.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.WriteKeyFile(keys, []crypto.Key{{ID: 1, Secret: secret}}); err != nil {
		t.Fatal(err)
	}
	kr, err := crypto.LoadKeyring(keys, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := salvageOpts(data, ckpt)
	o.Encryption = kr
	st, err := filestore.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	txn, _ := st.BeginPut(ctx, channel.PutOptions{})
	if err := txn.Put("a", salvageEvent("a", 1)); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	args := []string{"verify", "--data-dirs", data, "--checkpoint-dir", ckpt, "--key-file", keys}
	if out, errOut, code := sluice(t, "", args...); code != 0 {
		t.Fatalf("verify of an intact encrypted store: exit %d\n%s%s", code, out, errOut)
	}

	// The attacker: the wal package's own encoder, no codec (plaintext).
	w, err := wal.Open(wal.Options{FS: vfs.Default, Dirs: []string{data}, SegmentSize: o.SegmentSize,
		Codec: probeCodec{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := w.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(stats.MaxWOID + 1); err != nil {
		t.Fatal(err)
	}
	var b wal.Batch
	put := binary.AppendUvarint(nil, 1)
	put = append(put, 'a')
	put = binary.AppendUvarint(put, 6)
	put = binary.LittleEndian.AppendUint64(put, 1)
	put = binary.AppendUvarint(put, 0)
	put = append(put, "forged"...)
	b.Add(wal.RecordPut, 1<<40, put)
	b.Add(wal.RecordCommit, 1<<40, []byte{0, 0, 1})
	if _, tok, err := w.Write(0, &b, nil); err != nil {
		t.Fatal(err)
	} else if err := w.Sync(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out, _, code := sluice(t, "", args...)
	if code != 1 || !strings.Contains(out, "NOT INTACT") || !strings.Contains(out, "unsealed put record") {
		t.Fatalf("verify of a store with a forged plaintext record: exit %d\n%s", code, out)
	}
}

// probeCodec stores payloads as they are and reads sealed ones without
// opening them (the attacker has no key).
type probeCodec struct{}

func (probeCodec) Encode(dst, p []byte) ([]byte, uint8, uint16, error) {
	return append(dst, p...), 0, 0, nil
}
func (probeCodec) Decode(dst, p []byte, _ uint8, _ uint16) ([]byte, error) {
	return append(dst, p...), nil
}
