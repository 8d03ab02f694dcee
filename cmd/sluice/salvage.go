package main

// sluice salvage: copy every valid, committed, not-yet-taken event of a
// (possibly damaged) file store into a fresh store and report exactly what
// could not be copied.
//
// Approach. Salvage does not open the damaged store with filestore.Open:
// recovery there needs a checkpoint whose queue digests match or falls back
// to a full replay anyway, writes a new checkpoint and may truncate a torn
// tail — salvage must not change the source. Instead it:
//
//  1. opens the WAL read-only in spirit (wal.Open locks the directories and
//     writes nothing but missing lock files) with the store's key file, and
//     replays the whole log (nil frontier) in write order, decoding the
//     put/take/commit payloads itself (layout in channel/filestore/codec.go):
//     committed puts minus committed takes, uncommitted and rolled-back
//     transactions dropped, order per channel = commit order;
//  2. if a checkpoint is usable (it decodes and every queue file it names
//     opens with its digest), uses it as a filter for records at or below its
//     write-order id W: a put with WOID <= W survives only if the checkpoint
//     still holds its pointer (queued, or in an in-flight put or take
//     transaction). This removes events whose take record lived in a segment
//     that segment GC already deleted. With no usable checkpoint (corrupt,
//     missing) the filter is skipped: such events may then be copied again
//     (at-least-once, never a loss), and the report says so;
//  3. reads each surviving event's put record again (wal.ReadRecord, so
//     bodies are never all held in RAM) and puts it into the new store
//     opened with filestore.Open on the target directories.
//
// What is reported as lost: every damaged WAL range (file, bytes, estimated
// records), every CRC-valid put record whose payload cannot be decoded, and
// committed put transactions whose commit record counts more events than
// readable put records (the rest was in a damaged range). Put transactions
// without a commit record are listed too (normally in flight at a crash; with
// damage, their commit may have been lost). Exit 0 when nothing was lost, 1
// when something was (or on an error), 2 on a usage error.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/queue"
	"github.com/sluicehq/sluice/wal"
)

// salvagePut is one put record seen by the replay.
type salvagePut struct {
	ptr     wal.Pointer
	woid    uint64
	channel string
	idx     int // its place among the txn's put records, readable or not
}

// salvageTxn is a put transaction being replayed.
type salvageTxn struct {
	puts       []salvagePut
	unreadable int // CRC-valid put records whose payload does not decode
	bad        map[wal.Pointer]error
	badIdx     map[wal.Pointer]int
	takes      []uint64
	hasTake    bool
}

// salvageState rebuilds the committed, untaken events of a WAL.
type salvageState struct {
	txns      map[uint64]*salvageTxn
	committed []salvagePut          // in commit order
	taken     map[uint64]bool       // pointers removed by committed takes
	lost      []string              // human-readable losses
	notes     []string              // things worth knowing that are not losses
	bad       map[wal.Pointer]error // put records whose payload does not decode
	// done remembers what each commit applied, so a later rollback record
	// of the same txn (the store's retraction of a commit whose fdatasync
	// failed) can undo it, as replay does.
	done map[uint64]salvageDone
}

// salvageDone is what one commit applied: committed[start:end] or takes.
type salvageDone struct {
	start, end int
	takes      []uint64
}

func newSalvageState() *salvageState {
	return &salvageState{txns: map[uint64]*salvageTxn{}, taken: map[uint64]bool{}, bad: map[wal.Pointer]error{},
		done: map[uint64]salvageDone{}}
}

func (s *salvageState) txn(id uint64) *salvageTxn {
	t := s.txns[id]
	if t == nil {
		t = &salvageTxn{}
		s.txns[id] = t
	}
	return t
}

func (s *salvageState) record(rec wal.Record, p wal.Pointer) {
	switch rec.Type {
	case wal.RecordPut:
		t := s.txn(rec.TxnID)
		idx := len(t.puts) + t.unreadable
		ch, err := decodeSalvageEvent(rec.Payload, nil)
		if err != nil {
			t.unreadable++
			if t.bad == nil {
				t.bad, t.badIdx = map[wal.Pointer]error{}, map[wal.Pointer]int{}
			}
			t.bad[p], t.badIdx[p] = err, idx
			return
		}
		t.puts = append(t.puts, salvagePut{ptr: p, woid: rec.WOID, channel: ch, idx: idx})
	case wal.RecordTake:
		t := s.txn(rec.TxnID)
		t.hasTake = true
		ptrs, err := decodeSalvageTake(rec.Payload)
		if err != nil {
			s.notes = append(s.notes, fmt.Sprintf("take record %s (txn %d) does not decode (%v): the events it removed may be copied again", p, rec.TxnID, err))
			return
		}
		t.takes = append(t.takes, ptrs...)
	case wal.RecordCommit:
		t := s.txns[rec.TxnID]
		delete(s.txns, rec.TxnID)
		events, skip, err := decodeSalvageCommit(rec.Payload)
		if t == nil {
			t = &salvageTxn{}
		}
		for _, q := range t.takes {
			s.taken[q] = true
		}
		// A take that put events (a move, TakeTxn.Put) applies both at
		// its commit, as replay does. A per-event put stores all but its first skip events (its
		// producer had committed them before). Counted from the first
		// record seen: should records be missing, a duplicate may be
		// copied, never an event lost.
		start := len(s.committed)
		for _, sp := range t.puts {
			if uint64(sp.idx) >= skip {
				s.committed = append(s.committed, sp)
			}
		}
		s.done[rec.TxnID] = salvageDone{start: start, end: len(s.committed), takes: t.takes}
		for bp, berr := range t.bad {
			if uint64(t.badIdx[bp]) >= skip {
				s.bad[bp] = berr
			}
		}
		if found := uint64(len(t.puts) + t.unreadable + len(t.takes)); err == nil && events > found && len(t.puts)+t.unreadable > 0 {
			n := events - found
			s.lost = append(s.lost, fmt.Sprintf("committed put transaction %d (commit record %s): %d of its %d events have no readable put record (damaged range)", rec.TxnID, p, n, events))
		}
	case wal.RecordRollback:
		delete(s.txns, rec.TxnID)
		if d, ok := s.done[rec.TxnID]; ok { // a retracted commit
			for _, q := range d.takes {
				delete(s.taken, q)
			}
			for i := d.start; i < d.end; i++ {
				s.committed[i].ptr = 0 // not copied
			}
			delete(s.done, rec.TxnID)
			s.notes = append(s.notes, fmt.Sprintf("transaction %d: its commit was retracted (its fdatasync failed and the store rolled it back): not applied", rec.TxnID))
		}
	}
}

// Payload decoders, following the layouts documented in
// channel/filestore/codec.go. They never panic and never allocate from an
// unchecked length.

type salvageReader struct {
	b   []byte
	err error
}

var errSalvagePayload = errors.New("malformed record payload")

func (r *salvageReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errSalvagePayload
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *salvageReader) take(n uint64) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errSalvagePayload
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *salvageReader) str() string { return string(r.take(r.uvarint())) }

// decodeSalvageEvent decodes a put payload; ev, when not nil, receives the
// event (owning its memory).
func decodeSalvageEvent(p []byte, ev *channel.Event) (string, error) {
	r := &salvageReader{b: p}
	ch := r.str()
	size := r.uvarint()
	r.take(8) // put time
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b))/2 {
		r.err = errSalvagePayload
	}
	var hdr map[string]string
	if r.err == nil && n > 0 {
		hdr = make(map[string]string, n)
		for i := uint64(0); i < n && r.err == nil; i++ {
			k := r.str()
			hdr[k] = r.str()
		}
	}
	if r.err != nil {
		return "", r.err
	}
	e := channel.Event{Headers: hdr, Body: append([]byte(nil), r.b...)}
	if uint64(e.Size()) != size {
		return "", fmt.Errorf("%w: event size %d, record says %d", errSalvagePayload, e.Size(), size)
	}
	if ch == "" {
		return "", fmt.Errorf("%w: empty channel name", errSalvagePayload)
	}
	if ev != nil {
		*ev = e
	}
	return ch, nil
}

func decodeSalvageTake(p []byte) ([]uint64, error) {
	r := &salvageReader{b: p}
	r.str()
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b))/9 {
		return nil, errSalvagePayload
	}
	out := make([]uint64, 0, n)
	for i := uint64(0); i < n && r.err == nil; i++ {
		b := r.take(8)
		r.uvarint()
		if r.err == nil {
			out = append(out, binary.LittleEndian.Uint64(b))
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errSalvagePayload
	}
	return out, r.err
}

// decodeSalvageCommit returns a commit's event count and how many leading
// put events it does not store (absent: 0).
func decodeSalvageCommit(p []byte) (events, skip uint64, err error) {
	r := &salvageReader{b: p}
	r.str()
	r.uvarint()
	events = r.uvarint()
	if r.err == nil && len(r.b) != 0 {
		skip = r.uvarint()
		if r.err == nil && (skip == 0 || skip > events) {
			r.err = errSalvagePayload
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = errSalvagePayload
	}
	return events, skip, r.err
}

// usableCheckpoint returns the newest checkpoint whose queue files all open
// with its digests, and the set of pointers it holds (queued or in flight).
func usableCheckpoint(st config.Store, sealer checkpoint.Sealer) (*checkpoint.Checkpoint, map[uint64]bool, []string) {
	o := st.File
	var why []string
	for _, c := range checkpoint.Load(vfs.Default, o.CheckpointDir, o.BackupCheckpointDir, sealer) {
		if c.Err != nil {
			why = append(why, fmt.Sprintf("checkpoint %s unusable: %v", c.Path, c.Err))
			continue
		}
		live, err := checkpointPointers(o, c.Checkpoint)
		if err != nil {
			why = append(why, fmt.Sprintf("checkpoint %s unusable: %v", c.Path, err))
			continue
		}
		return c.Checkpoint, live, why
	}
	return nil, nil, why
}

func checkpointPointers(o filestore.Options, cp *checkpoint.Checkpoint) (map[uint64]bool, error) {
	live := map[uint64]bool{}
	for _, ch := range cp.Channels {
		q, err := queue.Open(queue.Options{Dir: o.CheckpointDir, BackupDir: o.BackupCheckpointDir, Name: ch.Name,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), CheckKey: cp.DigestKey},
			&queue.State{Gen: ch.Gen, Head: ch.Head, Size: ch.Size, Capacity: ch.Capacity, Digest: ch.Digest})
		if err != nil {
			return nil, err
		}
		for i := uint64(0); i < q.Len(); i++ {
			live[q.At(i)] = true
		}
		q.Close()
	}
	for _, t := range cp.PutTxns {
		for _, e := range t.Entries {
			live[e.Pointer] = true
		}
	}
	for _, t := range cp.TakeTxns {
		for _, e := range t.Entries {
			live[e.Pointer] = true
		}
	}
	return live, nil
}

func runSalvage(args []string) int {
	fs := newFlagSet("salvage", "--from-config FILE [--name AGENT] | --data-dirs D1,D2 --checkpoint-dir C [--key-file K]  --to-data-dirs X --to-checkpoint-dir Y")
	var sf storeFlags
	sf.register(fs)
	fs.StringVar(&sf.configPath, "from-config", "", "configuration `file` whose (single) file store to salvage (same as --config)")
	var toData, toCkpt string
	var toSegSize int64
	fs.StringVar(&toData, "to-data-dirs", "", "data `dirs` of the new store, comma-separated (must hold no segments)")
	fs.StringVar(&toCkpt, "to-checkpoint-dir", "", "checkpoint `dir` of the new store (must hold no checkpoint)")
	fs.Int64Var(&toSegSize, "to-segment-size", 0, "WAL segment size of the new store in `bytes` (default: the source's)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if toData == "" || toCkpt == "" {
		fmt.Fprintln(os.Stderr, "sluice salvage: --to-data-dirs and --to-checkpoint-dir are required")
		fs.Usage()
		return 2
	}
	if sf.configPath == "" && sf.dataDirs == "" {
		fmt.Fprintln(os.Stderr, "sluice salvage: name the damaged store with --from-config or --data-dirs/--checkpoint-dir")
		fs.Usage()
		return 2
	}
	stores, err := sf.stores()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice salvage: %v\n", err)
		return 2
	}
	if len(stores) != 1 {
		fmt.Fprintf(os.Stderr, "sluice salvage: the configuration has %d file stores; salvage one at a time with --data-dirs\n", len(stores))
		return 2
	}
	var dirs []string
	for _, d := range strings.Split(toData, ",") {
		if d = strings.TrimSpace(d); d != "" {
			dirs = append(dirs, d)
		}
	}
	lost, err := salvage(os.Stdout, stores[0], dirs, toCkpt, toSegSize)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice salvage: %v\n", err)
		return 1
	}
	if lost {
		fmt.Println("LOSS: some events could not be salvaged (see above)")
		return 1
	}
	fmt.Println("nothing lost")
	return 0
}

// salvage copies st into a new store on dirs/ckptDir; it reports whether
// anything was lost.
func salvage(out io.Writer, st config.Store, dirs []string, ckptDir string, segSize int64) (bool, error) {
	o := st.File
	for _, d := range append(append([]string{}, o.DataDirs...), o.CheckpointDir) {
		if _, err := os.Stat(d); err != nil {
			return false, err
		}
	}
	if err := checkFreshTarget(dirs, ckptDir, o); err != nil {
		return false, err
	}
	kr, err := st.Keyring()
	if err != nil {
		return false, fmt.Errorf("encryption: %w", err)
	}
	// Records the store would refuse (unsealed in an encrypted segment,
	// failing authentication) are skipped as damage, never salvaged.
	pol, _, err := filestore.ReadCryptoPolicy(vfs.Default, o, kr)
	if err != nil {
		return false, err
	}
	codec, err := crypto.NewCodec(crypto.CodecOptions{Keyring: kr, Policy: &pol, TolerateAuthFailures: true})
	if err != nil {
		return false, err
	}
	defer codec.Close()
	var sealer checkpoint.Sealer
	if kr != nil {
		sealer = codec.Sealer()
	}
	fmt.Fprintf(out, "salvaging %s\n", describeStore(st))
	cp, live, why := usableCheckpoint(st, sealer)
	for _, w := range why {
		fmt.Fprintf(out, "  note: %s\n", w)
	}
	if cp == nil {
		fmt.Fprintln(out, "  note: no usable checkpoint: events whose take record was in a segment already removed by GC may be copied again (at-least-once)")
	} else {
		fmt.Fprintf(out, "  using checkpoint generation %d (W=%d) to filter events taken before it\n", cp.Generation, cp.WOID)
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := wal.Open(wal.Options{FS: vfs.Default, Dirs: o.DataDirs, SegmentSize: o.SegmentSize, Codec: codec, Logger: quiet})
	if err != nil {
		return false, fmt.Errorf("%w (is a server using the store?)", err)
	}
	defer w.Close()
	s := newSalvageState()
	stats, err := w.Replay(nil, func(rec wal.Record, p wal.Pointer) error {
		s.record(rec, p)
		return nil
	}, nil)
	if err != nil {
		return false, fmt.Errorf("WAL scan: %w", err)
	}
	lost := false
	for _, d := range stats.Damaged {
		lost = true
		fmt.Fprintf(out, "  LOST: damaged WAL range %s bytes %d-%d (~%d records): %s\n", d.File, d.Start, d.End, d.EstimatedRecords, d.Reason)
	}
	// A checkpoint's committing put transactions are committed even if the
	// commit record is unreadable (only the events the checkpoint names: a
	// per-event put does not store the ones its producer had committed);
	// the others are reported.
	if cp != nil {
		for _, pt := range cp.PutTxns {
			if t := s.txns[pt.TxnID]; t != nil && pt.Committing && !t.hasTake {
				stored := map[uint64]bool{}
				for _, e := range pt.Entries {
					stored[e.Pointer] = true
				}
				for _, sp := range t.puts {
					if stored[uint64(sp.ptr)] {
						s.committed = append(s.committed, sp)
					}
				}
				delete(s.txns, pt.TxnID)
			}
		}
	}
	ids := make([]uint64, 0, len(s.txns))
	for id, t := range s.txns {
		if !t.hasTake && len(t.puts)+t.unreadable > 0 {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		t := s.txns[id]
		fmt.Fprintf(out, "  note: put transaction %d has no commit or rollback record (%d events, not copied: in flight at a crash, or its commit was in a damaged range)\n", id, len(t.puts)+t.unreadable)
	}
	badPtrs := make([]wal.Pointer, 0, len(s.bad))
	for p := range s.bad {
		badPtrs = append(badPtrs, p)
	}
	sort.Slice(badPtrs, func(i, j int) bool { return badPtrs[i] < badPtrs[j] })
	for _, p := range badPtrs {
		lost = true
		fmt.Fprintf(out, "  LOST: put record %s is unreadable: %v\n", p, s.bad[p])
	}
	for _, l := range s.lost {
		lost = true
		fmt.Fprintf(out, "  LOST: %s\n", l)
	}
	for _, n := range s.notes {
		fmt.Fprintf(out, "  note: %s\n", n)
	}

	// The surviving events, per channel in commit order.
	perChan := map[string][]wal.Pointer{}
	var names []string
	if cp != nil {
		for _, ch := range cp.Channels {
			if _, ok := perChan[ch.Name]; !ok {
				perChan[ch.Name] = nil
				names = append(names, ch.Name)
			}
		}
	}
	for _, n := range st.Channels {
		if _, ok := perChan[n]; !ok {
			perChan[n] = nil
			names = append(names, n)
		}
	}
	for _, e := range s.committed {
		if e.ptr == 0 || s.taken[uint64(e.ptr)] { // 0: a retracted commit's
			continue
		}
		if cp != nil && e.woid <= cp.WOID && !live[uint64(e.ptr)] {
			continue
		}
		if _, ok := perChan[e.channel]; !ok {
			names = append(names, e.channel)
		}
		perChan[e.channel] = append(perChan[e.channel], e.ptr)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return lost, errors.New("no channel names found (no usable checkpoint, no configuration and no put records)")
	}

	// The new store.
	nopts := filestore.Options{DataDirs: dirs, CheckpointDir: ckptDir, SegmentSize: o.SegmentSize,
		CheckpointInterval: -1, MinFreeBytes: -1, Logger: quiet, Encryption: kr, Compression: o.Compression,
		MaxEventSize: st.MaxEventSize()}
	if segSize > 0 {
		nopts.SegmentSize = segSize
		nopts.MaxEventSize = int(min(int64(nopts.MaxEventSize), segSize/4))
	}
	const batch = 1000
	step := map[string]int{}
	cfgs := map[string]channel.ChannelConfig{}
	for _, c := range o.Channels {
		cfgs[c.Name] = c
	}
	for _, n := range names {
		c, ok := cfgs[n]
		if !ok {
			c = channel.ChannelConfig{Name: n}
		}
		c.EnsureDefaults()
		c.KeepAlive = 0
		c.MaxBytes = 0
		if need := int64(len(perChan[n])); c.Capacity < need {
			c.Capacity = need
		}
		if tc := int(min(int64(batch), c.Capacity)); c.TransactionCapacity < tc {
			c.TransactionCapacity = tc
		}
		c.TransactionCapacity = int(min(int64(c.TransactionCapacity), c.Capacity))
		step[n] = min(c.TransactionCapacity, batch)
		nopts.Channels = append(nopts.Channels, c)
	}
	dst, err := filestore.Open(nopts)
	if err != nil {
		return lost, fmt.Errorf("new store: %w", err)
	}
	ctx := context.Background()
	var buf []byte
	for _, n := range names {
		ptrs := perChan[n]
		copied := 0
		for i := 0; i < len(ptrs); i += step[n] {
			end := min(i+step[n], len(ptrs))
			txn, err := dst.BeginPut(ctx, channel.PutOptions{})
			if err != nil {
				dst.Close()
				return lost, fmt.Errorf("new store: %w", err)
			}
			for _, p := range ptrs[i:end] {
				rec, err := w.ReadRecord(p, buf)
				var ev channel.Event
				if err == nil {
					buf = rec.Payload[:0]
					_, err = decodeSalvageEvent(rec.Payload, &ev)
				}
				if err != nil {
					lost = true
					fmt.Fprintf(out, "  LOST: put record %s of channel %s is unreadable on second read: %v\n", p, n, err)
					continue
				}
				if err := txn.Put(n, ev); err != nil {
					txn.Rollback()
					dst.Close()
					return lost, fmt.Errorf("new store: put into %s: %w", n, err)
				}
				copied++
			}
			if err := txn.Commit(ctx); err != nil {
				dst.Close()
				return lost, fmt.Errorf("new store: commit into %s: %w", n, err)
			}
		}
		fmt.Fprintf(out, "  channel %s: copied %d events\n", n, copied)
	}
	if err := dst.Close(); err != nil {
		return lost, fmt.Errorf("new store: close: %w", err)
	}
	return lost, nil
}

// checkFreshTarget refuses a target that already holds a store or that is
// the source itself.
func checkFreshTarget(dirs []string, ckptDir string, src filestore.Options) error {
	if len(dirs) == 0 {
		return errors.New("--to-data-dirs names no directory")
	}
	srcDirs := append(append([]string{}, src.DataDirs...), src.CheckpointDir, src.BackupCheckpointDir)
	for _, d := range append(append([]string{}, dirs...), ckptDir) {
		for _, s := range srcDirs {
			if s != "" && sameDir(d, s) {
				return fmt.Errorf("target directory %s is a directory of the source store", d)
			}
		}
		ents, err := os.ReadDir(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return err
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".wal") || strings.HasPrefix(e.Name(), "checkpoint.") {
				return fmt.Errorf("target directory %s already holds a store (%s)", d, e.Name())
			}
		}
	}
	return nil
}

func sameDir(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	return a == b
}
