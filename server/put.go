package server

import (
	"context"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

// Put implements the Put RPC: every entry of the request in one put
// transaction.
func (s *Server) Put(ctx context.Context, req *sluicev1.PutRequest) (*sluicev1.PutResponse, error) {
	if s.draining.Load() {
		return nil, statusErr(codes.Unavailable, sluicev1.ReasonClosed, "server is shutting down")
	}
	// Validate everything before opening the transaction.
	if err := s.checkProducer(req); err != nil {
		return nil, err
	}
	batches := make([][]channel.Event, len(req.GetPuts()))
	var total uint64
	for i, ce := range req.GetPuts() {
		if err := s.checkChannel(ce.GetChannel()); err != nil {
			return nil, err
		}
		evs := make([]channel.Event, len(ce.GetEvents()))
		for j, pe := range ce.GetEvents() {
			ev, err := s.fromProto(pe)
			if err != nil {
				return nil, statusErr(codes.InvalidArgument, reasonOf(err), "channel %q event %d: %v", ce.GetChannel(), j, err)
			}
			evs[j] = ev
		}
		batches[i] = evs
		total += uint64(len(evs))
	}
	txn, err := s.ch.BeginPut(ctx, channel.PutOptions{ProducerID: req.GetProducerId(), Sequence: req.GetSequence()})
	if err != nil {
		return nil, s.toStatus("put: begin", err)
	}
	defer txn.Rollback()
	for i, ce := range req.GetPuts() {
		if err := txn.Put(ce.GetChannel(), batches[i]...); err != nil {
			return nil, s.toStatus("put", err)
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return nil, s.toStatus("put: commit", err)
	}
	if txn.Deduplicated() {
		return &sluicev1.PutResponse{Deduplicated: true}, nil
	}
	return &sluicev1.PutResponse{Committed: total}, nil
}

// checkProducer rejects a producer id longer than Options.MaxProducerIDLen
// and a producer id with sequence 0: sequences start at 1, and a put with
// sequence 0 would be taken as a duplicate of any earlier put of that
// producer. A put of zero events with a producer id is accepted: it records
// the producer's position (an exactly-once source whose records were all
// filtered out); see the package documentation.
func (s *Server) checkProducer(req *sluicev1.PutRequest) error {
	id := req.GetProducerId()
	if id == "" {
		return nil
	}
	if len(id) > s.opts.MaxProducerIDLen {
		return statusErr(codes.InvalidArgument, sluicev1.ReasonInvalidProducer,
			"producer id of %d bytes exceeds the maximum of %d bytes", len(id), s.opts.MaxProducerIDLen)
	}
	if req.GetSequence() == 0 {
		return statusErr(codes.InvalidArgument, sluicev1.ReasonInvalidProducer,
			"producer id %q with sequence 0: producer sequences start at 1", id)
	}
	return nil
}

// checkChannel rejects empty and unknown channel names.
func (s *Server) checkChannel(name string) error {
	if name == "" {
		return statusErr(codes.InvalidArgument, sluicev1.ReasonEmptyChannel, "channel name is empty")
	}
	if !s.channels[name] {
		return statusErr(codes.NotFound, sluicev1.ReasonUnknownChannel, "unknown channel %q", name)
	}
	return nil
}

type eventError struct {
	reason, msg string
}

func (e *eventError) Error() string { return e.msg }

func reasonOf(err error) string {
	if e, ok := err.(*eventError); ok {
		return e.reason
	}
	return sluicev1.ReasonBadRequest
}

// fromProto converts and validates one event. The body is not copied.
func (s *Server) fromProto(pe *sluicev1.Event) (channel.Event, error) {
	ev := channel.Event{Body: pe.GetBody()}
	size := len(ev.Body)
	if hs := pe.GetHeaders(); len(hs) > 0 {
		if len(hs) > s.opts.MaxHeadersPerEvent {
			return ev, &eventError{sluicev1.ReasonTooManyHeaders, "event has " + itoa(len(hs)) + " headers, more than the maximum of " + itoa(s.opts.MaxHeadersPerEvent)}
		}
		ev.Headers = make(map[string]string, len(hs))
		for _, h := range hs {
			if !utf8.Valid(h.GetKey()) {
				return ev, &eventError{sluicev1.ReasonInvalidHeader, "header key is not valid UTF-8"}
			}
			if !utf8.Valid(h.GetValue()) {
				return ev, &eventError{sluicev1.ReasonInvalidHeader, "value of header " + quote(h.GetKey()) + " is not valid UTF-8"}
			}
			k := string(h.GetKey())
			if old, dup := ev.Headers[k]; dup {
				size -= len(k) + len(old)
			}
			ev.Headers[k] = string(h.GetValue())
			size += len(h.GetKey()) + len(h.GetValue())
		}
	}
	if size > s.opts.MaxEventSize {
		return ev, &eventError{sluicev1.ReasonEventTooLarge, "event of " + itoa(size) + " bytes exceeds the maximum event size of " + itoa(s.opts.MaxEventSize) + " bytes"}
	}
	return ev, nil
}

func toProto(ev channel.Event) *sluicev1.Event {
	pe := &sluicev1.Event{Body: ev.Body, Offset: ev.Offset}
	if len(ev.Headers) > 0 {
		pe.Headers = make([]*sluicev1.Header, 0, len(ev.Headers))
		for k, v := range ev.Headers {
			pe.Headers = append(pe.Headers, &sluicev1.Header{Key: []byte(k), Value: []byte(v)})
		}
	}
	return pe
}

func statsToProto(st channel.Stats) *sluicev1.ChannelStats {
	return &sluicev1.ChannelStats{
		Name:                 st.Name,
		Size:                 st.Size,
		InFlightTakes:        st.InFlightTakes,
		Bytes:                st.Bytes,
		Capacity:             st.Capacity,
		MaxBytes:             st.MaxBytes,
		PutAttempts:          st.PutAttempts,
		PutSuccesses:         st.PutSuccesses,
		TakeAttempts:         st.TakeAttempts,
		TakeSuccesses:        st.TakeSuccesses,
		OldestEventAge:       durationpb.New(st.OldestEventAge),
		CorruptEventsSkipped: st.CorruptEventsSkipped,
		TransactionCapacity:  int64(st.TransactionCapacity),
		MaxEventSize:         int64(st.MaxEventSize),
	}
}

// Producer reports a producer's last committed sequence in the store holding
// the channel (see channel.Store.ProducerSequence).
func (s *Server) Producer(ctx context.Context, req *sluicev1.ProducerRequest) (*sluicev1.ProducerResponse, error) {
	if req.GetChannel() == "" {
		return nil, statusErr(codes.InvalidArgument, sluicev1.ReasonEmptyChannel, "channel name is empty")
	}
	if id := req.GetProducerId(); id == "" || len(id) > s.opts.MaxProducerIDLen {
		return nil, statusErr(codes.InvalidArgument, sluicev1.ReasonInvalidProducer,
			"producer id of %d bytes: want 1 to %d bytes", len(id), s.opts.MaxProducerIDLen)
	}
	seq, ok, err := s.ch.ProducerSequence(ctx, req.GetChannel(), req.GetProducerId())
	if err != nil {
		return nil, s.toStatus("producer", err)
	}
	return &sluicev1.ProducerResponse{Sequence: seq, Found: ok}, nil
}
