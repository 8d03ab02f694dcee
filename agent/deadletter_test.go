package agent_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
)

// picky is a sink that refuses the events whose body is in bad: mode
// "reject" writes the others and returns a RejectedError naming the bad
// ones; "permanent" writes nothing of a batch holding a bad one and returns
// a Permanent error; "transient" the same with a plain error.
type picky struct {
	mode  string
	bad   map[string]bool
	batch int

	mu       sync.Mutex
	written  map[string]int
	attempts map[string]int // writes tried per bad event
}

func (p *picky) Process(ctx context.Context, in *agent.Input) (agent.Status, error) {
	return in.Drain(ctx, p.batch, func(ctx context.Context, evs []channel.Event) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		refused := map[int]error{}
		for i, e := range evs {
			if p.bad[string(e.Body)] {
				p.attempts[string(e.Body)]++
				refused[i] = fmt.Errorf("picky: event %s refused", e.Body)
			}
		}
		if len(refused) > 0 && p.mode != "reject" {
			if p.mode == "permanent" {
				return agent.Permanent(errors.New("picky: the batch holds an event the destination refuses"))
			}
			return errors.New("picky: the destination is down for this batch")
		}
		for i, e := range evs {
			if refused[i] == nil {
				p.written[string(e.Body)]++
			}
		}
		if len(refused) > 0 {
			return &agent.RejectedError{Events: refused}
		}
		return nil
	})
}

func (p *picky) writtenOnce(t *testing.T, n int) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range n {
		b := strconv.Itoa(i)
		want := 1
		if p.bad[b] {
			want = 0
		}
		if p.written[b] != want {
			t.Errorf("event %s written %d times, want %d", b, p.written[b], want)
		}
	}
}

func pickyHarness(mode string, bad ...int) (*harness, *picky) {
	h := newHarness()
	p := &picky{mode: mode, bad: map[string]bool{}, written: map[string]int{}, attempts: map[string]int{}}
	for _, b := range bad {
		p.bad[strconv.Itoa(b)] = true
	}
	h.extra = func(r *agent.Registry) {
		r.Sink(func(s *agent.Setup) (agent.Sink, error) {
			b, err := s.BatchSize("batchSize", 10)
			p.batch = b
			return p, err
		}, "picky")
	}
	return h, p
}

const dlqAgent = `a.channels = c1 dlq
a.channels.c1.type = file
a.channels.c1.dataDirs = DIR/data
a.channels.c1.checkpointDir = DIR/ckpt
a.channels.c1.transactionCapacity = 100
a.channels.dlq.type = file
a.channels.dlq.dataDirs = DIR/data
a.channels.dlq.checkpointDir = DIR/ckpt
a.channels.dlq.transactionCapacity = 100
a.sinks = k1
a.sinks.k1.type = picky
a.sinks.k1.channel = c1
a.sinks.k1.batchSize = 10
a.sinks.k1.deadLetter.channel = dlq
`

// takeDLQ takes every event of the dead-letter channel.
func takeDLQ(t *testing.T, s channel.Store) []channel.Event {
	t.Helper()
	tx, err := s.BeginTake(context.Background(), "dlq")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	evs, _ := tx.Take(ctx, 100)
	if err := tx.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkDead checks the dead letters: the bad events, in order, with the
// reason, the sink, their channel and their offset there (events 0..n-1
// were put in one go, so event i has offset i+1).
func checkDead(t *testing.T, evs []channel.Event, reason string, attempts string, bad ...int) {
	t.Helper()
	if len(evs) != len(bad) {
		t.Fatalf("dead-letter channel holds %d events, want %d", len(evs), len(bad))
	}
	for i, e := range evs {
		b := strconv.Itoa(bad[i])
		h := e.Headers
		if string(e.Body) != b || !strings.Contains(h[agent.HeaderDLQReason], reason) || h[agent.HeaderDLQSink] != "k1" ||
			h[agent.HeaderDLQChannel] != "c1" || h[agent.HeaderDLQOffset] != strconv.Itoa(bad[i]+1) || h[agent.HeaderDLQTime] == "" ||
			h[agent.HeaderDLQAttempts] != attempts {
			t.Errorf("dead letter %d: body %q headers %v; want event %s from c1 at offset %d by k1, reason containing %q, attempts %s",
				i, e.Body, h, b, bad[i]+1, reason, attempts)
		}
	}
}

// A sink that writes a batch except some events it refuses for good
// (RejectedError): those are moved to the dead-letter channel in the take's
// commit, with the reason and where they came from; the others are written
// once.
func TestDeadLetterRejected(t *testing.T) {
	h, p := pickyHarness("reject", 7, 23, 41)
	r := start(t, h, dlqAgent, agent.Options{})
	put(t, r.store, "c1", 0, 50)
	waitFor(t, "c1 drained", func() bool { return r.size(t, "c1") == 0 && r.metric("SINK.k1", "EventDeadLetterCount") == 3 })
	p.writtenOnce(t, 50)
	checkDead(t, takeDLQ(t, r.store), "picky: event", "1", 7, 23, 41)
	if got := r.metric("SINK.k1", "EventDrainSuccessCount"); got != 47 {
		t.Errorf("EventDrainSuccessCount %d, want 47", got)
	}
}

// A Permanent error for a batch isolates the event at fault: the batch's
// events are taken one at a time, the good ones written, the bad one
// dead-lettered.
func TestDeadLetterPermanentIsolates(t *testing.T) {
	h, p := pickyHarness("permanent", 3, 4, 35)
	r := start(t, h, dlqAgent, agent.Options{})
	put(t, r.store, "c1", 0, 50)
	waitFor(t, "c1 drained", func() bool { return r.size(t, "c1") == 0 && r.metric("SINK.k1", "EventDeadLetterCount") == 3 })
	p.writtenOnce(t, 50)
	checkDead(t, takeDLQ(t, r.store), "destination refuses", "1", 3, 4, 35)
}

// With deadLetter.maxAttempts an event whose write keeps failing with a
// transient error is dead-lettered after that many attempts (its batch is
// isolated first); every other event is written once.
func TestDeadLetterMaxAttempts(t *testing.T) {
	h, p := pickyHarness("transient", 12)
	r := start(t, h, dlqAgent+"a.sinks.k1.deadLetter.maxAttempts = 3\n", agent.Options{})
	put(t, r.store, "c1", 0, 30)
	waitFor(t, "c1 drained", func() bool { return r.size(t, "c1") == 0 && r.metric("SINK.k1", "EventDeadLetterCount") == 1 })
	p.writtenOnce(t, 30)
	checkDead(t, takeDLQ(t, r.store), "3 attempts failed", "3", 12)
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.attempts["12"]; n != 6 {
		t.Errorf("event 12 tried %d times, want 6 (3 in its batch, 3 alone)", n)
	}
}

// Without a dead-letter channel a refused event is retried (Flume's
// behaviour): nothing is dropped, the channel keeps it.
func TestNoDeadLetterRetries(t *testing.T) {
	h, p := pickyHarness("permanent", 0)
	text := strings.Replace(dlqAgent, "a.sinks.k1.deadLetter.channel = dlq\n", "", 1)
	r := start(t, h, text, agent.Options{})
	put(t, r.store, "c1", 0, 5)
	waitFor(t, "several attempts", func() bool { return r.metric("SINK.k1", "EventWriteFail") >= 3 })
	if n := r.size(t, "c1"); n != 5 {
		t.Fatalf("c1 holds %d events, want all 5 (retried, never dropped)", n)
	}
	if n := r.size(t, "dlq"); n != 0 {
		t.Fatalf("dlq holds %d events", n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.written) != 0 {
		t.Fatalf("written %v while the batch was refused", p.written)
	}
}

// Bad deadLetter.* configurations are refused at Build, naming the line
// and the key.
func TestDeadLetterConfigErrors(t *testing.T) {
	h, _ := pickyHarness("reject")
	cases := []struct{ text, want string }{
		{strings.Replace(dlqAgent, "deadLetter.channel = dlq", "deadLetter.channel = nope", 1), `key a.sinks.k1.deadLetter.channel: dead-letter channel "nope" is not a channel of this agent`},
		{strings.Replace(dlqAgent, "deadLetter.channel = dlq", "deadLetter.channel = c1", 1), "is the sink's own channel"},
		{strings.Replace(dlqAgent, "a.channels.dlq.type = file", "a.channels.dlq.type = memory", 1) + "", "is in another store"},
		{strings.Replace(dlqAgent, "a.sinks.k1.deadLetter.channel = dlq\n", "a.sinks.k1.deadLetter.maxAttempts = 2\n", 1), "deadLetter.maxAttempts needs deadLetter.channel"},
		{strings.Replace(dlqAgent, "a.channels.dlq.transactionCapacity = 100", "a.channels.dlq.transactionCapacity = 5", 1), "transactionCapacity 5 of channel dlq"},
	}
	for _, tc := range cases {
		text := strings.ReplaceAll(tc.text, "DIR", t.TempDir())
		if strings.Contains(tc.want, "another store") {
			// A memory channel takes none of the file keys.
			var keep []string
			for _, l := range strings.Split(text, "\n") {
				if !strings.HasPrefix(l, "a.channels.dlq.dataDirs") && !strings.HasPrefix(l, "a.channels.dlq.checkpointDir") {
					keep = append(keep, l)
				}
			}
			text = strings.Join(keep, "\n")
		}
		cfg, err := config.Parse("t.properties", text, "a", quiet)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		_, err = agent.Build(cfg, agent.Options{Registry: h.registry(), Log: quiet})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "t.properties:") {
			t.Errorf("Build: %v\nwant an error with the file:line and %q", err, tc.want)
		}
	}
}
