package fuzz

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/wal"
)

const walSegmentSize = 64 << 10

func walOptions(fs vfs.FS) wal.Options {
	return wal.Options{FS: fs, Dirs: []string{"/d"}, SegmentSize: walSegmentSize, Logger: quietLogger()}
}

// realSegment writes records through the wal package and returns the bytes
// of the first segment, trailing zeroes trimmed (a short file is a case the
// reader must handle too).
func realSegment(t testing.TB, payloads [][]byte) []byte {
	fs := vfs.NewMem()
	w, err := wal.Open(walOptions(fs))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	var b wal.Batch
	for i, p := range payloads {
		typ := wal.RecordPut
		if i == len(payloads)-1 {
			typ = wal.RecordCommit
		}
		b.Add(typ, 7, p)
	}
	if _, _, err := w.Write(0, &b, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	names, err := fs.List("/d")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if len(n) == len("0000000001.wal") && n[len(n)-4:] == ".wal" {
			return bytes.TrimRight(readFile(t, fs, "/d/"+n), "\x00")
		}
	}
	t.Fatalf("no segment file in %v", names)
	return nil
}

// FuzzWALRecord replays a crafted segment file: wal.Open validates its
// header, Replay decodes its records. Neither may panic; every record
// handed to the callback must fit the file; ReadRecord of every replayed
// pointer must return the same record.
func FuzzWALRecord(f *testing.F) {
	seg := realSegment(f, [][]byte{[]byte("hello"), bytes.Repeat([]byte{0xab}, 300), nil, []byte("commit")})
	f.Add(seg)
	f.Add(seg[:len(seg)/2])
	f.Add(seg[:32])
	flipped := append([]byte(nil), seg...)
	flipped[40] ^= 0xff
	f.Add(flipped)
	huge := append([]byte(nil), seg...)
	binary.LittleEndian.PutUint32(huge[36:], 0xfffffff0) // first record's length
	f.Add(huge)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog("FuzzWALRecord", 5*time.Second)()
		fs := vfs.NewMem()
		writeFile(t, fs, "/d/0000000001.wal", data)
		w, err := wal.Open(walOptions(fs))
		if err != nil {
			return
		}
		defer w.Close()
		type got struct {
			ptr wal.Pointer
			rec wal.Record
		}
		var recs []got
		_, err = w.Replay(nil, func(rec wal.Record, ptr wal.Pointer) error {
			if len(rec.Payload) > len(data) {
				t.Fatalf("record payload of %d bytes from a %d-byte file", len(rec.Payload), len(data))
			}
			rec.Payload = append([]byte(nil), rec.Payload...)
			recs = append(recs, got{ptr, rec})
			return nil
		}, nil)
		if err != nil {
			return
		}
		for _, g := range recs {
			rec, err := w.ReadRecord(g.ptr, nil)
			if err != nil {
				t.Fatalf("replayed record at %x does not read back: %v", uint64(g.ptr), err)
			}
			if rec.Type != g.rec.Type || rec.TxnID != g.rec.TxnID || rec.WOID != g.rec.WOID || !bytes.Equal(rec.Payload, g.rec.Payload) {
				t.Fatalf("record at %x reads back differently", uint64(g.ptr))
			}
		}
	})
}
