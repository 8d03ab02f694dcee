package server_test

// Regression tests for issue #16, "The gRPC server against hostile or
// broken clients". Every test runs the server on a real TCP socket.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/server"
)

// serveTCP serves ch on 127.0.0.1:0 and returns the server and its address.
func serveTCP(t *testing.T, ch channel.Store, opts server.Options) (*server.Server, string) {
	t.Helper()
	srv, err := server.New(ch, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, lis.Addr().String()
}

func dialTCP(t *testing.T, addr string, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// payloadCounter is a server stats.Handler counting received messages: a
// request whose message was read and decoded shows up as an InPayload.
type payloadCounter struct{ in atomic.Int64 }

func (p *payloadCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloadCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.InPayload); ok {
		p.in.Add(1)
	}
}
func (p *payloadCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p *payloadCounter) HandleConn(context.Context, stats.ConnStats) {}

// rawCodec sends and receives messages as already encoded bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// emptyHeadersPut encodes a PutRequest to channel "a" of one event with n
// empty headers: 2 bytes each on the wire, a *Header of about 70 bytes each
// once unmarshalled.
func emptyHeadersPut(n int) []byte {
	event := bytes.Repeat([]byte{1<<3 | 2, 0}, n) // Event.headers = 1, empty
	var ce []byte
	ce = protowire.AppendTag(ce, 1, protowire.BytesType) // ChannelEvents.channel
	ce = protowire.AppendString(ce, "a")
	ce = protowire.AppendTag(ce, 2, protowire.BytesType) // ChannelEvents.events
	ce = protowire.AppendBytes(ce, event)
	var req []byte
	req = protowire.AppendTag(req, 1, protowire.BytesType) // PutRequest.puts
	return protowire.AppendBytes(req, ce)
}

// Item 1: the token is checked before the request is read.
func TestUnauthenticatedPutIsNotRead(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pc := &payloadCounter{}
	mem := newMemory(t)
	srv, addr := serveTCP(t, mem, server.Options{TokensFile: tokens, ServerOptions: []grpc.ServerOption{grpc.StatsHandler(pc)}})
	conn := dialTCP(t, addr)
	ctx := ctxT(t)

	const size = 12 << 20
	req := emptyHeadersPut(size / 2)
	var resp []byte
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	err := conn.Invoke(ctx, sluicev1.Sluice_Put_FullMethodName, &req, &resp, grpc.ForceCodec(rawCodec{}))
	runtime.ReadMemStats(&after)
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("unauthenticated put: %v, want UNAUTHENTICATED", err)
	}
	t.Logf("allocated %d KiB around the rejected put", (after.TotalAlloc-before.TotalAlloc)>>10)
	// Unmarshalled, the request is ~840 MiB (it was, before the token was
	// checked first); rejected from its headers, the client and the server
	// together allocate well under its wire size.
	if d := after.TotalAlloc - before.TotalAlloc; d > size {
		t.Errorf("the rejected %d MiB put allocated %d MiB; the request was read", size>>20, d>>20)
	}
	if n := pc.in.Load(); n != 0 {
		t.Errorf("the server received %d messages of the unauthenticated put", n)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.PutAttempts != 0 || st.Size != 0 {
		t.Errorf("put handler ran: %+v", st)
	}

	// Authenticated, the same connection works.
	api := sluicev1.NewSluiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer secret")
	if _, err := api.Put(actx, putReq("a", ev("x"))); err != nil {
		t.Fatal(err)
	}
	if n := pc.in.Load(); n != 1 {
		t.Errorf("%d messages received, want 1", n)
	}

	// Refused RPCs are counted, those to made-up methods under one label.
	for i := range 3 {
		conn.Invoke(ctx, fmt.Sprintf("/made.Up/M%d", i), &req, &resp, grpc.ForceCodec(rawCodec{}))
	}
	rec := httptest.NewRecorder()
	srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	m := rec.Body.String()
	if !strings.Contains(m, `code="Unauthenticated",method="/sluice.v1.Sluice/Put"} 1`) ||
		!strings.Contains(m, `code="Unauthenticated",method="unknown"} 3`) || strings.Contains(m, "made.Up") {
		t.Errorf("RPC metrics:\n%s", m)
	}
}

// Item 1: the default receive limit is 16 MiB.
func TestDefaultReceiveLimit(t *testing.T) {
	_, addr := serveTCP(t, newMemory(t), server.Options{})
	conn := dialTCP(t, addr)
	req := emptyHeadersPut(9 << 20) // 18 MiB
	var resp []byte
	err := conn.Invoke(ctxT(t), sluicev1.Sluice_Put_FullMethodName, &req, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("18 MiB put: %v, want RESOURCE_EXHAUSTED", err)
	}
}

// Item 1: headers per event are capped.
func TestMaxHeadersPerEvent(t *testing.T) {
	_, addr := serveTCP(t, newMemory(t), server.Options{MaxHeadersPerEvent: 4})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	hs := func(n int) *sluicev1.Event {
		e := ev("x")
		for i := range n {
			e.Headers = append(e.Headers, &sluicev1.Header{Key: []byte(fmt.Sprint("k", i))})
		}
		return e
	}
	if _, err := api.Put(ctx, putReq("a", hs(4))); err != nil {
		t.Fatalf("4 headers: %v", err)
	}
	_, err := api.Put(ctx, putReq("a", hs(5)))
	if status.Code(err) != codes.InvalidArgument || reason(err) != sluicev1.ReasonTooManyHeaders {
		t.Fatalf("5 headers: %v (reason %q)", err, reason(err))
	}
	// The default is 256.
	_, addr = serveTCP(t, newMemory(t), server.Options{})
	api = sluicev1.NewSluiceClient(dialTCP(t, addr))
	if _, err := api.Put(ctx, putReq("a", hs(256))); err != nil {
		t.Fatalf("256 headers: %v", err)
	}
	if _, err := api.Put(ctx, putReq("a", hs(257))); reason(err) != sluicev1.ReasonTooManyHeaders {
		t.Fatalf("257 headers: %v", err)
	}
}

// Item 1: Put RPCs in flight are capped server-wide; the excess fails fast
// with a retry hint.
func TestConcurrentPutsCapped(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 1, TransactionCapacity: 1, KeepAlive: 5 * time.Second})
	_, addr := serveTCP(t, mem, server.Options{MaxConcurrentPuts: 1})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	if _, err := api.Put(ctx, putReq("a", ev("1"))); err != nil {
		t.Fatal(err)
	}
	// The channel is full: this put waits in the server for room.
	waiting := make(chan error, 1)
	go func() {
		_, err := api.Put(ctx, putReq("a", ev("2")))
		waiting <- err
	}()
	for st, _ := mem.Stats(context.Background(), "a"); st.PutAttempts < 2; st, _ = mem.Stats(context.Background(), "a") {
		time.Sleep(5 * time.Millisecond)
	}
	_, err := api.Put(ctx, putReq("a", ev("3")))
	if status.Code(err) != codes.ResourceExhausted || reason(err) != sluicev1.ReasonServerBusy {
		t.Fatalf("put beyond MaxConcurrentPuts: %v (reason %q)", err, reason(err))
	}
	txn, _ := mem.BeginTake(ctx, "a")
	txn.Take(ctx, 1)
	txn.Commit(ctx)
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	// The slot is free again.
	txn, _ = mem.BeginTake(ctx, "a")
	txn.Take(ctx, 1)
	txn.Commit(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := api.Put(ctx, putReq("a", ev("4")))
		if err == nil {
			break
		}
		if reason(err) != sluicev1.ReasonServerBusy || time.Now().After(deadline) {
			t.Fatalf("put after the slot was freed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Item 2: producer ids are validated.
func TestProducerValidation(t *testing.T) {
	mem := newMemory(t)
	_, addr := serveTCP(t, mem, server.Options{})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	put := func(id string, seq uint64, events ...*sluicev1.Event) (*sluicev1.PutResponse, error) {
		r := putReq("a", events...)
		r.ProducerId, r.Sequence = id, seq
		return api.Put(ctx, r)
	}
	for _, tc := range []struct {
		name string
		id   string
		seq  uint64
	}{
		{"too long", strings.Repeat("p", 257), 1},
		{"sequence 0", "p", 0},
	} {
		_, err := put(tc.id, tc.seq, ev("x"))
		if status.Code(err) != codes.InvalidArgument || reason(err) != sluicev1.ReasonInvalidProducer {
			t.Errorf("%s: %v (reason %q), want INVALID_ARGUMENT INVALID_PRODUCER", tc.name, err, reason(err))
		}
	}
	// Sequence 0 was not recorded: sequence 1 of that producer is stored.
	if r, err := put("p", 1, ev("1")); err != nil || r.GetDeduplicated() || r.GetCommitted() != 1 {
		t.Fatalf("p/1: %v %v", r, err)
	}
	if r, err := put(strings.Repeat("q", 256), 1, ev("2")); err != nil || r.GetCommitted() != 1 {
		t.Fatalf("256-byte producer id: %v %v", r, err)
	}
	// An empty put with a producer id records the position (documented).
	if r, err := put("p", 5); err != nil || r.GetCommitted() != 0 {
		t.Fatalf("empty put p/5: %v %v", r, err)
	}
	if r, err := put("p", 5, ev("dup")); err != nil || !r.GetDeduplicated() {
		t.Fatalf("p/5 after the empty put: %v %v", r, err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 2 {
		t.Fatalf("size %d, want 2", st.Size)
	}
}

// Per-event sequences on the wire: first_sequence per entry, the server's
// checks of the modes, and duplicates in the response.
func TestPerEventSequencesWire(t *testing.T) {
	mem := newMemory(t)
	_, addr := serveTCP(t, mem, server.Options{})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	entry := func(first uint64, bodies ...string) *sluicev1.ChannelEvents {
		ce := &sluicev1.ChannelEvents{Channel: "a", FirstSequence: first}
		for _, b := range bodies {
			ce.Events = append(ce.Events, ev(b))
		}
		return ce
	}
	put := func(id string, seq uint64, entries ...*sluicev1.ChannelEvents) (*sluicev1.PutResponse, error) {
		return api.Put(ctx, &sluicev1.PutRequest{ProducerId: id, Sequence: seq, Puts: entries})
	}
	for _, tc := range []struct {
		name    string
		id      string
		seq     uint64
		entries []*sluicev1.ChannelEvents
	}{
		{"first_sequence without producer", "", 0, []*sluicev1.ChannelEvents{entry(1, "x")}},
		{"first_sequence in whole-put mode", "p", 4, []*sluicev1.ChannelEvents{entry(1, "x")}},
		{"per-event entry without first_sequence", "p", 0, []*sluicev1.ChannelEvents{entry(1, "x"), entry(0, "y")}},
		{"sequences not increasing", "p", 0, []*sluicev1.ChannelEvents{entry(5, "x", "y"), entry(6, "z")}},
	} {
		_, err := put(tc.id, tc.seq, tc.entries...)
		if status.Code(err) != codes.InvalidArgument || reason(err) != sluicev1.ReasonInvalidProducer {
			t.Errorf("%s: %v (reason %q), want INVALID_ARGUMENT INVALID_PRODUCER", tc.name, err, reason(err))
		}
	}
	if r, err := put("p", 0, entry(1, "1", "2"), entry(5, "5")); err != nil || r.GetCommitted() != 3 || r.GetDuplicates() != 0 || r.GetDeduplicated() {
		t.Fatalf("p 1,2,5: %v %v", r, err)
	}
	if r, err := put("p", 0, entry(2, "2", "3", "4", "5", "6")); err != nil || r.GetCommitted() != 1 || r.GetDuplicates() != 4 || r.GetDeduplicated() {
		t.Fatalf("p 2..6 after 5: %v %v", r, err)
	}
	if r, err := put("p", 0, entry(6, "6")); err != nil || r.GetCommitted() != 0 || r.GetDuplicates() != 1 || !r.GetDeduplicated() {
		t.Fatalf("p 6 again: %v %v", r, err)
	}
	if r, err := put("p", 0); err != nil || r.GetCommitted() != 0 || r.GetDeduplicated() {
		t.Fatalf("empty per-event put: %v %v", r, err)
	}
	// A whole put's dedup reports its events as duplicates.
	if r, err := put("q", 3, entry(0, "q")); err != nil || r.GetCommitted() != 1 {
		t.Fatalf("q/3: %v %v", r, err)
	}
	if r, err := put("q", 3, entry(0, "q", "q")); err != nil || !r.GetDeduplicated() || r.GetDuplicates() != 2 {
		t.Fatalf("q/3 again: %v %v", r, err)
	}
	if seq, ok, _ := mem.ProducerSequence(ctx, "a", "p"); !ok || seq != 6 {
		t.Fatalf("mark of p: %d %v, want 6", seq, ok)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 5 {
		t.Fatalf("size %d, want 5 (1, 2, 5, 6, q)", st.Size)
	}
}

// recvAll reads the batches answering one take request.
func recvAll(t *testing.T, s sluicev1.Sluice_TakeClient) []*sluicev1.Event {
	t.Helper()
	var out []*sluicev1.Event
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		b := r.GetBatch()
		if b == nil {
			t.Fatalf("not a batch: %v", r)
		}
		out = append(out, b.GetEvents()...)
		if !b.GetMore() {
			return out
		}
	}
}

// Item 3: one take request stops at MaxTakeBytes instead of taking
// transactionCapacity events at once.
func TestTakeStopsAtMaxTakeBytes(t *testing.T) {
	mem, err := memstore.New(memstore.Options{MaxEventSize: 64 << 10,
		Channels: []channel.ChannelConfig{{Name: "a", Capacity: 1000, TransactionCapacity: 1000}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	const evSize = 60 << 10
	_, addr := serveTCP(t, mem, server.Options{MaxEventSize: 64 << 10, MaxBatchBytes: 128 << 10, MaxTakeBytes: 512 << 10})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	for range 10 {
		events := make([]*sluicev1.Event, 10)
		for i := range events {
			events[i] = &sluicev1.Event{Body: make([]byte, evSize)}
		}
		if _, err := api.Put(ctx, putReq("a", events...)); err != nil {
			t.Fatal(err)
		}
	}
	s, err := api.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a", MaxEvents: 1000}}})
	got := recvAll(t, s)
	if n := len(got); n == 0 || n*evSize > 512<<10 {
		t.Fatalf("one take request returned %d events of %d KiB, more than MaxTakeBytes (512 KiB)", n, evSize>>10)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.InFlightTakes != int64(len(got)) {
		t.Fatalf("%d events held by the take, %d sent", st.InFlightTakes, len(got))
	}
	total := len(got)
	for total < 100 {
		s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{MaxEvents: 1000}}})
		n := len(recvAll(t, s))
		if n == 0 || n*evSize > 512<<10 {
			t.Fatalf("next returned %d events", n)
		}
		total += n
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Commit{Commit: &sluicev1.TakeCommit{}}})
	if r, err := s.Recv(); err != nil || r.GetAck().GetEvents() != 100 {
		t.Fatalf("commit: %v %v", r, err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 0 || st.InFlightTakes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Item 3: open take streams are capped server-wide.
func TestTakeStreamsCapped(t *testing.T) {
	_, addr := serveTCP(t, newMemory(t), server.Options{MaxTakeStreams: 2})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	open := func(ctx context.Context) error {
		s, err := api.Take(ctx)
		if err != nil {
			return err
		}
		s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a"}}})
		_, err = s.Recv()
		return err
	}
	c1, cancel1 := context.WithCancel(ctx)
	if err := open(c1); err != nil {
		t.Fatal(err)
	}
	if err := open(ctx); err != nil {
		t.Fatal(err)
	}
	err := open(ctx)
	if status.Code(err) != codes.ResourceExhausted || reason(err) != sluicev1.ReasonServerBusy {
		t.Fatalf("third take stream: %v (reason %q)", err, reason(err))
	}
	cancel1()
	deadline := time.Now().Add(5 * time.Second)
	for err := open(ctx); err != nil; err = open(ctx) {
		if time.Now().After(deadline) {
			t.Fatalf("take stream after one closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Item 4: a consumer that stops reading does not pin its events beyond the
// lease: the lease runs while the server is blocked sending to it.
func TestLeaseWhileClientStopsReading(t *testing.T) {
	const evSize = 200 << 10
	mem, err := memstore.New(memstore.Options{MaxEventSize: 256 << 10,
		Channels: []channel.ChannelConfig{{Name: "a", Capacity: 100, TransactionCapacity: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	const lease = 500 * time.Millisecond
	_, addr := serveTCP(t, mem, server.Options{MaxEventSize: 256 << 10, DefaultLease: lease})
	ctx := ctxT(t)
	put := sluicev1.NewSluiceClient(dialTCP(t, addr))
	for range 4 {
		events := make([]*sluicev1.Event, 10)
		for i := range events {
			events[i] = &sluicev1.Event{Body: make([]byte, evSize)}
		}
		if _, err := put.Put(ctx, putReq("a", events...)); err != nil {
			t.Fatal(err)
		}
	}
	// A consumer with the smallest windows that asks for everything and
	// then reads nothing.
	conn := dialTCP(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	s, err := sluicev1.NewSluiceClient(conn).Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a", MaxEvents: 40}}})
	for st, _ := mem.Stats(context.Background(), "a"); st.InFlightTakes == 0; st, _ = mem.Stats(context.Background(), "a") {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the take did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for st, _ := mem.Stats(context.Background(), "a"); st.InFlightTakes != 0 || st.Size != 40; st, _ = mem.Stats(context.Background(), "a") {
		if time.Since(start) > lease+3*time.Second {
			t.Fatalf("%v after the take began the events are still held (%+v)", time.Since(start), st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The consumer, reading at last, finds the stream aborted.
	for {
		_, err := s.Recv()
		if err != nil {
			if status.Code(err) != codes.Aborted || reason(err) != sluicev1.ReasonLeaseExpired {
				t.Fatalf("stream ended with %v, want ABORTED LEASE_EXPIRED", err)
			}
			break
		}
	}
	// The events are delivered again, in order, to the next consumer.
	txn, _ := mem.BeginTake(ctx, "a")
	if got, err := txn.Take(ctx, 100); err != nil || len(got) != 40 {
		t.Fatalf("take after the rollback: %d %v", len(got), err)
	}
	txn.Commit(ctx)
}

// Item 5: a reload that finds no usable token denies everyone.
func TestTokensReloadFailsClosed(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	write := func(data string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(tokens, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tokens, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("old\n", 0o600)
	var logBuf syncBuffer
	srv, addr := serveTCP(t, newMemory(t), server.Options{TokensFile: tokens, Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	try := func(tok string) codes.Code {
		_, err := api.Stats(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok), &sluicev1.StatsRequest{})
		return status.Code(err)
	}
	if c := try("old"); c != codes.OK {
		t.Fatalf("old token: %v", c)
	}
	for _, tc := range []struct {
		name  string
		setup func()
	}{
		{"emptied", func() { write("# nothing\n", 0o600) }},
		{"deleted", func() { os.Remove(tokens) }},
		{"group-readable", func() { write("old\n", 0o640) }},
		{"other-readable", func() { write("old\n", 0o604) }},
	} {
		tc.setup()
		if err := srv.ReloadTokens(); err == nil {
			t.Errorf("%s: ReloadTokens succeeded", tc.name)
		}
		if c := try("old"); c != codes.Unauthenticated {
			t.Errorf("%s tokens file: the old token still works (%v)", tc.name, c)
		}
		if c := try(""); c != codes.Unauthenticated {
			t.Errorf("%s tokens file: no token: %v", tc.name, c)
		}
		// Fixed: the new token works, the old one not.
		write("new\n", 0o600)
		if err := srv.ReloadTokens(); err != nil {
			t.Fatal(err)
		}
		if try("new") != codes.OK || try("old") != codes.Unauthenticated {
			t.Fatalf("%s: after the fix: new %v old %v", tc.name, try("new"), try("old"))
		}
		write("old\n", 0o600)
		srv.ReloadTokens()
	}
	if !strings.Contains(logBuf.String(), "EVERY request is refused") {
		t.Errorf("a failed reload was not logged loudly: %s", logBuf.String())
	}
	// A tokens file others can read is refused at startup too.
	write("old\n", 0o644)
	if _, err := server.New(newMemory(t), server.Options{TokensFile: tokens}); err == nil || !strings.Contains(err.Error(), "mode 0644") {
		t.Fatalf("New with a world-readable tokens file: %v", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// failingStore is a memory channel whose puts fail with a configurable
// error, as a file store's do when the disk fails.
type failingStore struct {
	*memstore.Store
	err error
}

func (f *failingStore) BeginPut(context.Context, channel.PutOptions) (channel.PutTxn, error) {
	return nil, f.err
}

// Item 6: store errors are logged in full and reach the client as a reason
// and a generic message.
func TestStoreErrorsDoNotLeakToClients(t *testing.T) {
	const path = "/srv/sluice/data1/segment-000042.wal"
	var logBuf syncBuffer
	st := &failingStore{Store: newMemory(t)}
	_, addr := serveTCP(t, st, server.Options{Logger: slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{fmt.Errorf("wal: write %s at offset 81920: %w", path, syscall.EIO), codes.Internal, ""},
		{fmt.Errorf("%w: %s has 10 MiB free, minimum 1 GiB", channel.ErrDiskSpace, filepath.Dir(path)), codes.ResourceExhausted, sluicev1.ReasonDiskSpace},
		{fmt.Errorf("%w: queue file %s is full at offset 81920", channel.ErrChannelFull, path), codes.ResourceExhausted, sluicev1.ReasonChannelFull},
	} {
		st.err = tc.err
		_, err := api.Put(ctx, putReq("a", ev("x")))
		msg := status.Convert(err).Message()
		if status.Code(err) != tc.code || reason(err) != tc.reason {
			t.Errorf("%v: got %v (reason %q), want %v %q", tc.err, err, reason(err), tc.code, tc.reason)
		}
		for _, leak := range []string{"/srv/sluice", "data1", "81920", "input/output", "MiB free"} {
			if strings.Contains(msg, leak) {
				t.Errorf("message %q sent to the client contains %q", msg, leak)
			}
		}
		if msg == "" {
			t.Errorf("%v: empty message", tc.err)
		}
	}
	if l := logBuf.String(); !strings.Contains(l, path) || !strings.Contains(l, "input/output error") {
		t.Errorf("the server log lacks the full error: %s", l)
	}
	// Internal errors carry an id found in the log.
	st.err = errors.New("checkpoint " + path + ": boom")
	_, err := api.Put(ctx, putReq("a", ev("x")))
	msg := status.Convert(err).Message()
	i := strings.Index(msg, "error id ")
	if i < 0 {
		t.Fatalf("internal error without an id: %q", msg)
	}
	id := strings.Fields(msg[i+len("error id "):])[0]
	id = strings.TrimRight(id, ";)")
	if !strings.Contains(logBuf.String(), "error_id="+id) {
		t.Errorf("error id %s not in the log", id)
	}
}

// The store's producer-table bound reaches a remote producer as
// RESOURCE_EXHAUSTED PRODUCER_TABLE_FULL, with nothing stored.
func TestProducerTableFullStatus(t *testing.T) {
	mem, err := memstore.New(memstore.Options{MaxProducers: 1,
		Channels: []channel.ChannelConfig{{Name: "a", Capacity: 100, TransactionCapacity: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	_, addr := serveTCP(t, mem, server.Options{})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	for i, id := range []string{"p1", "p2"} {
		r := putReq("a", ev("x"))
		r.ProducerId, r.Sequence = id, 1
		_, err := api.Put(ctxT(t), r)
		if i == 0 && err != nil {
			t.Fatal(err)
		}
		if i == 1 && (status.Code(err) != codes.ResourceExhausted || reason(err) != sluicev1.ReasonProducerTableFull) {
			t.Fatalf("second producer: %v (reason %q), want RESOURCE_EXHAUSTED PRODUCER_TABLE_FULL", err, reason(err))
		}
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 1 {
		t.Fatalf("size %d, want 1", st.Size)
	}
}

// A take commit that carries a move (TakeCommit.puts) is validated like a
// Put by the server itself, whatever the client checked: an unknown
// channel, an event with an invalid header, an oversized event or a
// first_sequence each get a TakeError with the reason, and nothing is moved
// (the taken events are back at the head). A valid move commits both.
func TestTakeCommitMoveValidated(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 100, TransactionCapacity: 10},
		channel.ChannelConfig{Name: "dlq", Capacity: 100, TransactionCapacity: 10})
	_, addr := serveTCP(t, mem, server.Options{MaxEventSize: 1 << 10})
	api := sluicev1.NewSluiceClient(dialTCP(t, addr))
	ctx := ctxT(t)
	if _, err := api.Put(ctx, putReq("a", ev("e0"), ev("e1"))); err != nil {
		t.Fatal(err)
	}
	s, err := api.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a"}}})
	recvAll(t, s)
	bad := []struct {
		name   string
		puts   []*sluicev1.ChannelEvents
		code   codes.Code
		reason string
	}{
		{"unknown channel", []*sluicev1.ChannelEvents{{Channel: "nope", Events: []*sluicev1.Event{ev("x")}}}, codes.NotFound, sluicev1.ReasonUnknownChannel},
		{"empty channel", []*sluicev1.ChannelEvents{{Events: []*sluicev1.Event{ev("x")}}}, codes.InvalidArgument, sluicev1.ReasonEmptyChannel},
		{"invalid header", []*sluicev1.ChannelEvents{{Channel: "dlq", Events: []*sluicev1.Event{{Body: []byte("x"), Headers: []*sluicev1.Header{{Key: []byte("k"), Value: []byte{0xff}}}}}}}, codes.InvalidArgument, sluicev1.ReasonInvalidHeader},
		{"oversized", []*sluicev1.ChannelEvents{{Channel: "dlq", Events: []*sluicev1.Event{{Body: make([]byte, 2<<10)}}}}, codes.InvalidArgument, sluicev1.ReasonEventTooLarge},
		{"first sequence", []*sluicev1.ChannelEvents{{Channel: "dlq", FirstSequence: 1, Events: []*sluicev1.Event{ev("x")}}}, codes.InvalidArgument, sluicev1.ReasonInvalidProducer},
		{"over transactionCapacity", []*sluicev1.ChannelEvents{{Channel: "dlq", Events: evs(11)}}, codes.InvalidArgument, sluicev1.ReasonTxnFull},
	}
	for _, tc := range bad {
		s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{MaxEvents: 10}}})
		if got := recvAll(t, s); len(got) != 2 {
			t.Fatalf("%s: took %d events, want 2", tc.name, len(got))
		}
		s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Commit{Commit: &sluicev1.TakeCommit{Puts: tc.puts}}})
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		te := r.GetError()
		if te == nil || codes.Code(te.GetCode()) != tc.code || te.GetReason() != tc.reason {
			t.Fatalf("%s: answer %v, want code %v reason %s", tc.name, r, tc.code, tc.reason)
		}
		for name, want := range map[string]int64{"a": 2, "dlq": 0} {
			if st, _ := mem.Stats(ctx, name); st.Size != want || st.InFlightTakes != 0 {
				t.Fatalf("%s: channel %s size %d in flight %d after the refused move, want %d, 0", tc.name, name, st.Size, st.InFlightTakes, want)
			}
		}
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{MaxEvents: 1}}})
	got := recvAll(t, s)
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Commit{Commit: &sluicev1.TakeCommit{
		Puts: []*sluicev1.ChannelEvents{{Channel: "dlq", Events: got}}}}})
	if r, err := s.Recv(); err != nil || r.GetAck().GetEvents() != 1 {
		t.Fatalf("valid move: %v %v", r, err)
	}
	for name, want := range map[string]int64{"a": 1, "dlq": 1} {
		if st, _ := mem.Stats(ctx, name); st.Size != want {
			t.Fatalf("after the move channel %s holds %d, want %d", name, st.Size, want)
		}
	}
}
