package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

// takeStream is one open Take stream on one channel.
type takeStream struct {
	c       *Client
	channel string
	stream  sluicev1.Sluice_TakeClient
	cancel  context.CancelFunc
	broken  error // sticky: the stream is unusable
	reused  bool
}

// openStream opens a Take stream on name and waits for the server to accept
// the channel.
func (c *Client) openStream(ctx context.Context, name string) (*takeStream, error) {
	sctx, cancel := context.WithCancel(c.ctx)
	stream, err := c.api.Take(sctx)
	if err != nil {
		cancel()
		return nil, mapErr(err)
	}
	s := &takeStream{c: c, channel: name, stream: stream, cancel: cancel}
	open := &sluicev1.TakeOpen{Channel: name}
	if c.opts.Lease > 0 {
		open.Lease = durationpb.New(c.opts.Lease)
	}
	resp, _, err := s.do(ctx, &sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Open{Open: open}}, false)
	if err != nil {
		s.close()
		return nil, err
	}
	if e := resp.GetError(); e != nil {
		s.close()
		return nil, takeErr(e)
	}
	return s, nil
}

func (s *takeStream) close() {
	if s.broken == nil {
		s.broken = channel.ErrClosed
	}
	s.cancel()
}

// fail records a stream failure: the server has rolled back whatever the
// stream's transaction held.
func (s *takeStream) fail(err error) error {
	if errors.Is(err, io.EOF) {
		// Send reports io.EOF when the stream has ended; Recv has its status.
		_, err = s.stream.Recv()
		if err == nil || errors.Is(err, io.EOF) {
			err = errors.New("take stream ended by the server")
		}
	}
	err = mapErr(err)
	s.broken = err
	s.cancel()
	return err
}

// do sends one request and reads its answer: a whole batch (all chunks), an
// ack or an error. When ctx is done before the answer, an interruptible
// request (a take) is canceled on the server, which then answers with what
// it has; any other request breaks the stream.
func (s *takeStream) do(ctx context.Context, req *sluicev1.TakeRequest, interruptible bool) (*sluicev1.TakeResponse, []*sluicev1.Event, error) {
	if s.broken != nil {
		return nil, nil, s.broken
	}
	if err := s.stream.Send(req); err != nil {
		return nil, nil, s.fail(err)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		if interruptible {
			// Concurrent with Recv below, never with another Send.
			_ = s.stream.Send(&sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Cancel{Cancel: &sluicev1.TakeCancel{}}})
		} else {
			s.cancel()
		}
	})
	defer func() {
		if !stop() {
			<-fired
		}
	}()
	var evs []*sluicev1.Event
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			if !interruptible && ctx.Err() != nil {
				s.broken = fmt.Errorf("take stream abandoned: %w", ctx.Err())
				return nil, nil, ctx.Err()
			}
			return nil, nil, s.fail(err)
		}
		b := resp.GetBatch()
		if b == nil {
			return resp, nil, nil
		}
		if evs == nil {
			evs = b.GetEvents()
		} else {
			evs = append(evs, b.GetEvents()...)
		}
		if !b.GetMore() {
			return resp, evs, nil
		}
	}
}

// getStream returns an idle stream on name or opens one.
func (c *Client) getStream(ctx context.Context, name string) (*takeStream, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, channel.ErrClosed
	}
	if idle := c.idleTake[name]; len(idle) > 0 {
		s := idle[len(idle)-1]
		c.idleTake[name] = idle[:len(idle)-1]
		c.mu.Unlock()
		s.reused = true
		return s, nil
	}
	c.mu.Unlock()
	return c.openStream(ctx, name)
}

// release keeps a healthy stream, whose transaction is over, for reuse.
func (c *Client) release(s *takeStream) {
	if s.broken == nil {
		c.mu.Lock()
		if !c.closed && len(c.idleTake[s.channel]) < c.opts.MaxIdleTakeStreams {
			c.idleTake[s.channel] = append(c.idleTake[s.channel], s)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	s.close()
}

// takeTxn is a take transaction on one stream.
type takeTxn struct {
	c     *Client
	name  string
	s     *takeStream
	taken int
	done  bool
	lost  error // the stream broke while the transaction held events
	// The move (Put): events sent with the commit.
	moves   []*sluicev1.ChannelEvents
	moved   int
	perChan map[string]int
}

// Put implements channel.TakeTxn: the events are checked against the
// limits Dial read (as putTxn.Put does) and buffered; the commit carries
// them, and the server stores them atomically with the take's removal.
// The bodies are not copied: do not modify them before Commit returns.
func (t *takeTxn) Put(name string, events ...channel.Event) error {
	if t.done {
		return channel.ErrTxnDone
	}
	if t.lost != nil {
		return t.lost
	}
	if err := t.c.checkPut(&t.perChan, name, events); err != nil {
		return err
	}
	if len(events) > 0 {
		t.moves = appendEvents(t.moves, name, events)
		t.moved += len(events)
	}
	return nil
}

// BeginTake opens a take transaction on one channel: it opens a Take stream
// (or reuses an idle one), so an unknown channel fails here.
func (c *Client) BeginTake(ctx context.Context, name string) (channel.TakeTxn, error) {
	s, err := c.getStream(ctx, name)
	if err != nil {
		return nil, err
	}
	return &takeTxn{c: c, name: name, s: s}, nil
}

// Take asks the server for up to max events. Without events queued it waits
// until some arrive or ctx is done (then: no events and ctx.Err()).
func (t *takeTxn) Take(ctx context.Context, max int) ([]channel.Event, error) {
	if t.done {
		return nil, channel.ErrTxnDone
	}
	if t.lost != nil {
		return nil, t.lost
	}
	if max <= 0 {
		return nil, nil
	}
	max = min(max, 1<<31-1)
	retried := false
	for {
		var wait time.Duration
		if ctx.Err() == nil {
			wait = maxWaitChunk
			if dl, ok := ctx.Deadline(); ok {
				wait = min(wait, time.Until(dl))
			}
		}
		next := &sluicev1.TakeNext{MaxEvents: uint32(max)}
		if wait > 0 {
			next.Wait = durationpb.New(wait)
		}
		resp, pevs, err := t.s.do(ctx, &sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: next}}, true)
		if err != nil {
			if t.taken == 0 && t.s.reused && !retried && ctx.Err() == nil && !errors.Is(err, ErrLeaseExpired) {
				// An idle stream went stale (server restart, say) before
				// this transaction took anything: start over on a new one.
				retried = true
				s, oerr := t.c.openStream(ctx, t.name)
				if oerr != nil {
					return nil, oerr
				}
				t.s = s
				continue
			}
			if t.c.isClosed() {
				err = channel.ErrClosed // the client was closed under the wait
			}
			if t.taken > 0 {
				t.lost = err
			}
			return nil, err
		}
		if e := resp.GetError(); e != nil {
			return nil, takeErr(e)
		}
		if len(pevs) > 0 {
			evs := make([]channel.Event, len(pevs))
			for i, pe := range pevs {
				evs[i] = fromProto(pe)
			}
			t.taken += len(evs)
			return evs, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 0 {
			return nil, context.DeadlineExceeded
		}
	}
}

// ExtendLease implements channel.LeaseExtender: any request renews the
// server's lease of the transaction, and this one takes nothing (an empty
// next), so it costs one round trip.
func (t *takeTxn) ExtendLease(ctx context.Context) error {
	if t.done {
		return channel.ErrTxnDone
	}
	if t.lost != nil {
		return t.lost
	}
	resp, _, err := t.s.do(ctx, &sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Next{Next: &sluicev1.TakeNext{}}}, false)
	if err != nil {
		if t.taken > 0 {
			t.lost = err
		}
		return err
	}
	if e := resp.GetError(); e != nil {
		return takeErr(e)
	}
	return nil
}

var _ channel.LeaseExtender = (*takeTxn)(nil)

// Commit commits the removal of the taken events and waits for the
// server's acknowledgement.
func (t *takeTxn) Commit(ctx context.Context) error {
	if t.done {
		return channel.ErrTxnDone
	}
	t.done = true
	if t.lost != nil {
		t.s.close()
		return fmt.Errorf("take transaction was rolled back by the server: %w", t.lost)
	}
	if t.taken == 0 && t.moved == 0 {
		t.c.release(t.s)
		return nil
	}
	req := &sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Commit{Commit: &sluicev1.TakeCommit{Puts: t.moves}}}
	if t.moved > 0 {
		if sz := proto.Size(req); sz > t.c.opts.MaxSendMsgSize {
			t.done = false
			t.Rollback()
			return fmt.Errorf("%w: commit moving %d events is %d bytes encoded, more than the %d-byte message limit; nothing was moved and the taken events are back at the head",
				channel.ErrTxnFull, t.moved, sz, t.c.opts.MaxSendMsgSize)
		}
	}
	resp, _, err := t.s.do(ctx, req, false)
	if err != nil {
		t.s.close()
		return err
	}
	t.c.release(t.s)
	if e := resp.GetError(); e != nil {
		return takeErr(e)
	}
	if resp.GetAck() == nil {
		return newError(codes.Internal, "take commit: unexpected answer from server", "", 0)
	}
	return nil
}

// Rollback puts the taken events back at the channel head. When the
// server cannot be told, the stream is dropped, which rolls back too.
func (t *takeTxn) Rollback() error {
	if t.done {
		return nil
	}
	t.done = true
	if t.lost != nil {
		t.s.close()
		return nil
	}
	if t.taken == 0 {
		t.c.release(t.s)
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.c.opts.CallTimeout)
	defer cancel()
	resp, _, err := t.s.do(ctx, &sluicev1.TakeRequest{Request: &sluicev1.TakeRequest_Rollback{Rollback: &sluicev1.TakeRollback{}}}, false)
	if err != nil || resp.GetAck() == nil {
		t.s.close()
		return nil
	}
	t.c.release(t.s)
	return nil
}
