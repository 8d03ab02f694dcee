// Package router serves several stores as one channel.Store: the server
// has one Channel, an agent's configuration may have several stores (file
// channels with different directories, plus a memory store). Each channel
// name belongs to exactly one store. A put transaction may cover several
// channels only when they belong to the same store; otherwise Put fails
// with a *CrossStoreError (gRPC INVALID_ARGUMENT).
//
// A Router is created before its stores are open (they may take a while to
// recover) so that the server can listen early: until SetStores every call
// fails with an error matching channel.ErrClosed (gRPC UNAVAILABLE) that
// says the stores are recovering.
package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
)

// ErrRecovering is returned (wrapped with channel.ErrClosed) while the
// stores are being opened.
var ErrRecovering = fmt.Errorf("%w: stores are recovering, retry shortly", channel.ErrClosed)

// CrossStoreError is a put transaction that names channels of two stores,
// or a take transaction that would move events (TakeTxn.Put) into a channel
// of another store.
type CrossStoreError struct {
	First, Second           string // channel names (a move: from, to)
	FirstStore, SecondStore string // store descriptions
	Move                    bool
}

func (e *CrossStoreError) Error() string {
	what, join := "one put transaction cannot cover channels", "and"
	if e.Move {
		what, join = "one take transaction cannot move events from channel", "to"
	}
	return fmt.Sprintf("%s %q (%s) %s %q (%s): they are in different stores; "+
		"only file channels with the same dataDirs and checkpointDir share a store", what, e.First, e.FirstStore, join, e.Second, e.SecondStore)
}

// GRPCStatus makes the server answer INVALID_ARGUMENT.
func (e *CrossStoreError) GRPCStatus() *status.Status {
	return status.New(codes.InvalidArgument, e.Error())
}

// Router is a channel.Store over several stores.
type Router struct {
	names  []string
	owner  map[string]int
	descr  []string
	stores atomic.Pointer[[]channel.Store]
	ready  chan struct{}
	closed atomic.Bool
	once   sync.Once
}

var _ channel.Store = (*Router)(nil)

// New returns a Router for stores whose channel names are groups[i] and
// whose descriptions (for error messages) are descr[i].
func New(groups [][]string, descr []string) (*Router, error) {
	if len(groups) == 0 || len(groups) != len(descr) {
		return nil, errors.New("router: need one description per store and at least one store")
	}
	r := &Router{owner: map[string]int{}, descr: descr, ready: make(chan struct{})}
	for i, g := range groups {
		for _, n := range g {
			if _, dup := r.owner[n]; dup {
				return nil, fmt.Errorf("router: channel %q in two stores", n)
			}
			r.owner[n] = i
			r.names = append(r.names, n)
		}
	}
	slices.Sort(r.names)
	return r, nil
}

// SetStores installs the open stores, in the order of New's groups, and
// makes the router ready.
func (r *Router) SetStores(stores []channel.Store) {
	if len(stores) != len(r.descr) {
		panic("router: SetStores with the wrong number of stores")
	}
	s := append([]channel.Store(nil), stores...)
	r.stores.Store(&s)
	r.once.Do(func() { close(r.ready) })
}

// Ready is closed once SetStores was called.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// IsReady reports whether SetStores was called.
func (r *Router) IsReady() bool { return r.stores.Load() != nil }

func (r *Router) get() ([]channel.Store, error) {
	if r.closed.Load() {
		return nil, channel.ErrClosed
	}
	s := r.stores.Load()
	if s == nil {
		return nil, ErrRecovering
	}
	return *s, nil
}

func (r *Router) store(name string) (channel.Store, error) {
	stores, err := r.get()
	if err != nil {
		return nil, err
	}
	i, ok := r.owner[name]
	if !ok {
		if name == "" {
			return nil, fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return nil, fmt.Errorf("%w %q", channel.ErrUnknownChannel, name)
	}
	return stores[i], nil
}

// Channels implements channel.Store.
func (r *Router) Channels() []string { return append([]string(nil), r.names...) }

// BeginPut implements channel.Store.
func (r *Router) BeginPut(ctx context.Context, opts channel.PutOptions) (channel.PutTxn, error) {
	stores, err := r.get()
	if err != nil {
		return nil, err
	}
	if len(stores) == 1 {
		return stores[0].BeginPut(ctx, opts)
	}
	return &put{r: r, stores: stores, ctx: ctx, opts: opts, idx: -1}, nil
}

// BeginTake implements channel.Store. With one store its take txn is
// returned as is; with several, Put (a move) is checked to stay in the
// take's store.
func (r *Router) BeginTake(ctx context.Context, name string) (channel.TakeTxn, error) {
	stores, err := r.get()
	if err != nil {
		return nil, err
	}
	s, err := r.store(name)
	if err != nil {
		return nil, err
	}
	txn, err := s.BeginTake(ctx, name)
	if err != nil || len(stores) == 1 {
		return txn, err
	}
	return &take{TakeTxn: txn, r: r, from: name}, nil
}

// take is a take transaction of one of several stores.
type take struct {
	channel.TakeTxn
	r    *Router
	from string
}

// Put implements channel.TakeTxn: a move stays in one store.
func (t *take) Put(name string, events ...channel.Event) error {
	i, ok := t.r.owner[name]
	if !ok {
		if name == "" {
			return fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return fmt.Errorf("%w %q", channel.ErrUnknownChannel, name)
	}
	if j := t.r.owner[t.from]; i != j {
		return &CrossStoreError{First: t.from, Second: name, FirstStore: t.r.descr[j], SecondStore: t.r.descr[i], Move: true}
	}
	return t.TakeTxn.Put(name, events...)
}

// ExtendLease passes a remote take's lease extension on.
func (t *take) ExtendLease(ctx context.Context) error {
	if le, ok := t.TakeTxn.(channel.LeaseExtender); ok {
		return le.ExtendLease(ctx)
	}
	return nil
}

// Stats implements channel.Store.
func (r *Router) Stats(ctx context.Context, name string) (channel.Stats, error) {
	s, err := r.store(name)
	if err != nil {
		return channel.Stats{}, err
	}
	return s.Stats(ctx, name)
}

// ProducerSequence implements channel.Store: the producer table of the
// store holding ch.
func (r *Router) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	s, err := r.store(ch)
	if err != nil {
		return 0, false, err
	}
	return s.ProducerSequence(ctx, ch, producerID)
}

// Close closes every store (concurrently; each writes its final
// checkpoint) and returns their errors joined.
func (r *Router) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	s := r.stores.Load()
	if s == nil {
		return nil
	}
	errs := make([]error, len(*s))
	var wg sync.WaitGroup
	for i, st := range *s {
		wg.Go(func() {
			if err := st.Close(); err != nil {
				errs[i] = fmt.Errorf("%s: %w", r.descr[i], err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

type storeStatser interface {
	StoreStats() filestore.StoreStats
}

// StoreStats sums the store-wide figures of the stores that have them
// (durations: the largest; DiskUsage: every store's directories in turn).
func (r *Router) StoreStats() filestore.StoreStats {
	var out filestore.StoreStats
	s := r.stores.Load()
	if s == nil || r.closed.Load() {
		return out
	}
	for _, st := range *s {
		ss, ok := st.(storeStatser)
		if !ok {
			continue
		}
		x := ss.StoreStats()
		out.Checkpoints += x.Checkpoints
		out.LastCheckpoint = max(out.LastCheckpoint, x.LastCheckpoint)
		out.LastReplay = max(out.LastReplay, x.LastReplay)
		out.DamagedRanges += x.DamagedRanges
		out.DamagedRecordsEstimate += x.DamagedRecordsEstimate
		out.CheckpointFallbacks += x.CheckpointFallbacks
		out.CheckpointFailures += x.CheckpointFailures
		out.TornTxns += x.TornTxns
		out.TornEventsDropped += x.TornEventsDropped
		out.DiskUsage = append(out.DiskUsage, x.DiskUsage...)
	}
	return out
}

// put is a put transaction over several stores: it opens the real
// transaction on the store of its first channel.
type put struct {
	r      *Router
	stores []channel.Store
	ctx    context.Context
	opts   channel.PutOptions
	idx    int
	first  string
	txn    channel.PutTxn
	done   bool
}

func (p *put) Put(name string, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if err := p.opts.CheckPut(); err != nil {
		return err
	}
	txn, err := p.begin(name)
	if err != nil {
		return err
	}
	return txn.Put(name, events...)
}

// PutSeq implements channel.PutTxn. The rules are checked here too, so a
// bad call fails before it opens the transaction on a store; the store
// checks that the sequences increase.
func (p *put) PutSeq(name string, first uint64, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if _, err := p.opts.CheckPutSeq(0, first, len(events)); err != nil {
		return err
	}
	txn, err := p.begin(name)
	if err != nil {
		return err
	}
	return txn.PutSeq(name, first, events...)
}

// begin returns the transaction on the store of channel name, opening it at
// the first call.
func (p *put) begin(name string) (channel.PutTxn, error) {
	if p.done {
		return nil, channel.ErrTxnDone
	}
	i, ok := p.r.owner[name]
	if !ok {
		if name == "" {
			return nil, fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return nil, fmt.Errorf("%w %q", channel.ErrUnknownChannel, name)
	}
	if p.txn == nil {
		txn, err := p.stores[i].BeginPut(p.ctx, p.opts)
		if err != nil {
			return nil, err
		}
		p.txn, p.idx, p.first = txn, i, name
	} else if i != p.idx {
		return nil, &CrossStoreError{First: p.first, Second: name, FirstStore: p.r.descr[p.idx], SecondStore: p.r.descr[i]}
	}
	return p.txn, nil
}

func (p *put) Commit(ctx context.Context) error {
	if p.done {
		return channel.ErrTxnDone
	}
	p.done = true
	if p.txn == nil {
		return nil
	}
	return p.txn.Commit(ctx)
}

func (p *put) Rollback() error {
	p.done = true
	if p.txn == nil {
		return nil
	}
	return p.txn.Rollback()
}

func (p *put) Deduplicated() bool { return p.txn != nil && p.txn.Deduplicated() }

func (p *put) Duplicates() int {
	if p.txn == nil {
		return 0
	}
	return p.txn.Duplicates()
}
