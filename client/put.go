package client

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
)

// putTxn buffers a put transaction until Commit.
type putTxn struct {
	c       *Client
	opts    channel.PutOptions
	req     *sluicev1.PutRequest
	n       int
	perChan map[string]int // events per channel, against transactionCapacity
	lastSeq uint64         // per-event mode: the last sequence PutSeq gave
	done    bool
	dedup   bool
	dups    int
}

// BeginPut opens a put transaction. Nothing is sent before Commit.
func (c *Client) BeginPut(ctx context.Context, opts channel.PutOptions) (channel.PutTxn, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.isClosed() {
		return nil, channel.ErrClosed
	}
	return &putTxn{c: c, opts: opts, req: &sluicev1.PutRequest{}}, nil
}

// Put buffers events for one channel. The bodies are not copied: do not
// modify them before Commit returns. As with the local stores, an unknown
// channel, an event over the store's maxEventSize or more events than the
// channel's transactionCapacity fail here (ErrUnknownChannel,
// ErrEventTooLarge, ErrTxnFull) and buffer nothing of the call, so the
// transaction stays usable; the limits are the ones Dial read from the
// server, which checks them again at Commit.
func (p *putTxn) Put(name string, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	if err := p.opts.CheckPut(); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := p.check(name, events); err != nil {
		return err
	}
	p.req.Puts = appendEvents(p.req.Puts, name, events)
	p.n += len(events)
	return nil
}

// PutSeq buffers events for one channel with per-event sequences (see
// channel.PutTxn). The sequence rules and the limits are checked here, as
// the local stores do; the server checks them again at Commit.
func (p *putTxn) PutSeq(name string, first uint64, events ...channel.Event) error {
	if p.done {
		return channel.ErrTxnDone
	}
	last, err := p.opts.CheckPutSeq(p.lastSeq, first, len(events))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if err := p.check(name, events); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	k := len(p.req.Puts)
	if prev := p.req.Puts[max(k-1, 0):]; len(prev) == 1 && prev[0].Channel == name &&
		prev[0].FirstSequence != 0 && first == p.lastSeq+1 {
		// Follows on the previous entry's sequences: one entry.
		for _, ev := range events {
			prev[0].Events = append(prev[0].Events, toProto(ev))
		}
	} else {
		ce := &sluicev1.ChannelEvents{Channel: name, FirstSequence: first, Events: make([]*sluicev1.Event, 0, len(events))}
		for _, ev := range events {
			ce.Events = append(ce.Events, toProto(ev))
		}
		p.req.Puts = append(p.req.Puts, ce)
	}
	p.n += len(events)
	p.lastSeq = last
	return nil
}

// check applies the limits Dial read to one Put call.
func (p *putTxn) check(name string, events []channel.Event) error {
	return p.c.checkPut(&p.perChan, name, events)
}

// checkPut applies the limits Dial read to one Put call (of a put txn or a
// move) and counts the events in *perChan.
func (c *Client) checkPut(perChan *map[string]int, name string, events []channel.Event) error {
	lim, ok := c.limits[name]
	if !ok {
		if name == "" {
			return fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return fmt.Errorf("%w: %q (the server has %v)", channel.ErrUnknownChannel, name, c.channels)
	}
	for i, ev := range events {
		if sz := ev.Size(); lim.event > 0 && sz > lim.event {
			return fmt.Errorf("%w: event %d of the call is %d bytes, channel %q takes at most %d", channel.ErrEventTooLarge, i, sz, name, lim.event)
		}
		if len(ev.Headers) != 0 {
			if err := channel.CheckHeaders(ev); err != nil {
				return fmt.Errorf("event %d: %w", i, err)
			}
		}
	}
	if lim.txn > 0 && (*perChan)[name]+len(events) > lim.txn {
		return fmt.Errorf("%w: %d events for channel %q in one transaction, its transactionCapacity is %d",
			channel.ErrTxnFull, (*perChan)[name]+len(events), name, lim.txn)
	}
	if *perChan == nil {
		*perChan = make(map[string]int, 1)
	}
	(*perChan)[name] += len(events)
	return nil
}

// appendEvents adds events for channel name to puts, to its last entry
// when that is for the same channel.
func appendEvents(puts []*sluicev1.ChannelEvents, name string, events []channel.Event) []*sluicev1.ChannelEvents {
	var ce *sluicev1.ChannelEvents
	if k := len(puts); k > 0 && puts[k-1].Channel == name && puts[k-1].FirstSequence == 0 {
		ce = puts[k-1]
	} else {
		ce = &sluicev1.ChannelEvents{Channel: name}
		puts = append(puts, ce)
	}
	for _, ev := range events {
		ce.Events = append(ce.Events, toProto(ev))
	}
	return puts
}

// Commit sends the transaction in one Put request; see the package
// documentation for retries and idempotence.
func (p *putTxn) Commit(ctx context.Context) error {
	if p.done {
		return channel.ErrTxnDone
	}
	p.done = true
	c := p.c
	if c.isClosed() {
		return channel.ErrClosed
	}
	if p.n == 0 && p.opts.ProducerID == "" {
		return nil
	}
	if sz := proto.Size(p.req); sz > c.opts.MaxSendMsgSize {
		return fmt.Errorf("%w: put of %d events is %d bytes encoded, more than the %d-byte message limit; commit smaller transactions",
			channel.ErrTxnFull, p.n, sz, c.opts.MaxSendMsgSize)
	}
	p.req.ProducerId, p.req.Sequence = p.opts.ProducerID, p.opts.Sequence
	var slot *producerSlot
	if p.opts.ProducerID == "" && !c.opts.DisableAutoProducerID {
		slot = c.acquireSlot()
		slot.seq++
		p.req.ProducerId, p.req.Sequence = slot.id, slot.seq
		defer c.releaseSlot(slot)
	}
	var resp *sluicev1.PutResponse
	err := c.retry(ctx, c.opts.RetryBudget, func() error {
		var err error
		resp, err = c.api.Put(ctx, p.req)
		return err
	})
	if err != nil {
		if c.isClosed() {
			// Closed under the call: as for any error after the request
			// was sent, the server may or may not have stored it (a
			// producer sequence makes a retry safe).
			return fmt.Errorf("%w (the put was being sent: %v)", channel.ErrClosed, err)
		}
		return err
	}
	// With a generated producer id a deduplicated answer can only mean that
	// an earlier attempt of this very commit was stored.
	p.dedup = resp.GetDeduplicated() && slot == nil
	if slot == nil {
		p.dups = int(min(resp.GetDuplicates(), uint64(p.n)))
		if p.dedup && p.dups == 0 {
			p.dups = p.n // a server that does not report duplicates
		}
	}
	return nil
}

// Rollback discards the buffered events.
func (p *putTxn) Rollback() error {
	p.done = true
	p.req = nil
	return nil
}

// Deduplicated reports whether the server found the caller's (producer,
// sequence) already committed.
func (p *putTxn) Deduplicated() bool { return p.dedup }

// Duplicates reports how many events the server dropped as already
// committed by the caller's producer.
func (p *putTxn) Duplicates() int { return p.dups }

func toProto(ev channel.Event) *sluicev1.Event {
	pe := &sluicev1.Event{Body: ev.Body}
	if len(ev.Headers) > 0 {
		pe.Headers = make([]*sluicev1.Header, 0, len(ev.Headers))
		for k, v := range ev.Headers {
			pe.Headers = append(pe.Headers, &sluicev1.Header{Key: []byte(k), Value: []byte(v)})
		}
	}
	return pe
}

func fromProto(pe *sluicev1.Event) channel.Event {
	ev := channel.Event{Body: pe.GetBody(), Offset: pe.GetOffset()}
	if hs := pe.GetHeaders(); len(hs) > 0 {
		ev.Headers = make(map[string]string, len(hs))
		for _, h := range hs {
			ev.Headers[string(h.GetKey())] = string(h.GetValue())
		}
	}
	return ev
}
