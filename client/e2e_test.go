package client_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPutTakeCommit(t *testing.T) {
	e := start(t, newMemory(t), server.Options{})
	c := e.dial(t, client.Options{})
	ctx := ctxT(t)
	if got := c.Channels(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Channels = %v", got)
	}

	// One transaction across two channels, with headers.
	txn, err := c.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evs := events("e", 5)
	evs[0].Headers = map[string]string{"k": "v", "ü": "ß"}
	if err := txn.Put("a", evs...); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put("b", events("f", 2)...); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.mem.Stats(context.Background(), "a"); st.Size != 0 {
		t.Fatalf("events visible before commit: %d", st.Size)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if txn.Deduplicated() {
		t.Fatal("Deduplicated after a first commit")
	}
	if err := txn.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
		t.Fatalf("second Commit: %v", err)
	}
	st, err := c.Stats(context.Background(), "a")
	if err != nil || st.Size != 5 || st.Capacity != 10000 || st.Name != "a" {
		t.Fatalf("Stats(a) = %+v, %v", st, err)
	}

	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Take(ctx, 3)
	if err != nil || !slices.Equal(bodies(got), names("e", 0, 3)) {
		t.Fatalf("Take = %v, %v", bodies(got), err)
	}
	if got[0].Headers["k"] != "v" || got[0].Headers["ü"] != "ß" || len(got[0].Headers) != 2 {
		t.Fatalf("headers = %v", got[0].Headers)
	}
	more, err := tk.Take(ctx, 10)
	if err != nil || !slices.Equal(bodies(more), names("e", 3, 5)) {
		t.Fatalf("Take = %v, %v", bodies(more), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.Take(ctx, 1); !errors.Is(err, channel.ErrTxnDone) {
		t.Fatalf("Take after commit: %v", err)
	}
	if err := tk.Rollback(); err != nil {
		t.Fatalf("Rollback after commit: %v", err)
	}
	st, _ = e.mem.Stats(context.Background(), "a")
	if st.Size != 0 || st.InFlightTakes != 0 || st.TakeSuccesses != 5 {
		t.Fatalf("after commit: %+v", st)
	}
	// The stream is reused by the next transaction.
	tk, err = c.BeginTake(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	got, err = tk.Take(ctx, 10)
	if err != nil || !slices.Equal(bodies(got), names("f", 0, 2)) {
		t.Fatalf("Take(b) = %v, %v", bodies(got), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ { // reuse of an idle stream
		put(t, e.mem, "b", events("g", 1)...)
		tk, err = c.BeginTake(ctx, "b")
		if err != nil {
			t.Fatal(err)
		}
		got, err = tk.Take(ctx, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("Take = %v, %v", bodies(got), err)
		}
		if err := tk.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTakeRollbackExplicit(t *testing.T) {
	e := start(t, newMemory(t), server.Options{})
	c := e.dial(t, client.Options{})
	ctx := ctxT(t)
	put(t, e.mem, "a", events("e", 10)...)
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 4); err != nil || len(got) != 4 {
		t.Fatalf("Take: %v %v", len(got), err)
	}
	if st, _ := e.mem.Stats(context.Background(), "a"); st.InFlightTakes != 4 {
		t.Fatalf("in flight = %d", st.InFlightTakes)
	}
	if err := tk.Rollback(); err != nil {
		t.Fatal(err)
	}
	if err := tk.Commit(ctx); !errors.Is(err, channel.ErrTxnDone) {
		t.Fatalf("Commit after rollback: %v", err)
	}
	if got := drain(t, e.mem, "a"); !slices.Equal(got, names("e", 0, 10)) {
		t.Fatalf("after rollback: %v", got)
	}
}

func TestTakeRollbackOnDisconnect(t *testing.T) {
	e := start(t, newMemory(t), server.Options{})
	c, err := e.tryDial(client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	put(t, e.mem, "a", events("e", 10)...)
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 6); err != nil || len(got) != 6 {
		t.Fatalf("Take: %v %v", len(got), err)
	}
	c.Close() // the client goes away without committing
	waitInFlight(t, e.mem, "a")
	if err := tk.Commit(ctx); err == nil {
		t.Fatal("Commit after disconnect succeeded")
	}
	if got := drain(t, e.mem, "a"); !slices.Equal(got, names("e", 0, 10)) {
		t.Fatalf("after disconnect: %v", got)
	}
}

func TestTakeRollbackOnLeaseExpiry(t *testing.T) {
	e := start(t, newMemory(t), server.Options{})
	c := e.dial(t, client.Options{Lease: 100 * time.Millisecond})
	ctx := ctxT(t)
	put(t, e.mem, "a", events("e", 5)...)
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 3); err != nil || len(got) != 3 {
		t.Fatalf("Take: %v %v", len(got), err)
	}
	waitInFlight(t, e.mem, "a") // the lease expires
	err = tk.Commit(ctx)
	if !errors.Is(err, client.ErrLeaseExpired) || !errors.Is(err, channel.ErrTxnDone) || status.Code(err) != codes.Aborted {
		t.Fatalf("Commit after lease expiry: %v (code %v)", err, status.Code(err))
	}
	if got := drain(t, e.mem, "a"); !slices.Equal(got, names("e", 0, 5)) {
		t.Fatalf("after lease expiry: %v", got)
	}
	// The client keeps working.
	put(t, c, "a", events("x", 1)...)
	tk, err = c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 3); err != nil || len(got) != 1 {
		t.Fatalf("Take: %v %v", len(got), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestTakeWaitAndCancel(t *testing.T) {
	e := start(t, newMemory(t), server.Options{})
	c := e.dial(t, client.Options{})
	ctx := ctxT(t)
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing queued: the wait ends with the context.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	t0 := time.Now()
	got, err := tk.Take(short, 5)
	cancel()
	if len(got) != 0 || !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 3*time.Second {
		t.Fatalf("Take on empty channel: %v, %v after %v", got, err, time.Since(t0))
	}
	// A canceled (not timed out) wait: the stream stays usable.
	cctx, ccancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, ccancel)
	got, err = tk.Take(cctx, 5)
	if len(got) != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Take: %v, %v", got, err)
	}
	// A waiting take gets events put meanwhile.
	time.AfterFunc(50*time.Millisecond, func() { put(t, e.mem, "a", events("e", 2)...) })
	got, err = tk.Take(ctx, 5)
	if err != nil || !slices.Equal(bodies(got), names("e", 0, 2)) {
		t.Fatalf("waiting Take: %v, %v", bodies(got), err)
	}
	// Queued events are returned even with a done context.
	put(t, e.mem, "a", events("f", 1)...)
	done, dcancel := context.WithCancel(ctx)
	dcancel()
	got, err = tk.Take(done, 5)
	if err != nil || !slices.Equal(bodies(got), []string{"f0"}) {
		t.Fatalf("Take with done ctx: %v, %v", bodies(got), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := e.mem.Stats(context.Background(), "a"); st.Size != 0 || st.TakeSuccesses != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestTakeLargeBatchIsChunked(t *testing.T) {
	mem := newMemory(t)
	e := start(t, mem, server.Options{MaxEventSize: 1024, MaxBatchBytes: 1})
	c := e.dial(t, client.Options{})
	ctx := ctxT(t)
	body := strings.Repeat("x", 1000)
	evs := make([]channel.Event, 300) // ~300 KB: at least 4 chunks of ~65 KB
	for i := range evs {
		evs[i] = channel.Event{Body: []byte(body)}
	}
	put(t, c, "a", evs...)
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := tk.Take(ctx, 1000)
	if err != nil || len(got) != 300 {
		t.Fatalf("Take: %d, %v", len(got), err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestErrorsMapToSentinels(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 10, TransactionCapacity: 5})
	e := start(t, mem, server.Options{MaxEventSize: 100})
	c := e.dial(t, client.Options{RetryBudget: -1})
	ctx := ctxT(t)
	// try returns the error of Put, or else of Commit, and which one failed.
	try := func(name string, evs ...channel.Event) (error, bool) {
		txn, err := c.BeginPut(ctx, channel.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Put(name, evs...); err != nil {
			// As with a local store, the transaction stays usable.
			if err2 := txn.Put("a", events("ok", 1)...); err2 != nil {
				t.Fatalf("Put after a refused Put: %v", err2)
			}
			txn.Rollback()
			return err, true
		}
		return txn.Commit(ctx), false
	}
	type result struct {
		err   error
		atPut bool
	}
	r := func(err error, atPut bool) result { return result{err, atPut} }
	cases := []struct {
		name  string
		got   result
		want  error
		atPut bool       // refused by the client at Put, as the local stores do
		code  codes.Code // else the server's status at Commit
	}{
		{"empty channel", r(try("", events("e", 1)...)), channel.ErrUnknownChannel, true, 0},
		{"unknown channel", r(try("nope", events("e", 1)...)), channel.ErrUnknownChannel, true, 0},
		{"too large", r(try("a", channel.Event{Body: make([]byte, 101)})), channel.ErrEventTooLarge, true, 0},
		{"header counts", r(try("a", channel.Event{Body: make([]byte, 90), Headers: map[string]string{"kkkkk": "vvvvvv"}})), channel.ErrEventTooLarge, true, 0},
		{"txn full", r(try("a", events("e", 6)...)), channel.ErrTxnFull, true, 0},
		{"bad header", r(try("a", channel.Event{Headers: map[string]string{"k": "\xff"}})), client.ErrInvalidEvent, true, 0},
		{"bad header key", r(try("a", channel.Event{Headers: map[string]string{"\xc3": "v"}})), client.ErrInvalidEvent, true, 0},
	}
	for _, tc := range cases {
		if !errors.Is(tc.got.err, tc.want) || tc.got.atPut != tc.atPut || (!tc.atPut && status.Code(tc.got.err) != tc.code) {
			t.Errorf("%s: %v (at Put %v, code %v), want %v (at Put %v, code %v)", tc.name, tc.got.err, tc.got.atPut, status.Code(tc.got.err), tc.want, tc.atPut, tc.code)
		}
	}
	// The server still refuses at Commit what the client checks at Put:
	// raw requests naming an unknown channel, or with a header that is not
	// UTF-8.
	if _, err := c.API().Put(ctx, &sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: "a", Events: []*sluicev1.Event{{Headers: []*sluicev1.Header{{Key: []byte("k"), Value: []byte{0xff}}}}}}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("raw put with a non-UTF-8 header: %v", err)
	}
	if _, err := c.API().Put(ctx, &sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: "nope", Events: []*sluicev1.Event{{Body: []byte("x")}}}}}); status.Code(err) != codes.NotFound {
		t.Errorf("raw put to an unknown channel: %v", err)
	}
	if _, err := c.BeginTake(ctx, "nope"); !errors.Is(err, channel.ErrUnknownChannel) || status.Code(err) != codes.NotFound {
		t.Errorf("BeginTake(nope): %v", err)
	}
	if _, err := c.BeginTake(ctx, ""); !errors.Is(err, channel.ErrUnknownChannel) || status.Code(err) != codes.InvalidArgument {
		t.Errorf("BeginTake(\"\"): %v", err)
	}
	if _, err := c.Stats(context.Background(), "nope"); !errors.Is(err, channel.ErrUnknownChannel) {
		t.Errorf("Stats(nope): %v", err)
	}
	// Nothing was stored; the server still serves.
	if err, _ := try("a", events("e", 5)...); err != nil {
		t.Fatal(err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 5 {
		t.Fatalf("size %d", st.Size)
	}
	// Take transaction capacity: the 6th event of one transaction.
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 5); err != nil || len(got) != 5 {
		t.Fatalf("Take: %d, %v", len(got), err)
	}
	put(t, mem, "a", events("f", 1)...)
	if _, err := tk.Take(ctx, 1); !errors.Is(err, channel.ErrTxnFull) {
		t.Fatalf("Take beyond transactionCapacity: %v", err)
	}
	if err := tk.Commit(ctx); err != nil { // the transaction is still usable
		t.Fatal(err)
	}
}

func TestChannelFull(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 10, TransactionCapacity: 10})
	e := start(t, mem, server.Options{FullRetryDelay: 20 * time.Millisecond})
	ctx := ctxT(t)
	put(t, mem, "a", events("e", 8)...)

	c := e.dial(t, client.Options{RetryBudget: -1})
	txn, _ := c.BeginPut(ctx, channel.PutOptions{})
	txn.Put("a", events("x", 3)...)
	err := txn.Commit(ctx)
	var ce *client.Error
	if !errors.Is(err, channel.ErrChannelFull) || status.Code(err) != codes.ResourceExhausted || !errors.As(err, &ce) || ce.RetryDelay != 20*time.Millisecond {
		t.Fatalf("Commit into full channel: %v", err)
	}

	// With a retry budget the put goes through once room is made.
	c2 := e.dial(t, client.Options{RetryBudget: 5 * time.Second})
	time.AfterFunc(100*time.Millisecond, func() { drain(t, mem, "a") })
	txn, _ = c2.BeginPut(ctx, channel.PutOptions{})
	txn.Put("a", events("y", 3)...)
	if err := txn.Commit(ctx); err != nil {
		t.Fatalf("Commit with retries: %v", err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 3 {
		t.Fatalf("size %d", st.Size)
	}

	// A short budget gives up with ErrChannelFull.
	put(t, mem, "a", events("z", 7)...)
	c3 := e.dial(t, client.Options{RetryBudget: 100 * time.Millisecond})
	txn, _ = c3.BeginPut(ctx, channel.PutOptions{})
	txn.Put("a", events("w", 3)...)
	if err := txn.Commit(ctx); !errors.Is(err, channel.ErrChannelFull) {
		t.Fatalf("Commit with short budget: %v", err)
	}
}

// dropFirstAck is a client interceptor that lets the first Put reach the
// server and then reports UNAVAILABLE, as if the answer was lost.
func dropFirstAck(n *atomic.Int32) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		if strings.HasSuffix(method, "/Put") && n.Add(1) == 1 && err == nil {
			return status.Error(codes.Unavailable, "connection lost (injected)")
		}
		return err
	}
}

func TestProducerSequenceRetryNotDuplicated(t *testing.T) {
	mem := newMemory(t)
	e := start(t, mem, server.Options{})
	ctx := ctxT(t)

	// Generated producer id: the retried Put is deduplicated by the store.
	var n atomic.Int32
	c := e.dial(t, client.Options{DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(dropFirstAck(&n))}})
	txn, _ := c.BeginPut(ctx, channel.PutOptions{})
	txn.Put("a", events("e", 3)...)
	txn.Put("b", events("f", 2)...)
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Load() != 2 {
		t.Fatalf("%d Put calls, want 2", n.Load())
	}
	if txn.Deduplicated() {
		t.Fatal("Deduplicated with a generated producer id")
	}
	for _, ch := range []string{"a", "b"} {
		if st, _ := mem.Stats(context.Background(), ch); (ch == "a" && st.Size != 3) || (ch == "b" && st.Size != 2) {
			t.Fatalf("channel %s holds %d events: duplicated", ch, st.Size)
		}
	}
	// Later commits of the same client get new sequences.
	put(t, c, "a", events("g", 1)...)
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 4 {
		t.Fatalf("size %d", st.Size)
	}

	// Caller's producer id: a repeated (producer, sequence) is a no-op.
	c2 := e.dial(t, client.Options{})
	for i, wantDedup := range []bool{false, true} {
		txn, _ := c2.BeginPut(ctx, channel.PutOptions{ProducerID: "p1", Sequence: 7})
		txn.Put("b", events("h", 1)...)
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if txn.Deduplicated() != wantDedup {
			t.Fatalf("put %d: Deduplicated = %v", i, txn.Deduplicated())
		}
	}
	if st, _ := mem.Stats(context.Background(), "b"); st.Size != 3 {
		t.Fatalf("size %d", st.Size)
	}

	// Without generated ids the lost ack duplicates (at-least-once).
	n.Store(0)
	c3 := e.dial(t, client.Options{DisableAutoProducerID: true, DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(dropFirstAck(&n))}})
	put(t, c3, "a", events("i", 1)...)
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 6 {
		t.Fatalf("size %d, want 6 (4 + a duplicated put)", st.Size)
	}
}

func TestConcurrentPutsAndTakes(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 100000, TransactionCapacity: 100})
	e := start(t, mem, server.Options{})
	c := e.dial(t, client.Options{})
	ctx := ctxT(t)
	const producers, perProducer, batch = 4, 25, 10
	errs := make(chan error, producers+1)
	for p := 0; p < producers; p++ {
		go func() {
			for i := 0; i < perProducer; i++ {
				txn, _ := c.BeginPut(ctx, channel.PutOptions{})
				txn.Put("a", events("e", batch)...)
				if err := txn.Commit(ctx); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	go func() {
		total := 0
		for total < producers*perProducer*batch {
			tk, err := c.BeginTake(ctx, "a")
			if err != nil {
				errs <- err
				return
			}
			evs, err := tk.Take(ctx, 37)
			if err != nil {
				errs <- err
				return
			}
			if err := tk.Commit(ctx); err != nil {
				errs <- err
				return
			}
			total += len(evs)
		}
		errs <- nil
	}()
	for i := 0; i < producers+1; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 0 || st.TakeSuccesses != producers*perProducer*batch {
		t.Fatalf("stats %+v", st)
	}
}

// A remote source reads its resume position from the server's store.
func TestProducerSequenceOverGRPC(t *testing.T) {
	mem := newMemory(t)
	c := start(t, mem, server.Options{}).dial(t, client.Options{RetryBudget: -1})
	ctx := ctxT(t)
	if _, ok, err := c.ProducerSequence(ctx, "a", "tail-1"); err != nil || ok {
		t.Fatalf("before any put: %v %v", ok, err)
	}
	tx, _ := c.BeginPut(ctx, channel.PutOptions{ProducerID: "tail-1", Sequence: 41})
	tx.Put("a", events("line", 3)...)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if seq, ok, err := c.ProducerSequence(ctx, "a", "tail-1"); err != nil || !ok || seq != 41 {
		t.Fatalf("after the put: %d %v %v, want 41", seq, ok, err)
	}
	if _, _, err := c.ProducerSequence(ctx, "nope", "tail-1"); !errors.Is(err, channel.ErrUnknownChannel) || status.Code(err) != codes.NotFound {
		t.Fatalf("unknown channel: %v", err)
	}
	if _, _, err := c.ProducerSequence(ctx, "a", ""); !errors.Is(err, channel.ErrBadProducer) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty producer id: %v", err)
	}
}

// A sink that holds its take longer than the lease keeps it by extending
// the lease; without that the server rolls it back.
func TestTakeLeaseExtended(t *testing.T) {
	mem := newMemory(t)
	c := start(t, mem, server.Options{}).dial(t, client.Options{RetryBudget: -1, Lease: 300 * time.Millisecond})
	ctx := ctxT(t)
	put(t, c, "a", events("e", 4)...)
	hold := func(extend bool) error {
		tk, err := c.BeginTake(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		if got, err := tk.Take(ctx, 2); err != nil || len(got) != 2 {
			t.Fatalf("take: %d %v", len(got), err)
		}
		for range 8 { // 800 ms: well past the 300 ms lease
			time.Sleep(100 * time.Millisecond)
			if extend {
				if err := tk.(channel.LeaseExtender).ExtendLease(ctx); err != nil {
					t.Fatalf("ExtendLease: %v", err)
				}
			}
		}
		return tk.Commit(ctx)
	}
	if err := hold(true); err != nil {
		t.Fatalf("commit of an extended take: %v", err)
	}
	if err := hold(false); !errors.Is(err, client.ErrLeaseExpired) {
		t.Fatalf("commit of a take held past its lease: %v, want ErrLeaseExpired", err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 2 {
		t.Fatalf("size %d, want 2 (the expired take's events back, the extended one's gone)", st.Size)
	}
}
