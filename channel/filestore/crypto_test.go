package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/crypto"
)

func cryptoKeys(t testing.TB, ids ...uint16) []crypto.Key {
	t.Helper()
	var keys []crypto.Key
	for _, id := range ids {
		k, err := crypto.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, crypto.Key{ID: id, Secret: k})
	}
	return keys
}

func testKeyring(t testing.TB, keys []crypto.Key, active uint16) *crypto.Keyring {
	t.Helper()
	kr, err := crypto.NewKeyring("/etc/sluice/test.keys", keys, active)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// listing is every file of the store with its size and a digest of its
// content, to prove a refused open changed nothing.
func listing(t *testing.T, fs vfs.FS, o Options) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, d := range append([]string{o.CheckpointDir, o.BackupCheckpointDir}, o.DataDirs...) {
		names, err := fs.List(d)
		if err != nil {
			continue
		}
		for _, n := range names {
			p := fs.PathJoin(d, n)
			f, err := fs.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(f)
			f.Close()
			out[p] = fmt.Sprintf("%d/%08x", len(b), crc32.ChecksumIEEE(b))
		}
	}
	return out
}

func readAll(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// storeFiles returns the contents of every WAL segment and checkpoint file.
func storeFiles(t *testing.T, fs vfs.FS, o Options) map[string][]byte {
	out := map[string][]byte{}
	for p := range listing(t, fs, o) {
		base := filepath.Base(p)
		if strings.HasSuffix(base, ".wal") || strings.HasPrefix(base, "checkpoint.") {
			out[p] = readAll(t, fs, p)
		}
	}
	return out
}

func TestFileEncryptionRoundTrips(t *testing.T) {
	keys := cryptoKeys(t, 1)
	for _, enc := range []bool{false, true} {
		for _, comp := range []string{"", "zstd", "s2"} {
			t.Run(fmt.Sprintf("encrypt=%v/compression=%q", enc, comp), func(t *testing.T) {
				fs := vfs.NewCrashableMem()
				o := testFileOptions(fs, 2)
				o.Compression = comp
				if enc {
					o.Encryption = testKeyring(t, keys, 1)
				}
				s := mustOpen(t, o)
				putRange(t, s, "c1", 0, 200, 7)
				if err := s.Checkpoint(); err != nil {
					t.Fatal(err)
				}
				putRange(t, s, "c1", 200, 400, 13)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				for p, b := range storeFiles(t, fs, o) {
					leak := bytes.Contains(b, []byte("event-12")) || (strings.Contains(p, "checkpoint") && bytes.Contains(b, []byte("c1")))
					if enc && leak {
						t.Fatalf("%s holds plaintext", p)
					}
					if !enc && comp == "" && strings.HasSuffix(p, "0000000001.wal") && !bytes.Contains(b, []byte("event-12")) {
						t.Fatalf("%s: plaintext store does not hold plaintext?", p)
					}
				}
				// Half after a clean restart, half after a kill.
				s = mustOpen(t, o)
				got := drain(t, s, "c1")
				if !slices.Equal(got, seq(0, 400)) {
					t.Fatalf("got %d events", len(got))
				}
				putRange(t, s, "c1", 400, 500, 10)
				clone := killClone(fs)
				s.Close()
				o.FS = clone
				s = mustOpen(t, o)
				defer s.Close()
				if got := drain(t, s, "c1"); !slices.Equal(got, seq(400, 500)) {
					t.Fatalf("after kill: got %d events", len(got))
				}
			})
		}
	}
}

func TestFileKeyRotationThreeKeys(t *testing.T) {
	keys := cryptoKeys(t, 1, 2, 3)
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 2)
	o.Compression = "s2"
	o.Encryption = testKeyring(t, keys[:1], 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 300, 10) // several 64 KiB segments under key 1
	// Hot rotation (SIGHUP): a key file that now also holds key 2.
	if err := s.Rekey(testKeyring(t, keys[:2], 2)); err != nil {
		t.Fatal(err)
	}
	if s.EncryptionKey() != 2 {
		t.Fatalf("active key %d", s.EncryptionKey())
	}
	putRange(t, s, "c1", 300, 600, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Restart with a config change: key 3 active.
	o.Encryption = testKeyring(t, keys, 3)
	s = mustOpen(t, o)
	putRange(t, s, "c1", 600, 900, 10)
	for id := uint16(1); id <= 3; id++ {
		if id == 3 && s.crypt.codec.Sealed(3) == 0 {
			t.Fatal("nothing sealed with key 3")
		}
	}
	clone := killClone(fs) // no final checkpoint: key-3 records are replayed
	s.Close()
	o.FS = clone
	s = mustOpen(t, o)
	defer s.Close()
	if got := drain(t, s, "c1"); !slices.Equal(got, seq(0, 900)) {
		t.Fatalf("got %d events (first %v)", len(got), got[:min(len(got), 5)])
	}
	st, _ := s.Stats(context.Background(), "c1")
	if st.CorruptEventsSkipped != 0 {
		t.Fatalf("%d events skipped", st.CorruptEventsSkipped)
	}
}

// rotatedStore writes events under key 1 then key 2 and closes; both
// checkpoint generations end up sealed with key 2.
func rotatedStore(t *testing.T) (*vfs.MemFS, Options, []crypto.Key) {
	keys := cryptoKeys(t, 1, 2)
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.Encryption = testKeyring(t, keys, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 100, 10)
	if err := s.SetActiveKey(2); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", 100, 200, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.Encryption = testKeyring(t, keys, 2)
	return fs, o, keys
}

func expectRefused(t *testing.T, fs vfs.FS, o Options, want ...string) {
	t.Helper()
	before := listing(t, fs, o)
	s, err := Open(o)
	if err == nil {
		s.Close()
		t.Fatalf("open succeeded, want an error mentioning %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
	if after := listing(t, fs, o); !mapsEqual(before, after) {
		t.Fatalf("a refused open changed the store:\nbefore %v\nafter  %v", before, after)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestFileMissingKeyFailsClosed(t *testing.T) {
	fs, o, keys := rotatedStore(t)
	good := o

	// Key 1 removed: WAL segments still hold records sealed with it.
	o.Encryption = testKeyring(t, keys[1:], 2)
	expectRefused(t, fs, o, "key id 1", "/etc/sluice/test.keys")
	// Key 2 removed: the checkpoints and newer records are sealed with it.
	o.Encryption = testKeyring(t, keys[:1], 1)
	expectRefused(t, fs, o, "key id 2", "/etc/sluice/test.keys")
	// No key file at all.
	o.Encryption = nil
	expectRefused(t, fs, o, "no encryption key file")
	// Without any copy of the manifest the checkpoints and records still
	// fail closed.
	saved := removeManifests(t, fs, good)
	o.Encryption = nil
	expectRefused(t, fs, o, "sealed")
	o.Encryption = testKeyring(t, keys[:1], 1)
	expectRefused(t, fs, o, "deleted or replaced")
	o.Encryption = good.Encryption
	expectRefused(t, fs, o, "deleted or replaced")
	restoreFiles(t, fs, saved)

	s := expectAll(t, good, seq(0, 200))
	s.Close()
}

func TestFileWrongKeyFailsClosed(t *testing.T) {
	fs, o, keys := rotatedStore(t)
	wrong := cryptoKeys(t, 1, 2)
	// The manifest is authenticated with the active key 2: a wrong key 2
	// fails there, before anything is read.
	o.Encryption = testKeyring(t, []crypto.Key{keys[0], wrong[1]}, 2)
	expectRefused(t, fs, o, "key id 2", "failed authentication", "/etc/sluice/test.keys", cryptoManifestName)
	o.Encryption = testKeyring(t, []crypto.Key{wrong[0], keys[1]}, 2)
	expectRefused(t, fs, o, "key id 1", "not the key")
	// Without the manifest: still no fallback to a replay that would skip
	// every record as damaged.
	removeManifests(t, fs, o)
	o.Encryption = testKeyring(t, wrong, 2)
	expectRefused(t, fs, o, "deleted or replaced")
}

// removeManifests deletes every copy of the crypto manifest and returns
// their contents.
func removeManifests(t *testing.T, fs vfs.FS, o Options) map[string][]byte {
	t.Helper()
	saved := map[string][]byte{}
	for _, p := range manifestPaths(fs, o) {
		if _, err := fs.Stat(p); err != nil {
			continue
		}
		saved[p] = readAll(t, fs, p)
		if err := fs.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if len(saved) == 0 {
		t.Fatal("no crypto manifest found")
	}
	return saved
}

func restoreFiles(t *testing.T, fs vfs.FS, files map[string][]byte) {
	t.Helper()
	for p, b := range files {
		writeFile(t, fs, p, b)
	}
}

func writeFile(t *testing.T, fs vfs.FS, p string, b []byte) {
	t.Helper()
	f, err := fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// walRecords lists (offset, type, length) of the valid-looking records of a
// segment image.
func walRecords(b []byte) (offs []int, types []byte, lens []int) {
	for off := 32; off+28 <= len(b); {
		typ := b[off+8]
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		if typ == 0 || typ > 5 {
			break
		}
		offs, types, lens = append(offs, off), append(types, typ), append(lens, n)
		off += (28 + n + 7) &^ 7
	}
	return
}

// tamperRecord flips a ciphertext byte of the first put record of the
// segment and recomputes the record CRC, as an attacker would: only the
// AES-GCM tag can catch it.
func tamperRecord(t *testing.T, fs vfs.FS, path string, segID uint32) {
	t.Helper()
	b := readAll(t, fs, path)
	offs, types, lens := walRecords(b)
	for i, off := range offs {
		if types[i] != 1 {
			continue
		}
		rec := b[off : off+28+lens[i]]
		rec[28+lens[i]/2] ^= 0x01
		var seed [4]byte
		binary.LittleEndian.PutUint32(seed[:], segID)
		tab := crc32.MakeTable(crc32.Castagnoli)
		crc := crc32.Update(crc32.Update(0, tab, seed[:]), tab, rec[4:])
		binary.LittleEndian.PutUint32(rec[0:4], crc)
		f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt(rec, int64(off))
		f.Sync()
		f.Close()
		return
	}
	t.Fatal("no put record found")
}

func firstSegment(t *testing.T, fs vfs.FS, dir string) (string, uint32) {
	names, _ := fs.List(dir)
	sort.Strings(names)
	for _, n := range names {
		var id uint32
		if _, err := fmt.Sscanf(n, "%010d.wal", &id); err == nil {
			return fs.PathJoin(dir, n), id
		}
	}
	t.Fatal("no segment")
	return "", 0
}

func TestFileTamperedRecord(t *testing.T) {
	keys := cryptoKeys(t, 1)
	for _, replayed := range []bool{false, true} {
		t.Run(fmt.Sprintf("replayed=%v", replayed), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			o := testFileOptions(fs, 1)
			o.Encryption = testKeyring(t, keys, 1)
			o.Compression = "zstd"
			s := mustOpen(t, o)
			putRange(t, s, "c1", 0, 50, 1) // one event per txn: the first put record is event 0
			var cur vfs.FS = fs
			if replayed {
				clone := killClone(fs)
				s.Close()
				cur = clone
			} else if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			o.FS = cur
			path, id := firstSegment(t, cur, "/data0")
			tamperRecord(t, cur, path, id)
			if replayed {
				// A CRC-valid record failing authentication is tampering
				// (or a wrong key), not media damage: fail closed.
				expectRefused(t, cur, o, "key id 1", path, "failed authentication", "/etc/sluice/test.keys")
				return
			}
			s = mustOpen(t, o)
			defer s.Close()
			got := drain(t, s, "c1")
			if !slices.Equal(got, seq(1, 50)) {
				t.Fatalf("got %v", got)
			}
			st, _ := s.Stats(context.Background(), "c1")
			if st.CorruptEventsSkipped != 1 {
				t.Fatalf("take skipped %d events, want 1", st.CorruptEventsSkipped)
			}
			// The segment holding it is never garbage collected.
			for range 3 {
				if err := s.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cur.Stat(path); err != nil || !s.keepSegment(id) {
				t.Fatalf("segment with an authentication failure was removed: %v", err)
			}
			// Also after a restart (the manifest quarantines it).
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = mustOpen(t, o)
			defer s.Close()
			for range 3 {
				if err := s.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := cur.Stat(path); err != nil || !s.keepSegment(id) {
				t.Fatalf("after a restart, the segment with an authentication failure was removed: %v", err)
			}
		})
	}
}

func TestFileTamperedCheckpoint(t *testing.T) {
	keys := cryptoKeys(t, 1)
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.Encryption = testKeyring(t, keys, 1)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 100, 10)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cands := checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, s.checkpointSealer())
	newest := cands[0].Path
	if cands[0].Err != nil || cands[1].Err != nil {
		t.Fatalf("checkpoints: %v %v", cands[0].Err, cands[1].Err)
	}
	// Flip a byte of the sealed body and fix the file CRC.
	b := readAll(t, fs, newest)
	b[20] ^= 0x01
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32.MakeTable(crc32.Castagnoli)))
	f, _ := fs.Create(newest, vfs.WriteCategoryUnspecified)
	f.Write(b)
	f.Sync()
	f.Close()
	s = expectAll(t, o, seq(0, 100))
	defer s.Close()
	if s.StoreStats().CheckpointFallbacks == 0 {
		t.Fatal("the tampered checkpoint was not reported")
	}
}

func TestFileEnableEncryptionOnPlaintextStore(t *testing.T) {
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 2)
	s := mustOpen(t, o)
	putRange(t, s, "c1", 0, 100, 10)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	keys := cryptoKeys(t, 1)
	o.Encryption = testKeyring(t, keys, 1)
	o.Compression = "s2"
	s = mustOpen(t, o)
	if s.StoreStats().CheckpointFallbacks != 0 {
		t.Fatal("the plaintext checkpoint was not used")
	}
	putRange(t, s, "c1", 100, 200, 10)
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, nil) {
		if !errors.Is(c.Err, checkpoint.ErrSealed) {
			t.Fatalf("%s is not sealed: %v", c.Path, c.Err)
		}
	}
	// A plaintext checkpoint dropped in now is refused like a corrupt one.
	plain, err := checkpoint.Marshal(&checkpoint.Checkpoint{Generation: 1000, WOID: 1 << 40}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cands := checkpoint.Load(fs, o.CheckpointDir, o.BackupCheckpointDir, nil)
	victim := cands[len(cands)-1].Path
	f, _ := fs.Create(victim, vfs.WriteCategoryUnspecified)
	f.Write(plain)
	f.Close()
	s = expectAll(t, o, seq(0, 200))
	if s.StoreStats().CheckpointFallbacks == 0 {
		t.Fatal("the planted plaintext checkpoint was not refused")
	}
	s.Close()
}

func TestFileRekeyRefusesMissingKeys(t *testing.T) {
	keys := cryptoKeys(t, 1, 2, 3)
	fs := vfs.NewCrashableMem()
	o := testFileOptions(fs, 1)
	o.Encryption = testKeyring(t, keys[:1], 1)
	s := mustOpen(t, o)
	defer s.Close()
	putRange(t, s, "c1", 0, 50, 10)
	if err := s.Rekey(testKeyring(t, keys[1:2], 2)); err == nil || !strings.Contains(err.Error(), "key id 1") {
		t.Fatalf("rekey without the old key: %v", err)
	}
	wrong := cryptoKeys(t, 1)
	if err := s.Rekey(testKeyring(t, []crypto.Key{wrong[0], keys[1]}, 2)); err == nil || !strings.Contains(err.Error(), "not the key") {
		t.Fatalf("rekey with a wrong old key: %v", err)
	}
	if s.EncryptionKey() != 1 {
		t.Fatalf("active key changed to %d", s.EncryptionKey())
	}
	if err := s.SetActiveKey(3); err == nil {
		t.Fatal("activated a key that is not in the keyring")
	}
	if err := s.Rekey(testKeyring(t, keys, 3)); err != nil {
		t.Fatal(err)
	}
	putRange(t, s, "c1", 50, 100, 10)
	if got := drain(t, s, "c1"); !slices.Equal(got, seq(0, 100)) {
		t.Fatalf("got %d", len(got))
	}
}

// TestFileCrashSimulationEncrypted runs the crash model of
// TestFileCrashSimulation with encryption and compression on, rotating the
// active key between rounds and once during a round.
func TestFileCrashSimulationEncrypted(t *testing.T) {
	n := crashSeeds(t) / 4
	for seed := range n {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runCryptoCrashSeed(t, uint64(seed))
		})
	}
}

func runCryptoCrashSeed(t *testing.T, seed uint64) {
	keys := cryptoKeys(t, 1, 2, 3, 4, 5)
	runCrashSeed(t, seed, crashVariant{
		seedRand: 0xc0de,
		setup: func(rng *rand.Rand, o *Options) {
			o.Compression = []string{"", "zstd", "s2"}[rng.IntN(3)]
		},
		round: func(round int, o *Options) {
			o.Encryption = testKeyring(t, keys[:2+round], uint16(1+round))
		},
		action: func(round int, s *Store, _ *rand.Rand) {
			// A hot rotation to the round's newest key.
			if err := s.SetActiveKey(uint16(2 + round)); err != nil && !errors.Is(err, channel.ErrClosed) {
				t.Errorf("round %d: rotate: %v", round, err)
			}
		},
	})
}

// Benchmarks (steady regime, see benchPut): 1 KiB events, 100 per commit, as BenchmarkFilePut's
// size=1024/batch=100 points; compare events/s with those.

func benchVariants(b *testing.B, mutate func(*Options)) {
	for _, producers := range []int{1, 16} {
		b.Run(fmt.Sprintf("size=1024/batch=100/producers=%d", producers), func(b *testing.B) {
			benchPut(b, benchSteadyStore(b, mutate), 1024, 100, producers, true)
		})
	}
}

func BenchmarkFilePutPlain(b *testing.B) {
	benchVariants(b, func(*Options) {})
}

func BenchmarkFilePutEncrypted(b *testing.B) {
	kr := testKeyring(b, cryptoKeys(b, 1), 1)
	benchVariants(b, func(o *Options) { o.Encryption = kr })
}

func BenchmarkFilePutCompressed(b *testing.B) {
	for _, comp := range []string{"zstd", "s2"} {
		b.Run(comp, func(b *testing.B) {
			benchVariants(b, func(o *Options) { o.Compression = comp })
		})
	}
}

func BenchmarkFilePutEncryptedCompressed(b *testing.B) {
	kr := testKeyring(b, cryptoKeys(b, 1), 1)
	for _, comp := range []string{"zstd", "s2"} {
		b.Run(comp, func(b *testing.B) {
			benchVariants(b, func(o *Options) { o.Encryption = kr; o.Compression = comp })
		})
	}
}

// BenchmarkFilePutEncryptionCost measures what encryption costs with the
// disk's drift cancelled out: a plain and an encrypted store (steady regime,
// same directory's file system) take turns, round by round (at most
// benchCycleBytes/8 of WAL each, drained untimed in between), so both see the
// same disk. It reports each store's events/s and the cost, 1 - encrypted /
// plain, in percent.
func BenchmarkFilePutEncryptionCost(b *testing.B) {
	kr := testKeyring(b, cryptoKeys(b, 1), 1)
	const size, batch = 1024, 100
	for _, producers := range []int{1, 16} {
		b.Run(fmt.Sprintf("size=%d/batch=%d/producers=%d", size, batch, producers), func(b *testing.B) {
			stores := []*Store{
				benchSteadyStore(b, func(*Options) {}),
				benchSteadyStore(b, func(o *Options) { o.Encryption = kr }),
			}
			body := benchBody(size)
			perCommit := batch * (size + recordOverhead)
			warm := benchCycleBytes / (1000 * (size + recordOverhead))
			for _, s := range stores {
				benchPutRound(b, s, body, 1000, 1, warm+1)
				benchDrain(b, s)
			}
			round := max(1, benchCycleBytes/8/perCommit)
			var spent [2]time.Duration
			var done [2]int
			b.ResetTimer()
			for left := b.N; left > 0; {
				n := min(left, round)
				for i, s := range stores {
					start := time.Now()
					benchPutRound(b, s, body, batch, producers, n)
					spent[i] += time.Since(start)
					done[i] += n
					b.StopTimer()
					benchDrain(b, s)
					b.StartTimer()
				}
				left -= n
			}
			rate := func(i int) float64 { return float64(done[i]*batch) / spent[i].Seconds() }
			b.ReportMetric(rate(0), "plain-events/s")
			b.ReportMetric(rate(1), "encrypted-events/s")
			b.ReportMetric(100*(1-rate(1)/rate(0)), "cost-%")
		})
	}
}
