package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

// Errors of this package beyond channel's sentinels.
var (
	// ErrLeaseExpired: the server rolled a take transaction back because
	// its lease expired. Errors carrying it also match channel.ErrTxnDone.
	ErrLeaseExpired = errors.New("take lease expired")
	// ErrInvalidEvent is channel.ErrInvalidEvent: a malformed event (a
	// header key or value that is not valid UTF-8), refused at Put by the
	// client as by the local stores, and by the server.
	ErrInvalidEvent = channel.ErrInvalidEvent
)

// Error is a failure reported by the server (or by gRPC). It matches, with
// errors.Is, the channel sentinel the server reported (channel.ErrChannelFull,
// channel.ErrUnknownChannel, …) and, for cancellations, the context error;
// status.Code and status.FromError see its gRPC status.
type Error struct {
	// Code and Message are the gRPC status.
	Code    codes.Code
	Message string
	// Reason is the server's ErrorInfo reason (sluicev1.Reason*), or empty.
	Reason string
	// RetryDelay is the server's retry hint, or 0.
	RetryDelay time.Duration

	wrapped []error
}

func (e *Error) Error() string { return fmt.Sprintf("sluice: %s: %s", e.Code, e.Message) }

// Unwrap returns the sentinels the error matches.
func (e *Error) Unwrap() []error { return e.wrapped }

// GRPCStatus returns the status the error came from.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

func newError(code codes.Code, msg, reason string, retry time.Duration) *Error {
	e := &Error{Code: code, Message: msg, Reason: reason, RetryDelay: retry}
	switch reason {
	case sluicev1.ReasonChannelFull:
		e.wrapped = []error{channel.ErrChannelFull}
	case sluicev1.ReasonDiskSpace:
		e.wrapped = []error{channel.ErrDiskSpace}
	case sluicev1.ReasonTxnFull:
		e.wrapped = []error{channel.ErrTxnFull}
	case sluicev1.ReasonEventTooLarge:
		e.wrapped = []error{channel.ErrEventTooLarge}
	case sluicev1.ReasonUnknownChannel, sluicev1.ReasonEmptyChannel:
		e.wrapped = []error{channel.ErrUnknownChannel}
	case sluicev1.ReasonClosed:
		e.wrapped = []error{channel.ErrClosed}
	case sluicev1.ReasonTxnDone:
		e.wrapped = []error{channel.ErrTxnDone}
	case sluicev1.ReasonLeaseExpired:
		e.wrapped = []error{ErrLeaseExpired, channel.ErrTxnDone}
	case sluicev1.ReasonInvalidHeader:
		e.wrapped = []error{ErrInvalidEvent}
	case sluicev1.ReasonInvalidProducer:
		e.wrapped = []error{channel.ErrBadProducer}
	case sluicev1.ReasonProducerTableFull:
		e.wrapped = []error{channel.ErrProducerTableFull}
	}
	switch code {
	case codes.Canceled:
		e.wrapped = append(e.wrapped, context.Canceled)
	case codes.DeadlineExceeded:
		e.wrapped = append(e.wrapped, context.DeadlineExceeded)
	}
	return e
}

// mapErr converts an error returned by a gRPC call into an *Error. Other
// errors (nil, io.EOF, …) are returned unchanged.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var reason string
	var retry time.Duration
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == sluicev1.ErrorDomain {
				reason = d.GetReason()
			}
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration()
		}
	}
	return newError(st.Code(), st.Message(), reason, retry)
}

func takeErr(te *sluicev1.TakeError) error {
	return newError(codes.Code(te.GetCode()), te.GetMessage(), te.GetReason(), te.GetRetryDelay().AsDuration())
}
