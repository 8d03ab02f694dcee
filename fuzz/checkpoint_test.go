package fuzz

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/checkpoint"
)

func realCheckpoint(t testing.TB) []byte {
	cp := &checkpoint.Checkpoint{
		Generation: 3, WOID: 99, Clean: true, NextTxnID: 12, TimeUnixNano: 1_700_000_000_000_000_000,
		Frontier: []checkpoint.Position{{Segment: 4, Offset: 4096}, {Segment: 5, Offset: 32}},
		Channels: []checkpoint.Channel{
			{Name: "c1", Capacity: 1000, Head: 10, Size: 5, Bytes: 500, Gen: 1, Digest: 0xdeadbeef},
			{Name: "orders", Capacity: 10, Head: 0, Size: 0},
		},
		PutTxns: []checkpoint.PutTxn{{TxnID: 9, Committing: true, ProducerID: "p1", Sequence: 41, Entries: []checkpoint.PutEntry{
			{Channel: "c1", Pointer: 4<<32 | 64, Size: 12},
		}}},
		TakeTxns: []checkpoint.TakeTxn{{TxnID: 10, Channel: "c1", Entries: []checkpoint.TakeEntry{
			{Pointer: 4<<32 | 128, Position: 9, Size: 7},
		}}},
		Producers: []checkpoint.Producer{{ID: "p1", Sequence: 42}},
	}
	data, err := checkpoint.Marshal(cp, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Read(memWith(t, data), "/ckpt/checkpoint.A", nil); err != nil {
		t.Fatalf("seed does not decode: %v", err)
	}
	return data
}

func memWith(t testing.TB, data []byte) vfs.FS {
	fs := vfs.NewMem()
	writeFile(t, fs, "/ckpt/checkpoint.A", data)
	return fs
}

// FuzzCheckpoint decodes crafted checkpoint files. Read must not panic; what
// it accepts must marshal again and decode to the same thing.
func FuzzCheckpoint(f *testing.F) {
	seed := realCheckpoint(f)
	f.Add(seed)
	empty, err := checkpoint.Marshal(&checkpoint.Checkpoint{}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(empty)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog("FuzzCheckpoint", 5*time.Second)()
		cp, err := checkpoint.Read(memWith(t, data), "/ckpt/checkpoint.A", nil)
		if err != nil {
			return
		}
		again, err := checkpoint.Marshal(cp, nil)
		if err != nil {
			t.Fatalf("accepted checkpoint does not marshal again: %v", err)
		}
		if _, err := checkpoint.Read(memWith(t, again), "/ckpt/checkpoint.A", nil); err != nil {
			t.Fatalf("re-marshalled checkpoint does not decode: %v", err)
		}
	})
}
