package fuzz

import (
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/queue"
)

func queueOptions(fs vfs.FS) queue.Options {
	return queue.Options{FS: fs, Dir: "/ckpt", BackupDir: "/ckpt-b", Name: "c1", Capacity: 16, Logger: quietLogger()}
}

// realQueue builds a queue file through the queue package: a few pushes and
// pops, one snapshot. It returns the file bytes and the State naming them.
func realQueue(t testing.TB) ([]byte, queue.State) {
	fs := vfs.NewMem()
	if err := fs.MkdirAll("/ckpt", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := fs.MkdirAll("/ckpt-b", 0o755); err != nil {
		t.Fatal(err)
	}
	o := queueOptions(fs)
	q, err := queue.Open(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i := range 20 {
		if err := q.PushBack(uint64(i+1)<<32 | 64); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			q.PopFront()
		}
	}
	fr := q.Freeze()
	st, err := q.WriteSnapshot(fr)
	if err != nil {
		t.Fatal(err)
	}
	q.Install(fr, st)
	return readFile(t, fs, queue.Path(o, st.Gen)), st
}

// FuzzQueueHeader opens a crafted queue file under a checkpoint's State
// (whose head and size are fuzzed too). Open must not panic and must not
// trust the file: what it accepts must hold exactly State.Size pointers.
func FuzzQueueHeader(f *testing.F) {
	data, st := realQueue(f)
	f.Add(data, st.Head, st.Size)
	f.Add(data[:len(data)/2], st.Head, st.Size)
	f.Add(data, st.Head+1, st.Size)
	f.Add(data, st.Head, st.Size+100)
	f.Add(data, ^uint64(0), uint64(1))
	f.Add([]byte{}, uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, file []byte, head, size uint64) {
		defer watchdog("FuzzQueueHeader", 5*time.Second)()
		fs := vfs.NewMem()
		o := queueOptions(fs)
		s := st
		s.Head, s.Size = head, size
		writeFile(t, fs, queue.Path(o, s.Gen), file)
		if err := fs.MkdirAll("/ckpt", 0o755); err != nil {
			t.Fatal(err)
		}
		q, err := queue.Open(o, &s)
		if err != nil {
			return
		}
		defer q.Close()
		if q.Len() != size {
			t.Fatalf("opened queue holds %d, state says %d", q.Len(), size)
		}
		for i := range q.Len() {
			_ = q.At(i)
		}
	})
}
