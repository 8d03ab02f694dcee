package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

func newMemory(t testing.TB, cfgs ...channel.ChannelConfig) *memstore.Store {
	t.Helper()
	if len(cfgs) == 0 {
		cfgs = []channel.ChannelConfig{{Name: "a", Capacity: 100, TransactionCapacity: 10}}
	}
	mem, err := memstore.New(memstore.Options{Channels: cfgs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// serveBuf serves ch over bufconn and returns a raw connection factory.
func serveBuf(t *testing.T, ch channel.Store, opts server.Options) (*server.Server, func() *grpc.ClientConn) {
	t.Helper()
	srv, err := server.New(ch, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, func() *grpc.ClientConn {
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ev(body string) *sluicev1.Event { return &sluicev1.Event{Body: []byte(body)} }

func evs(n int) []*sluicev1.Event {
	out := make([]*sluicev1.Event, n)
	for i := range out {
		out[i] = ev("e")
	}
	return out
}

func putReq(name string, events ...*sluicev1.Event) *sluicev1.PutRequest {
	return &sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: name, Events: events}}}
}

func reason(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

func TestBadRequests(t *testing.T) {
	mem := newMemory(t)
	_, dial := serveBuf(t, mem, server.Options{MaxEventSize: 100})
	api := sluicev1.NewSluiceClient(dial())
	ctx := ctxT(t)
	cases := []struct {
		name   string
		req    *sluicev1.PutRequest
		code   codes.Code
		reason string
	}{
		{"empty channel", putReq("", ev("x")), codes.InvalidArgument, sluicev1.ReasonEmptyChannel},
		{"unknown channel", putReq("zz", ev("x")), codes.NotFound, sluicev1.ReasonUnknownChannel},
		{"unknown second channel", &sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: "a", Events: evs(1)}, {Channel: "zz", Events: evs(1)}}}, codes.NotFound, sluicev1.ReasonUnknownChannel},
		{"oversized event", putReq("a", &sluicev1.Event{Body: make([]byte, 101)}), codes.InvalidArgument, sluicev1.ReasonEventTooLarge},
		{"too many events", putReq("a", evs(11)...), codes.InvalidArgument, sluicev1.ReasonTxnFull},
		{"invalid UTF-8 header value", putReq("a", &sluicev1.Event{Headers: []*sluicev1.Header{{Key: []byte("k"), Value: []byte{0xff}}}}), codes.InvalidArgument, sluicev1.ReasonInvalidHeader},
		{"invalid UTF-8 header key", putReq("a", &sluicev1.Event{Headers: []*sluicev1.Header{{Key: []byte{0xc0, 0x80}}}}), codes.InvalidArgument, sluicev1.ReasonInvalidHeader},
	}
	for _, tc := range cases {
		_, err := api.Put(ctx, tc.req)
		if status.Code(err) != tc.code || reason(err) != tc.reason || status.Convert(err).Message() == "" {
			t.Errorf("%s: %v (reason %q), want %v %s", tc.name, err, reason(err), tc.code, tc.reason)
		}
		// The server keeps serving.
		resp, err := api.Put(ctx, putReq("a", ev("ok")))
		if err != nil || resp.GetCommitted() != 1 {
			t.Fatalf("after %s: %v %v", tc.name, resp, err)
		}
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != int64(len(cases)) {
		t.Fatalf("size %d, want %d", st.Size, len(cases))
	}

	// Take: bad opens end the stream with the right code.
	for _, tc := range []struct {
		open *sluicev1.TakeOpen
		code codes.Code
	}{{&sluicev1.TakeOpen{}, codes.InvalidArgument}, {&sluicev1.TakeOpen{Channel: "zz"}, codes.NotFound}} {
		s, err := api.Take(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: tc.open}})
		if _, err := s.Recv(); status.Code(err) != tc.code {
			t.Errorf("open %v: %v", tc.open, err)
		}
	}
	// Next before open.
	s, _ := api.Take(ctx)
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{MaxEvents: 1}}})
	if _, err := s.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Errorf("next before open: %v", err)
	}
}

func TestRawTakeProtocol(t *testing.T) {
	mem := newMemory(t)
	_, dial := serveBuf(t, mem, server.Options{})
	api := sluicev1.NewSluiceClient(dial())
	ctx := ctxT(t)
	if _, err := api.Put(ctx, putReq("a", ev("1"), ev("2"), ev("3"))); err != nil {
		t.Fatal(err)
	}
	s, err := api.Take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *sluicev1.TakeResponse {
		t.Helper()
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a", MaxEvents: 2}}})
	if b := recv().GetBatch(); len(b.GetEvents()) != 2 || string(b.GetEvents()[0].GetBody()) != "1" {
		t.Fatalf("open batch %v", b)
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Rollback{Rollback: &sluicev1.TakeRollback{}}})
	if a := recv().GetAck(); a.GetEvents() != 2 {
		t.Fatalf("rollback ack %v", a)
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{MaxEvents: 5}}})
	if b := recv().GetBatch(); len(b.GetEvents()) != 3 || string(b.GetEvents()[0].GetBody()) != "1" {
		t.Fatalf("next batch %v", b)
	}
	s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Commit{Commit: &sluicev1.TakeCommit{}}})
	if a := recv().GetAck(); a.GetEvents() != 3 {
		t.Fatalf("commit ack %v", a)
	}
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v", err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 0 || st.TakeSuccesses != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# producers\nsecret-one\n\n  secret-two  \n"), 0o600)
	_, dial := serveBuf(t, newMemory(t), server.Options{TokensFile: tokens})
	conn := dial()
	api := sluicev1.NewSluiceClient(conn)
	ctx := ctxT(t)
	withTok := func(tok string) context.Context {
		return metadata.AppendToOutgoingContext(ctx, "authorization", tok)
	}
	for _, tc := range []struct {
		ctx  context.Context
		code codes.Code
	}{
		{ctx, codes.Unauthenticated},
		{withTok("Bearer wrong"), codes.Unauthenticated},
		{withTok("Bearer secret-on"), codes.Unauthenticated},
		{withTok("Basic secret-one"), codes.Unauthenticated},
		{withTok("Bearer secret-one"), codes.OK},
		{withTok("Bearer secret-two"), codes.OK},
	} {
		_, err := api.Put(tc.ctx, putReq("a", ev("x")))
		if status.Code(err) != tc.code {
			t.Errorf("Put: %v, want %v", err, tc.code)
		}
		_, err = api.Stats(tc.ctx, &sluicev1.StatsRequest{})
		if status.Code(err) != tc.code {
			t.Errorf("Stats: %v, want %v", err, tc.code)
		}
		s, err := api.Take(tc.ctx)
		if err == nil {
			s.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: &sluicev1.TakeOpen{Channel: "a"}}})
			_, err = s.Recv()
		}
		if status.Code(err) != tc.code {
			t.Errorf("Take: %v, want %v", err, tc.code)
		}
	}
	// Health needs no token.
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "sluice.v1.Sluice"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	if _, err := server.New(newMemory(t), server.Options{TokensFile: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("New with a missing tokens file succeeded")
	}
}

func TestGracefulStop(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 10, TransactionCapacity: 10, KeepAlive: 5 * time.Second})
	srv, err := server.New(mem, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	ctx := ctxT(t)
	c, err := client.Dial(ctx, lis.Addr().String(), client.Options{RetryBudget: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 10 {
		txn, _ := c.BeginPut(ctx, channel.PutOptions{})
		txn.Put("a", channel.Event{Body: []byte{'0' + byte(i)}})
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An open take holding 3 events.
	tk, err := c.BeginTake(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tk.Take(ctx, 3); err != nil || len(got) != 3 {
		t.Fatalf("Take: %d %v", len(got), err)
	}
	// An in-flight put waiting for room (keep-alive) that must complete.
	putDone := make(chan error, 1)
	go func() {
		txn, _ := c.BeginPut(ctx, channel.PutOptions{})
		txn.Put("a", channel.Event{Body: []byte("late")})
		putDone <- txn.Commit(ctx)
	}()
	// Wait until the put is in the server, waiting for room.
	for st, _ := mem.Stats(context.Background(), "a"); st.PutAttempts < 11; st, _ = mem.Stats(context.Background(), "a") {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- srv.GracefulStop(ctx) }()

	// The open take was rolled back: its events are back at the head.
	deadline := time.Now().Add(5 * time.Second)
	for st, _ := mem.Stats(context.Background(), "a"); st.InFlightTakes != 0; st, _ = mem.Stats(context.Background(), "a") {
		if time.Now().After(deadline) {
			t.Fatal("take not rolled back by GracefulStop")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := tk.Commit(ctx); err == nil || !errors.Is(err, channel.ErrClosed) {
		t.Fatalf("Commit after GracefulStop: %v", err)
	}
	// Make room in-process: the waiting put finishes, then the stop.
	txn, _ := mem.BeginTake(ctx, "a")
	got, _ := txn.Take(ctx, 3)
	if string(got[0].Body) != "0" || string(got[2].Body) != "2" {
		t.Fatalf("head after rollback: %q %q", got[0].Body, got[2].Body)
	}
	txn.Commit(ctx)
	if err := <-putDone; err != nil {
		t.Fatalf("in-flight put: %v", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("GracefulStop: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if st, _ := mem.Stats(context.Background(), "a"); st.Size != 8 {
		t.Fatalf("size %d, want 8", st.Size)
	}
}

func TestMetricsHandler(t *testing.T) {
	mem := newMemory(t, channel.ChannelConfig{Name: "a", Capacity: 200, TransactionCapacity: 100}, channel.ChannelConfig{Name: "b"})
	srv, dial := serveBuf(t, mem, server.Options{})
	api := sluicev1.NewSluiceClient(dial())
	ctx := ctxT(t)
	if _, err := api.Put(ctx, putReq("a", evs(50)...)); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.MetricsHandler())
	defer hs.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{
		`sluice_channel_size{channel="a"} 50`,
		`sluice_channel_capacity{channel="a"} 200`,
		`sluice_channel_fill_ratio{channel="a"} 0.25`,
		`sluice_channel_put_successes_total{channel="a"} 50`,
		`sluice_grpc_requests_total{code="OK",method="/sluice.v1.Sluice/Put"} 1`,
		`sluice_take_streams_open 0`,
		`go_goroutines`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q (status %d)", want, code)
		}
	}
	code, body = get("/metrics.json")
	var doc map[string]map[string]string
	if err := json.Unmarshal([]byte(body), &doc); err != nil || code != 200 {
		t.Fatalf("/metrics.json: %d %v\n%s", code, err, body)
	}
	a := doc["CHANNEL.a"]
	for k, want := range map[string]string{
		"ChannelSize": "50", "ChannelFillPercentage": "25", "EventPutAttemptCount": "50",
		"EventPutSuccessCount": "50", "EventTakeAttemptCount": "0", "EventTakeSuccessCount": "0",
		"ChannelCapacity": "200", "Type": "CHANNEL",
	} {
		if a[k] != want {
			t.Errorf("CHANNEL.a %s = %q, want %q", k, a[k], want)
		}
	}
	if _, ok := a["OldestEventAgeSeconds"]; !ok {
		t.Error("no OldestEventAgeSeconds")
	}
	if keys := slices.Sorted(func(yield func(string) bool) {
		for k := range doc {
			if !yield(k) {
				return
			}
		}
	}); !slices.Equal(keys, []string{"CHANNEL.a", "CHANNEL.b"}) {
		t.Errorf("keys %v", keys)
	}
	if code, body = get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	srv.GracefulStop(ctx)
	if code, _ = get("/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz after stop: %d", code)
	}
}

// writeCert writes a PEM certificate and key signed by parent (self-signed
// when parent is nil) and returns the certificate and key.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ext x509.ExtKeyUsage) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{ext}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

func TestTLSAndMutualTLSOnLoopback(t *testing.T) {
	dir := t.TempDir()
	f := func(n string) string { return filepath.Join(dir, n) }
	ca, caKey := writeCert(t, dir, "ca", true, nil, nil, 0)
	writeCert(t, dir, "server", false, ca, caKey, x509.ExtKeyUsageServerAuth)
	writeCert(t, dir, "client", false, ca, caKey, x509.ExtKeyUsageClientAuth)
	otherCA, otherKey := writeCert(t, dir, "other", true, nil, nil, 0)
	writeCert(t, dir, "stranger", false, otherCA, otherKey, x509.ExtKeyUsageClientAuth)
	os.WriteFile(f("tokens"), []byte("tok\n"), 0o600)

	serve := func(opts server.Options) string {
		mem := newMemory(t)
		srv, err := server.New(mem, opts)
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(lis) }()
		t.Cleanup(func() { srv.Stop(); <-done })
		return lis.Addr().String()
	}
	roundTrip := func(c *client.Client) {
		t.Helper()
		ctx := ctxT(t)
		txn, _ := c.BeginPut(ctx, channel.PutOptions{})
		txn.Put("a", channel.Event{Body: []byte("hello")})
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		tk, err := c.BeginTake(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		got, err := tk.Take(ctx, 10)
		if err != nil || len(got) != 1 || string(got[0].Body) != "hello" {
			t.Fatalf("Take: %v %v", got, err)
		}
		if err := tk.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dial := func(addr string, opts client.Options) (*client.Client, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		opts.RetryBudget = -1
		c, err := client.Dial(ctx, addr, opts)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}

	// TLS with a bearer token.
	addr := serve(server.Options{CertFile: f("server.crt"), KeyFile: f("server.key"), TokensFile: f("tokens")})
	tlsCfg, err := client.TLSConfigFromFiles(f("ca.crt"), "", "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial(addr, client.Options{TLS: tlsCfg, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(c)
	if _, err := dial(addr, client.Options{TLS: tlsCfg, Token: "nope"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("wrong token over TLS: %v", err)
	}
	if _, err := dial(addr, client.Options{Token: "tok"}); err == nil {
		t.Fatal("plaintext client against a TLS server succeeded")
	}

	// Mutual TLS.
	addr = serve(server.Options{CertFile: f("server.crt"), KeyFile: f("server.key"), ClientCAFile: f("ca.crt")})
	mtls, err := client.TLSConfigFromFiles(f("ca.crt"), f("client.crt"), f("client.key"))
	if err != nil {
		t.Fatal(err)
	}
	c, err = dial(addr, client.Options{TLS: mtls})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(c)
	if _, err := dial(addr, client.Options{TLS: tlsCfg}); err == nil {
		t.Fatal("client without a certificate accepted")
	}
	stranger, _ := client.TLSConfigFromFiles(f("ca.crt"), f("stranger.crt"), f("stranger.key"))
	if _, err := dial(addr, client.Options{TLS: stranger}); err == nil {
		t.Fatal("client certificate from another CA accepted")
	}
}
