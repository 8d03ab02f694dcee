package sluicev1

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the Sluice
// server returns; the Reason* constants are its reasons (see sluice.proto).
const ErrorDomain = "sluice.v1"

// ErrorInfo reasons.
const (
	ReasonEmptyChannel   = "EMPTY_CHANNEL"
	ReasonUnknownChannel = "UNKNOWN_CHANNEL"
	ReasonEventTooLarge  = "EVENT_TOO_LARGE"
	ReasonTxnFull        = "TXN_FULL"
	ReasonInvalidHeader  = "INVALID_HEADER"
	ReasonBadRequest     = "BAD_REQUEST"
	ReasonChannelFull    = "CHANNEL_FULL"
	ReasonDiskSpace      = "DISK_SPACE"
	ReasonClosed         = "CLOSED"
	ReasonTxnDone        = "TXN_DONE"
	ReasonLeaseExpired   = "LEASE_EXPIRED"
)
