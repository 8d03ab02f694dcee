// Package server serves any channel.Store over gRPC (service sluice.v1,
// see api/sluice/v1/sluice.proto), with TLS, mutual TLS, bearer-token
// authentication, the standard gRPC health service and an HTTP metrics
// handler.
//
// Status codes (each error also carries a google.rpc.ErrorInfo, domain
// "sluice.v1", whose reason names the cause):
//
//   - INVALID_ARGUMENT: empty channel name (EMPTY_CHANNEL), event larger than
//     Options.MaxEventSize or the store's limit (EVENT_TOO_LARGE), more
//     events than the channel's transactionCapacity (TXN_FULL), header key
//     or value that is not valid UTF-8 (INVALID_HEADER), more headers in an
//     event than Options.MaxHeadersPerEvent (TOO_MANY_HEADERS), a producer
//     id longer than Options.MaxProducerIDLen, or sequences used wrongly
//     (a first_sequence without a producer id or with a sequence; in
//     per-event mode an entry with events and no first_sequence, or
//     sequences that do not increase) (INVALID_PRODUCER), channels of two
//     stores in one put (CROSS_STORE),
//     take protocol misuse (BAD_REQUEST).
//   - NOT_FOUND: a channel name the store does not have (UNKNOWN_CHANNEL).
//     It is NOT_FOUND rather than INVALID_ARGUMENT because the request is
//     well formed and the same request succeeds against a store that has the
//     channel.
//   - RESOURCE_EXHAUSTED: channel.ErrChannelFull (CHANNEL_FULL),
//     channel.ErrDiskSpace (DISK_SPACE) and more Put RPCs or Take streams in
//     flight than Options.MaxConcurrentPuts / MaxTakeStreams (SERVER_BUSY),
//     with a google.rpc.RetryInfo whose delay is Options.FullRetryDelay /
//     DiskSpaceRetryDelay / BusyRetryDelay. A request larger than
//     MaxRecvMsgSize fails with gRPC's own RESOURCE_EXHAUSTED, without an
//     ErrorInfo.
//   - UNAVAILABLE: channel.ErrClosed or the server shutting down (CLOSED).
//   - ABORTED: a take lease expired (LEASE_EXPIRED), also while the server
//     was blocked sending to a client that stopped reading.
//   - UNAUTHENTICATED: bearer token missing or not one of the tokens, or no
//     token valid since a tokens reload failed (no ErrorInfo).
//   - INTERNAL: any other store error (no ErrorInfo).
//
// Messages sent to clients are short and generic (the channel's sentinel
// cause, or "internal server error (error id …)"): the store's own error
// text, which names data directories, segment offsets and errno values, is
// logged (slog, level error for internal errors with the same error id,
// debug for the expected ones such as CHANNEL_FULL) and never sent.
//
// # Security and limits
//
// What is protected:
//
//   - Authentication: with Options.TokensFile or Tokens, every RPC except
//     the gRPC health service needs "authorization: Bearer <token>". The
//     token is checked in a grpc.InTapHandle when the request's headers
//     arrive, before its message is read or decoded, so an unauthenticated
//     client costs the server its headers and nothing more (the interceptors
//     check it again). The tokens file must not be accessible to group or
//     others (the key file rule of package crypto); a reload that fails or
//     finds no token makes every RPC fail with UNAUTHENTICATED until a
//     reload succeeds, so removing a token always revokes it.
//   - Transport: TLS (1.2+) and mutual TLS from Options.CertFile, KeyFile and
//     ClientCAFile. Without TLS, tokens travel in clear text.
//   - Memory: one request is at most MaxRecvMsgSize bytes (default 16 MiB,
//     never below MaxEventSize + 64 KiB); one connection has at most
//     MaxConcurrentStreams (128) RPCs open; at most MaxConcurrentPuts (64)
//     Put RPCs are in flight in the whole server, counted in the tap before
//     their message is read, so Put requests received at once total at most
//     MaxConcurrentPuts × MaxRecvMsgSize (1 GiB) on the wire; events have at
//     most MaxHeadersPerEvent (256) headers; producer ids at most
//     MaxProducerIDLen (256) bytes. A take request returns at most
//     MaxTakeBytes (16 MiB): it takes from the channel in chunks sized as
//     if every event had MaxEventSize bytes and sends them as they come, so
//     it never holds more than MaxTakeBytes + MaxEventSize of events, and at
//     most MaxTakeStreams (256) take streams are open. A take commit that
//     carries moved events (TakeCommit.puts, the dead-letter move) is one
//     message of at most MaxRecvMsgSize too, read while the stream has no
//     other request outstanding; such moves are not counted against
//     MaxConcurrentPuts, so take streams may hold up to MaxTakeStreams ×
//     MaxRecvMsgSize of them at once (4 GiB with the defaults: lower
//     MaxTakeStreams where that matters).
//   - Stuck consumers: the take lease runs between requests and while the
//     server is blocked sending a batch to a client that stopped reading;
//     when it expires the take is rolled back and the stream ends with
//     ABORTED. Keepalive pings (KeepaliveTime 30 s, KeepaliveTimeout 10 s)
//     close connections to clients that vanished.
//
// What is not:
//
//   - A request that passed authentication is decoded before its limits are
//     checked: a Put of MaxRecvMsgSize bytes can decode to much more (an
//     empty header is 2 bytes on the wire and about 70 once decoded), so an
//     authenticated client can make the server allocate up to about 70 ×
//     MaxRecvMsgSize per Put in flight. Tokens are for trusted producers.
//   - The number of connections and the rate of requests are not limited,
//     The producer table is bounded by the store (maxProducers, default
//     100,000; producerExpiry): once full, a put of a new producer id fails
//     with RESOURCE_EXHAUSTED (PRODUCER_TABLE_FULL), so a client with a
//     token can keep new producers out until idle entries expire.
//   - The metrics handler (MetricsHandler) has no authentication; serve it
//     on loopback (sluice serve does by default and warns otherwise).
//   - A put of zero events with a producer id is accepted: with a sequence
//     it records the producer's position (an exactly-once source whose
//     records were all filtered out), and costs a producer-table entry like
//     any put; without one (per-event mode) it only refreshes a known
//     producer's entry.
//
// The Server does not own the channel: after GracefulStop returns, the
// caller closes it.
package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/metrics"
)

// Defaults for Options.
const (
	DefaultMaxMsgSize           = 16 << 20
	DefaultMaxBatchBytes        = 4 << 20
	DefaultMaxTakeBytes         = 16 << 20
	DefaultMaxHeadersPerEvent   = 256
	DefaultMaxProducerIDLen     = channel.MaxProducerIDLen
	DefaultMaxConcurrentStreams = 128
	DefaultMaxConcurrentPuts    = 64
	DefaultMaxTakeStreams       = 256
	DefaultLease                = 60 * time.Second
	DefaultMaxLease             = 10 * time.Minute
	DefaultMaxTakeWait          = 5 * time.Minute
	DefaultFullRetryDelay       = 200 * time.Millisecond
	DefaultDiskSpaceRetryDelay  = 5 * time.Second
	DefaultBusyRetryDelay       = 100 * time.Millisecond
	DefaultKeepaliveTime        = 30 * time.Second
	DefaultKeepaliveTimeout     = 10 * time.Second
	// msgHeadroom is added to the event size for the framing of the
	// request or response around one event.
	msgHeadroom = 64 << 10
)

// Options configure a Server. The zero value serves plaintext without
// authentication with the defaults above.
type Options struct {
	// MaxEventSize rejects larger events (Event.Size) with INVALID_ARGUMENT
	// before they reach the channel (default channel.DefaultMaxEventSize).
	// Set it to the store's limit.
	MaxEventSize int
	// MaxRecvMsgSize bounds one request, so one Put: default
	// max(DefaultMaxMsgSize (16 MiB), MaxEventSize+64 KiB). A transaction of
	// transactionCapacity events of the maximum size (10,000 × 1 MiB with the
	// defaults) does not fit one message by design: producers batch by bytes
	// as well. A larger request fails with gRPC's own RESOURCE_EXHAUSTED
	// (without an ErrorInfo, so clients do not retry it); the client package
	// checks the size before sending. It is raised to MaxEventSize+64 KiB
	// when set lower, so a single event of the maximum size always fits.
	MaxRecvMsgSize int
	// MaxBatchBytes is the target size of one TakeBatch message: a take
	// batch larger than this is sent as several messages (default 4 MiB,
	// raised to MaxEventSize+64 KiB). The server's send limit is set to
	// MaxBatchBytes+MaxEventSize+64 KiB, so clients need a receive limit of
	// at least that (the client package's default is 64 MiB).
	MaxBatchBytes int
	// MaxTakeBytes bounds the events one take request (open or next)
	// returns: the server takes from the channel in chunks sized so that,
	// even if every event had MaxEventSize bytes, the request never holds
	// more than MaxTakeBytes (plus one event), and stops there; the client
	// asks again for the rest (default 16 MiB, raised to MaxBatchBytes).
	MaxTakeBytes int
	// MaxHeadersPerEvent rejects events with more headers with
	// INVALID_ARGUMENT, reason TOO_MANY_HEADERS (default 256).
	MaxHeadersPerEvent int
	// MaxProducerIDLen rejects longer producer ids with INVALID_ARGUMENT,
	// reason INVALID_PRODUCER (default 256 bytes).
	MaxProducerIDLen int

	// MaxConcurrentStreams caps the concurrent RPCs of one connection
	// (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS, default 128).
	MaxConcurrentStreams uint32
	// MaxConcurrentPuts caps the Put RPCs in flight in the whole server
	// (default 64). It is counted before the request is read, so the bytes
	// of Put requests received at once are at most MaxConcurrentPuts ×
	// MaxRecvMsgSize (1 GiB with the defaults). A Put beyond the cap fails
	// at once with RESOURCE_EXHAUSTED, reason SERVER_BUSY, and a RetryInfo
	// of BusyRetryDelay (the client package retries it).
	MaxConcurrentPuts int
	// MaxTakeStreams caps the open Take streams of the whole server
	// (default 256); a Take beyond it fails like a Put beyond
	// MaxConcurrentPuts. One take request holds at most about MaxTakeBytes
	// + MaxBatchBytes, so takes hold at most MaxTakeStreams × that.
	MaxTakeStreams int
	// BusyRetryDelay is the RetryInfo hint sent with SERVER_BUSY (default
	// 100ms).
	BusyRetryDelay time.Duration
	// KeepaliveTime and KeepaliveTimeout: after KeepaliveTime without
	// activity on a connection the server pings the client and closes the
	// connection when no answer comes within KeepaliveTimeout (defaults 30s
	// and 10s), so the streams (and take transactions) of a vanished client
	// end without waiting for TCP to time out.
	KeepaliveTime, KeepaliveTimeout time.Duration

	// CertFile and KeyFile (PEM) enable TLS. ClientCAFile (PEM) additionally
	// requires every client to present a certificate signed by one of its
	// CAs (mutual TLS). TLSConfig, when set, is used instead of the files.
	CertFile, KeyFile, ClientCAFile string
	TLSConfig                       *tls.Config

	// TokensFile holds bearer tokens, one per line (blank lines and lines
	// starting with # ignored); group and others must have no access to it
	// (mode 0600 or stricter), as for key files. Tokens are added to it.
	// When TokensFile or Tokens is set every RPC except the health service
	// needs the header "authorization: Bearer <token>"; otherwise
	// UNAUTHENTICATED. The token is checked when the request's headers
	// arrive, before its message is read. A reload (ReloadTokens) that
	// fails or finds no token leaves no token valid: every RPC is then
	// refused until a reload succeeds.
	TokensFile string
	Tokens     []string

	// DefaultLease is the take lease when the client asks for none, MaxLease
	// caps what clients ask for, MaxTakeWait caps how long one take request
	// waits for events.
	DefaultLease, MaxLease, MaxTakeWait time.Duration

	// FullRetryDelay and DiskSpaceRetryDelay are the RetryInfo hints sent
	// with RESOURCE_EXHAUSTED.
	FullRetryDelay, DiskSpaceRetryDelay time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger

	// ServerOptions are appended to the gRPC server options (tests,
	// interceptors, keepalive tuning).
	ServerOptions []grpc.ServerOption
}

// Server serves a channel.Store over gRPC.
type Server struct {
	sluicev1.UnimplementedSluiceServer

	ch       channel.Store
	opts     Options
	log      *slog.Logger
	grpc     *grpc.Server
	health   *health.Server
	metrics  *metrics.Metrics
	channels map[string]bool
	tokens   atomic.Pointer[tokenSet]
	putSem   chan struct{} // one slot per Put in flight
	takeSem  chan struct{} // one slot per open Take stream

	stopCtx  context.Context // canceled when GracefulStop or Stop begins
	stopNow  context.CancelFunc
	stopOnce sync.Once
	draining atomic.Bool

	takeStreams atomic.Int64
}

// New returns a Server for ch. It loads the TLS and token files.
func New(ch channel.Store, opts Options) (*Server, error) {
	if ch == nil {
		return nil, errors.New("server: nil channel")
	}
	if opts.MaxEventSize <= 0 {
		opts.MaxEventSize = channel.DefaultMaxEventSize
	}
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = max(DefaultMaxMsgSize, opts.MaxEventSize+msgHeadroom)
	}
	opts.MaxRecvMsgSize = max(opts.MaxRecvMsgSize, opts.MaxEventSize+msgHeadroom)
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	opts.MaxBatchBytes = max(opts.MaxBatchBytes, opts.MaxEventSize+msgHeadroom)
	if opts.MaxTakeBytes <= 0 {
		opts.MaxTakeBytes = DefaultMaxTakeBytes
	}
	opts.MaxTakeBytes = max(opts.MaxTakeBytes, opts.MaxBatchBytes)
	if opts.MaxHeadersPerEvent <= 0 {
		opts.MaxHeadersPerEvent = DefaultMaxHeadersPerEvent
	}
	if opts.MaxProducerIDLen <= 0 {
		opts.MaxProducerIDLen = DefaultMaxProducerIDLen
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if opts.MaxConcurrentPuts <= 0 {
		opts.MaxConcurrentPuts = DefaultMaxConcurrentPuts
	}
	if opts.MaxTakeStreams <= 0 {
		opts.MaxTakeStreams = DefaultMaxTakeStreams
	}
	if opts.BusyRetryDelay <= 0 {
		opts.BusyRetryDelay = DefaultBusyRetryDelay
	}
	if opts.KeepaliveTime <= 0 {
		opts.KeepaliveTime = DefaultKeepaliveTime
	}
	if opts.KeepaliveTimeout <= 0 {
		opts.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if opts.DefaultLease <= 0 {
		opts.DefaultLease = DefaultLease
	}
	if opts.MaxLease <= 0 {
		opts.MaxLease = DefaultMaxLease
	}
	if opts.MaxTakeWait <= 0 {
		opts.MaxTakeWait = DefaultMaxTakeWait
	}
	if opts.FullRetryDelay <= 0 {
		opts.FullRetryDelay = DefaultFullRetryDelay
	}
	if opts.DiskSpaceRetryDelay <= 0 {
		opts.DiskSpaceRetryDelay = DefaultDiskSpaceRetryDelay
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{ch: ch, opts: opts, log: opts.Logger, channels: map[string]bool{},
		putSem: make(chan struct{}, opts.MaxConcurrentPuts), takeSem: make(chan struct{}, opts.MaxTakeStreams)}
	for _, n := range ch.Channels() {
		s.channels[n] = true
	}
	s.stopCtx, s.stopNow = context.WithCancel(context.Background())
	if err := s.loadTokens(); err != nil {
		return nil, err
	}

	tlsCfg, err := serverTLS(opts)
	if err != nil {
		return nil, err
	}
	s.metrics = metrics.New(ch)
	s.metrics.SetHealthy(s.healthy)
	s.metrics.Registry().MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_take_streams_open",
		Help: "Open gRPC take streams.",
	}, func() float64 { return float64(s.takeStreams.Load()) }))

	gopts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(opts.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(opts.MaxBatchBytes + opts.MaxEventSize + msgHeadroom),
		grpc.MaxConcurrentStreams(opts.MaxConcurrentStreams),
		grpc.InTapHandle(s.tap),
		grpc.ChainUnaryInterceptor(s.unaryInterceptor),
		grpc.ChainStreamInterceptor(s.streamInterceptor),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: opts.KeepaliveTime, Timeout: opts.KeepaliveTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if tlsCfg != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	} else if s.authRequired() {
		s.log.Warn("sluice server: bearer tokens are configured without TLS; tokens travel in clear text")
	}
	gopts = append(gopts, opts.ServerOptions...)
	s.grpc = grpc.NewServer(gopts...)
	s.health = health.NewServer()
	sluicev1.RegisterSluiceServer(s.grpc, s)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(sluicev1.Sluice_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	return s, nil
}

func serverTLS(opts Options) (*tls.Config, error) {
	if opts.TLSConfig != nil {
		return opts.TLSConfig, nil
	}
	if opts.CertFile == "" && opts.KeyFile == "" {
		if opts.ClientCAFile != "" {
			return nil, errors.New("server: ClientCAFile needs CertFile and KeyFile")
		}
		return nil, nil
	}
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("server: TLS needs both CertFile and KeyFile")
	}
	cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("server: load TLS key pair %s, %s: %w", opts.CertFile, opts.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if opts.ClientCAFile != "" {
		pem, err := os.ReadFile(opts.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("server: client CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("server: client CA file %s: no PEM certificates", opts.ClientCAFile)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// tokenSet is the tokens in force. deny, when set, refuses every RPC (a
// reload failed or found no token).
type tokenSet struct {
	sums [][32]byte
	deny error
}

// loadTokens reads Options.Tokens and Options.TokensFile.
func (s *Server) loadTokens() error {
	var toks [][32]byte
	for _, t := range s.opts.Tokens {
		if t = strings.TrimSpace(t); t != "" {
			toks = append(toks, sha256.Sum256([]byte(t)))
		}
	}
	if s.opts.TokensFile != "" {
		data, err := readTokensFile(s.opts.TokensFile)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			t := strings.TrimSpace(sc.Text())
			if t == "" || strings.HasPrefix(t, "#") {
				continue
			}
			toks = append(toks, sha256.Sum256([]byte(t)))
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("server: tokens file %s: %w", s.opts.TokensFile, err)
		}
		if len(toks) == 0 {
			return fmt.Errorf("server: tokens file %s has no tokens", s.opts.TokensFile)
		}
	}
	s.tokens.Store(&tokenSet{sums: toks})
	return nil
}

// readTokensFile reads the tokens file, refusing one that group or others
// may access. The rule is crypto's for key files (crypto/keyfile.go,
// checkMode: a regular file with mode & 0o077 == 0); it is repeated here
// because crypto does not export it and the server should not depend on
// the encryption package for a permission check.
func readTokensFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("server: tokens file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("server: tokens file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("server: tokens file %s is not a regular file (mode %s)", path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("server: tokens file %s has mode %04o, which lets group or others access it; refusing to use it (chmod 600 %s)", path, perm, path)
	}
	if fi.Size() > 16<<20 {
		return nil, fmt.Errorf("server: tokens file %s is %d bytes; too large to be a tokens file", path, fi.Size())
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("server: tokens file %s: %w", path, err)
	}
	return data, nil
}

// ReloadTokens rereads Options.TokensFile (for example on SIGHUP). When
// the file cannot be read, is accessible to group or others, or holds no
// token, no token is valid any more: every RPC except health checks is
// refused with UNAUTHENTICATED until a later reload succeeds, and the error
// is returned (and logged). Keeping the previous tokens would leave a token
// that an operator just removed working.
func (s *Server) ReloadTokens() error {
	err := s.loadTokens()
	if err != nil {
		s.tokens.Store(&tokenSet{deny: err})
		s.log.Error("sluice server: reloading the bearer tokens failed; EVERY request is refused until the tokens file is fixed and reloaded", "err", err)
	}
	return err
}

// authRequired reports whether RPCs need a bearer token.
func (s *Server) authRequired() bool { return s.opts.TokensFile != "" || len(s.tokens.Load().sums) > 0 }

// authorize checks the bearer token in md. Every configured token is
// compared (in constant time, over SHA-256 digests so lengths do not leak).
func (s *Server) authorize(md metadata.MD, method string) error {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	ts := s.tokens.Load()
	if ts.deny != nil {
		return status.Error(codes.Unauthenticated, "the server has no valid bearer tokens (its tokens file failed to reload)")
	}
	toks := ts.sums
	if len(toks) == 0 {
		return nil
	}
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing bearer token (authorization: Bearer <token>)")
	}
	tok, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(vals[0], "bearer ")
	}
	if !ok {
		return status.Error(codes.Unauthenticated, "authorization header is not a bearer token")
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for i := range toks {
		match |= subtle.ConstantTimeCompare(sum[:], toks[i][:])
	}
	if match != 1 {
		return status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return nil
}

// tap runs when a request's headers arrive, before its message is read
// (grpc.InTapHandle): it checks the bearer token, so an unauthenticated
// request costs the server no more than its headers, and it counts the Put
// RPCs and Take streams against MaxConcurrentPuts and MaxTakeStreams,
// failing fast (it runs on the connection's reader and must not block).
// A slot is given back when the RPC's context ends.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if err := s.authorize(info.Header, info.FullMethodName); err != nil {
		s.metrics.RPC(metricMethod(info.FullMethodName), err)
		return nil, err
	}
	var sem chan struct{}
	var what string
	switch info.FullMethodName {
	case sluicev1.Sluice_Put_FullMethodName:
		sem, what = s.putSem, "puts in flight"
	case sluicev1.Sluice_Take_FullMethodName:
		sem, what = s.takeSem, "take streams open"
	default:
		return ctx, nil
	}
	select {
	case sem <- struct{}{}:
		context.AfterFunc(ctx, func() { <-sem })
		return ctx, nil
	default:
		err := newStatus(codes.ResourceExhausted, sluicev1.ReasonServerBusy, s.opts.BusyRetryDelay,
			fmt.Sprintf("server busy: %d %s; retry later", cap(sem), what)).Err()
		s.metrics.RPC(info.FullMethodName, err)
		return nil, err
	}
}

// metricMethod is the method label of an RPC the tap refused: the method
// name is the client's to choose, so names of no registered service are
// one label, not one each.
func metricMethod(m string) string {
	svc, name, ok := strings.Cut(strings.TrimPrefix(m, "/"), "/")
	if ok && svc == sluicev1.Sluice_ServiceDesc.ServiceName {
		for _, d := range sluicev1.Sluice_ServiceDesc.Methods {
			if d.MethodName == name {
				return m
			}
		}
		for _, d := range sluicev1.Sluice_ServiceDesc.Streams {
			if d.StreamName == name {
				return m
			}
		}
	}
	return "unknown"
}

// The interceptors check the token again: the tap has already done it,
// but grpc.InTapHandle can be replaced through Options.ServerOptions.
func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if err := s.authorize(md, info.FullMethod); err != nil {
		s.metrics.RPC(info.FullMethod, err)
		return nil, err
	}
	resp, err := h(ctx, req)
	s.metrics.RPC(info.FullMethod, err)
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	if err := s.authorize(md, info.FullMethod); err != nil {
		s.metrics.RPC(info.FullMethod, err)
		return err
	}
	err := h(srv, ss)
	s.metrics.RPC(info.FullMethod, err)
	return err
}

// Serve accepts connections on lis until Stop or GracefulStop. It returns
// nil after a stop.
func (s *Server) Serve(lis net.Listener) error {
	return s.grpc.Serve(lis)
}

// GRPC returns the underlying gRPC server, for registering more services.
func (s *Server) GRPC() *grpc.Server { return s.grpc }

// MetricsHandler serves /metrics (Prometheus), /metrics.json (Flume-style)
// and /healthz for this server's channel; see package metrics.
func (s *Server) MetricsHandler() *metrics.Metrics { return s.metrics }

func (s *Server) healthy() error {
	if s.draining.Load() {
		return errors.New("shutting down")
	}
	return nil
}

// GracefulStop stops the server: the health service reports NOT_SERVING,
// no new connection or RPC is accepted, open take transactions are rolled
// back (their streams end with UNAVAILABLE) and in-flight puts and take
// commits run to completion. When ctx is done first the remaining RPCs are
// cut off (as by Stop) and ctx.Err() is returned. It does not close the
// channel.
func (s *Server) GracefulStop(ctx context.Context) error {
	s.beginStop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return ctx.Err()
	}
}

// Stop cuts off every connection and RPC at once. Open take transactions are
// rolled back.
func (s *Server) Stop() {
	s.beginStop()
	s.grpc.Stop()
}

func (s *Server) beginStop() {
	s.stopOnce.Do(func() {
		s.draining.Store(true)
		s.health.Shutdown()
		s.stopNow()
	})
}

// Stats implements the Stats RPC.
func (s *Server) Stats(ctx context.Context, req *sluicev1.StatsRequest) (*sluicev1.StatsResponse, error) {
	names := s.ch.Channels()
	if req.GetChannel() != "" {
		names = []string{req.GetChannel()}
	}
	resp := &sluicev1.StatsResponse{}
	for _, n := range names {
		st, err := s.ch.Stats(ctx, n)
		if err != nil {
			return nil, s.toStatus("stats", err)
		}
		// The event size limit a client should check is the tighter of
		// the server's and the store's.
		if st.MaxEventSize == 0 || s.opts.MaxEventSize < st.MaxEventSize {
			st.MaxEventSize = s.opts.MaxEventSize
		}
		resp.Channels = append(resp.Channels, statsToProto(st))
	}
	return resp, nil
}
