package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/internal/storekit"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/queue"
	"github.com/sluicehq/sluice/wal"
)

// Options configure the durable file channel store. Zero values take the
// documented defaults (EnsureDefaults).
type Options struct {
	// FS is where every file except the mmap'd queues lives (default
	// vfs.Default). Tests pass a crashable memory FS or errorfs; with a
	// non-default FS the queues are kept in memory images of FS files too.
	FS vfs.FS
	// DataDirs hold the WAL segments; written in parallel. Required.
	DataDirs []string
	// CheckpointDir holds checkpoint generation A and the queue files. Required.
	CheckpointDir string
	// BackupCheckpointDir, when set, holds generation B (the backup).
	BackupCheckpointDir string
	// Channels of the store. Required.
	Channels []channel.ChannelConfig
	// MaxEventSize bounds Event.Size (default 1 MiB).
	MaxEventSize int
	// SegmentSize is the WAL segment size (default 1 GiB).
	SegmentSize int64
	// CheckpointInterval triggers a checkpoint by time (default 30 s;
	// negative disables the background checkpointer).
	CheckpointInterval time.Duration
	// CheckpointBytes triggers a checkpoint after this many WAL bytes since
	// the last one (default 256 MiB).
	CheckpointBytes int64
	// MinFreeBytes: puts fail with ErrDiskSpace while any data directory
	// has less free space (default 500 MiB as Flume; 0 keeps the default, a
	// negative value disables the check).
	MinFreeBytes int64
	// SpareSegments is how many emptied WAL segments each data directory
	// keeps for reuse instead of deleting them (default 2, negative none):
	// appends into a recycled segment skip pre-zeroing and usually hit the
	// page cache. Set it to cover the backlog a burst leaves behind.
	SpareSegments int
	// Logger for recovery reports and errors (default slog.Default()).
	Logger *slog.Logger
	// Encryption, when set, seals new WAL records and checkpoints with its
	// active key (AES-256-GCM); see file_crypto.go and package crypto.
	Encryption *crypto.Keyring
	// Compression of new WAL record payloads: "", "zstd" or "s2".
	Compression string
	// ProducerExpiry: a producer's deduplication entry is dropped once it
	// has committed nothing for this long (checked at each checkpoint);
	// default DefaultProducerExpiry, negative keeps entries forever.
	ProducerExpiry time.Duration
	// MaxProducers bounds the producer ids the store remembers (in memory
	// and in every checkpoint): default DefaultMaxProducers. A put of a new
	// producer id beyond it fails with ErrProducerTableFull.
	MaxProducers int

	// Clock is the clock of producer entries' last use, which their expiry
	// counts from (nil: time.Now; tests set it).
	Clock func() time.Time
	// legacyFormat (tests): write WAL records and checkpoints the way
	// builds before store binding did, to test their migration.
	legacyFormat bool
}

const (
	defaultCheckpointInterval = 30 * time.Second
	defaultCheckpointBytes    = 256 << 20
	defaultMinFreeBytes       = 500 << 20
	// putFlushBytes: a put txn writes its records to the WAL once this many
	// are buffered, so RAM per txn stays bounded (at most a quarter segment).
	putFlushBytes      = 256 << 10
	defaultSegmentSize = 1 << 30
)

// EnsureDefaults fills zero fields.
func (o *Options) EnsureDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.MaxEventSize == 0 {
		o.MaxEventSize = channel.DefaultMaxEventSize
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = defaultCheckpointInterval
	}
	if o.CheckpointBytes == 0 {
		o.CheckpointBytes = defaultCheckpointBytes
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = defaultMinFreeBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = defaultSegmentSize
	}
}

func (o *Options) validate() error {
	switch {
	case len(o.DataDirs) == 0:
		return errors.New("file channel: dataDirs: at least one directory is required")
	case o.CheckpointDir == "":
		return errors.New("file channel: checkpointDir is required")
	case o.MaxEventSize < 1:
		return fmt.Errorf("file channel: maxEventSize %d must be positive", o.MaxEventSize)
	case int64(o.MaxEventSize) > o.SegmentSize/4:
		return fmt.Errorf("file channel: maxEventSize %d must be at most a quarter of segmentSize %d", o.MaxEventSize, o.SegmentSize)
	case o.CheckpointBytes < 1:
		return fmt.Errorf("file channel: checkpointBytes %d must be positive", o.CheckpointBytes)
	}
	seen := map[string]bool{o.CheckpointDir: true}
	if o.BackupCheckpointDir != "" {
		if seen[o.BackupCheckpointDir] {
			return errors.New("file channel: backupCheckpointDir must differ from checkpointDir")
		}
		seen[o.BackupCheckpointDir] = true
	}
	for _, d := range o.DataDirs {
		if seen[d] {
			return fmt.Errorf("file channel: directory %q is used twice", d)
		}
		seen[d] = true
	}
	return nil
}

// fileChan is one channel of a file store. Guarded by Store.mu.
type fileChan struct {
	cfg      channel.ChannelConfig
	q        *queue.Queue
	bytes    int64 // queued bytes (excluding in-flight takes)
	reserved int64 // events reserved by committing put txns
	resBytes int64
	inTakes  int64 // events held by open take txns
	inTakeB  int64
	notify   chan struct{} // closed and replaced when events arrive
	space    chan struct{} // closed and replaced when space frees up
	frozen   *queue.Frozen
	// rolled maps each event that a take rollback put back at the head to
	// the logical position it originally had, so that later rollbacks merge
	// into the original order and a re-take records its original position.
	rolled map[uint64]uint64
	// offs holds the offsets of the queued events, nextOff the offset the
	// next committed event gets (under Store.orderMu; offsets.go).
	offs    offList
	nextOff uint64

	storekit.Counters
	corrupt atomic.Int64
}

func (c *fileChan) wakeTakers() {
	close(c.notify)
	c.notify = make(chan struct{})
}

func (c *fileChan) wakePutters() {
	close(c.space)
	c.space = make(chan struct{})
}

// Store is the durable file channel store: a WAL over one or more data
// directories, one mmap'd queue per channel and a periodic checkpoint.
type Store struct {
	opts  Options
	log   *slog.Logger
	fs    vfs.FS
	wal   *wal.WAL
	crypt *fileCrypto // encryption and compression (file_crypto.go)
	// digestKey keys the queue digests of the checkpoints this open
	// writes (encrypted stores; nil: CRC32C). Kept in the sealed
	// checkpoint.
	digestKey []byte

	// cpMu is the checkpoint lock: every WAL append, queue mutation and
	// commit apply holds it shared; a checkpoint holds it exclusively only to
	// freeze the queues and copy the in-flight state.
	cpMu sync.RWMutex
	// orderMu serialises the WAL writes of put commit records and the
	// offsets and tickets they take (offsets.go); taken inside cpMu shared,
	// outside mu.
	orderMu    sync.Mutex
	nextTicket uint64 // under orderMu
	// mu guards everything below and the fileChan fields.
	mu           sync.Mutex
	pubNext      uint64              // ticket of the next commit to publish
	pubWait      map[uint64]*filePut // resolved commits waiting for their turn
	closed       bool
	chans        map[string]*fileChan
	names        []string
	live         map[uint32]int64 // segment id -> live pointers
	puts         map[uint64]*filePut
	takes        map[uint64]*fileTake
	producers    storekit.ProducerTable
	prodBusy     map[string]chan struct{}
	maxProducers int // producer ids remembered at most
	nextTxn      atomic.Uint64
	// txnFloor is the NextTxnID of the newest checkpoint: a txn with a
	// lower id that is not in it gets a new id before its first WAL
	// record, so replay after a checkpoint sees only txn ids at or above
	// the floor or in the checkpoint's in-flight lists (file_crypto.go).
	txnFloor atomic.Uint64
	nextDir  atomic.Uint64

	commits  sync.WaitGroup // commits in progress; Close waits for them
	isClosed atomic.Bool    // set (before cpMu is taken) when Close starts
	// walMu guards the WAL's lifetime for readers outside cpMu.
	walMu     sync.RWMutex
	walClosed bool

	cpRun       sync.Mutex // one checkpoint at a time
	generation  uint64
	lastW       uint64 // W of the newest checkpoint
	prevW       uint64 // W of the one before (the backup)
	walBytes    atomic.Int64
	cpKick      chan struct{}
	cpDone      chan struct{}
	stop        chan struct{}
	lockClosers []io.Closer
	putBufs     sync.Pool // *putBuffers
	readBufs    sync.Pool // *[]byte: WAL read buffers of takes
	flushBytes  int

	diskMu       sync.Mutex
	diskChecked  time.Time
	diskErr      error
	diskWritten  int64        // walTotal at the last check
	diskHeadroom int64        // free bytes above MinFreeBytes at the last check
	walTotal     atomic.Int64 // WAL bytes written since open

	fallbacks          atomic.Int64 // checkpoints recovery could not use
	damaged            atomic.Int64 // damaged WAL ranges found by recovery
	damagedRecords     atomic.Int64 // estimated records lost in them
	tornTxns           atomic.Int64 // torn transactions recovery dropped (file_torn.go)
	tornEvents         atomic.Int64 // events of torn put transactions it dropped
	lastCheckpoint     atomic.Int64 // duration ns
	lastReplay         atomic.Int64 // duration ns
	checkpointCount    atomic.Int64
	checkpointFailures atomic.Int64 // background checkpoints that failed
}

// Open opens (creating if needed) a file channel store and recovers its
// state: newest valid checkpoint, else the backup, else a full WAL replay,
// then the WAL records written after it.
func Open(opts Options) (*Store, error) {
	opts.EnsureDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	cfgs, err := storekit.ValidateChannels(opts.Channels)
	if err != nil {
		return nil, fmt.Errorf("file channel: %w", err)
	}
	s := &Store{
		opts:         opts,
		log:          opts.Logger,
		fs:           opts.FS,
		chans:        make(map[string]*fileChan, len(cfgs)),
		live:         make(map[uint32]int64),
		pubWait:      make(map[uint64]*filePut),
		puts:         make(map[uint64]*filePut),
		takes:        make(map[uint64]*fileTake),
		producers:    make(storekit.ProducerTable),
		prodBusy:     make(map[string]chan struct{}),
		maxProducers: storekit.MaxProducers(opts.MaxProducers),
		cpKick:       make(chan struct{}, 1),
		cpDone:       make(chan struct{}),
		stop:         make(chan struct{}),
		flushBytes:   int(min(putFlushBytes, opts.SegmentSize/4)),
	}
	s.putBufs.New = func() any { return new(putBuffers) }
	s.readBufs.New = func() any { return new([]byte) }
	for name, c := range cfgs {
		s.chans[name] = &fileChan{cfg: c, notify: make(chan struct{}), space: make(chan struct{}), rolled: make(map[uint64]uint64), nextOff: 1}
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	if err := s.lockCheckpointDirs(); err != nil {
		return nil, err
	}
	if err := s.initCrypto(); err != nil {
		s.unlockDirs()
		return nil, err
	}
	s.wal, err = wal.Open(wal.Options{
		FS:          opts.FS,
		Dirs:        opts.DataDirs,
		SegmentSize: opts.SegmentSize,
		// The free-space guard is the store's (checkDiskSpace), and it
		// refuses puts only: takes and checkpoints must still be able to
		// start a segment on a guarded disk, or a full store could not drain.
		MinFreeBytes: 0,
		Spares:       opts.SpareSegments,
		Logger:       opts.Logger,
		Codec:        s.walCodec(),
	})
	if err != nil {
		s.unlockDirs()
		return nil, fmt.Errorf("file channel: %w", err)
	}
	if err := s.recover(); err != nil {
		s.closeQueues()
		s.wal.Close()
		s.unlockDirs()
		return nil, err
	}
	if opts.CheckpointInterval > 0 {
		go s.checkpointLoop()
	} else {
		close(s.cpDone)
	}
	return s, nil
}

func (s *Store) lockCheckpointDirs() error {
	for _, d := range []string{s.opts.CheckpointDir, s.opts.BackupCheckpointDir} {
		if d == "" {
			continue
		}
		if err := s.fs.MkdirAll(d, 0o700); err != nil {
			s.unlockDirs()
			return fmt.Errorf("file channel: create checkpoint dir %s: %w", d, err)
		}
		c, err := s.fs.Lock(s.fs.PathJoin(d, "LOCK"))
		if err != nil {
			s.unlockDirs()
			return fmt.Errorf("file channel: checkpoint dir %s is in use by another process (lock %s): %w", d, s.fs.PathJoin(d, "LOCK"), err)
		}
		s.lockClosers = append(s.lockClosers, c)
	}
	return nil
}

func (s *Store) unlockDirs() {
	for _, c := range s.lockClosers {
		c.Close()
	}
	s.lockClosers = nil
}

func (s *Store) closeQueues() {
	for _, c := range s.chans {
		if c.q != nil {
			c.q.Close()
			c.q = nil
		}
	}
}

func (s *Store) queueOptions(name string, capacity uint64) queue.Options {
	return queue.Options{
		Dir:       s.opts.CheckpointDir,
		BackupDir: s.opts.BackupCheckpointDir,
		Name:      name,
		Capacity:  capacity,
		FS:        s.fs,
		Logger:    s.log,
		DigestKey: s.digestKey,
	}
}

func (s *Store) channel(name string) (*fileChan, error) {
	c, ok := s.chans[name]
	if !ok {
		if name == "" {
			return nil, fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return nil, fmt.Errorf("%w %q", channel.ErrUnknownChannel, name)
	}
	return c, nil
}

// Channels implements Channel.
func (s *Store) Channels() []string { return append([]string(nil), s.names...) }

// Stats implements Channel.
func (s *Store) Stats(ctx context.Context, name string) (channel.Stats, error) {
	c, err := s.channel(name)
	if err != nil {
		return channel.Stats{}, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return channel.Stats{}, channel.ErrClosed
	}
	st := channel.Stats{
		Name:          name,
		Size:          int64(c.q.Len()),
		InFlightTakes: c.inTakes,
		Bytes:         c.bytes,
		Capacity:      c.cfg.Capacity,
		MaxBytes:      c.cfg.MaxBytes,

		TransactionCapacity: c.cfg.TransactionCapacity,
		MaxEventSize:        s.opts.MaxEventSize,
	}
	var head uint64
	hasHead := c.q.Len() > 0
	if hasHead {
		head = c.q.At(0)
	}
	s.mu.Unlock()
	c.Fill(&st)
	st.CorruptEventsSkipped = c.corrupt.Load()
	if hasHead {
		// The head's put time is in its record; a read of the page cache.
		// The segment cannot vanish: GC only removes segments with no live
		// pointers and a concurrent take holds the pointer as in-flight.
		s.walMu.RLock()
		if !s.walClosed {
			if rec, err := s.wal.ReadRecord(wal.Pointer(head), nil); err == nil {
				if h, _, err := decodePutHeader(rec.Payload); err == nil {
					st.OldestEventAge = max(time.Since(time.Unix(0, h.putTime)), 0)
				}
			}
		}
		s.walMu.RUnlock()
	}
	return st, nil
}

// StoreStats are store-wide figures for metrics.
type StoreStats struct {
	Checkpoints            int64
	LastCheckpoint         time.Duration
	LastReplay             time.Duration
	DamagedRanges          int64
	DamagedRecordsEstimate int64
	CheckpointFallbacks    int64   // checkpoints skipped at open (missing, corrupt, bad queue)
	CheckpointFailures     int64   // background checkpoints that failed (no WAL is collected meanwhile)
	TornTxns               int64   // unacknowledged transactions recovery found torn and dropped whole
	TornEventsDropped      int64   // events of torn put transactions (never acknowledged) not queued
	DiskUsage              []int64 // WAL bytes per data directory
}

// StoreStats reports store-wide figures.
func (s *Store) StoreStats() StoreStats {
	return StoreStats{
		Checkpoints:            s.checkpointCount.Load(),
		LastCheckpoint:         time.Duration(s.lastCheckpoint.Load()),
		LastReplay:             time.Duration(s.lastReplay.Load()),
		DamagedRanges:          s.damaged.Load(),
		DamagedRecordsEstimate: s.damagedRecords.Load(),
		CheckpointFallbacks:    s.fallbacks.Load(),
		CheckpointFailures:     s.checkpointFailures.Load(),
		TornTxns:               s.tornTxns.Load(),
		TornEventsDropped:      s.tornEvents.Load(),
		DiskUsage:              s.wal.DiskUsage(),
	}
}

// checkDiskSpace fails when a data directory is below MinFreeBytes. The
// answer is cached for a second so the hot path does not stat the disk.
func (s *Store) checkDiskSpace() error {
	if s.opts.MinFreeBytes < 0 {
		return nil
	}
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	// The cached answer holds for a second, and only while the WAL has not
	// written half of the headroom seen at the last look: a burst of puts
	// cannot run far past the threshold.
	written := s.walTotal.Load() - s.diskWritten
	if time.Since(s.diskChecked) < time.Second && s.diskErr == nil && written < s.diskHeadroom/2 {
		return nil
	}
	s.diskChecked = time.Now()
	s.diskWritten = s.walTotal.Load()
	s.diskErr = nil
	s.diskHeadroom = 1 << 62
	for _, d := range s.opts.DataDirs {
		u, err := s.fs.GetDiskUsage(d)
		if err != nil {
			continue // not supported by this FS
		}
		s.diskHeadroom = min(s.diskHeadroom, int64(u.AvailBytes)-s.opts.MinFreeBytes)
		if int64(u.AvailBytes) < s.opts.MinFreeBytes {
			s.diskErr = fmt.Errorf("%w: data directory %s has %d bytes free, minimum required is %d", channel.ErrDiskSpace, d, u.AvailBytes, s.opts.MinFreeBytes)
			break
		}
	}
	return s.diskErr
}

// Close writes a final clean checkpoint and releases the store. Commits in
// progress finish first; open transactions are saved in the checkpoint as
// in-flight, so open takes are redelivered and open puts dropped at the next
// open. Later calls on the store or its transactions return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.isClosed.Store(true)
	for _, c := range s.chans {
		c.wakeTakers()
		c.wakePutters()
	}
	s.mu.Unlock()
	close(s.stop)
	<-s.cpDone
	s.commits.Wait()
	err := s.checkpoint(true)
	if err != nil {
		err = fmt.Errorf("file channel: final checkpoint: %w", err)
	}
	s.cpMu.Lock()
	s.walMu.Lock()
	s.walClosed = true
	s.closeQueues()
	if cerr := s.wal.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("file channel: %w", cerr)
	}
	s.walMu.Unlock()
	s.cpMu.Unlock()
	s.unlockDirs()
	return err
}

// ProducerSequence implements channel.Store.
func (s *Store) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	if _, err := s.channel(ch); err != nil {
		return 0, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, false, channel.ErrClosed
	}
	e, ok := s.producers[producerID]
	return e.Seq, ok, nil
}
