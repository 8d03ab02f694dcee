package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

type takeReq struct {
	msg  *sluicev1.TakeRequest
	wait context.Context // open and next: canceled by TakeCancel, stream end or stop
}

// takeSession is the state of one Take stream.
type takeSession struct {
	s      *Server
	stream sluicev1.Sluice_TakeServer
	sctx   context.Context // ends with the stream or when the server stops
	name   string
	lease  time.Duration
	txn    channel.TakeTxn
	held   int // events held by txn
}

// Take implements the Take RPC; see sluice.proto for the protocol.
func (s *Server) Take(stream sluicev1.Sluice_TakeServer) error {
	ctx := stream.Context()
	if s.stopCtx.Err() != nil {
		return statusErr(codes.Unavailable, sluicev1.ReasonClosed, "server is shutting down")
	}
	s.takeStreams.Add(1)
	defer s.takeStreams.Add(-1)

	// sctx ends with the stream or when the server begins to stop.
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	defer context.AfterFunc(s.stopCtx, scancel)()

	reqs := make(chan takeReq, 1)
	var recvErr error // set before reqs is closed
	go func() {
		defer close(reqs)
		var cancelWait context.CancelFunc
		defer func() {
			if cancelWait != nil {
				cancelWait()
			}
		}()
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr = err
				return
			}
			r := takeReq{msg: m}
			switch m.GetRequest().(type) {
			case *sluicev1.TakeRequest_Cancel:
				if cancelWait != nil {
					cancelWait()
				}
				continue
			case *sluicev1.TakeRequest_Open, *sluicev1.TakeRequest_Next:
				if cancelWait != nil {
					cancelWait() // the previous request has been answered
				}
				wctx, cancel := context.WithCancel(sctx)
				r.wait, cancelWait = wctx, cancel
			}
			select {
			case reqs <- r:
			case <-sctx.Done():
				recvErr = sctx.Err()
				return
			}
		}
	}()

	ts := &takeSession{s: s, stream: stream, sctx: sctx}
	defer ts.rollback()
	lease := time.NewTimer(time.Hour)
	lease.Stop()
	for {
		if sctx.Err() != nil {
			return s.endStatus(ctx)
		}
		var leaseC <-chan time.Time
		if ts.held > 0 {
			lease.Reset(ts.lease)
			leaseC = lease.C
		}
		var (
			r  takeReq
			ok bool
		)
		select {
		case r, ok = <-reqs:
		case <-leaseC:
			return ts.leaseExpired("waiting for the next request")
		case <-sctx.Done():
			return s.endStatus(ctx)
		}
		lease.Stop()
		if !ok {
			if errors.Is(recvErr, io.EOF) {
				return nil
			}
			if s.stopCtx.Err() != nil || ctx.Err() != nil {
				return s.endStatus(ctx)
			}
			return recvErr
		}
		if err := ts.handle(ctx, r); err != nil {
			return err
		}
	}
}

// endStatus is the status of a stream ended by the server stopping or the
// client going away.
func (s *Server) endStatus(ctx context.Context) error {
	if s.stopCtx.Err() != nil {
		return statusErr(codes.Unavailable, sluicev1.ReasonClosed, "server is shutting down; open take transaction rolled back")
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Canceled, "take stream ended")
}

// leaseExpired rolls the transaction back and returns the stream's
// ABORTED status.
func (ts *takeSession) leaseExpired(while string) error {
	n := ts.rollback()
	ts.s.log.Info("take lease expired "+while+"; transaction rolled back", "channel", ts.name, "lease", ts.lease, "events", n)
	return statusErr(codes.Aborted, sluicev1.ReasonLeaseExpired,
		"take lease of %v expired on channel %q: %d events rolled back", ts.lease, ts.name, n)
}

func (ts *takeSession) rollback() int {
	n := ts.held
	if ts.txn != nil {
		if err := ts.txn.Rollback(); err != nil {
			ts.s.log.Warn("take rollback failed", "channel", ts.name, "err", err)
		}
	}
	ts.txn, ts.held = nil, 0
	return n
}

// handle answers one request. A non-nil error ends the stream.
func (ts *takeSession) handle(ctx context.Context, r takeReq) error {
	s := ts.s
	switch m := r.msg.GetRequest().(type) {
	case *sluicev1.TakeRequest_Open:
		if ts.name != "" {
			return statusErr(codes.InvalidArgument, sluicev1.ReasonBadRequest, "take stream is already open on channel %q", ts.name)
		}
		o := m.Open
		if err := s.checkChannel(o.GetChannel()); err != nil {
			return err
		}
		ts.lease = s.opts.DefaultLease
		if l := o.GetLease(); l != nil {
			if d := l.AsDuration(); d > 0 {
				ts.lease = min(d, s.opts.MaxLease)
			}
		}
		ts.name = o.GetChannel()
		return ts.take(ctx, r.wait, o.GetMaxEvents(), o.GetWait())
	case *sluicev1.TakeRequest_Next:
		if ts.name == "" {
			return statusErr(codes.InvalidArgument, sluicev1.ReasonBadRequest, "take stream: next before open")
		}
		return ts.take(ctx, r.wait, m.Next.GetMaxEvents(), m.Next.GetWait())
	case *sluicev1.TakeRequest_Commit:
		if ts.name == "" {
			return statusErr(codes.InvalidArgument, sluicev1.ReasonBadRequest, "take stream: commit before open")
		}
		n := ts.held
		if puts := m.Commit.GetPuts(); len(puts) > 0 {
			if te := ts.move(ctx, puts); te != nil {
				ts.rollback() // nothing moved: the taken events go back
				return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Error{Error: te}})
			}
		}
		if ts.txn != nil {
			// The stream's context, not sctx: a commit under way when the
			// server begins to stop is finished.
			if err := ts.txn.Commit(ctx); err != nil {
				ts.rollback()
				if ctx.Err() != nil {
					return s.endStatus(ctx)
				}
				return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Error{Error: s.toTakeError("take: commit", err)}})
			}
		}
		ts.txn, ts.held = nil, 0
		return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Ack{Ack: &sluicev1.TakeAck{Events: uint64(n)}}})
	case *sluicev1.TakeRequest_Rollback:
		if ts.name == "" {
			return statusErr(codes.InvalidArgument, sluicev1.ReasonBadRequest, "take stream: rollback before open")
		}
		n := ts.rollback()
		return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Ack{Ack: &sluicev1.TakeAck{Events: uint64(n)}}})
	default:
		return statusErr(codes.InvalidArgument, sluicev1.ReasonBadRequest, "take stream: empty or unknown request")
	}
}

// move adds a commit's puts to the stream's transaction (beginning one when
// none is open: a move of nothing taken is a put), validated as a Put
// request's entries. A failure is the TakeError to answer.
func (ts *takeSession) move(ctx context.Context, puts []*sluicev1.ChannelEvents) *sluicev1.TakeError {
	s := ts.s
	invalid := func(reason, format string, args ...any) *sluicev1.TakeError {
		return &sluicev1.TakeError{Code: int32(codes.InvalidArgument), Reason: reason, Message: fmt.Sprintf(format, args...)}
	}
	batches := make([][]channel.Event, len(puts))
	for i, ce := range puts {
		if ce.GetFirstSequence() != 0 {
			return invalid(sluicev1.ReasonInvalidProducer, "take commit: entry %d has a first_sequence; a move has no producer sequences", i)
		}
		if err := s.checkChannel(ce.GetChannel()); err != nil {
			st, _ := status.FromError(err)
			return &sluicev1.TakeError{Code: int32(st.Code()), Reason: reasonOfStatus(st), Message: "take commit: " + st.Message()}
		}
		evs := make([]channel.Event, len(ce.GetEvents()))
		for j, pe := range ce.GetEvents() {
			ev, err := s.fromProto(pe)
			if err != nil {
				return invalid(reasonOf(err), "take commit: channel %q event %d: %v", ce.GetChannel(), j, err)
			}
			evs[j] = ev
		}
		batches[i] = evs
	}
	if ts.txn == nil {
		txn, err := s.ch.BeginTake(ctx, ts.name)
		if err != nil {
			return s.toTakeError("take commit: begin", err)
		}
		ts.txn = txn
	}
	for i, ce := range puts {
		if err := ts.txn.Put(ce.GetChannel(), batches[i]...); err != nil {
			return s.toTakeError("take commit: move", err)
		}
	}
	return nil
}

// reasonOfStatus is the ErrorInfo reason of a status built by statusErr.
func reasonOfStatus(st *status.Status) string {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// take takes up to max events into the stream's transaction (beginning one
// when none is open), waiting up to wait for the first, and sends them.
//
// The events are taken from the channel in chunks and sent in TakeBatch
// messages of about MaxBatchBytes as they come, and the request stops once
// it has taken about MaxTakeBytes: each chunk asks for as many events as
// fit in what is left of MaxTakeBytes if every one had MaxEventSize bytes,
// so one request never holds more than MaxTakeBytes + MaxEventSize of
// events however large the transaction capacity is (10,000 × 1 MiB would
// otherwise be taken at once with the defaults). Fewer than max events in
// the answer is normal; the client asks again.
func (ts *takeSession) take(ctx, waitCtx context.Context, max uint32, wait *durationpb.Duration) error {
	s := ts.s
	if ts.txn == nil {
		txn, err := s.ch.BeginTake(ctx, ts.name)
		if err != nil {
			return s.toStatus("take: begin", err)
		}
		ts.txn = txn
	}
	if max == 0 {
		return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Batch{Batch: &sluicev1.TakeBatch{}}})
	}
	w := min(wait.AsDuration(), s.opts.MaxTakeWait)
	var (
		tctx   context.Context
		cancel context.CancelFunc
	)
	if w > 0 {
		tctx, cancel = context.WithTimeout(waitCtx, w)
	} else {
		tctx, cancel = context.WithCancel(waitCtx)
		cancel() // answer with what is queued now
	}
	defer cancel()
	b := batcher{ts: ts}
	left, taken := int(max), 0
	for first := true; left > 0; first = false {
		n := min(left, max1((s.opts.MaxTakeBytes-taken)/s.opts.MaxEventSize))
		evs, err := ts.txn.Take(tctx, n)
		ts.held += len(evs)
		if first {
			cancel() // later chunks take only what is queued
		}
		if err != nil && len(evs) == 0 {
			switch {
			case !first:
				// Queue drained (canceled tctx) or the transaction is full:
				// the events so far are the answer. Anything else is logged
				// and reported by the next request.
				if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, channel.ErrTxnFull) {
					s.log.Warn("take: error after some events of the request; sending those", "channel", ts.name, "err", err)
				}
			case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
				if s.stopCtx.Err() != nil || ctx.Err() != nil {
					return s.endStatus(ctx)
				}
				// Wait over or canceled by the client: an empty batch.
			case errors.Is(err, channel.ErrClosed):
				return s.toStatus("take", err)
			default:
				return ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Error{Error: s.toTakeError("take", err)}})
			}
			break
		} else if err != nil {
			s.log.Warn("take returned events and an error", "channel", ts.name, "events", len(evs), "err", err)
		}
		for _, ev := range evs {
			taken += ev.Size()
			if err := b.add(ev); err != nil {
				return err
			}
		}
		left -= len(evs)
		if err != nil || len(evs) < n || taken+s.opts.MaxEventSize > s.opts.MaxTakeBytes {
			break
		}
	}
	return b.flush(false)
}

func max1(n int) int { return max(n, 1) }

// batcher sends events in TakeBatch messages of about MaxBatchBytes.
type batcher struct {
	ts    *takeSession
	chunk []*sluicev1.Event
	size  int
}

func (b *batcher) add(ev channel.Event) error {
	sz := ev.Size() + 8 + 11 + 8*len(ev.Headers) // framing, the offset field, per-header framing
	if len(b.chunk) > 0 && b.size+sz > b.ts.s.opts.MaxBatchBytes {
		if err := b.flush(true); err != nil {
			return err
		}
	}
	b.chunk = append(b.chunk, toProto(ev))
	b.size += sz
	return nil
}

// flush sends the pending events; more tells the client that further
// batches answer the same request.
func (b *batcher) flush(more bool) error {
	err := b.ts.send(&sluicev1.TakeResponse{Response: &sluicev1.TakeResponse_Batch{Batch: &sluicev1.TakeBatch{Events: b.chunk, More: more}}})
	b.chunk, b.size = nil, 0
	return err
}

// send sends one response. A failed send means the stream is gone:
// returning ends the handler and the deferred rollback puts the events
// back.
//
// While the transaction holds events the send runs under the lease: a
// client that stops reading blocks Send once the HTTP/2 flow-control
// windows are full, and the events would stay pinned until TCP gives up.
// When the lease runs out first (or the server stops) the transaction is
// rolled back and the stream ends with ABORTED, reason LEASE_EXPIRED (or
// UNAVAILABLE); the blocked Send returns when the stream ends.
func (ts *takeSession) send(resp *sluicev1.TakeResponse) error {
	if ts.held == 0 {
		return ts.stream.Send(resp)
	}
	done := make(chan error, 1)
	go func() { done <- ts.stream.Send(resp) }()
	lease := time.NewTimer(ts.lease)
	defer lease.Stop()
	select {
	case err := <-done:
		return err
	case <-lease.C:
		return ts.leaseExpired("while the client was not reading")
	case <-ts.sctx.Done():
		ts.rollback()
		return ts.s.endStatus(ts.stream.Context())
	}
}
