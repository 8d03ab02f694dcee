// Package bench measures Sluice's channels against the raw disk limit: the
// engine behind `sluice bench` (see docs/benchmarks.md).
//
// A run expands a Config into Cases (kind × op × event size × batch ×
// clients), measures the raw fdatasync limit of each data directory for
// every bytes-per-commit it needs, then runs each case: warm-up, a timed
// run of Config.Duration, repeated Config.Repeat times; the Result holds
// the medians and the spread.
package bench

import (
	"fmt"
	"time"
)

// Kind is what a case measures.
type Kind string

// The kinds of case. The raw kinds take no op and one client.
const (
	// RawPreallocated: WriteAt + fdatasync into a preallocated, pre-zeroed
	// file, bytes per commit as the channel would write (the disk limit).
	RawPreallocated Kind = "raw-preallocated"
	// RawAppend: write + fdatasync appending to a growing file.
	RawAppend Kind = "raw-append"
	Memory    Kind = "memory"
	File      Kind = "file"
	FileZstd  Kind = "file+zstd"
	FileS2    Kind = "file+s2"
	// FileAES: the file store with AES-256-GCM on every record and checkpoint
	// (a random key generated for the run).
	FileAES    Kind = "file+aes"
	MemoryGRPC Kind = "memory+grpc"
	FileGRPC   Kind = "file+grpc"
)

// AllKinds lists every kind, in report order.
var AllKinds = []Kind{RawPreallocated, RawAppend, Memory, File, FileAES, FileZstd, FileS2, MemoryGRPC, FileGRPC}

// Raw reports whether k is a raw disk kind.
func (k Kind) Raw() bool { return k == RawPreallocated || k == RawAppend }

// GRPC reports whether k goes through a loopback gRPC server.
func (k Kind) GRPC() bool { return k == MemoryGRPC || k == FileGRPC }

// Durable reports whether k writes to a data directory.
func (k Kind) Durable() bool { return k != Memory && k != MemoryGRPC }

// Op is the workload of a case.
type Op string

// Ops: put only (producers), take only (consumers of a prefilled channel),
// putTake (as many producers as consumers at once; events counted as taken).
const (
	Put     Op = "put"
	Take    Op = "take"
	PutTake Op = "putTake"
)

// AllOps lists every op.
var AllOps = []Op{Put, Take, PutTake}

// Case is one point of the matrix.
type Case struct {
	Kind      Kind
	Op        Op
	EventSize int
	Batch     int
	Clients   int
	// DataDir is where durable kinds keep their files.
	DataDir string
}

func (c Case) String() string {
	s := fmt.Sprintf("%s %s size=%d batch=%d clients=%d", c.Kind, c.Op, c.EventSize, c.Batch, c.Clients)
	if c.Kind.Raw() {
		s = fmt.Sprintf("%s size=%d batch=%d", c.Kind, c.EventSize, c.Batch)
	}
	return s
}

// RecordOverhead approximates the WAL bytes one event costs beyond its
// body (record header and framing), so the raw limit writes as many bytes
// per commit as the file channel does.
const RecordOverhead = 28 + 24

// BytesPerCommit is what one commit of the case writes to disk (approx.).
func (c Case) BytesPerCommit() int { return c.Batch * (c.EventSize + RecordOverhead) }

// Config is a run's matrix and settings.
type Config struct {
	EventSizes []int
	Batches    []int
	Clients    []int
	Kinds      []Kind
	Ops        []Op
	DataDirs   []string
	// Duration of each timed run; Warmup before each (default Duration/5,
	// at most 1 s).
	Duration, Warmup time.Duration
	Repeat           int
	// MaxInFlight skips cases whose batch × clients exceeds it (default
	// 64,000 events).
	MaxInFlight int
	// BudgetBytes bounds the queued bytes of one case: puts stop (the run
	// ends early, Result.Stopped = "full") when the channel holds this much;
	// takes prefill at most this much (default 1 GiB).
	BudgetBytes int64
	// SegmentBytes is the WAL segment size of the file kinds (default 64
	// MiB). Every repeat opens a fresh store whose first segments the WAL
	// zeroes in the background while the run starts: smaller segments
	// shorten that transient.
	SegmentBytes int64
	// RawFileBytes is the size of the preallocated raw file (default 256 MiB).
	RawFileBytes int64
	// NoRaw skips the raw disk cases (then no ratio is reported). Otherwise
	// both raw kinds run for every data dir, event size and batch, whatever
	// Kinds says.
	NoRaw bool
	// Progress, when set, is called before each timed run.
	Progress func(done, total int, c Case, rep int)
}

// DefaultConfig is the full matrix of docs/contracts.md "Performance method".
func DefaultConfig() Config {
	return Config{
		EventSizes: []int{100, 1024, 16384},
		Batches:    []int{1, 10, 100, 1000},
		Clients:    []int{1, 4, 16, 64},
		Kinds:      []Kind{Memory, File, MemoryGRPC, FileGRPC},
		Ops:        AllOps,
		Duration:   5 * time.Second,
		Repeat:     3,
	}
}

// QuickConfig is a small matrix that finishes in under a minute.
func QuickConfig() Config {
	c := DefaultConfig()
	c.EventSizes = []int{1024}
	c.Batches = []int{1, 100}
	c.Clients = []int{1, 4}
	c.Duration = 300 * time.Millisecond
	c.Warmup = 50 * time.Millisecond
	c.Repeat = 1
	c.BudgetBytes = 128 << 20
	c.RawFileBytes = 32 << 20
	c.SegmentBytes = 16 << 20
	return c
}

func (cfg *Config) ensureDefaults() {
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Warmup == 0 {
		cfg.Warmup = min(cfg.Duration/5, time.Second)
	}
	if cfg.Repeat <= 0 {
		cfg.Repeat = 1
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 64_000
	}
	if cfg.BudgetBytes <= 0 {
		cfg.BudgetBytes = 1 << 30
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = 64 << 20
	}
	if cfg.RawFileBytes <= 0 {
		cfg.RawFileBytes = 256 << 20
	}
}

// Cases expands the matrix. Raw kinds come first (one per event size ×
// batch × data dir); then each channel kind × op × size × batch × clients.
// Durable kinds run once per data dir; memory kinds in none.
func (cfg Config) Cases() []Case {
	cfg.ensureDefaults()
	dirs := cfg.DataDirs
	if len(dirs) == 0 {
		dirs = []string{""}
	}
	var out []Case
	for _, k := range []Kind{RawPreallocated, RawAppend} {
		if cfg.NoRaw {
			continue
		}
		for _, d := range dirs {
			for _, s := range cfg.EventSizes {
				for _, b := range cfg.Batches {
					out = append(out, Case{Kind: k, Op: Put, EventSize: s, Batch: b, Clients: 1, DataDir: d})
				}
			}
		}
	}
	for _, k := range cfg.Kinds {
		if k.Raw() {
			continue
		}
		kd := dirs
		if !k.Durable() {
			kd = dirs[:1]
		}
		for _, d := range kd {
			for _, op := range cfg.Ops {
				for _, s := range cfg.EventSizes {
					for _, b := range cfg.Batches {
						for _, n := range cfg.Clients {
							if b*n > cfg.MaxInFlight {
								continue
							}
							out = append(out, Case{Kind: k, Op: op, EventSize: s, Batch: b, Clients: n, DataDir: d})
						}
					}
				}
			}
		}
	}
	return out
}
