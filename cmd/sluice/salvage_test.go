package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/wal"
)

// salvageOpts are the options of the small stores these tests build.
func salvageOpts(data, ckpt string) filestore.Options {
	return filestore.Options{
		DataDirs:           []string{data},
		CheckpointDir:      ckpt,
		SegmentSize:        1 << 20,
		CheckpointInterval: -1,
		MinFreeBytes:       -1,
		MaxEventSize:       1 << 16,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		Channels:           []channel.ChannelConfig{{Name: "a", Capacity: 1000, TransactionCapacity: 100}, {Name: "b", Capacity: 1000, TransactionCapacity: 100}},
	}
}

func salvageEvent(ch string, i int) channel.Event {
	return channel.Event{
		Headers: map[string]string{"n": fmt.Sprint(i), "ch": ch},
		Body:    []byte(fmt.Sprintf("body-%s-%04d-%s", ch, i, strings.Repeat("x", 40))),
	}
}

// buildSalvageStore writes 60 events to each of channels a and b (in
// transactions of 5) and takes (commits) the first 10 of a. It returns the
// events still queued per channel.
func buildSalvageStore(t *testing.T, data, ckpt string) map[string][]channel.Event {
	t.Helper()
	st, err := filestore.Open(salvageOpts(data, ckpt))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	want := map[string][]channel.Event{}
	for i := 0; i < 60; i += 5 {
		txn, err := st.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range []string{"a", "b"} {
			for j := i; j < i+5; j++ {
				ev := salvageEvent(ch, j)
				if err := txn.Put(ch, ev); err != nil {
					t.Fatal(err)
				}
				want[ch] = append(want[ch], ev)
			}
		}
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An uncommitted put (rolled back) and a committed take of 10.
	txn, _ := st.BeginPut(ctx, channel.PutOptions{})
	if err := txn.Put("a", salvageEvent("a", 999)); err != nil {
		t.Fatal(err)
	}
	txn.Rollback()
	tk, err := st.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Take(ctx, 10)
	if err != nil || len(got) != 10 {
		t.Fatalf("take: %d events, %v", len(got), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want["a"] = want["a"][10:]
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return want
}

// drainStore opens the store in-process and takes everything.
func drainStore(t *testing.T, data, ckpt string) map[string][]channel.Event {
	t.Helper()
	st, err := filestore.Open(salvageOpts(data, ckpt))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	out := map[string][]channel.Event{}
	for _, ch := range st.Channels() {
		for {
			tk, err := st.BeginTake(ctx, ch)
			if err != nil {
				t.Fatal(err)
			}
			tctx, cancel := context.WithCancel(ctx)
			cancel() // return at once when empty
			evs, _ := tk.Take(tctx, 50)
			if err := tk.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			out[ch] = append(out[ch], evs...)
		}
	}
	return out
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// flipInSegment flips a byte of the first occurrence of needle in a WAL
// segment of dir and returns the segment path.
func flipInSegment(t *testing.T, dir, needle string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.Index(string(b), needle); i >= 0 {
			flipByte(t, s, int64(i+len(needle)-1))
			return s
		}
	}
	t.Fatalf("%q not found in any segment of %s", needle, dir)
	return ""
}

func sameEvents(t *testing.T, got, want map[string][]channel.Event) {
	t.Helper()
	for _, ch := range []string{"a", "b"} {
		g, w := got[ch], want[ch]
		if len(g) != len(w) {
			t.Errorf("channel %s: %d events, want %d", ch, len(g), len(w))
			continue
		}
		for i := range w {
			if string(g[i].Body) != string(w[i].Body) || !reflect.DeepEqual(g[i].Headers, w[i].Headers) {
				t.Errorf("channel %s event %d: got %q %v, want %q %v", ch, i, g[i].Body, g[i].Headers, w[i].Body, w[i].Headers)
				break
			}
		}
	}
}

func TestSalvageIntact(t *testing.T) {
	dir := t.TempDir()
	data, ckpt := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt")
	want := buildSalvageStore(t, data, ckpt)
	nd, nc := filepath.Join(dir, "new-data"), filepath.Join(dir, "new-ckpt")
	out, errOut, code := sluice(t, "", "salvage", "--data-dirs", data, "--checkpoint-dir", ckpt,
		"--to-data-dirs", nd, "--to-checkpoint-dir", nc, "--to-segment-size", "1048576")
	if code != 0 {
		t.Fatalf("salvage exit %d\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"channel a: copied 50 events", "channel b: copied 60 events", "nothing lost", "using checkpoint"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	sameEvents(t, drainStore(t, nd, nc), want)
	// The source is untouched and still intact; a second salvage into the
	// same target is refused.
	if out, _, code := sluice(t, "", "verify", "--data-dirs", data, "--checkpoint-dir", ckpt); code != 0 {
		t.Errorf("verify of the source after salvage: exit %d\n%s", code, out)
	}
	if _, errOut, code := sluice(t, "", "salvage", "--data-dirs", data, "--checkpoint-dir", ckpt,
		"--to-data-dirs", nd, "--to-checkpoint-dir", nc); code != 1 || !strings.Contains(errOut, "already holds a store") {
		t.Errorf("salvage into a used target: exit %d, %s", code, errOut)
	}
	if _, _, code := sluice(t, "", "salvage", "--data-dirs", data, "--checkpoint-dir", ckpt); code != 2 {
		t.Errorf("salvage without a target: exit %d, want 2", code)
	}
}

func TestSalvageDamaged(t *testing.T) {
	dir := t.TempDir()
	data, ckpt := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt")
	want := buildSalvageStore(t, data, ckpt)
	// A bit flip in the put record of b's event 20 (mid-segment: valid
	// records follow), and every checkpoint file corrupted.
	seg := flipInSegment(t, data, "body-b-0020-")
	cps, _ := filepath.Glob(filepath.Join(ckpt, "checkpoint.*"))
	if len(cps) == 0 {
		t.Fatal("no checkpoint files")
	}
	for _, c := range cps {
		flipByte(t, c, 20)
	}
	want["b"] = append(append([]channel.Event{}, want["b"][:20]...), want["b"][21:]...)

	nd, nc := filepath.Join(dir, "new-data"), filepath.Join(dir, "new-ckpt")
	out, errOut, code := sluice(t, "", "salvage", "--data-dirs", data, "--checkpoint-dir", ckpt,
		"--to-data-dirs", nd, "--to-checkpoint-dir", nc, "--to-segment-size", "1048576")
	if code != 1 {
		t.Fatalf("salvage exit %d, want 1\n%s%s", code, out, errOut)
	}
	for _, s := range []string{"LOST: damaged WAL range " + seg, "no usable checkpoint", "channel a: copied 50 events",
		"channel b: copied 59 events", "have no readable put record", "LOSS:"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	sameEvents(t, drainStore(t, nd, nc), want)
}

func TestVerifyCorruptQueue(t *testing.T) {
	dir := t.TempDir()
	data, ckpt := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt")
	buildSalvageStore(t, data, ckpt)
	if out, _, code := sluice(t, "", "verify", "--data-dirs", data, "--checkpoint-dir", ckpt); code != 0 {
		t.Fatalf("verify of an intact store: exit %d\n%s", code, out)
	}
	// Corrupt slot 20 of every queue file: live in both (a holds logical
	// positions 10..59, b 0..59).
	ents, err := os.ReadDir(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	var queues []string
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Size() > queueHeaderSize && !strings.HasPrefix(e.Name(), "checkpoint.") {
			queues = append(queues, filepath.Join(ckpt, e.Name()))
			flipByte(t, filepath.Join(ckpt, e.Name()), queueHeaderSize+20*queueSlotSize+2)
		}
	}
	if len(queues) == 0 {
		t.Fatalf("no queue files in %s", ckpt)
	}
	out, _, code := sluice(t, "", "verify", "--data-dirs", data, "--checkpoint-dir", ckpt)
	if code != 1 || !strings.Contains(out, "NOT INTACT") {
		t.Fatalf("verify of a corrupt queue: exit %d\n%s", code, out)
	}
	found := false
	for _, q := range queues {
		if strings.Contains(out, "PROBLEM: "+q+" offset ") {
			found = true
		}
	}
	if !found {
		t.Errorf("no PROBLEM line names a queue file %v:\n%s", queues, out)
	}
}

// A put txn torn by a power cut (its commit record on disk, an earlier page
// lost) is reported by verify, and the store drops it whole at open.
func TestVerifyTornTransaction(t *testing.T) {
	dir := t.TempDir()
	data, ckpt := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt")
	st, err := filestore.Open(salvageOpts(data, ckpt))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put := func(from, to int) {
		txn, err := st.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for i := from; i < to; i++ {
			if err := txn.Put("a", salvageEvent("a", i)); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	put(0, 10)
	put(100, 200) // transactionCapacity is 100
	// What a crash leaves (no close, no final checkpoint): a copy of the
	// files while the store is open.
	cd, cc := filepath.Join(dir, "crash-data"), filepath.Join(dir, "crash-ckpt")
	copyLiveDir(t, cd, data)
	copyLiveDir(t, cc, ckpt)
	st.Close()
	// Lose the page holding event 130's record (the commit record, after
	// event 199, is pages later).
	segs, _ := filepath.Glob(filepath.Join(cd, "*.wal"))
	torn := false
	for _, s := range segs {
		b, _ := os.ReadFile(s)
		if i := strings.Index(string(b), "body-a-0130-"); i >= 0 {
			f, err := os.OpenFile(s, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(make([]byte, 4096), int64(i/4096*4096))
			f.Close()
			torn = true
		}
	}
	if !torn {
		t.Fatal("event 130 not found in any segment")
	}
	out, _, code := sluice(t, "", "verify", "--data-dirs", cd, "--checkpoint-dir", cc)
	if code != 1 || !strings.Contains(out, "NOT INTACT") || !strings.Contains(out, "PROBLEM: torn put transaction") ||
		!strings.Contains(out, "counts 100 events") {
		t.Fatalf("verify of a torn txn: exit %d\n%s", code, out)
	}
	got := drainStore(t, cd, cc)
	if len(got["a"]) != 10 || string(got["a"][9].Body) != string(salvageEvent("a", 9).Body) {
		t.Fatalf("after open: channel a holds %d events, want the 10 acknowledged", len(got["a"]))
	}
}

// Salvage honours a retracted commit as replay does: a rollback record after
// a txn's commit (the store's answer to a failed fdatasync) undoes it.
func TestSalvageHonoursRetractedCommits(t *testing.T) {
	str := func(b []byte, s string) []byte { return append(binary.AppendUvarint(b, uint64(len(s))), s...) }
	putRec := func(body string) []byte {
		b := str(nil, "a")
		b = binary.AppendUvarint(b, uint64(len(body)))
		b = binary.LittleEndian.AppendUint64(b, 1)
		b = binary.AppendUvarint(b, 0)
		return append(b, body...)
	}
	commitRec := func(n uint64) []byte { return binary.AppendUvarint(binary.AppendUvarint(str(nil, ""), 0), n) }
	takeRec := func(ptr wal.Pointer) []byte {
		b := binary.AppendUvarint(str(nil, "a"), 1)
		return binary.AppendUvarint(binary.LittleEndian.AppendUint64(b, uint64(ptr)), 1)
	}
	p1, p2 := wal.MakePointer(1, 32), wal.MakePointer(1, 96)
	s := newSalvageState()
	for _, r := range []struct {
		typ wal.RecordType
		txn uint64
		pl  []byte
		ptr wal.Pointer
	}{
		{wal.RecordPut, 1, putRec("kept"), p1}, {wal.RecordCommit, 1, commitRec(1), 0},
		{wal.RecordPut, 2, putRec("retracted"), p2}, {wal.RecordCommit, 2, commitRec(1), 0}, {wal.RecordRollback, 2, nil, 0},
		{wal.RecordTake, 3, takeRec(p1), 0}, {wal.RecordCommit, 3, commitRec(1), 0}, {wal.RecordRollback, 3, nil, 0},
	} {
		s.record(wal.Record{Type: r.typ, TxnID: r.txn, Payload: r.pl}, r.ptr)
	}
	var kept []wal.Pointer
	for _, e := range s.committed {
		if e.ptr != 0 && !s.taken[uint64(e.ptr)] {
			kept = append(kept, e.ptr)
		}
	}
	if len(kept) != 1 || kept[0] != p1 {
		t.Fatalf("salvage keeps %v, want only %v (txn 2's commit and txn 3's take were retracted)", kept, p1)
	}
}

// A crash image holding per-event puts whose commits skip duplicates (a
// source that re-read after a restart): verify finds it intact (the
// commits count every record, skipped ones included) and salvage copies
// each line once.
func TestSalvagePerEventPuts(t *testing.T) {
	dir, src := t.TempDir(), t.TempDir()
	data, ckpt := filepath.Join(src, "data"), filepath.Join(src, "ckpt")
	st, err := filestore.Open(salvageOpts(data, ckpt))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	line := func(ch string, n uint64) channel.Event { return salvageEvent(ch, int(n)) }
	put := func(runs ...[3]uint64) { // {channel 0=a 1=b, first, last}
		t.Helper()
		tx, err := st.BeginPut(ctx, channel.PutOptions{ProducerID: "src"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			ch := []string{"a", "b"}[r[0]]
			var evs []channel.Event
			for n := r[1]; n <= r[2]; n++ {
				evs = append(evs, line(ch, n))
			}
			if err := tx.PutSeq(ch, r[1], evs...); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Checkpoint(); err != nil { // both generations exist, as in a store that ran a while
		t.Fatal(err)
	}
	put([3]uint64{0, 1, 10})
	put([3]uint64{0, 11, 30})
	put([3]uint64{0, 21, 40}, [3]uint64{1, 41, 45}) // 21..30 are duplicates
	put([3]uint64{0, 35, 40}, [3]uint64{1, 41, 47}) // 35..45 are duplicates
	// The crash image: what the disk holds while the store is open (every
	// commit was fdatasynced), past the checkpoint the open wrote.
	img := filepath.Join(dir, "image")
	copyLiveDir(t, img, src)
	st.Close()
	idata, ickpt := filepath.Join(img, "data"), filepath.Join(img, "ckpt")
	if out, _, code := sluice(t, "", "verify", "--data-dirs", idata, "--checkpoint-dir", ickpt); code != 0 {
		t.Fatalf("verify of the crash image: exit %d\n%s", code, out)
	}
	nd, nc := filepath.Join(dir, "new-data"), filepath.Join(dir, "new-ckpt")
	out, errOut, code := sluice(t, "", "salvage", "--data-dirs", idata, "--checkpoint-dir", ickpt,
		"--to-data-dirs", nd, "--to-checkpoint-dir", nc, "--to-segment-size", "1048576")
	if code != 0 {
		t.Fatalf("salvage exit %d\n%s%s", code, out, errOut)
	}
	want := map[string][]channel.Event{}
	for n := uint64(1); n <= 40; n++ {
		want["a"] = append(want["a"], line("a", n))
	}
	for n := uint64(41); n <= 47; n++ {
		want["b"] = append(want["b"], line("b", n))
	}
	sameEvents(t, drainStore(t, nd, nc), want)
}

// copyLiveDir copies the files of an open store's directory src into dst (a
// crash image), subdirectories too. A file that vanishes while it is copied (a segment the WAL
// allocator is preparing under a .tmp name and renames) is skipped: it
// held nothing yet.
func copyLiveDir(t *testing.T, dst, src string) {
	t.Helper()
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			copyLiveDir(t, filepath.Join(dst, e.Name()), filepath.Join(src, e.Name()))
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// A move (a take that put events, TakeTxn.Put) is applied whole by
// salvage, as by replay: the moved events leave their channel and are in
// the other one, with the headers the move gave them. Salvage with and
// without a usable checkpoint.
func TestSalvageMoves(t *testing.T) {
	for _, noCkpt := range []bool{false, true} {
		t.Run(fmt.Sprintf("without_checkpoint=%v", noCkpt), func(t *testing.T) {
			dir := t.TempDir()
			data, ckpt := filepath.Join(dir, "data"), filepath.Join(dir, "ckpt")
			want := buildSalvageStore(t, data, ckpt)
			st, err := filestore.Open(salvageOpts(data, ckpt))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			tk, err := st.BeginTake(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			got, err := tk.Take(ctx, 5)
			if err != nil || len(got) != 5 {
				t.Fatalf("take: %d events, %v", len(got), err)
			}
			for _, e := range got {
				e.Headers["reason"] = "poison"
				e.Offset = 0
				if err := tk.Put("b", e); err != nil {
					t.Fatal(err)
				}
				want["b"] = append(want["b"], e)
			}
			if err := tk.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			want["a"] = want["a"][5:]
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if noCkpt { // checkpoints and queue files gone: a full replay
				ents, err := os.ReadDir(ckpt)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range ents {
					if err := os.RemoveAll(filepath.Join(ckpt, e.Name())); err != nil {
						t.Fatal(err)
					}
				}
			}
			nd, nc := filepath.Join(dir, "new-data"), filepath.Join(dir, "new-ckpt")
			out, errOut, code := sluice(t, "", "salvage", "--data-dirs", data, "--checkpoint-dir", ckpt,
				"--to-data-dirs", nd, "--to-checkpoint-dir", nc, "--to-segment-size", "1048576")
			if code != 0 {
				t.Fatalf("salvage exit %d\n%s%s", code, out, errOut)
			}
			drained := drainStore(t, nd, nc)
			if noCkpt {
				// Without the checkpoint's filter salvage cannot tell the
				// 10 events taken before (their take record is still in the
				// WAL here, so they are not copied either).
				if len(drained["a"]) != len(want["a"]) {
					t.Fatalf("channel a: %d events, want %d", len(drained["a"]), len(want["a"]))
				}
			}
			sameEvents(t, drained, want)
		})
	}
}
