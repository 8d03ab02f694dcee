package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/checkpoint"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/queue"
	"github.com/sluicehq/sluice/wal"
)

// storeFlags select the file stores of verify and inspect: those of a
// configuration (as serve), or one store given by its directories.
type storeFlags struct {
	configPath, agent       string
	dataDirs, checkpointDir string
	backupCheckpointDir     string
	keyFile                 string
}

func (s *storeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.configPath, "config", "", "configuration `file` whose file stores to read (default: the embedded default configuration)")
	fs.StringVar(&s.agent, "name", config.DefaultAgent, "agent `name` in the configuration")
	fs.StringVar(&s.dataDirs, "data-dirs", "", "instead of a configuration: the store's data `dirs`, comma-separated")
	fs.StringVar(&s.checkpointDir, "checkpoint-dir", "", "with --data-dirs: the checkpoint `dir`")
	fs.StringVar(&s.backupCheckpointDir, "backup-checkpoint-dir", "", "with --data-dirs: the backup checkpoint `dir`, if any")
	fs.StringVar(&s.keyFile, "key-file", "", "with --data-dirs: the encryption key `file` of an encrypted store")
}

func (s *storeFlags) stores() ([]config.Store, error) {
	if s.dataDirs != "" || s.checkpointDir != "" {
		if s.dataDirs == "" || s.checkpointDir == "" {
			return nil, errors.New("--data-dirs and --checkpoint-dir go together")
		}
		st := config.Store{Type: config.TypeFile}
		for _, d := range strings.Split(s.dataDirs, ",") {
			if d = strings.TrimSpace(d); d != "" {
				st.File.DataDirs = append(st.File.DataDirs, d)
			}
		}
		st.File.CheckpointDir, st.File.BackupCheckpointDir = s.checkpointDir, s.backupCheckpointDir
		st.KeyFile = s.keyFile
		return []config.Store{st}, nil
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var cfg *config.Config
	var err error
	if s.configPath == "" {
		cfg, err = config.LoadDefault(s.agent, quiet)
	} else {
		cfg, err = config.Load(s.configPath, s.agent, quiet)
	}
	if err != nil {
		return nil, err
	}
	var out []config.Store
	for _, st := range cfg.Stores() {
		if st.Type == config.TypeFile {
			out = append(out, st)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("the configuration has no file channels")
	}
	return out, nil
}

// storeReport is what verify and inspect read from one store.
type storeReport struct {
	Store       string                 `json:"store"`
	Checkpoints []checkpointReport     `json:"checkpoints"`
	Newest      *checkpoint.Checkpoint `json:"newestCheckpoint,omitempty"`
	Queues      []queueReport          `json:"queues"`
	Segments    []wal.SegmentInfo      `json:"segments"`
	Records     map[string]int64       `json:"records"`
	RecordBytes int64                  `json:"recordBytes"`
	MaxWOID     uint64                 `json:"maxWOID"`
	Damaged     []wal.Damage           `json:"damaged"`
	Torn        []filestore.TornTxn    `json:"tornTransactions"`
	Problems    []string               `json:"problems"`
}

type checkpointReport struct {
	Path       string `json:"path"`
	Generation uint64 `json:"generation,omitempty"`
	WOID       uint64 `json:"woid,omitempty"`
	Clean      bool   `json:"clean,omitempty"`
	Time       string `json:"time,omitempty"`
	Error      string `json:"error,omitempty"`
}

type queueReport struct {
	Channel string `json:"channel"`
	Path    string `json:"path"`
	Size    int64  `json:"fileSize"`
	Error   string `json:"error,omitempty"`
}

// readStore reads a file store without changing it: the checkpoint files,
// the queue files they name, and a full WAL scan. onRecord, when set, sees
// every valid record. The WAL directories are locked while it runs, so a
// store in use by a server is refused.
func readStore(st config.Store, onRecord func(wal.Record, wal.Pointer)) (*storeReport, error) {
	o := st.File
	r := &storeReport{Store: describeStore(st), Records: map[string]int64{}}
	for _, d := range append(append([]string{}, o.DataDirs...), o.CheckpointDir) {
		if _, err := os.Stat(d); err != nil {
			return nil, fmt.Errorf("%s: %w", r.Store, err)
		}
	}
	// Encrypted stores: the configured key file opens sealed records and
	// checkpoints (the codec reads every compressor).
	kr, err := st.Keyring()
	if err != nil {
		return nil, fmt.Errorf("%s: encryption: %w", r.Store, err)
	}
	// The authenticated crypto manifest says what the store is bound to
	// and which records must be sealed: records refused by it, and sealed
	// records failing authentication, are reported as damage.
	pol, encrypted, err := filestore.ReadCryptoPolicy(vfs.Default, o, kr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Store, err)
	}
	codec, err := crypto.NewCodec(crypto.CodecOptions{Keyring: kr, Policy: &pol, TolerateAuthFailures: true})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Store, err)
	}
	defer codec.Close()
	var sealer checkpoint.Sealer
	if kr != nil {
		sealer = codec.Sealer()
	}
	cands := checkpoint.Load(vfs.Default, o.CheckpointDir, o.BackupCheckpointDir, sealer)
	// A plaintext checkpoint from before encryption was turned on is
	// readable until the store's crypto manifest says it is encrypted (as
	// the store itself decides).
	for i, c := range cands {
		if errors.Is(c.Err, checkpoint.ErrNotSealed) && !encrypted {
			for _, p := range checkpoint.Load(vfs.Default, o.CheckpointDir, o.BackupCheckpointDir, nil) {
				if p.Path == c.Path {
					cands[i] = p
				}
			}
		}
	}
	for _, c := range cands {
		cr := checkpointReport{Path: c.Path}
		if c.Err != nil {
			cr.Error = c.Err.Error()
			r.Problems = append(r.Problems, fmt.Sprintf("checkpoint %s: %v", c.Path, c.Err))
		} else {
			cp := c.Checkpoint
			cr.Generation, cr.WOID, cr.Clean = cp.Generation, cp.WOID, cp.Clean
			cr.Time = time.Unix(0, cp.TimeUnixNano).UTC().Format(time.RFC3339Nano)
			if r.Newest == nil || cp.Generation > r.Newest.Generation {
				r.Newest = cp
			}
		}
		r.Checkpoints = append(r.Checkpoints, cr)
	}
	if r.Newest != nil {
		for _, ch := range r.Newest.Channels {
			qr := queueReport{Channel: ch.Name}
			qr.Path = queue.Path(queue.Options{Dir: o.CheckpointDir, BackupDir: o.BackupCheckpointDir, Name: ch.Name}, ch.Gen)
			if fi, err := os.Stat(qr.Path); err != nil {
				qr.Error = err.Error()
				r.Problems = append(r.Problems, fmt.Sprintf("queue of channel %s: %v", ch.Name, err))
			} else {
				qr.Size = fi.Size()
			}
			r.Queues = append(r.Queues, qr)
		}
	}
	w, err := wal.Open(wal.Options{FS: vfs.Default, Dirs: o.DataDirs, SegmentSize: o.SegmentSize, Codec: codec,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, fmt.Errorf("%s: %w (is a server using the store?)", r.Store, err)
	}
	defer w.Close()
	// Commits after the newest checkpoint are judged whole or torn (recovery
	// drops torn ones); earlier ones were synced before it was written.
	var after uint64
	if r.Newest != nil {
		after = r.Newest.WOID
	}
	audit := filestore.NewTxnAudit(after)
	stats, err := w.Replay(nil, func(rec wal.Record, p wal.Pointer) error {
		audit.Record(rec, p)
		r.Records[rec.Type.String()]++
		if onRecord != nil {
			onRecord(rec, p)
		}
		return nil
	}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: WAL scan: %w", r.Store, err)
	}
	r.RecordBytes, r.MaxWOID, r.Damaged = stats.Bytes, stats.MaxWOID, stats.Damaged
	for _, d := range stats.Damaged {
		r.Problems = append(r.Problems, fmt.Sprintf("WAL damage in %s bytes %d-%d (~%d records): %s", d.File, d.Start, d.End, d.EstimatedRecords, d.Reason))
	}
	r.Segments = w.Segments()
	r.Torn = audit.Torn()
	for _, t := range r.Torn {
		file := ""
		for _, sg := range r.Segments {
			if sg.ID == t.Commit.Segment() {
				file = sg.Path
			}
		}
		r.Problems = append(r.Problems, fmt.Sprintf("torn %s (%s offset %d): the next open drops it whole", t, file, t.Commit.Offset()))
	}
	if r.Newest != nil {
		r.Problems = append(r.Problems, checkQueues(o, r.Newest, r.Segments)...)
	}
	return r, nil
}

// queueHeaderSize and queueSlotSize mirror the queue file layout (see
// queue/format.go): a 4096-byte header, then 8-byte slots.
const queueHeaderSize, queueSlotSize = 4096, 8

// checkQueues opens every queue file of cp with the checkpoint's state (the
// header and the digest of the live slots must match) and checks that every
// queued pointer names an existing WAL segment. Each problem reads
// "<file> offset <n>: <reason>".
func checkQueues(o filestore.Options, cp *checkpoint.Checkpoint, segs []wal.SegmentInfo) []string {
	have := map[uint32]bool{}
	for _, s := range segs {
		have[s.ID] = true
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var problems []string
	for _, ch := range cp.Channels {
		qo := queue.Options{Dir: o.CheckpointDir, BackupDir: o.BackupCheckpointDir, Name: ch.Name, Logger: quiet, CheckKey: cp.DigestKey}
		path := queue.Path(qo, ch.Gen)
		if _, err := os.Stat(path); err != nil {
			continue // already reported as a missing queue file
		}
		q, err := queue.Open(qo, &queue.State{Gen: ch.Gen, Head: ch.Head, Size: ch.Size, Capacity: ch.Capacity, Digest: ch.Digest})
		if err != nil {
			off := int64(0)
			if errors.Is(err, queue.ErrDigest) && ch.Capacity > 0 {
				off = queueHeaderSize + int64(ch.Head%ch.Capacity)*queueSlotSize
			}
			problems = append(problems, fmt.Sprintf("%s offset %d: channel %s: %v", path, off, ch.Name, err))
			continue
		}
		for i := uint64(0); i < q.Len(); i++ {
			p := wal.Pointer(q.At(i))
			if !have[p.Segment()] {
				off := queueHeaderSize + int64((q.Head()+i)%q.Capacity())*queueSlotSize
				problems = append(problems, fmt.Sprintf("%s offset %d: channel %s: queued pointer %s names missing WAL segment %d", path, off, ch.Name, p, p.Segment()))
			}
		}
		q.Close()
	}
	return problems
}

func runVerify(args []string) int {
	fs := newFlagSet("verify", "[--config FILE [--name AGENT] | --data-dirs D1,D2 --checkpoint-dir C]")
	var sf storeFlags
	sf.register(fs)
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	stores, err := sf.stores()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice verify: %v\n", err)
		return 1
	}
	intact := true
	for _, st := range stores {
		r, err := readStore(st, nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice verify: %v\n", err)
			intact = false
			continue
		}
		var total int64
		for _, n := range r.Records {
			total += n
		}
		gen := "none"
		if r.Newest != nil {
			gen = fmt.Sprintf("generation %d (W=%d, clean=%v)", r.Newest.Generation, r.Newest.WOID, r.Newest.Clean)
		}
		fmt.Printf("%s: checkpoint %s, %d checkpoint files, %d segments, %d valid records, %d damaged ranges\n",
			r.Store, gen, len(r.Checkpoints), len(r.Segments), total, len(r.Damaged))
		for _, p := range r.Problems {
			fmt.Printf("  PROBLEM: %s\n", p)
		}
		if len(r.Problems) > 0 {
			intact = false
		}
	}
	if !intact {
		fmt.Println("NOT INTACT")
		return 1
	}
	fmt.Println("intact")
	return 0
}

func runInspect(args []string) int {
	fs := newFlagSet("inspect", "[--config FILE [--name AGENT] | --data-dirs D1,D2 --checkpoint-dir C] [--records] [--json]")
	var sf storeFlags
	sf.register(fs)
	var records, asJSON bool
	var limit int
	fs.BoolVar(&records, "records", false, "list every WAL record (pointer, type, txn id, WOID, payload length)")
	fs.IntVar(&limit, "limit", 0, "with --records: list at most this many (0: all)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON (with the newest checkpoint in full)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	stores, err := sf.stores()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice inspect: %v\n", err)
		return 1
	}
	rc := 0
	var reports []*storeReport
	for _, st := range stores {
		listed := 0
		var onRec func(wal.Record, wal.Pointer)
		if records && !asJSON {
			fmt.Printf("== %s: WAL records\n", describeStore(st))
			onRec = func(rec wal.Record, p wal.Pointer) {
				if limit > 0 && listed >= limit {
					return
				}
				listed++
				fmt.Printf("%s\t%s\ttxn=%d\twoid=%d\tlen=%d\n", p, rec.Type, rec.TxnID, rec.WOID, len(rec.Payload))
			}
		}
		r, err := readStore(st, onRec)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sluice inspect: %v\n", err)
			rc = 1
			continue
		}
		reports = append(reports, r)
		if !asJSON {
			printReport(os.Stdout, r)
		}
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return 1
		}
	}
	return rc
}

func printReport(w io.Writer, r *storeReport) {
	fmt.Fprintf(w, "== %s\n", r.Store)
	fmt.Fprintln(w, "checkpoints:")
	for _, c := range r.Checkpoints {
		if c.Error != "" {
			fmt.Fprintf(w, "  %s: ERROR %s\n", c.Path, c.Error)
			continue
		}
		fmt.Fprintf(w, "  %s: generation %d, W=%d, clean=%v, written %s\n", c.Path, c.Generation, c.WOID, c.Clean, c.Time)
	}
	if cp := r.Newest; cp != nil {
		fmt.Fprintf(w, "newest checkpoint: generation %d, next txn id %d, %d open put txns, %d open take txns, %d producers\n",
			cp.Generation, cp.NextTxnID, len(cp.PutTxns), len(cp.TakeTxns), len(cp.Producers))
		for _, f := range cp.Frontier {
			fmt.Fprintf(w, "  frontier: segment %d offset %d\n", f.Segment, f.Offset)
		}
		fmt.Fprintln(w, "queues (at the checkpoint):")
		for _, ch := range cp.Channels {
			fmt.Fprintf(w, "  %s: size %d, bytes %d, head %d, capacity %d, file generation %d, digest %08x\n",
				ch.Name, ch.Size, ch.Bytes, ch.Head, ch.Capacity, ch.Gen, ch.Digest)
		}
		for _, q := range r.Queues {
			if q.Error != "" {
				fmt.Fprintf(w, "  %s: queue file ERROR %s\n", q.Channel, q.Error)
			} else {
				fmt.Fprintf(w, "  %s: queue file %s (%d bytes)\n", q.Channel, q.Path, q.Size)
			}
		}
	}
	fmt.Fprintln(w, "WAL segments:")
	for _, s := range r.Segments {
		fmt.Fprintf(w, "  dir %d: %s id %d, %d bytes, max WOID %d\n", s.Dir, s.Path, s.ID, s.Size, s.MaxWOID)
	}
	types := make([]string, 0, len(r.Records))
	for t := range r.Records {
		types = append(types, t)
	}
	sort.Strings(types)
	fmt.Fprintf(w, "WAL records (%d bytes, max WOID %d):", r.RecordBytes, r.MaxWOID)
	for _, t := range types {
		fmt.Fprintf(w, " %s=%d", t, r.Records[t])
	}
	fmt.Fprintln(w)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
}
