package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/queue"
	"github.com/sluicehq/sluice/wal"
)

// Attacker tests: someone who can write the store's directories but does not
// have the key forges bytes with the packages' own encoders. Every one of
// them was accepted before the store authenticated its manifest and bound
// its records.

// rawCodec writes stored payloads as given, with the flags and key id set
// on it: how an attacker re-files sealed payloads he copied. It reads
// sealed records as they are (the attacker cannot open them).
type rawCodec struct {
	flags uint8
	key   uint16
}

func (c *rawCodec) Encode(dst, p []byte) ([]byte, uint8, uint16, error) {
	return append(dst, p...), c.flags, c.key, nil
}

func (c *rawCodec) Decode(dst, p []byte, flags uint8, key uint16) ([]byte, error) {
	return append(dst, p...), nil
}

// forgeWAL opens the store's first data directory as a WAL (the store is
// closed), lets write append batches to a new segment and closes it.
func forgeWAL(t *testing.T, fs vfs.FS, o Options, codec *rawCodec, write func(w *wal.WAL)) {
	t.Helper()
	w, err := wal.Open(wal.Options{FS: fs, Dirs: o.DataDirs[:1], SegmentSize: o.SegmentSize, Codec: codec, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := w.Replay(nil, func(wal.Record, wal.Pointer) error { return nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(stats.MaxWOID + 1000); err != nil {
		t.Fatal(err)
	}
	write(w)
	if err := w.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeBatch(t *testing.T, w *wal.WAL, b *wal.Batch) {
	t.Helper()
	if _, _, err := w.Write(0, b, nil); err != nil {
		t.Fatal(err)
	}
}

func encryptedStore(t *testing.T, keys []crypto.Key, events int) (*vfs.MemFS, Options) {
	t.Helper()
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.Encryption = testKeyring(t, keys, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, events, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return fs, o
}

// A: a plaintext put+commit written into an encrypted store's data
// directory is never delivered as an authentic event.
func TestAttackUnsealedRecordInEncryptedStore(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs, o := encryptedStore(t, keys, 20)
	forgeWAL(t, fs, o, &rawCodec{}, func(w *wal.WAL) {
		var b wal.Batch
		e := channel.Event{Body: []byte("forged")}
		b.Add(wal.RecordPut, 1<<40, appendPutPayload(nil, "c1", e, e.Size(), 1))
		b.Add(wal.RecordCommit, 1<<40, appendCommitPayload(nil, commitInfo{events: 1}))
		writeBatch(t, w, &b)
	})
	expectRefused(t, fs, o, "unsealed put record", "after encryption was switched on")
}

// A (migration): records written before encryption was switched on stay
// readable; a plaintext record written after it is refused.
func TestAttackUnsealedRecordAfterMigration(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 10, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	keys := cryptoKeys(t, 1)
	o.Encryption = testKeyring(t, keys, 1)
	s = mustOpen(t, o) // the migration
	putRange(t, s, "c1", 10, 20, 5)
	clone := killClone(fs) // no final checkpoint: the sealed records replay
	s.Close()
	o.FS = clone
	s = expectAll(t, o, seq(0, 20))
	putRange(t, s, "c1", 20, 30, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	forgeWAL(t, clone, o, &rawCodec{}, func(w *wal.WAL) {
		var b wal.Batch
		e := channel.Event{Body: []byte("forged")}
		b.Add(wal.RecordPut, 1<<40, appendPutPayload(nil, "c1", e, e.Size(), 1))
		b.Add(wal.RecordCommit, 1<<40, appendCommitPayload(nil, commitInfo{events: 1}))
		writeBatch(t, w, &b)
	})
	expectRefused(t, clone, o, "unsealed put record")
}

// plantPlaintextCheckpoint writes a plaintext checkpoint in both
// generations whose frontier lies past all WAL data, with no events and a
// planted producer entry.
func plantPlaintextCheckpoint(t *testing.T, fs vfs.FS, o Options) {
	t.Helper()
	names, _ := fs.List(o.DataDirs[0])
	var last uint32
	for _, n := range names {
		var id uint32
		if _, err := fmt.Sscanf(n, "%010d.wal", &id); err == nil && strings.HasSuffix(n, ".wal") {
			last = max(last, id)
		}
	}
	for g := uint64(1000); g < 1002; g++ {
		cp := &checkpoint.Checkpoint{
			Generation: g, WOID: 1 << 40, NextTxnID: 1 << 41, Clean: true,
			Frontier:  []checkpoint.Position{{Segment: last, Offset: uint32(o.SegmentSize)}},
			Producers: []checkpoint.Producer{{ID: "victim", Sequence: 1 << 60, LastUsed: time.Now().UnixNano()}},
		}
		dir, name := checkpoint.FileFor(o.CheckpointDir, o.BackupCheckpointDir, g)
		if err := checkpoint.Write(fs, dir, name, cp, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// victimPut commits one event with producer "victim" sequence 1 and says
// whether the store called it a duplicate.
func victimPut(t *testing.T, s *Store) bool {
	t.Helper()
	tx, err := s.BeginPut(context.Background(), channel.PutOptions{ProducerID: "victim", Sequence: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Put("c1", ev(5000)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tx.Deduplicated()
}

// B: with a key file configured, a forged plaintext checkpoint never opens
// an encrypted store: not with the manifest in place, not with every copy of
// it deleted, not with it edited.
func TestAttackPlaintextCheckpoint(t *testing.T) {
	keys := cryptoKeys(t, 1)
	for _, mode := range []string{"manifest kept", "manifest deleted", "manifest edited"} {
		t.Run(mode, func(t *testing.T) {
			fs, o := encryptedStore(t, keys, 40)
			plantPlaintextCheckpoint(t, fs, o)
			switch mode {
			case "manifest deleted":
				removeManifests(t, fs, o)
			case "manifest edited":
				// What a v1 (checksummed only) manifest allowed: say
				// "no sealed checkpoint yet" and fix the checksum; or
				// edit any line of a v2 one.
				for _, p := range manifestPaths(fs, o) {
					if _, err := fs.Stat(p); err == nil {
						b := string(readAll(t, fs, p))
						if strings.Contains(b, "\nsealed 1\n") {
							b = strings.Replace(b, "\nsealed 1\n", "\nsealed 0\n", 1)
							body := b[:strings.Index(b, "crc ")]
							b = body + fmt.Sprintf("crc %08x\n", crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli)))
						} else {
							b = strings.Replace(b, "\ngeneration ", "\ngeneration 0", 1)
						}
						writeFile(t, fs, p, []byte(b))
					}
				}
			}
			s, err := Open(o)
			if err != nil {
				if mode == "manifest kept" {
					t.Fatalf("open with the manifest in place: %v", err)
				}
				return // refused: fine
			}
			defer s.Close()
			// If it opens, it opened from the authenticated WAL, not the
			// forged checkpoint.
			if victimPut(t, s) {
				t.Fatal("a planted producer entry made the victim's put a duplicate")
			}
			got := drain(t, s, "c1")
			if !slices.Equal(got, append(seq(0, 40), 5000)) {
				t.Fatalf("got %d events, want 41 (first %v)", len(got), got[:min(8, len(got))])
			}
		})
	}
}

// C: a wrong key with the right id on a store whose checkpoint directories
// were lost refuses to open, names the key and changes nothing; the right
// key then opens everything. A key file missing the store's keys likewise
// refuses without writing anything, so restoring the right file works.
func TestAttackWrongKeyLostCheckpointDir(t *testing.T) {
	keys := cryptoKeys(t, 1)
	for _, wrongID := range []uint16{1, 3} {
		fs, o := encryptedStore(t, keys, 60)
		for _, d := range []string{o.CheckpointDir, o.BackupCheckpointDir} {
			names, _ := fs.List(d)
			for _, n := range names {
				if n != "LOCK" {
					if err := fs.Remove(fs.PathJoin(d, n)); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		good := o.Encryption
		o.Encryption = testKeyring(t, cryptoKeys(t, wrongID), wrongID) // `keygen --new`
		expectRefused(t, fs, o, "key id 1", cryptoManifestName, "refusing to open")
		o.Encryption = good
		s := expectAll(t, o, seq(0, 60))
		s.Close()
	}
}

// recordsOf lists the records (offset, header, payload) of a segment image.
type rawRecord struct {
	typ   byte
	flags byte
	key   uint16
	txn   uint64
	data  []byte
}

func segmentRecords(b []byte) []rawRecord {
	var out []rawRecord
	offs, types, lens := walRecords(b)
	for i, off := range offs {
		out = append(out, rawRecord{
			typ: types[i], flags: b[off+9], key: binary.LittleEndian.Uint16(b[off+10:]),
			txn: binary.LittleEndian.Uint64(b[off+12:]), data: slices.Clone(b[off+28 : off+28+lens[i]]),
		})
	}
	return out
}

// D: sealed records copied under a new txn id, or a whole sealed
// transaction copied under its own id, are never delivered a second time.
func TestAttackCopiedSealedRecords(t *testing.T) {
	keys := cryptoKeys(t, 1)
	for _, mode := range []string{"new id", "same id, before the checkpoint", "same id, replayed"} {
		newID := mode == "new id"
		var fs *vfs.MemFS
		fs, o := encryptedStore(t, keys, 0)
		if mode == "same id, replayed" {
			s := mustOpen(t, o)
			putRange(t, s, "c1", 0, 1, 1)
			clone := killClone(fs) // the txn is replayed at the next open
			s.Close()
			fs, o.FS = clone, clone
		} else {
			s := mustOpen(t, o)
			putRange(t, s, "c1", 0, 1, 1)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		path, _ := lastSegmentWith(t, fs, o.DataDirs[0], wal.RecordPut)
		var txn []rawRecord
		for _, r := range segmentRecords(readAll(t, fs, path)) {
			if r.typ == byte(wal.RecordPut) || r.typ == byte(wal.RecordCommit) {
				txn = append(txn, r)
			}
		}
		if len(txn) != 2 {
			t.Fatalf("found %d put/commit records", len(txn))
		}
		rc := &rawCodec{}
		forgeWAL(t, fs, o, rc, func(w *wal.WAL) {
			for _, r := range txn {
				id := r.txn
				if newID {
					id = r.txn + 1000
				}
				rc.flags, rc.key = r.flags, r.key
				var b wal.Batch
				b.Add(wal.RecordType(r.typ), id, r.data)
				writeBatch(t, w, &b)
			}
		})
		switch mode {
		case "new id":
			expectRefused(t, fs, o, "key id 1", "failed authentication")
		case "same id, before the checkpoint":
			expectRefused(t, fs, o, "predates the checkpoint", "copied")
		default:
			expectRefused(t, fs, o, "commits a second time", "copied")
		}
	}
}

// lastSegmentWith returns the newest segment of dir holding a record of
// type typ.
func lastSegmentWith(t *testing.T, fs vfs.FS, dir string, typ wal.RecordType) (string, uint32) {
	t.Helper()
	names, _ := fs.List(dir)
	slices.Sort(names)
	slices.Reverse(names)
	for _, n := range names {
		var id uint32
		if _, err := fmt.Sscanf(n, "%010d.wal", &id); err != nil || !strings.HasSuffix(n, ".wal") {
			continue
		}
		p := fs.PathJoin(dir, n)
		for _, r := range segmentRecords(readAll(t, fs, p)) {
			if r.typ == byte(typ) {
				return p, id
			}
		}
	}
	t.Fatalf("no segment of %s holds a %s record", dir, typ)
	return "", 0
}

// D: checkpoints copied from another store sharing the key are refused.
func TestAttackSwappedCheckpoints(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fsA, oA := encryptedStore(t, keys, 30)
	fsB, oB := encryptedStore(t, keys, 50) // 50 queued pointers, where A has 30 events
	orig := map[string][]byte{}
	for _, d := range []string{oB.CheckpointDir, oB.BackupCheckpointDir} {
		names, _ := fsB.List(d)
		for _, n := range names {
			if n != "LOCK" && n != cryptoManifestName { // checkpoints and their queue files
				p := fsB.PathJoin(d, n)
				if _, err := fsA.Stat(p); err == nil {
					orig[p] = readAll(t, fsA, p)
				}
				writeFile(t, fsA, p, readAll(t, fsB, p))
			}
		}
	}
	s, err := Open(oA)
	if err == nil {
		got := drain(t, s, "c1")
		s.Close()
		if !slices.Equal(got, seq(0, 30)) {
			t.Fatalf("store A opened with store B's checkpoint: got %d events", len(got))
		}
	} else if !strings.Contains(err.Error(), "no checkpoint could be opened") {
		t.Fatal(err)
	}
	restoreFiles(t, fsA, orig)
	s = mustOpen(t, oA)
	defer s.Close()
	// Directly: B's sealed checkpoint does not open under A's sealer,
	// and A's own checkpoint.B does not open as checkpoint.A.
	if err := fsA.MkdirAll("/swap", 0o700); err != nil {
		t.Fatal(err)
	}
	dir, name := checkpoint.FileFor(oB.CheckpointDir, oB.BackupCheckpointDir, 0)
	writeFile(t, fsA, "/swap/"+name, readAll(t, fsB, fsB.PathJoin(dir, name)))
	if _, err := checkpoint.Read(fsA, "/swap/"+name, s.checkpointSealer()); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("store B's checkpoint opened in store A: %v", err)
	}
	dir, name = checkpoint.FileFor(oA.CheckpointDir, oA.BackupCheckpointDir, 1)
	writeFile(t, fsA, "/swap/checkpoint.A", readAll(t, fsA, fsA.PathJoin(dir, name)))
	if _, err := checkpoint.Read(fsA, "/swap/checkpoint.A", s.checkpointSealer()); !errors.Is(err, crypto.ErrAuth) {
		t.Fatalf("checkpoint.B opened as checkpoint.A: %v", err)
	}
}

// D: an older sealed checkpoint (with its queue files) restored over the
// current ones is refused; the authenticated WAL is replayed instead.
func TestAttackCheckpointRollback(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs, o := encryptedStore(t, keys, 300)
	var saved map[string][]byte
	{
		saved = map[string][]byte{}
		for _, d := range []string{o.CheckpointDir, o.BackupCheckpointDir} {
			names, _ := fs.List(d)
			for _, n := range names {
				if n != "LOCK" && n != cryptoManifestName {
					saved[fs.PathJoin(d, n)] = readAll(t, fs, fs.PathJoin(d, n))
				}
			}
		}
	}
	s := expectAll(t, o, seq(0, 300))   // all taken
	putRange(t, s, "c1", 300, 3000, 50) // many segments, garbage collected below
	if got := drain(t, s, "c1"); !slices.Equal(got, seq(300, 3000)) {
		t.Fatalf("got %d", len(got))
	}
	for range 3 {
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	restoreFiles(t, fs, saved)
	s, err := Open(o)
	if err != nil {
		return // refused: fine
	}
	defer s.Close()
	got := drain(t, s, "c1")
	st, _ := s.Stats(context.Background(), "c1")
	if len(got) != 0 || st.CorruptEventsSkipped != 0 {
		t.Fatalf("rolled-back checkpoint used: %d taken events delivered again, %d unreadable", len(got), st.CorruptEventsSkipped)
	}
}

// D: in an encrypted store the queue digests are keyed (the key lives in the
// sealed checkpoint): an attacker who rewrites a queue file cannot compute
// the digest it must match, as he could a CRC32C.
func TestAttackQueueDigestKeyed(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs, o := encryptedStore(t, keys, 50)
	s := mustOpen(t, o)
	defer s.Close()
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	q := s.chans["c1"].q
	var ptrs []uint64
	for i := uint64(0); i < q.Len(); i++ {
		ptrs = append(ptrs, q.At(i))
	}
	cands := checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, s.checkpointSealer())
	cp := cands[0].Checkpoint
	if cp == nil || len(cp.Channels) != 1 || cp.Channels[0].Size != 50 {
		t.Fatalf("checkpoint: %+v %v", cp, cands[0].Err)
	}
	if len(cp.DigestKey) != checkpoint.DigestKeySize {
		t.Fatalf("digest key of %d bytes", len(cp.DigestKey))
	}
	if cp.Channels[0].Digest == queue.Digest(ptrs) {
		t.Fatal("the queue digest of an encrypted store is a plain CRC32C of the pointers")
	}
}

// legacyEncryptedStore writes an encrypted store the way builds before
// store binding did: records and checkpoints sealed with the old associated
// data, CRC32C queue digests and a checksummed (v1) crypto manifest.
func legacyEncryptedStore(t *testing.T, kr *crypto.Keyring, events int) (*vfs.MemFS, Options) {
	t.Helper()
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.Encryption = kr
	lo := o
	lo.legacyFormat = true
	s := mustOpen(t, lo)
	putRange(t, s, "c1", 0, events, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	removeManifests(t, fs, o)
	check, _ := kr.CheckValue(kr.Active())
	body := fmt.Sprintf("sluice crypto manifest v1\nsealed 1\nkey %d %s 0\n", kr.Active(), check)
	body += fmt.Sprintf("crc %08x\n", crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli)))
	writeFile(t, fs, fs.PathJoin(o.CheckpointDir, cryptoManifestName), []byte(body))
	return fs, o
}

// Format compatibility: an encrypted store of the previous format opens
// (its old records and checkpoints are read once, at the migration); after
// the migration an old-format sealed record in a new segment is refused.
func TestLegacyEncryptedStoreMigrates(t *testing.T) {
	kr := testKeyring(t, cryptoKeys(t, 1), 1)
	fs, o := legacyEncryptedStore(t, kr, 30)
	path, _ := firstSegment(t, fs, o.DataDirs[0])
	var old []rawRecord
	for _, r := range segmentRecords(readAll(t, fs, path)) {
		if r.typ == byte(wal.RecordPut) || r.typ == byte(wal.RecordCommit) {
			old = append(old, r)
		}
	}
	if len(old) < 2 || old[0].flags&crypto.FlagBound != 0 || old[0].flags&crypto.FlagSealed == 0 {
		t.Fatalf("first segment: %d records, flags %#x", len(old), old[0].flags)
	}
	s := mustOpen(t, o) // the migration
	if s.StoreStats().CheckpointFallbacks != 0 {
		t.Fatal("the old-format checkpoint was not used")
	}
	putRange(t, s, "c1", 30, 40, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = expectAll(t, o, seq(0, 40))
	putRange(t, s, "c1", 40, 45, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// An old-format sealed record (copied from an old segment) written into
	// a new segment is refused.
	rc := &rawCodec{}
	forgeWAL(t, fs, o, rc, func(w *wal.WAL) {
		for _, r := range old[:2] {
			rc.flags, rc.key = r.flags, r.key
			var b wal.Batch
			b.Add(wal.RecordType(r.typ), r.txn+1<<40, r.data)
			writeBatch(t, w, &b)
		}
	})
	expectRefused(t, fs, o, "sealed without store binding")
}

// Format compatibility: the same with the old-format records replayed (the
// store was killed, so the migration replays them from the WAL).
func TestLegacyEncryptedStoreReplayed(t *testing.T) {
	kr := testKeyring(t, cryptoKeys(t, 1), 1)
	fs, o := legacyEncryptedStore(t, kr, 10)
	lo := o
	lo.legacyFormat = true
	lo.Encryption = kr
	// A legacy-mode open now would see the v1 manifest: write more
	// old-format records and kill it.
	s := mustOpen(t, lo)
	putRange(t, s, "c1", 10, 20, 5)
	clone := killClone(fs)
	s.Close()
	removeManifests(t, clone, o)
	check, _ := kr.CheckValue(1)
	body := fmt.Sprintf("sluice crypto manifest v1\nsealed 1\nkey 1 %s 0\n", check)
	body += fmt.Sprintf("crc %08x\n", crc32.Checksum([]byte(body), crc32.MakeTable(crc32.Castagnoli)))
	writeFile(t, clone, clone.PathJoin(o.CheckpointDir, cryptoManifestName), []byte(body))
	o.FS = clone
	s = expectAll(t, o, seq(0, 20))
	s.Close()
}

// Losing the checkpoint files (the manifest copies in the data directory
// survive) costs a full replay once; the checkpoints written afterwards
// continue above the recorded generation and are not taken for a rollback.
func TestLostCheckpointsThenRestart(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs, o := encryptedStore(t, keys, 20)
	s := mustOpen(t, o)
	for range 4 {
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{o.CheckpointDir, o.BackupCheckpointDir} {
		names, _ := fs.List(d)
		for _, n := range names {
			if n != "LOCK" {
				if err := fs.Remove(fs.PathJoin(d, n)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	s = mustOpen(t, o)
	putRange(t, s, "c1", 20, 30, 5)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = expectAll(t, o, seq(0, 30))
	defer s.Close()
	if n := s.StoreStats().CheckpointFallbacks; n != 0 {
		t.Fatalf("%d checkpoints refused after the lost ones were replaced", n)
	}
}

// D: a take delivers only events of its own channel: a pointer to another
// channel's event in its queue (a forged queue or checkpoint) is skipped.
func TestTakeChecksChannel(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1, channel.ChannelConfig{Name: "c1", Capacity: 100, TransactionCapacity: 100},
		channel.ChannelConfig{Name: "c2", Capacity: 100, TransactionCapacity: 100})
	o.Encryption = testKeyring(t, cryptoKeys(t, 1), 1)
	s := mustOpen(t, o)
	defer s.Close()
	putRange(t, s, "c2", 0, 1, 1)
	s.mu.Lock()
	ptr := s.chans["c2"].q.At(0)
	if err := s.chans["c1"].q.PushBack(ptr); err != nil { // as a forged queue file would
		s.mu.Unlock()
		t.Fatal(err)
	}
	s.live[wal.Pointer(ptr).Segment()]++
	s.mu.Unlock()
	if got := drain(t, s, "c1"); len(got) != 0 {
		t.Fatalf("c1 delivered c2's event %v", got)
	}
	if st, _ := s.Stats(context.Background(), "c1"); st.CorruptEventsSkipped != 1 {
		t.Fatalf("%d events skipped, want 1", st.CorruptEventsSkipped)
	}
	if got := drain(t, s, "c2"); !slices.Equal(got, []int{0}) {
		t.Fatalf("c2: %v", got)
	}
}

// A put txn begun before a checkpoint that flushes for the first time after
// it gets a new txn id (so replay can refuse copies of older txns): all of
// its records, also those of a Put call that flushed mid-way, carry it.
func TestPutTxnSpanningCheckpoint(t *testing.T) {
	for _, enc := range []bool{false, true} {
		fs := vfs.NewCrashableMem()
		o := testFileOptions(fs, 1)
		if enc {
			o.Encryption = testKeyring(t, cryptoKeys(t, 1), 1)
		}
		s := mustOpen(t, o)
		ctx := context.Background()
		tx, err := s.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Put("c1", channel.Event{Body: []byte("0")}); err != nil { // buffered, not flushed
			t.Fatal(err)
		}
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		big := make([]channel.Event, 100)
		for i := range big {
			big[i] = channel.Event{Body: bytes.Repeat([]byte{'x'}, 1000)} // flushes several times
		}
		if err := tx.Put("c1", big...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		clone := killClone(fs)
		s.Close()
		o.FS = clone
		s = mustOpen(t, o)
		if st, _ := s.Stats(context.Background(), "c1"); st.Size != 101 {
			t.Fatalf("encrypted %v: %d events recovered, want 101", enc, st.Size)
		}
		s.Close()
	}
}

// B: with every manifest copy deleted and the WAL holding no sealed record
// any more (all garbage collected), a sealed checkpoint left in place still
// refuses the open instead of a silent downgrade.
func TestAttackNoManifestSealedCheckpointLeft(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs, o := encryptedStore(t, keys, 10)
	s := expectAll(t, o, seq(0, 10))
	s.Close()
	for range 3 { // until every segment with records is collected
		s = mustOpen(t, o)
		for range 2 {
			if err := s.Checkpoint(); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	removeManifests(t, fs, o)
	// One generation replaced by a forged plaintext checkpoint.
	cp := &checkpoint.Checkpoint{Generation: 1 << 20, WOID: 1 << 40, NextTxnID: 1 << 41,
		Producers: []checkpoint.Producer{{ID: "victim", Sequence: 1 << 60, LastUsed: time.Now().UnixNano()}}}
	if err := checkpoint.Write(fs, o.CheckpointDir, checkpoint.FileA, cp, nil); err != nil {
		t.Fatal(err)
	}
	expectRefused(t, fs, o, "for the first time (no crypto manifest)", "refusing to open")
}
