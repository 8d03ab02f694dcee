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
	done    bool
	dedup   bool
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
	if err := p.check(name, events); err != nil {
		return err
	}
	var ce *sluicev1.ChannelEvents
	if k := len(p.req.Puts); k > 0 && p.req.Puts[k-1].Channel == name {
		ce = p.req.Puts[k-1]
	} else {
		ce = &sluicev1.ChannelEvents{Channel: name}
		p.req.Puts = append(p.req.Puts, ce)
	}
	for _, ev := range events {
		ce.Events = append(ce.Events, toProto(ev))
	}
	p.n += len(events)
	return nil
}

// check applies the limits Dial read to one Put call.
func (p *putTxn) check(name string, events []channel.Event) error {
	lim, ok := p.c.limits[name]
	if !ok {
		if name == "" {
			return fmt.Errorf("%w: empty channel name", channel.ErrUnknownChannel)
		}
		return fmt.Errorf("%w: %q (the server has %v)", channel.ErrUnknownChannel, name, p.c.channels)
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
	if lim.txn > 0 && p.perChan[name]+len(events) > lim.txn {
		return fmt.Errorf("%w: %d events for channel %q in one transaction, its transactionCapacity is %d",
			channel.ErrTxnFull, p.perChan[name]+len(events), name, lim.txn)
	}
	if p.perChan == nil {
		p.perChan = make(map[string]int, 1)
	}
	p.perChan[name] += len(events)
	return nil
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
