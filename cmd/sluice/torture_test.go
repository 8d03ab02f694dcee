package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/client"
)

// TestTorture is the real crash torture of issue 6: it runs `sluice serve`
// on a file channel with small segments (so they rotate and GC runs) and a
// short checkpoint interval, drives concurrent put clients (caller-supplied
// producer id + sequence, the client's automatic producer ids, and plain
// puts without retries) and take clients (batches, mostly committed,
// sometimes rolled back) over gRPC, SIGKILLs the server at a random moment,
// restarts it on the same directories and checks the channel against a
// model of what every client was told. SLUICE_TORTURE_CYCLES sets the
// number of kill/restart cycles (default 30; `make torture` runs 300),
// SLUICE_TORTURE_SEED the random seed.
//
// After every restart, before the clients resume, the whole channel is read
// in one take transaction that is rolled back, and:
//   - every acknowledged put is present: taken by a committed take, or
//     still in the channel;
//   - nothing appears that was never put, and an event whose put was not
//     acknowledged appears only if its put was in flight (Commit called);
//   - put transactions are atomic: all their events or none;
//   - no event taken by a committed take is in the channel again, and no
//     event is in the channel twice;
//   - the channel's reported size matches what the scan read.
//
// While the clients run, a take that returns an event already taken by a
// committed take, an event held by another open take, or one event twice
// fails the test: redelivery is allowed only for takes that were rolled
// back or whose commit failed (in flight at the kill). At the end the
// pending producer puts are retried (they must end up exactly once), the
// channel is drained and every acknowledged event must have been taken
// exactly once, every unacknowledged one at most once.
func TestTorture(t *testing.T) {
	cycles := 30
	if testing.Short() {
		cycles = 10
	}
	if v := os.Getenv("SLUICE_TORTURE_CYCLES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SLUICE_TORTURE_CYCLES=%q: want a positive integer", v)
		}
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SLUICE_TORTURE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("SLUICE_TORTURE_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (SLUICE_TORTURE_SEED), %d cycles", seed, cycles)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))

	dir := t.TempDir()
	cfg := testConfig(dir, `agent.channels.default.maxFileSize = 1048576
agent.channels.default.maxEventSize = 65536
agent.channels.default.checkpointInterval = 200
agent.channels.default.capacity = 1000000
agent.channels.default.transactionCapacity = 1000000
`)
	m := newTortureModel()
	var putters []*torturePutter
	for i := range 5 {
		kind := []putKind{putProducer, putProducer, putAuto, putRaw, putRaw}[i]
		putters = append(putters, &torturePutter{id: i, kind: kind, m: m,
			rng: rand.New(rand.NewPCG(seed+uint64(i)+1, 1))})
	}
	const takers = 2

	start := time.Now()
	var killAfter time.Duration
	for c := range cycles {
		srv := startServer(t, dir, cfg)
		m.scan(t, srv.addr, fmt.Sprintf("cycle %d (restart)", c))
		if t.Failed() {
			t.Fatalf("cycle %d: model check failed after restart (seed %d)", c, seed)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for _, p := range putters {
			wg.Go(func() { p.run(ctx, srv.addr) })
		}
		// In about a quarter of the cycles nobody takes, so a backlog
		// builds up and has to survive the kills.
		n := takers
		if rng.IntN(4) == 0 {
			n = 0
		}
		for i := range n {
			r := rand.New(rand.NewPCG(seed, uint64(c*takers+i)))
			wg.Go(func() { m.taker(ctx, srv.addr, r) })
		}
		d := time.Duration(20+rng.IntN(281)) * time.Millisecond
		killAfter += d
		time.Sleep(d)
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-srv.done
		// Let the commits in flight see the dead server before giving up
		// on them.
		time.Sleep(5 * time.Millisecond)
		cancel()
		wg.Wait()
		if errs := m.takeErrors(); len(errs) > 0 {
			for _, e := range errs {
				t.Error(e)
			}
			t.Fatalf("cycle %d: violations while running (seed %d)", c, seed)
		}
	}

	// Final restart: check, finish the producers' pending puts, drain.
	srv := startServer(t, dir, cfg)
	m.scan(t, srv.addr, "final restart")
	if t.Failed() {
		t.Fatalf("model check failed after the last restart (seed %d)", seed)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range putters {
		if err := p.finish(ctx, srv.addr); err != nil {
			t.Fatalf("putter %d: retry of the pending put after the last restart: %v", p.id, err)
		}
	}
	m.drain(t, srv.addr)
	for _, e := range m.takeErrors() {
		t.Error(e)
	}
	m.final(t)
	srv.stop(t)
	if out, _, code := sluice(t, "", "verify", "--config", filepath.Join(dir, "sluice.properties")); code != 0 {
		t.Errorf("verify after the torture and a clean stop: exit %d\n%s", code, out)
	}
	elapsed := time.Since(start)
	segs, _ := filepath.Glob(filepath.Join(dir, "data", "*"))
	s := m.stats()
	t.Logf("torture: %d cycles in %v (mean kill after %v): %d events acked (%d put txns), %d maybe-events (put in flight at a kill, %d of them stored), %d producer puts retried after a kill (%d deduplicated), %d taken by committed takes, %d redelivered, %d take commits in flight at a kill (%d of their events found taken); at most %d events queued at a restart, %d files in the data dir at the end",
		cycles, elapsed.Round(time.Millisecond), (killAfter / time.Duration(cycles)).Round(time.Millisecond),
		s.acked, s.ackedTxns, s.maybe, s.maybeStored, s.prodRetried, s.prodDedup, s.taken, s.redelivered, s.takeMaybeTxns, s.takeMaybeApplied, s.maxQueued, len(segs))
	if s.acked == 0 || s.taken == 0 {
		t.Errorf("the clients made no progress: %d acked, %d taken", s.acked, s.taken)
	}
}

type putKind int

const (
	putProducer putKind = iota // caller-supplied producer id and sequence
	putAuto                    // the client's automatic producer ids, retries
	putRaw                     // no producer id, no retries
)

// txnState is a put transaction's status in the model.
type txnState int

const (
	txnInFlight txnState = iota // Commit called, not returned
	txnAcked                    // Commit returned nil
	txnMaybe                    // Commit returned an error
)

type tortureTxn struct {
	ids      []string
	state    txnState
	producer bool
	wasMaybe bool // a commit of it failed at some point
}

type tortureEvent struct {
	txn        *tortureTxn
	deliveries int
	lastBatch  int64
	committed  bool // taken by a committed take
	takeMaybe  bool // its take's commit failed: it may or may not be gone
	inLastScan bool
}

// tortureModel is what the clients were told, shared by all workers.
type tortureModel struct {
	mu         sync.Mutex
	txns       map[string]*tortureTxn
	events     map[string]*tortureEvent
	open       map[int64]bool // take batches not yet committed or rolled back
	nextBatch  int64
	errs       []string
	redeliv    int
	takeMaybes int
	// take batches whose commit failed, until the next scan
	maybeBatches map[int64][]string
	// producer puts acknowledged on a retry after a kill, and how many
	// of those the store reported as already committed
	prodRetried, prodDedup int
	maxQueued              int // largest channel size a scan read
	// events of failed take commits found gone after the restart
	takeMaybeApplied int
}

func newTortureModel() *tortureModel {
	return &tortureModel{txns: map[string]*tortureTxn{}, events: map[string]*tortureEvent{}, open: map[int64]bool{},
		maybeBatches: map[int64][]string{}}
}

func (m *tortureModel) errorf(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.errorfLocked(format, args...)
}

func (m *tortureModel) errorfLocked(format string, args ...any) {
	if len(m.errs) < 50 {
		m.errs = append(m.errs, fmt.Sprintf(format, args...))
	}
}

func (m *tortureModel) takeErrors() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.errs
	m.errs = nil
	return e
}

// putStarted records a put transaction whose Commit is about to be called.
func (m *tortureModel) putStarted(key string, ids []string, producer bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tx := m.txns[key]
	if tx == nil {
		tx = &tortureTxn{ids: ids, producer: producer}
		m.txns[key] = tx
		for _, id := range ids {
			m.events[id] = &tortureEvent{txn: tx}
		}
	}
	tx.state = txnInFlight
}

func (m *tortureModel) putDone(key string, ok, dedup bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tx := m.txns[key]
	if ok && tx.producer && tx.wasMaybe {
		m.prodRetried++
		if dedup {
			m.prodDedup++
		}
	}
	if dedup && !tx.wasMaybe {
		m.errorfLocked("first put of %s reported as deduplicated", key)
	}
	if ok {
		tx.state = txnAcked
	} else {
		tx.state = txnMaybe
		tx.wasMaybe = true
	}
}

// delivered records a take batch's events; it returns the batch id.
func (m *tortureModel) delivered(batch int64, evs []channel.Event) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]string, 0, len(evs))
	seen := map[string]bool{}
	for _, e := range evs {
		id, ok := eventID(e.Body)
		ev := m.events[id]
		switch {
		case !ok:
			m.errorfLocked("take delivered a malformed event %q", trunc(e.Body))
			continue
		case ev == nil:
			m.errorfLocked("take delivered %s, which was never put (Commit never called)", id)
			continue
		case seen[id]:
			m.errorfLocked("take batch %d holds %s twice", batch, id)
		case ev.committed:
			m.errorfLocked("take delivered %s again after a committed take (batch %d)", id, ev.lastBatch)
		case m.open[ev.lastBatch] && ev.lastBatch != batch:
			m.errorfLocked("take delivered %s while take batch %d still holds it", id, ev.lastBatch)
		}
		if !bytes.Equal(e.Body, eventBody(id)) {
			m.errorfLocked("event %s: body differs from what was put (%d bytes, want %d)", id, len(e.Body), len(eventBody(id)))
		}
		seen[id] = true
		ev.deliveries++
		if ev.deliveries > 1 {
			m.redeliv++
		}
		ev.lastBatch = batch
		ev.takeMaybe = false
		ids = append(ids, id)
	}
	return ids
}

func (m *tortureModel) newBatch() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextBatch++
	m.open[m.nextBatch] = true
	return m.nextBatch
}

// release closes a batch before its Commit or Rollback is sent: from then
// on the server may hand its events to another take.
func (m *tortureModel) release(batch int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.open, batch)
}

func (m *tortureModel) takeCommitted(batch int64, ids []string, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !ok && len(ids) > 0 {
		m.takeMaybes++
		m.maybeBatches[batch] = ids
	}
	for _, id := range ids {
		ev := m.events[id]
		if ev.lastBatch != batch {
			if ok {
				m.errorfLocked("%s: take batch %d committed it, but batch %d was handed it meanwhile", id, batch, ev.lastBatch)
			}
			continue
		}
		if ok {
			ev.committed = true
		} else {
			ev.takeMaybe = true
		}
	}
}

// taker runs one take client until ctx is done.
func (m *tortureModel) taker(ctx context.Context, addr string, rng *rand.Rand) {
	cl, err := client.Dial(ctx, addr, client.Options{RetryBudget: -1})
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		tx, err := cl.BeginTake(ctx, "default")
		if err != nil {
			time.Sleep(time.Millisecond)
			continue
		}
		batch := m.newBatch()
		var ids []string
		for range 1 + rng.IntN(2) {
			tctx, tcancel := context.WithTimeout(ctx, 20*time.Millisecond)
			evs, _ := tx.Take(tctx, 1+rng.IntN(64))
			tcancel()
			ids = append(ids, m.delivered(batch, evs)...)
		}
		m.release(batch)
		if rng.IntN(100) < 15 {
			tx.Rollback()
			continue
		}
		err = tx.Commit(ctx)
		m.takeCommitted(batch, ids, err == nil)
		if err != nil {
			tx.Rollback()
		}
	}
}

// torturePutter is one put client; it lives across cycles so a producer's
// failed put is retried with the same sequence after the restart.
type torturePutter struct {
	id      int
	kind    putKind
	m       *tortureModel
	rng     *rand.Rand
	n       int    // put transactions started
	seq     uint64 // producer sequence of the pending put
	pending []string
}

func (p *torturePutter) producerID() string { return fmt.Sprintf("torture-p%d", p.id) }

func (p *torturePutter) options() client.Options {
	switch p.kind {
	case putRaw:
		return client.Options{DisableAutoProducerID: true, RetryBudget: -1}
	default:
		return client.Options{}
	}
}

// put runs one put transaction: the pending producer put if there is one,
// else a new one. It reports whether the put was acknowledged.
func (p *torturePutter) put(ctx context.Context, cl *client.Client) bool {
	if p.pending == nil {
		p.n++
		k := 1 + p.rng.IntN(5)
		for i := range k {
			p.pending = append(p.pending, fmt.Sprintf("w%d-%d-%d", p.id, p.n, i))
		}
		p.seq = uint64(p.n)
	}
	key := fmt.Sprintf("w%d-%d", p.id, p.n)
	var opts channel.PutOptions
	if p.kind == putProducer {
		opts = channel.PutOptions{ProducerID: p.producerID(), Sequence: p.seq}
	}
	tx, err := cl.BeginPut(ctx, opts)
	if err != nil {
		return false
	}
	evs := make([]channel.Event, len(p.pending))
	for i, id := range p.pending {
		evs[i] = channel.Event{Headers: map[string]string{"id": id}, Body: eventBody(id)}
	}
	if err := tx.Put("default", evs...); err != nil {
		tx.Rollback()
		return false
	}
	p.m.putStarted(key, p.pending, p.kind == putProducer)
	err = tx.Commit(ctx)
	p.m.putDone(key, err == nil, err == nil && tx.Deduplicated())
	if err == nil || p.kind != putProducer {
		p.pending = nil // a failed put without a producer id is not retried
	}
	return err == nil
}

func (p *torturePutter) run(ctx context.Context, addr string) {
	cl, err := client.Dial(ctx, addr, p.options())
	if err != nil {
		return
	}
	defer cl.Close()
	for ctx.Err() == nil {
		if !p.put(ctx, cl) {
			time.Sleep(time.Millisecond)
		}
	}
}

// finish retries the pending producer put once more; it must succeed.
func (p *torturePutter) finish(ctx context.Context, addr string) error {
	if p.pending == nil {
		return nil
	}
	cl, err := client.Dial(ctx, addr, p.options())
	if err != nil {
		return err
	}
	defer cl.Close()
	if !p.put(ctx, cl) {
		return fmt.Errorf("put w%d-%d (sequence %d) failed", p.id, p.n, p.seq)
	}
	return nil
}

// scan reads the whole channel in one take transaction, rolls it back and
// checks the model (see TestTorture).
func (m *tortureModel) scan(t *testing.T, addr, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatalf("%s: dial: %v", when, err)
	}
	defer cl.Close()
	st, err := cl.Stats(context.Background(), "default")
	if err != nil {
		t.Fatalf("%s: stats: %v", when, err)
	}
	tx, err := cl.BeginTake(ctx, "default")
	if err != nil {
		t.Fatalf("%s: begin take: %v", when, err)
	}
	var all []channel.Event
	for {
		// Wait generously for what Stats promised, briefly for more.
		wait := 50 * time.Millisecond
		if int64(len(all)) < st.Size {
			wait = 5 * time.Second
		}
		tctx, tcancel := context.WithTimeout(ctx, wait)
		evs, err := tx.Take(tctx, 5000)
		tcancel()
		if errors.Is(err, channel.ErrTxnFull) {
			t.Fatalf("%s: the scan's take is full after %d events: raise transactionCapacity", when, len(all))
		}
		if len(evs) == 0 {
			break
		}
		all = append(all, evs...)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatalf("%s: rollback of the scan: %v", when, err)
	}
	if st.InFlightTakes != 0 || st.Size != int64(len(all)) {
		t.Errorf("%s: stats report %d queued and %d in open takes; the scan read %d", when, st.Size, st.InFlightTakes, len(all))
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if len(all) > m.maxQueued {
		m.maxQueued = len(all)
	}
	for _, ev := range m.events {
		ev.inLastScan = false
	}
	for _, e := range all {
		id, ok := eventID(e.Body)
		ev := m.events[id]
		switch {
		case !ok:
			t.Errorf("%s: malformed event %q in the channel", when, trunc(e.Body))
			continue
		case ev == nil:
			t.Errorf("%s: %s in the channel was never put", when, id)
			continue
		case ev.inLastScan:
			t.Errorf("%s: %s is in the channel twice", when, id)
		case ev.committed:
			t.Errorf("%s: %s is in the channel again after a committed take (batch %d)", when, id, ev.lastBatch)
		case ev.txn.state == txnInFlight:
			t.Errorf("%s: model: put of %s still in flight", when, id)
		}
		if !bytes.Equal(e.Body, eventBody(id)) {
			t.Errorf("%s: event %s: body differs from what was put", when, id)
		}
		ev.inLastScan = true
	}
	// A take whose commit failed at the kill: applied if its events are
	// gone, not applied if they are back; never half applied.
	for batch, ids := range m.maybeBatches {
		back := 0
		for _, id := range ids {
			if m.events[id].inLastScan {
				back++
			}
		}
		if back != 0 && back != len(ids) {
			t.Errorf("%s: take batch %d (%d events, commit failed at the kill) is half applied: %d events are back", when, batch, len(ids), back)
		}
		delete(m.maybeBatches, batch)
	}
	for _, ev := range m.events {
		if ev.takeMaybe {
			ev.takeMaybe = false
			ev.committed = !ev.inLastScan
			if ev.committed {
				m.takeMaybeApplied++
			}
		}
	}
	for key, tx := range m.txns {
		present := 0
		for _, id := range tx.ids {
			if ev := m.events[id]; ev.committed || ev.inLastScan {
				present++
			}
		}
		switch {
		case tx.state == txnAcked && present != len(tx.ids):
			t.Errorf("%s: acknowledged put %s (%d events) lost %d of them", when, key, len(tx.ids), len(tx.ids)-present)
		case present != 0 && present != len(tx.ids):
			t.Errorf("%s: put %s (%d events, state %d) is partly present: %d events", when, key, len(tx.ids), tx.state, present)
		}
	}
}

// drain takes and commits everything left, in batches.
func (m *tortureModel) drain(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatalf("drain: dial: %v", err)
	}
	defer cl.Close()
	for {
		tx, err := cl.BeginTake(ctx, "default")
		if err != nil {
			t.Fatalf("drain: begin take: %v", err)
		}
		batch := m.newBatch()
		wait := 100 * time.Millisecond
		if st, err := cl.Stats(context.Background(), "default"); err == nil && st.Size > 0 {
			wait = 5 * time.Second
		}
		tctx, tcancel := context.WithTimeout(ctx, wait)
		evs, _ := tx.Take(tctx, 1000)
		tcancel()
		ids := m.delivered(batch, evs)
		m.release(batch)
		if len(evs) == 0 {
			tx.Rollback()
			break
		}
		err = tx.Commit(ctx)
		if err != nil {
			t.Fatalf("drain: commit: %v", err)
		}
		m.takeCommitted(batch, ids, true)
	}
	st, err := cl.Stats(context.Background(), "default")
	if err != nil || st.Size != 0 || st.InFlightTakes != 0 {
		t.Errorf("drain: channel not empty afterwards: %+v, %v", st, err)
	}
}

// final checks the full model after the drain.
func (m *tortureModel) final(t *testing.T) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, tx := range m.txns {
		if tx.producer && tx.state != txnAcked {
			t.Errorf("producer put %s not acknowledged after the final retry", key)
		}
		for _, id := range tx.ids {
			ev := m.events[id]
			if tx.state == txnAcked && !ev.committed {
				t.Errorf("acknowledged event %s was never taken by a committed take", id)
			}
		}
	}
}

type tortureStats struct {
	acked, ackedTxns, maybe, maybeStored, taken, redelivered, takeMaybeTxns, takeMaybeApplied, maxQueued, prodRetried, prodDedup int
}

func (m *tortureModel) stats() tortureStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	var s tortureStats
	for _, tx := range m.txns {
		if tx.state == txnAcked {
			s.ackedTxns++
			s.acked += len(tx.ids)
		}
		for _, id := range tx.ids {
			ev := m.events[id]
			if tx.wasMaybe {
				s.maybe++
				if tx.state != txnAcked && ev.committed {
					s.maybeStored++
				}
			}
			if ev.committed {
				s.taken++
			}
		}
	}
	s.redelivered = m.redeliv
	s.takeMaybeTxns = m.takeMaybes
	s.prodRetried, s.prodDedup = m.prodRetried, m.prodDedup
	s.maxQueued = m.maxQueued
	s.takeMaybeApplied = m.takeMaybeApplied
	return s
}

// eventBody is the body put for id: the id, '|', and filler of a length
// derived from the id (64 bytes to 4 KiB) so segments fill and rotate.
func eventBody(id string) []byte {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	n := 64 + int(h%4033)
	b := make([]byte, 0, len(id)+1+n)
	b = append(b, id...)
	b = append(b, '|')
	for i := range n {
		b = append(b, 'a'+byte((int(h)+i)%26))
	}
	return b
}

func eventID(body []byte) (string, bool) {
	i := bytes.IndexByte(body, '|')
	if i <= 0 {
		return "", false
	}
	return string(body[:i]), true
}

func trunc(b []byte) string {
	if len(b) > 40 {
		return strings.ToValidUTF8(string(b[:40]), "?") + "…"
	}
	return string(b)
}
