package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// xorSealer is a test Sealer: XOR with a key byte, then a 4-byte tag derived
// from the plaintext and the key, so a wrong key fails in Open.
type xorSealer struct{ key byte }

// castagnoli is hash/crc32's table: the tests check the format against it, independently of
// internal/crc32c.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (x xorSealer) tag(plain []byte) uint32 {
	return crc32.Checksum(plain, castagnoli) ^ (uint32(x.key) * 0x01010101) ^ 0x5a5a5a5a
}

func (x xorSealer) Seal(plain []byte) ([]byte, error) {
	out := make([]byte, len(plain), len(plain)+4)
	for i, c := range plain {
		out[i] = c ^ x.key
	}
	return binary.LittleEndian.AppendUint32(out, x.tag(plain)), nil
}

func (x xorSealer) Open(sealed []byte) ([]byte, error) {
	if len(sealed) < 4 {
		return nil, errors.New("xorSealer: too short")
	}
	n := len(sealed) - 4
	plain := make([]byte, n)
	for i := range plain {
		plain[i] = sealed[i] ^ x.key
	}
	if binary.LittleEndian.Uint32(sealed[n:]) != x.tag(plain) {
		return nil, errors.New("xorSealer: tag mismatch")
	}
	return plain, nil
}

type failingSealer struct{}

func (failingSealer) Seal([]byte) ([]byte, error) { return nil, errors.New("no key") }
func (failingSealer) Open([]byte) ([]byte, error) { return nil, errors.New("no key") }

func fullCheckpoint() *Checkpoint {
	return &Checkpoint{
		Generation:   7,
		WOID:         123456789,
		Clean:        true,
		NextTxnID:    99,
		TimeUnixNano: 1_700_000_000_123_456_789,
		Frontier:     []Position{{Segment: 3, Offset: 4096}, {Segment: 9, Offset: 0}},
		Channels: []Channel{
			{Name: "c1", Capacity: 1000, Head: 17, Size: 5, Bytes: 500, Gen: 1, Digest: 0xdeadbeef,
				NextOffset: 1 << 50, Offsets: []OffsetRun{{Pos: 17, Offset: 40}, {Pos: 19, Offset: 1<<50 - 3}}},
			{Name: "ch-two", Capacity: 1 << 40, Head: math.MaxUint64, Size: 0, Bytes: 0, Gen: 0, Digest: 0},
		},
		PutTxns: []PutTxn{
			{TxnID: 5, Committing: true, ProducerID: "prod-1", Sequence: 42, Entries: []PutEntry{
				{Channel: "c1", Pointer: 3<<32 | 128, Size: 100, Offset: 1<<50 - 1},
				{Channel: "ch-two", Pointer: 9<<32 | 8, Size: math.MaxUint32},
			}},
			{TxnID: 6},
		},
		TakeTxns: []TakeTxn{
			{TxnID: 8, Channel: "c1", Committing: false, Entries: []TakeEntry{
				{Pointer: 2<<32 | 64, Position: 12, Size: 10, Offset: 38},
				{Pointer: 2<<32 | 96, Position: 13, Size: 0, Offset: 39},
			}},
			{TxnID: 9, Channel: "ch-two", Committing: true},
		},
		Producers: []Producer{{ID: "prod-1", Sequence: 42, LastUsed: 1_795_000_000_000_000_000}, {ID: "", Sequence: 0}},
	}
}

func largeCheckpoint(n int) *Checkpoint {
	c := fullCheckpoint()
	entries := make([]PutEntry, n)
	for i := range entries {
		entries[i] = PutEntry{Channel: fmt.Sprintf("c%d", i%3), Pointer: uint64(i/1000)<<32 | uint64(i%1000)*64, Size: uint32(i)}
	}
	c.PutTxns = append(c.PutTxns, PutTxn{TxnID: 1000, ProducerID: "big", Sequence: 1, Entries: entries})
	return c
}

func testCheckpoints() []struct {
	name string
	c    *Checkpoint
} {
	maxed := &Checkpoint{
		Generation: math.MaxUint64, WOID: math.MaxUint64, NextTxnID: math.MaxUint64,
		TimeUnixNano: math.MinInt64,
		Frontier:     []Position{{Segment: math.MaxUint32, Offset: math.MaxUint32}},
		Channels:     []Channel{{Name: strings.Repeat("x", 1000), Capacity: math.MaxUint64, Head: math.MaxUint64, Size: math.MaxUint64, Bytes: math.MaxUint64, Gen: 255, Digest: math.MaxUint32}},
		PutTxns:      []PutTxn{{TxnID: math.MaxUint64, ProducerID: "\x00\xff binary ☃", Sequence: math.MaxUint64, Entries: []PutEntry{{Channel: "", Pointer: math.MaxUint64, Size: math.MaxUint32}}}},
		TakeTxns:     []TakeTxn{{TxnID: math.MaxUint64, Channel: "", Entries: []TakeEntry{{Pointer: math.MaxUint64, Position: math.MaxUint64, Size: math.MaxUint32}}}},
		Producers:    []Producer{{ID: "p", Sequence: math.MaxUint64, LastUsed: math.MaxInt64}},
	}
	return []struct {
		name string
		c    *Checkpoint
	}{
		{"zero", &Checkpoint{}},
		{"empty-slices", &Checkpoint{Generation: 1, Frontier: []Position{}, Channels: []Channel{}, PutTxns: []PutTxn{{Entries: []PutEntry{}}}, TakeTxns: []TakeTxn{}, Producers: []Producer{}}},
		{"full", fullCheckpoint()},
		{"max-values", maxed},
		{"negative-time", &Checkpoint{TimeUnixNano: -1}},
		{"large-100k-put-entries", largeCheckpoint(100_000)},
	}
}

// normalize replaces empty slices by nil: the encoding does not distinguish
// them and Unmarshal returns nil.
func normalize(c *Checkpoint) *Checkpoint {
	n := *c
	nilIfEmpty := func(l int) bool { return l == 0 }
	if nilIfEmpty(len(n.Frontier)) {
		n.Frontier = nil
	}
	if nilIfEmpty(len(n.Channels)) {
		n.Channels = nil
	}
	if nilIfEmpty(len(n.TakeTxns)) {
		n.TakeTxns = nil
	}
	if nilIfEmpty(len(n.Producers)) {
		n.Producers = nil
	}
	if nilIfEmpty(len(n.PutTxns)) {
		n.PutTxns = nil
	} else {
		n.PutTxns = append([]PutTxn(nil), n.PutTxns...)
		for i := range n.PutTxns {
			if len(n.PutTxns[i].Entries) == 0 {
				n.PutTxns[i].Entries = nil
			}
		}
	}
	if len(n.TakeTxns) > 0 {
		n.TakeTxns = append([]TakeTxn(nil), n.TakeTxns...)
		for i := range n.TakeTxns {
			if len(n.TakeTxns[i].Entries) == 0 {
				n.TakeTxns[i].Entries = nil
			}
		}
	}
	return &n
}

func mustMarshal(t testing.TB, c *Checkpoint, s Sealer) []byte {
	t.Helper()
	b, err := Marshal(c, s)
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	sealers := []struct {
		name string
		s    Sealer
	}{{"plain", nil}, {"xor", xorSealer{key: 0x3c}}}
	for _, tc := range testCheckpoints() {
		for _, sc := range sealers {
			t.Run(tc.name+"/"+sc.name, func(t *testing.T) {
				b := mustMarshal(t, tc.c, sc.s)
				got, err := Unmarshal(b, sc.s)
				if err != nil {
					t.Fatalf("Unmarshal: %v", err)
				}
				if want := normalize(tc.c); !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip mismatch:\n got %+v\nwant %+v", got, want)
				}
				// The encoding is canonical: re-marshalling gives the same bytes.
				if b2 := mustMarshal(t, got, sc.s); !bytes.Equal(b, b2) {
					t.Fatalf("re-marshal differs")
				}
			})
		}
	}
}

func TestHeaderLayout(t *testing.T) {
	b := mustMarshal(t, fullCheckpoint(), nil)
	if string(b[:7]) != "SLCHKPT" || b[7] != 4 || b[8] != 0 {
		t.Fatalf("header %q", b[:9])
	}
	if got := binary.LittleEndian.Uint32(b[9:]); int(got) != len(b)-headerLen-trailerLen {
		t.Fatalf("body length %d, file %d", got, len(b))
	}
	if got, want := binary.LittleEndian.Uint32(b[len(b)-4:]), crc32.Checksum(b[:len(b)-4], castagnoli); got != want {
		t.Fatalf("crc %x want %x", got, want)
	}
	sb := mustMarshal(t, fullCheckpoint(), xorSealer{key: 1})
	if sb[8] != flagSealed {
		t.Fatalf("sealed flag not set: %#x", sb[8])
	}
}

func wantCorrupt(t *testing.T, b []byte, s Sealer, what string) {
	t.Helper()
	c, err := Unmarshal(b, s)
	if err == nil {
		t.Fatalf("%s: accepted: %+v", what, c)
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s: error %v does not wrap ErrCorrupt", what, err)
	}
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("%s: error %T is not a *CorruptError", what, err)
	}
	if ce.Offset < 0 || ce.Offset > int64(len(b)) {
		t.Fatalf("%s: offset %d outside [0,%d]", what, ce.Offset, len(b))
	}
}

func TestEveryByteFlipAndTruncationIsCorrupt(t *testing.T) {
	for _, sc := range []struct {
		name string
		s    Sealer
	}{{"plain", nil}, {"xor", xorSealer{key: 0x77}}} {
		t.Run(sc.name, func(t *testing.T) {
			b := mustMarshal(t, fullCheckpoint(), sc.s)
			for i := range b {
				for _, mask := range []byte{0x01, 0x80, 0xff, 0x10} {
					m := bytes.Clone(b)
					m[i] ^= mask
					wantCorrupt(t, m, sc.s, fmt.Sprintf("flip byte %d mask %#x", i, mask))
				}
			}
			for n := 0; n < len(b); n++ {
				wantCorrupt(t, b[:n], sc.s, fmt.Sprintf("truncate to %d", n))
			}
			for _, extra := range [][]byte{{0}, {1, 2, 3}, b} {
				wantCorrupt(t, append(bytes.Clone(b), extra...), sc.s, fmt.Sprintf("%d trailing bytes", len(extra)))
			}
		})
	}
}

// frame wraps a plain body in a valid header and CRC, so the body decoder's
// own checks are exercised.
func frame(version, flags byte, body []byte) []byte {
	b := append([]byte(magic), version, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func uv(vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func sec(content []byte) []byte { return append(uv(uint64(len(content))), content...) }

func fixed(clean byte) []byte {
	return append(make([]byte, 32), clean)
}

func body(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestMalformedBodies(t *testing.T) {
	empty := sec(uv(0))
	valid := body(fixed(0), empty, empty, empty, empty, empty)
	if _, err := Unmarshal(frame(2, 0, valid), nil); err != nil {
		t.Fatalf("hand-built valid body rejected: %v", err)
	}
	// Version 3: a sixth section, the queue digest key (empty or 32 bytes).
	key := bytes.Repeat([]byte{7}, DigestKeySize)
	for _, k := range [][]byte{nil, key} {
		c, err := Unmarshal(frame(3, 0, body(valid, sec(append(uv(uint64(len(k))), k...)))), nil)
		if err != nil || !bytes.Equal(c.DigestKey, k) {
			t.Fatalf("version 3 body with a %d-byte digest key: %v", len(k), err)
		}
	}
	for _, b := range [][]byte{valid, body(valid, sec(append(uv(5), "short"...)))} {
		if _, err := Unmarshal(frame(3, 0, b), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bad version 3 body accepted: %v", err)
		}
	}
	cases := map[string][]byte{
		"empty body":              nil,
		"short fixed":             make([]byte, 20),
		"bad clean bool":          body(fixed(2), empty, empty, empty, empty, empty),
		"missing section":         body(fixed(0), empty, empty, empty, empty),
		"extra section":           body(valid, empty),
		"trailing byte":           body(valid, []byte{0}),
		"huge frontier count":     body(fixed(0), sec(uv(1<<62)), empty, empty, empty, empty),
		"huge channel count":      body(fixed(0), empty, sec(uv(math.MaxUint64)), empty, empty, empty),
		"count just too big":      body(fixed(0), sec(append(uv(2), make([]byte, 15)...)), empty, empty, empty, empty),
		"huge put txn count":      body(fixed(0), empty, empty, sec(uv(1<<40)), empty, empty),
		"huge put entry count":    body(fixed(0), empty, empty, sec(body(uv(1, 1), []byte{0}, uv(0, 0, 1<<50))), empty, empty),
		"huge take entry count":   body(fixed(0), empty, empty, empty, sec(body(uv(1, 1, 0), []byte{0}, uv(1<<50))), empty),
		"huge string length":      body(fixed(0), empty, empty, empty, empty, sec(body(uv(1, 1<<60), []byte("abc")))),
		"string past section":     body(fixed(0), empty, empty, empty, empty, sec(uv(1, 5, 'a')), uv(0, 0, 0, 0)),
		"section length too big":  body(fixed(0), uv(1000), uv(0)),
		"section with unused":     body(fixed(0), sec(uv(0, 0)), empty, empty, empty, empty),
		"non-minimal varint":      body(fixed(0), sec([]byte{0x80, 0x00}), empty, empty, empty, empty),
		"varint overflow":         body(fixed(0), sec(bytes.Repeat([]byte{0xff}, 11)), empty, empty, empty, empty),
		"entry size over uint32":  body(fixed(0), empty, empty, sec(body(uv(1, 1), []byte{0}, uv(0, 0, 1, 0, 0, 1<<32))), empty, empty),
		"bad committing bool":     body(fixed(0), empty, empty, sec(body(uv(1, 1), []byte{7}, uv(0, 0, 0))), empty, empty),
		"truncated channel":       body(fixed(0), empty, sec(body(uv(1, 0, 1, 1, 1, 1), []byte{0, 1, 2, 3})), empty, empty, empty),
		"truncated take txn item": body(fixed(0), empty, empty, empty, sec(uv(1, 5)), empty),
	}
	for name, bd := range cases {
		t.Run(name, func(t *testing.T) {
			wantCorrupt(t, frame(2, 0, bd), nil, name)
		})
	}
}

func TestHeaderErrors(t *testing.T) {
	good := mustMarshal(t, fullCheckpoint(), nil)

	for _, v := range []byte{0, formatVersion + 1} {
		_, err := Unmarshal(frame(v, 0, good[headerLen:len(good)-4]), nil)
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("version %d: %v", v, err)
		}
	}
	var err error
	_, err = Unmarshal(frame(2, 0x82, good[headerLen:len(good)-4]), nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "flags") {
		t.Fatalf("unknown flags: %v", err)
	}
	bad := bytes.Clone(good)
	copy(bad, "XLCHKPT")
	if _, err := Unmarshal(bad, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("bad magic: %v", err)
	}
	// A valid CRC over a body length that does not match is still caught.
	long := bytes.Clone(good)
	binary.LittleEndian.PutUint32(long[offBodyLen:], math.MaxUint32)
	if _, err := Unmarshal(long, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("body length: %v", err)
	}
}

func TestSealer(t *testing.T) {
	c := fullCheckpoint()
	plain := mustMarshal(t, c, nil)
	sealed := mustMarshal(t, c, xorSealer{key: 0x42})
	if bytes.Contains(sealed, []byte("prod-1")) {
		t.Fatal("sealed file contains plaintext")
	}
	if len(sealed) != len(plain)+4 {
		t.Fatalf("sealer tag not applied: %d vs %d bytes", len(sealed), len(plain))
	}
	if _, err := Unmarshal(sealed, xorSealer{key: 0x43}); !errors.Is(err, ErrOpen) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("wrong key: %v", err)
	} else if !strings.Contains(err.Error(), "tag mismatch") {
		t.Fatalf("wrong key error lacks the sealer's cause: %v", err)
	}
	if _, err := Unmarshal(sealed, nil); !errors.Is(err, ErrSealed) {
		t.Fatalf("sealed without sealer: %v", err)
	}
	if _, err := Unmarshal(plain, xorSealer{key: 0x42}); !errors.Is(err, ErrNotSealed) {
		t.Fatalf("plain with sealer: %v", err)
	}
	if _, err := Marshal(c, failingSealer{}); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("failing Seal: %v", err)
	}
	// A sealer that opens to garbage (no authentication) yields ErrCorrupt.
	if _, err := Unmarshal(frame(2, flagSealed, []byte("garbage!")), identitySealer{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("garbage body: %v", err)
	}
}

type identitySealer struct{}

func (identitySealer) Seal(p []byte) ([]byte, error) { return p, nil }
func (identitySealer) Open(p []byte) ([]byte, error) { return p, nil }

func TestMarshalNil(t *testing.T) {
	if _, err := Marshal(nil, nil); err == nil {
		t.Fatal("Marshal(nil) succeeded")
	}
}

func TestUnmarshalAllocationBounded(t *testing.T) {
	// A tiny input claiming 2^40 put txns must be rejected without a large
	// allocation.
	empty := sec(uv(0))
	in := frame(2, 0, body(fixed(0), empty, empty, sec(uv(1<<40)), empty, empty))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := Unmarshal(in, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("accepted or wrong error: %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if perRun := (after.TotalAlloc - before.TotalAlloc) / 100; perRun > 4096 {
		t.Fatalf("%d bytes allocated per rejected %d-byte input", perRun, len(in))
	}
}

func BenchmarkMarshal100k(b *testing.B) {
	c := largeCheckpoint(100_000)
	for b.Loop() {
		if _, err := Marshal(c, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal100k(b *testing.B) {
	data := mustMarshal(b, largeCheckpoint(100_000), nil)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Unmarshal(data, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadsVersion1: a version-1 file (producer items without the last-used
// time) still opens, its producers' LastUsed 0; the same items in a
// version-2 file are short and corrupt.
func TestReadsVersion1(t *testing.T) {
	empty := sec(uv(0))
	producers := sec(body(uv(2), str("p1"), uv(7), str("p2"), uv(1<<40)))
	bd := body(fixed(1), empty, empty, empty, empty, producers)
	c, err := Unmarshal(frame(1, 0, bd), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Producer{{ID: "p1", Sequence: 7}, {ID: "p2", Sequence: 1 << 40}}
	if !reflect.DeepEqual(c.Producers, want) {
		t.Fatalf("producers %+v, want %+v", c.Producers, want)
	}
	wantCorrupt(t, frame(2, 0, bd), nil, "version-1 producers in a version-2 file")
}

func str(s string) []byte { return append(uv(uint64(len(s))), s...) }

func TestDigestKeyVersion(t *testing.T) {
	c := fullCheckpoint()
	c.DigestKey = bytes.Repeat([]byte{3}, DigestKeySize)
	b := mustMarshal(t, c, nil)
	got, err := Unmarshal(b, nil)
	if b[offVersion] != 4 || err != nil || !bytes.Equal(got.DigestKey, c.DigestKey) {
		t.Fatalf("with a digest key: version %d, %v", b[offVersion], err)
	}
}

// A version-3 file (no offsets section) still opens: its channels have no
// offsets (NextOffset 0, which the store reads as "assign from 1"); the
// same body in a version-4 file lacks its offsets section and is corrupt.
func TestReadsVersion3(t *testing.T) {
	empty := sec(uv(0))
	channels := sec(body(uv(1), str("c1"), uv(10), uv(3), uv(2), uv(20), []byte{0}, []byte{1, 2, 3, 4}))
	bd := body(fixed(1), empty, channels, empty, empty, empty, sec(str("")))
	c, err := Unmarshal(frame(3, 0, bd), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Channels) != 1 || c.Channels[0].NextOffset != 0 || c.Channels[0].Offsets != nil || c.Channels[0].Size != 2 {
		t.Fatalf("channels %+v", c.Channels)
	}
	wantCorrupt(t, frame(4, 0, bd), nil, "version-3 body in a version-4 file")
	// Offsets that do not match the items they belong to are corrupt.
	bad := body(fixed(1), empty, channels, empty, empty, empty, sec(str("")), sec(body(uv(2), uv(5), uv(0), uv(0), uv(0), uv(0), uv(0))))
	wantCorrupt(t, frame(4, 0, bad), nil, "offsets of 2 channels for 1")
	good := body(fixed(1), empty, channels, empty, empty, empty, sec(str("")), sec(body(uv(1), uv(9), uv(1), uv(3), uv(7), uv(0), uv(0))))
	c, err = Unmarshal(frame(4, 0, good), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ch := c.Channels[0]; ch.NextOffset != 9 || len(ch.Offsets) != 1 || ch.Offsets[0] != (OffsetRun{Pos: 3, Offset: 7}) {
		t.Fatalf("offsets %+v", ch)
	}
}
