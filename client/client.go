// Package client implements channel.Store over the Sluice gRPC API, so a
// source or sink runs unchanged against a remote server.
//
// Puts: BeginPut buffers events locally; Commit sends them in one Put
// request, which the server commits atomically across channels. Commit
// retries, within Options.RetryBudget and ctx, when the server is
// unavailable (exponential backoff with jitter) and when it answers
// RESOURCE_EXHAUSTED with a retry hint (channel full, disk space), sleeping
// for the hint. When the caller gives no producer id, the client makes the
// put idempotent itself: each Client has a random producer id prefix and a
// small pool of producer ids ("<prefix>-<n>"), one per concurrently
// committing transaction, each with its own increasing sequence starting at
// 1; a retried Put reuses its (producer id, sequence), so a retry after a
// lost acknowledgement is not stored twice. Every Client process thus adds
// as many producer entries to the store's producer table as it had
// concurrent commits; set Options.DisableAutoProducerID to opt out (retries
// may then duplicate). With a caller-supplied producer id, the caller
// guarantees one commit at a time per producer id.
//
// Takes: BeginTake opens (or reuses an idle) Take stream on the channel;
// Take asks for a batch, Commit and Rollback are acknowledged by the
// server. A transaction whose stream breaks is rolled back by the server;
// its Commit then fails. Idle streams are kept per channel for reuse.
//
// Errors from the server match channel's sentinels with errors.Is (for
// example channel.ErrChannelFull); see Error.
package client

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

// Defaults for Options.
const (
	DefaultMaxMsgSize = 64 << 20
	// DefaultMaxSendMsgSize is the server's default receive limit
	// (server.DefaultMaxMsgSize).
	DefaultMaxSendMsgSize     = 16 << 20
	DefaultRetryBudget        = 10 * time.Second
	DefaultCallTimeout        = 10 * time.Second
	DefaultMaxIdleTakeStreams = 4
	// maxWaitChunk bounds one take request's wait; longer waits are
	// repeated requests.
	maxWaitChunk = time.Minute
)

// Options configure a Client.
type Options struct {
	// TLS enables TLS (nil: plaintext). See TLSConfigFromFiles.
	TLS *tls.Config
	// Token is sent as "authorization: Bearer <token>" on every call. It is
	// sent over plaintext connections too; use TLS off loopback.
	Token string
	// MaxSendMsgSize bounds one Put request: a larger transaction fails
	// locally with an error matching channel.ErrTxnFull. MaxRecvMsgSize
	// bounds one response message (a take batch chunk). They default to
	// 16 MiB (the server's default receive limit) and 64 MiB.
	MaxSendMsgSize, MaxRecvMsgSize int
	// Lease asks for this take lease (0: the server's default).
	Lease time.Duration
	// RetryBudget bounds how long Commit of a put keeps retrying (default
	// 10 s; negative: no retries). ctx bounds it too.
	RetryBudget time.Duration
	// DisableAutoProducerID turns off the generated producer ids.
	DisableAutoProducerID bool
	// MaxIdleTakeStreams per channel kept for reuse (default 4; negative:
	// none).
	MaxIdleTakeStreams int
	// CallTimeout bounds calls whose method has no context: Stats and
	// Rollback (default 10 s).
	CallTimeout time.Duration
	// DialOptions are appended to the gRPC dial options.
	DialOptions []grpc.DialOption
}

// TLSConfigFromFiles builds a client TLS configuration: caFile (PEM; empty:
// the system roots) verifies the server, certFile and keyFile (optional)
// are the client certificate for mutual TLS.
func TLSConfigFromFiles(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("client: CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client: CA file %s: no PEM certificates", caFile)
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client: load key pair %s, %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Client is a channel.Store served by a remote Sluice server. It is safe
// for concurrent use; its transactions are not.
type Client struct {
	conn     *grpc.ClientConn
	api      sluicev1.SluiceClient
	opts     Options
	channels []string
	// limits per channel as Dial read them (0: not reported by an older
	// server), so Put rejects what the server would refuse at Commit.
	limits map[string]channelLimits

	ctx    context.Context // lifetime of take streams
	cancel context.CancelFunc

	producerPrefix string

	mu       sync.Mutex
	closed   bool
	free     []*producerSlot
	nslots   int
	idleTake map[string][]*takeStream
}

var _ channel.Store = (*Client)(nil)

type producerSlot struct {
	id  string
	seq uint64
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }

// Dial connects to the server at addr (host:port or a gRPC target) and
// fetches its channel list, retrying while the server is unavailable for up
// to Options.RetryBudget or until ctx is done.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	if opts.MaxSendMsgSize <= 0 {
		opts.MaxSendMsgSize = DefaultMaxSendMsgSize
	}
	if opts.MaxRecvMsgSize <= 0 {
		opts.MaxRecvMsgSize = DefaultMaxMsgSize
	}
	if opts.RetryBudget == 0 {
		opts.RetryBudget = DefaultRetryBudget
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.MaxIdleTakeStreams == 0 {
		opts.MaxIdleTakeStreams = DefaultMaxIdleTakeStreams
	}
	creds := insecure.NewCredentials()
	if opts.TLS != nil {
		creds = credentials.NewTLS(opts.TLS)
	}
	dopts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallSendMsgSize(opts.MaxSendMsgSize+(1<<20)),
			grpc.MaxCallRecvMsgSize(opts.MaxRecvMsgSize)),
	}
	if opts.Token != "" {
		dopts = append(dopts, grpc.WithPerRPCCredentials(bearer(opts.Token)))
	}
	dopts = append(dopts, opts.DialOptions...)
	conn, err := grpc.NewClient(addr, dopts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	var rnd [12]byte
	_, _ = crand.Read(rnd[:])
	c := &Client{
		conn:           conn,
		api:            sluicev1.NewSluiceClient(conn),
		opts:           opts,
		producerPrefix: "client-" + hex.EncodeToString(rnd[:]),
		idleTake:       map[string][]*takeStream{},
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	var resp *sluicev1.StatsResponse
	err = c.retry(ctx, opts.RetryBudget, func() error {
		var err error
		resp, err = c.api.Stats(ctx, &sluicev1.StatsRequest{})
		return err
	})
	if err != nil {
		c.Close()
		return nil, err
	}
	c.limits = make(map[string]channelLimits, len(resp.GetChannels()))
	for _, st := range resp.GetChannels() {
		c.channels = append(c.channels, st.GetName())
		c.limits[st.GetName()] = channelLimits{txn: int(st.GetTransactionCapacity()), event: int(st.GetMaxEventSize())}
	}
	sort.Strings(c.channels)
	return c, nil
}

// channelLimits are a channel's transactionCapacity and maxEventSize.
type channelLimits struct{ txn, event int }

// Conn is the underlying connection (for the health service, say).
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// API is the generated gRPC client.
func (c *Client) API() sluicev1.SluiceClient { return c.api }

// Channels lists the server's channels as fetched by Dial (a store's
// channels do not change while it runs).
func (c *Client) Channels() []string { return append([]string(nil), c.channels...) }

// ProducerSequence reports the last sequence producerID committed to the
// server's store holding ch (ok false: not remembered), bounded by ctx and
// Options.CallTimeout. See channel.Store.
func (c *Client) ProducerSequence(ctx context.Context, ch, producerID string) (uint64, bool, error) {
	if c.isClosed() {
		return 0, false, channel.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	var resp *sluicev1.ProducerResponse
	err := c.retry(ctx, c.opts.RetryBudget, func() error {
		var err error
		resp, err = c.api.Producer(ctx, &sluicev1.ProducerRequest{Channel: ch, ProducerId: producerID})
		return err
	})
	if err != nil {
		return 0, false, mapErr(err)
	}
	return resp.GetSequence(), resp.GetFound(), nil
}

// Stats reports one channel, bounded by ctx and Options.CallTimeout.
func (c *Client) Stats(ctx context.Context, name string) (channel.Stats, error) {
	if c.isClosed() {
		return channel.Stats{}, channel.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.CallTimeout)
	defer cancel()
	if name == "" {
		return channel.Stats{}, fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
	}
	resp, err := c.api.Stats(ctx, &sluicev1.StatsRequest{Channel: name})
	if err != nil {
		return channel.Stats{}, mapErr(err)
	}
	if len(resp.GetChannels()) != 1 {
		return channel.Stats{}, fmt.Errorf("client: stats of %q: server answered %d channels", name, len(resp.GetChannels()))
	}
	st := resp.GetChannels()[0]
	return channel.Stats{
		Name:                 st.GetName(),
		Size:                 st.GetSize(),
		InFlightTakes:        st.GetInFlightTakes(),
		Bytes:                st.GetBytes(),
		Capacity:             st.GetCapacity(),
		MaxBytes:             st.GetMaxBytes(),
		PutAttempts:          st.GetPutAttempts(),
		PutSuccesses:         st.GetPutSuccesses(),
		TakeAttempts:         st.GetTakeAttempts(),
		TakeSuccesses:        st.GetTakeSuccesses(),
		OldestEventAge:       st.GetOldestEventAge().AsDuration(),
		CorruptEventsSkipped: st.GetCorruptEventsSkipped(),
		TransactionCapacity:  int(st.GetTransactionCapacity()),
		MaxEventSize:         int(st.GetMaxEventSize()),
	}, nil
}

// Close closes the connection. Open take transactions are rolled back by
// the server when their streams break; uncommitted puts are dropped.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.idleTake = nil
	c.mu.Unlock()
	c.cancel()
	return c.conn.Close()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// retry runs call until it succeeds, fails with an error that is not worth
// retrying, or the budget or ctx runs out; it returns the last error,
// mapped. UNAVAILABLE is retried with exponential backoff, and
// RESOURCE_EXHAUSTED when the server gave a retry hint.
func (c *Client) retry(ctx context.Context, budget time.Duration, call func() error) error {
	end := time.Now().Add(budget)
	backoff := 20 * time.Millisecond
	for {
		err := mapErr(call())
		if err == nil {
			return nil
		}
		var e *Error
		if budget < 0 || !errors.As(err, &e) {
			return err
		}
		var delay time.Duration
		switch {
		case e.Code == codes.Unavailable:
			delay = backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, 2*time.Second)
		case e.Code == codes.ResourceExhausted && e.RetryDelay > 0:
			delay = e.RetryDelay
		default:
			return err
		}
		if time.Now().Add(delay).After(end) {
			return err
		}
		if dl, ok := ctx.Deadline(); ok && time.Now().Add(delay).After(dl) {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

func (c *Client) acquireSlot() *producerSlot {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s
	}
	c.nslots++
	return &producerSlot{id: fmt.Sprintf("%s-%d", c.producerPrefix, c.nslots)}
}

func (c *Client) releaseSlot(s *producerSlot) {
	c.mu.Lock()
	c.free = append(c.free, s)
	c.mu.Unlock()
}
