package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/wal"
)

// TestPutTemplateMatchesPayload: the templated put encoding (putPrefix,
// putMiddle, wal.Batch.AppendPrefixed) writes the same records as
// appendPutPayload, for sizes on both sides of every varint length and
// channel names up to the prefix's limit.
func TestPutTemplateMatchesPayload(t *testing.T) {
	sizes := []int{0, 1, 7, 8, 100, 127, 128, 129, 1000, 16383, 16384, 1<<21 - 1, 1 << 21}
	names := []string{"c", "channel-name", strings.Repeat("n", wal.PrefixCap-28-1)}
	for _, name := range names {
		pre, ok := putPrefix(42, name)
		if !ok {
			t.Fatalf("name of %d bytes refused", len(name))
		}
		var got, want wal.Batch
		for _, size := range sizes {
			ev := channel.Event{Body: bytes.Repeat([]byte{'b'}, size)}
			m0, m1, m := putMiddle(uint32(size), -1234567890123)
			got.AppendPrefixed(&pre, m0, m1, m, ev.Body)
			want.Add(wal.RecordPut, 42, appendPutPayload(nil, name, ev, size, -1234567890123))
		}
		if got.Count() != want.Count() || got.Len() != want.Len() {
			t.Fatalf("name %q: %d records %d bytes, want %d and %d", name, got.Count(), got.Len(), want.Count(), want.Len())
		}
		if !bytes.Equal(batchBytes(&got), batchBytes(&want)) {
			t.Fatalf("name %q: templated encoding differs from appendPutPayload", name)
		}
	}
	// The middle alone for the longer varints (bodies too big to write).
	for _, size := range []uint32{1<<28 - 1, 1 << 28, 1<<32 - 1} {
		m0, m1, m := putMiddle(size, 0x0102030405060708)
		var got [16]byte
		binary.LittleEndian.PutUint64(got[:], m0)
		binary.LittleEndian.PutUint64(got[8:], m1)
		want := binary.AppendUvarint(nil, uint64(size))
		want = binary.LittleEndian.AppendUint64(want, 0x0102030405060708)
		want = append(want, 0)
		if m != len(want) || !bytes.Equal(got[:m], want) || !allZero(got[m:]) {
			t.Fatalf("size %d: middle % x (%d bytes), want % x", size, got, m, want)
		}
	}
	if _, ok := putPrefix(1, strings.Repeat("n", wal.PrefixCap-28)); ok {
		t.Fatal("a name too long for the prefix was accepted")
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// batchBytes writes a batch to a fresh WAL and returns each record's type
// and payload as read back (the batch buffer itself is unexported).
func batchBytes(b *wal.Batch) []byte {
	var out []byte
	fs := vfs.NewMem()
	w, err := wal.Open(wal.Options{FS: fs, Dirs: []string{"/d"}, SegmentSize: 64 << 20, Logger: testLogger()})
	if err != nil {
		panic(err)
	}
	defer w.Close()
	if _, err := w.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil); err != nil {
		panic(err)
	}
	if err := w.Start(1); err != nil {
		panic(err)
	}
	ptrs, _, err := w.Write(0, b, nil)
	if err != nil {
		panic(err)
	}
	for _, p := range ptrs {
		rec, err := w.ReadRecord(p, nil)
		if err != nil {
			panic(err)
		}
		out = append(out, byte(rec.Type))
		out = append(out, rec.Payload...)
	}
	return out
}

// TestPutMixedEventsRoundTrip puts headerless events (templated encoding)
// and events with headers in the same transactions, with bodies large
// enough to flush mid-Put, a channel name too long for the template, and
// an oversized event that must fail the whole Put call; everything comes
// back byte for byte, in order, across a restart.
func TestPutMixedEventsRoundTrip(t *testing.T) {
	long := strings.Repeat("L", 60)
	o := testFileOptions(vfs.NewMem(), 2,
		channel.ChannelConfig{Name: "c1", Capacity: 10_000, TransactionCapacity: 1000},
		channel.ChannelConfig{Name: long, Capacity: 10_000, TransactionCapacity: 1000})
	s := mustOpen(t, o)
	ctx := context.Background()
	var want []channel.Event
	sizes := []int{0, 1, 127, 128, 5000, 16384 - 100, 3}
	tx, err := s.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var batch []channel.Event
	for i := range 60 {
		body := bytes.Repeat([]byte{byte('a' + i%26)}, sizes[i%len(sizes)])
		e := channel.Event{Body: body}
		if i%5 == 4 {
			e.Headers = map[string]string{"i": strings.Repeat("h", i)}
		}
		batch = append(batch, e)
		if i%10 == 9 { // ten at a time: mixed calls, both paths
			if err := tx.Put("c1", batch...); err != nil {
				t.Fatal(err)
			}
			if err := tx.Put(long, batch[:2]...); err != nil {
				t.Fatal(err)
			}
			want = append(want, batch...)
			batch = nil
		}
	}
	tooBig := []channel.Event{{Body: []byte("fits")}, {Body: make([]byte, o.MaxEventSize+1)}}
	if err := tx.Put("c1", tooBig...); !errors.Is(err, channel.ErrEventTooLarge) {
		t.Fatalf("oversized event: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = mustOpen(t, o)
	defer s.Close()
	for _, ch := range []string{"c1", long} {
		take, err := s.BeginTake(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		got, err := take.Take(ctx, 1000)
		if err != nil {
			t.Fatal(err)
		}
		exp := want
		if ch == long {
			exp = nil
			for i := 0; i < len(want); i += 10 {
				exp = append(exp, want[i:i+2]...)
			}
		}
		if len(got) != len(exp) {
			t.Fatalf("%s: took %d events, want %d (the oversized Put must add nothing)", ch[:2], len(got), len(exp))
		}
		for i := range got {
			if !bytes.Equal(got[i].Body, exp[i].Body) || len(got[i].Headers) != len(exp[i].Headers) || got[i].Headers["i"] != exp[i].Headers["i"] {
				t.Fatalf("%s: event %d differs: %d-byte body, headers %v; want %d bytes, %v", ch[:2], i, len(got[i].Body), got[i].Headers, len(exp[i].Body), exp[i].Headers)
			}
		}
		if err := take.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTakenBodiesAreIndependent: bodies handed out from one slab block are
// capped, so a consumer appending to one cannot overwrite the next; large
// bodies get their own allocation.
func TestTakenBodiesAreIndependent(t *testing.T) {
	o := testFileOptions(vfs.NewMem(), 1)
	s := mustOpen(t, o)
	defer s.Close()
	ctx := context.Background()
	bodies := [][]byte{[]byte("first"), []byte("second"), bytes.Repeat([]byte{'L'}, bodySlabBlock/4+1), []byte("fourth")}
	tx, _ := s.BeginPut(ctx, channel.PutOptions{})
	for _, b := range bodies {
		if err := tx.Put("c1", channel.Event{Body: b}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	take, _ := s.BeginTake(ctx, "c1")
	got, err := take.Take(ctx, 10)
	if err != nil || len(got) != len(bodies) {
		t.Fatalf("took %d events: %v", len(got), err)
	}
	for i := range got {
		got[i].Body = append(got[i].Body, "-appended-by-the-consumer"...)
	}
	for i, b := range bodies {
		if want := string(b) + "-appended-by-the-consumer"; string(got[i].Body) != want {
			t.Fatalf("event %d body %.40q..., want %.40q...", i, got[i].Body, want)
		}
	}
	take.Commit(ctx)
}
