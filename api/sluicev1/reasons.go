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
	// Added by the server hardening (issue #16).
	ReasonTooManyHeaders  = "TOO_MANY_HEADERS" // INVALID_ARGUMENT: more headers in one event than the server allows
	ReasonInvalidProducer = "INVALID_PRODUCER" // INVALID_ARGUMENT: producer id too long, or sequence 0 with a producer id
	ReasonCrossStore      = "CROSS_STORE"      // INVALID_ARGUMENT: one put names channels of two stores
	ReasonServerBusy      = "SERVER_BUSY"      // RESOURCE_EXHAUSTED (with RetryInfo): too many puts or take streams in flight
	// RESOURCE_EXHAUSTED: a put of a producer id the store does not know while
	// it remembers its maxProducers ids; entries leave by producerExpiry.
	ReasonProducerTableFull = "PRODUCER_TABLE_FULL"
)
