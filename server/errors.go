package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
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

// classify maps an error of a channel.Channel to a gRPC code, an ErrorInfo
// reason (empty for errors that are not one of the channel's sentinels) and
// a retry hint.
func (s *Server) classify(err error) (code codes.Code, reason string, retry time.Duration) {
	switch {
	case errors.Is(err, channel.ErrChannelFull):
		return codes.ResourceExhausted, sluicev1.ReasonChannelFull, s.opts.FullRetryDelay
	case errors.Is(err, channel.ErrDiskSpace):
		return codes.ResourceExhausted, sluicev1.ReasonDiskSpace, s.opts.DiskSpaceRetryDelay
	case errors.Is(err, channel.ErrTxnFull):
		return codes.InvalidArgument, sluicev1.ReasonTxnFull, 0
	case errors.Is(err, channel.ErrEventTooLarge):
		return codes.InvalidArgument, sluicev1.ReasonEventTooLarge, 0
	case errors.Is(err, channel.ErrUnknownChannel):
		return codes.NotFound, sluicev1.ReasonUnknownChannel, 0
	case errors.Is(err, channel.ErrClosed):
		return codes.Unavailable, sluicev1.ReasonClosed, 0
	case errors.Is(err, channel.ErrTxnDone):
		return codes.FailedPrecondition, sluicev1.ReasonTxnDone, 0
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "", 0
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, "", 0
	}
	if st, ok := status.FromError(err); ok {
		return st.Code(), "", 0
	}
	return codes.Internal, "", 0
}

// toStatus converts a channel error into a gRPC status error.
func (s *Server) toStatus(err error) error {
	if err == nil {
		return nil
	}
	code, reason, retry := s.classify(err)
	if reason == "" {
		return status.Error(code, err.Error())
	}
	return newStatus(code, reason, retry, err.Error()).Err()
}

// toTakeError converts a channel error into an in-stream TakeError.
func (s *Server) toTakeError(err error) *sluicev1.TakeError {
	code, reason, retry := s.classify(err)
	te := &sluicev1.TakeError{Code: int32(code), Message: err.Error(), Reason: reason}
	if retry > 0 {
		te.RetryDelay = durationpb.New(retry)
	}
	return te
}
