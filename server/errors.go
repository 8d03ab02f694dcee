package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/internal/router"
)

// newStatus builds a status with an ErrorInfo (and, when retry > 0, a
// RetryInfo) detail.
func newStatus(code codes.Code, reason string, retry time.Duration, msg string) *status.Status {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: sluicev1.ErrorDomain}
	var err error
	if retry > 0 {
		st, err = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	} else {
		st, err = st.WithDetails(info)
	}
	if err != nil { // cannot happen: both details marshal
		return status.New(code, msg)
	}
	return st
}

func statusErr(code codes.Code, reason, format string, args ...any) error {
	return newStatus(code, reason, 0, fmt.Sprintf(format, args...)).Err()
}

// classify maps an error of a channel.Store to a gRPC code, an ErrorInfo
// reason (empty for errors that are not one of the channel's sentinels), a
// retry hint and the short, generic message sent to the client. The message
// never carries the error's own text: store errors name data directories,
// segment offsets and errno values, which stay in the server log.
func (s *Server) classify(err error) (code codes.Code, reason string, retry time.Duration, msg string) {
	var cross *router.CrossStoreError
	var full *channel.FullError
	switch {
	case errors.As(err, &full):
		return codes.ResourceExhausted, sluicev1.ReasonChannelFull, s.opts.FullRetryDelay, fmt.Sprintf("channel %q full; retry later", full.Channel)
	case errors.Is(err, channel.ErrChannelFull):
		return codes.ResourceExhausted, sluicev1.ReasonChannelFull, s.opts.FullRetryDelay, "channel full; retry later"
	case errors.Is(err, channel.ErrDiskSpace):
		return codes.ResourceExhausted, sluicev1.ReasonDiskSpace, s.opts.DiskSpaceRetryDelay, "insufficient disk space on the server; retry later"
	case errors.Is(err, channel.ErrBadProducer):
		return codes.InvalidArgument, sluicev1.ReasonInvalidProducer, 0, "invalid producer id or sequence"
	case errors.Is(err, channel.ErrProducerTableFull):
		return codes.ResourceExhausted, sluicev1.ReasonProducerTableFull, 0, "the store remembers as many producer ids as it may (maxProducers); a new producer id is refused until idle ones expire"
	case errors.Is(err, channel.ErrTxnFull):
		return codes.InvalidArgument, sluicev1.ReasonTxnFull, 0, "transaction capacity exceeded"
	case errors.Is(err, channel.ErrEventTooLarge):
		return codes.InvalidArgument, sluicev1.ReasonEventTooLarge, 0, "event too large"
	case errors.Is(err, channel.ErrUnknownChannel):
		return codes.NotFound, sluicev1.ReasonUnknownChannel, 0, "unknown channel"
	case errors.Is(err, router.ErrRecovering):
		return codes.Unavailable, sluicev1.ReasonClosed, 0, "stores are recovering; retry shortly"
	case errors.Is(err, channel.ErrClosed):
		return codes.Unavailable, sluicev1.ReasonClosed, 0, "channel closed"
	case errors.Is(err, channel.ErrTxnDone):
		return codes.FailedPrecondition, sluicev1.ReasonTxnDone, 0, "transaction already finished"
	case errors.As(err, &cross):
		if cross.Move {
			return codes.InvalidArgument, sluicev1.ReasonCrossStore, 0,
				fmt.Sprintf("one take transaction cannot move events from channel %q to %q: they are in different stores", cross.First, cross.Second)
		}
		return codes.InvalidArgument, sluicev1.ReasonCrossStore, 0,
			fmt.Sprintf("one put transaction cannot cover channels %q and %q: they are in different stores", cross.First, cross.Second)
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "", 0, "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, "", 0, "deadline exceeded"
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return st.Code(), "", 0, strings.ToLower(st.Code().String())
	}
	return codes.Internal, "", 0, "internal server error"
}

// report logs err in full and returns what the client gets. Errors the
// client caused or can retry are logged at debug level, the others (store
// failures) as errors, with an id that the client's message repeats.
func (s *Server) report(op string, err error) (codes.Code, string, time.Duration, string) {
	code, reason, retry, msg := s.classify(err)
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		var id [4]byte
		rand.Read(id[:])
		ref := hex.EncodeToString(id[:])
		s.log.Error("sluice server: "+op+" failed", "err", err, "error_id", ref)
		msg += " (error id " + ref + "; details are in the server log)"
	default:
		s.log.Debug("sluice server: "+op+" failed", "err", err, "code", code.String(), "reason", reason)
	}
	return code, reason, retry, msg
}

// toStatus converts a channel error into a gRPC status error.
func (s *Server) toStatus(op string, err error) error {
	if err == nil {
		return nil
	}
	code, reason, retry, msg := s.report(op, err)
	if reason == "" {
		return status.Error(code, msg)
	}
	return newStatus(code, reason, retry, msg).Err()
}

// toTakeError converts a channel error into an in-stream TakeError.
func (s *Server) toTakeError(op string, err error) *sluicev1.TakeError {
	code, reason, retry, msg := s.report(op, err)
	te := &sluicev1.TakeError{Code: int32(code), Message: msg, Reason: reason}
	if retry > 0 {
		te.RetryDelay = durationpb.New(retry)
	}
	return te
}
