package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
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
			rec, reason := decodeRecord(segmentSeed(c.segID), c.build(), 64, end)
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
	rec, reason := decodeRecord(segmentSeed(seg), good, 64, end)
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
		decodeRecord(segmentSeed(1), b, segmentHeaderSize, segmentHeaderSize+int64(len(b)))
		decodeSegmentHeader(b)
	})
}

// TestAppendPrefixedMatchesAdd checks the templated encoding byte for byte
// against Add, over prefix and middle lengths, payload sizes around the
// padding boundaries, and a reused buffer full of garbage (the fixed-size
// stores must leave only zero padding behind).
func TestAppendPrefixedMatchesAdd(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, preLen := range []int{0, 1, 2, 7, 20, PrefixCap - recordHeaderSize} {
		prefix := make([]byte, preLen)
		for i := range prefix {
			prefix[i] = byte(rng.Uint32()) | 1
		}
		pre, ok := MakePrefix(RecordPut, 0x0102030405060708, prefix)
		if !ok {
			t.Fatalf("prefix of %d bytes refused", preLen)
		}
		var got, want Batch
		for midLen := 0; midLen <= 16; midLen++ {
			for bodyLen := 0; bodyLen <= 40; bodyLen++ {
				var mid [16]byte
				for i := range midLen {
					mid[i] = byte(rng.Uint32()) | 1
				}
				body := make([]byte, bodyLen)
				for i := range body {
					body[i] = byte(rng.Uint32()) | 1
				}
				// Garbage where the record will go.
				got.buf = append(got.buf, bytes.Repeat([]byte{0xee}, 200)...)[:len(got.buf)]
				m0 := binary.LittleEndian.Uint64(mid[0:])
				m1 := binary.LittleEndian.Uint64(mid[8:])
				got.AppendPrefixed(&pre, m0, m1, midLen, body)
				payload := append(append(append([]byte(nil), prefix...), mid[:midLen]...), body...)
				want.Add(RecordPut, 0x0102030405060708, payload)
			}
		}
		if got.Count() != want.Count() || !bytes.Equal(got.buf, want.buf) {
			t.Fatalf("prefix %d bytes: AppendPrefixed differs from Add (count %d vs %d, len %d vs %d)",
				preLen, got.Count(), want.Count(), got.Len(), want.Len())
		}
		if !slices.Equal(got.offs, want.offs) {
			t.Fatalf("prefix %d bytes: offsets differ", preLen)
		}
	}
	if _, ok := MakePrefix(RecordPut, 1, make([]byte, PrefixCap-recordHeaderSize+1)); ok {
		t.Fatal("an oversized prefix was accepted")
	}
}

// TestWriteRefusesMalformedBatch: a record claiming more payload than the
// batch holds is an error, not a panic or a corrupt write.
func TestWriteRefusesMalformedBatch(t *testing.T) {
	w := mustOpen(t, testOpts(vfs.NewMem(), "d0"))
	defer w.Close()
	var b Batch
	b.Add(RecordPut, 1, []byte("abcdef"))
	if _, _, err := w.Write(0, &b, nil); !errors.Is(err, errNotStarted) {
		t.Fatalf("Write before Start: %v", err)
	}
	if _, err := w.Replay(nil, func(Record, Pointer) error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Start(1); err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(b.buf[4:8], 1000)
	if _, _, err := w.Write(0, &b, nil); err == nil || !strings.Contains(err.Error(), "malformed batch") {
		t.Fatalf("Write of a malformed batch: %v", err)
	}
}
