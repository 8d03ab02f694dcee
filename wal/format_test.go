package wal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestPointer(t *testing.T) {
	p := MakePointer(0xdeadbeef, 0x12345678)
	if p.Segment() != 0xdeadbeef || p.Offset() != 0x12345678 {
		t.Fatalf("pointer %x: segment %x offset %x", uint64(p), p.Segment(), p.Offset())
	}
}

func TestSegmentHeaderFormat(t *testing.T) {
	var b [segmentHeaderSize]byte
	segmentHeader{ID: 7, Size: 1 << 20}.encode(b[:])
	if string(b[:4]) != segmentMagic || b[4] != formatVersion {
		t.Fatalf("magic/version not first: % x", b[:8])
	}
	h, err := decodeSegmentHeader(b[:])
	if err != nil || h.ID != 7 || h.Size != 1<<20 {
		t.Fatalf("decode: %+v %v", h, err)
	}
	cases := []struct {
		name   string
		mutate func(b []byte)
		want   string
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, "bad magic"},
		{"version", func(b []byte) { b[4] = 9 }, "unsupported format version 9"},
		{"crc", func(b []byte) { b[9] ^= 1 }, "checksum mismatch"},
		{"short", nil, "short segment header"},
		{"zeros", func(b []byte) { clear(b) }, "bad magic"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bb := bytes.Clone(b[:])
			if c.mutate == nil {
				bb = bb[:10]
			} else {
				c.mutate(bb)
			}
			_, err := decodeSegmentHeader(bb)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestRecordFormat(t *testing.T) {
	const seg = 42
	const end = 1 << 16
	good := appendRecord(nil, seg, RecordPut, 0, 0, 9, 100, []byte("hello"))
	if len(good) != 40 || len(good)%recordAlign != 0 {
		t.Fatalf("encoded size %d", len(good))
	}
	cases := []struct {
		name   string
		build  func() []byte
		segID  uint32
		reason string // "" = valid
	}{
		{"valid", func() []byte { return bytes.Clone(good) }, seg, ""},
		{"empty payload", func() []byte { return appendRecord(nil, seg, RecordCommit, 0, 0, 1, 2, nil) }, seg, ""},
		{"seal", func() []byte { return appendRecord(nil, seg, RecordSeal, 0, 0, 0, 3, nil) }, seg, ""},
		{"zeros", func() []byte { return make([]byte, 64) }, seg, "end of data"},
		{"other segment seed", func() []byte { return bytes.Clone(good) }, seg + 1, "checksum mismatch"},
		{"payload bit flip", func() []byte { b := bytes.Clone(good); b[30] ^= 4; return b }, seg, "checksum mismatch"},
		{"woid bit flip", func() []byte { b := bytes.Clone(good); b[21] ^= 1; return b }, seg, "checksum mismatch"},
		{"unknown type", func() []byte { b := bytes.Clone(good); b[8] = 77; return b }, seg, "unknown record type 77"},
		{"type zero", func() []byte { b := bytes.Clone(good); b[8] = 0; return b }, seg, "unknown record type 0"},
		{"huge length", func() []byte { b := bytes.Clone(good); b[7] = 0x7f; return b }, seg, "exceeds"},
		{"seal with payload", func() []byte { return appendRecord(nil, seg, RecordSeal, 0, 0, 0, 3, []byte("x")) }, seg, "seal record with payload"},
		{"short", func() []byte { return good[:10] }, seg, "short record header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec, reason := decodeRecord(c.segID, c.build(), 64, end)
			if c.reason == "" {
				if reason != "" {
					t.Fatalf("unexpected reason %q", reason)
				}
				return
			}
			if !strings.Contains(reason, c.reason) {
				t.Fatalf("reason %q, want %q (rec %+v)", reason, c.reason, rec)
			}
		})
	}
	rec, reason := decodeRecord(seg, good, 64, end)
	if reason != "" || rec.Type != RecordPut || rec.TxnID != 9 || rec.WOID != 100 || string(rec.Payload) != "hello" {
		t.Fatalf("decoded %+v %q", rec, reason)
	}
}

func TestBatch(t *testing.T) {
	var b Batch
	b.Add(RecordPut, 1, []byte("abc"))
	b.Add(RecordCommit, 1, nil)
	if b.Count() != 2 || b.Len() != encodedSize(3)+encodedSize(0) {
		t.Fatalf("count %d len %d", b.Count(), b.Len())
	}
	b.Reset()
	if b.Count() != 0 || b.Len() != 0 {
		t.Fatal("reset")
	}
}

func TestCorruptionErrorUnwrap(t *testing.T) {
	var err error = &CorruptionError{File: "f", Offset: 8, Reason: "x"}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatal("not ErrCorrupt")
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, 1, RecordPut, 0, 0, 1, 1, []byte("seed")))
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeRecord(1, b, segmentHeaderSize, segmentHeaderSize+int64(len(b)))
		decodeSegmentHeader(b)
	})
}
