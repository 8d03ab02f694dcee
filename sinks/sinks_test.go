package sinks_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/builtin"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/config"
	"github.com/sluicehq/sluice/sinks"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func run(t *testing.T, text string, log *slog.Logger) (*agent.Agent, channel.Store) {
	t.Helper()
	cfg, err := config.Parse("k.properties", text, "a", log)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: log, IdleWait: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	st, err := memstore.New(cfg.Stores()[0].Memory)
	if err != nil {
		t.Fatal(err)
	}
	if err := ag.Start(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ag.Stop(); st.Close() })
	return ag, st
}

func put(t *testing.T, st channel.Store, evs ...channel.Event) {
	txn, _ := st.BeginPut(context.Background(), channel.PutOptions{})
	if err := txn.Put("c1", evs...); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func waitEmpty(t *testing.T, ag *agent.Agent, sink, drained string) {
	deadline := time.Now().Add(5 * time.Second)
	for ag.JSON()["SINK."+sink]["EventDrainSuccessCount"] != drained {
		if time.Now().After(deadline) {
			t.Fatalf("drained %v", ag.JSON()["SINK."+sink])
		}
		time.Sleep(2 * time.Millisecond)
	}
}

const ch = "a.channels = c1\na.channels.c1.type = memory\na.channels.c1.transactionCapacity = 100\n"

// The logger sink logs each event at INFO through slog, the body cut to
// maxBytesToLog, as Flume's LoggerSink prints it.
func TestLoggerSink(t *testing.T) {
	var buf syncBuf
	log := slog.New(slog.NewTextHandler(&buf, nil))
	ag, st := run(t, ch+"a.sinks = k1\na.sinks.k1.type = org.apache.flume.sink.LoggerSink\na.sinks.k1.channel = c1\na.sinks.k1.maxBytesToLog = 4\n", log)
	put(t, st, channel.Event{Headers: map[string]string{"b": "2", "a": "1"}, Body: []byte("hello world")}, channel.Event{Body: []byte{0, 'x'}})
	waitEmpty(t, ag, "k1", "2")
	out := buf.String()
	for _, want := range []string{
		`level=INFO msg="Event: { headers:{a=1, b=2} body: 68 65 6C 6C  hell }" sink=k1 channel=c1`,
		`msg="Event: { headers:{} body: 00 78  .x }"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if sinks.FormatEvent(channel.Event{Body: []byte("abc")}, 16) != "{ headers:{} body: 61 62 63  abc }" {
		t.Error(sinks.FormatEvent(channel.Event{Body: []byte("abc")}, 16))
	}
}

// The null sink drains in batches of batchSize and counts them.
func TestNullSink(t *testing.T) {
	ag, st := run(t, ch+"a.sinks = k1\na.sinks.k1.type = null\na.sinks.k1.channel = c1\na.sinks.k1.batchSize = 10\n", slog.New(slog.DiscardHandler))
	var evs []channel.Event
	for range 25 {
		evs = append(evs, channel.Event{Body: []byte("x")})
	}
	put(t, st, evs...)
	waitEmpty(t, ag, "k1", "25")
	for deadline := time.Now().Add(5 * time.Second); ag.JSON()["SINK.k1"]["BatchEmptyCount"] == "0" && time.Now().Before(deadline); {
		time.Sleep(2 * time.Millisecond)
	}
	js := ag.JSON()["SINK.k1"]
	if js["BatchCompleteCount"] != "2" || js["BatchUnderflowCount"] != "1" || js["EventDrainAttemptCount"] != "25" || js["BatchEmptyCount"] == "0" {
		t.Errorf("counters %v", js)
	}
}

// batchSize above the channel's transactionCapacity is refused at build,
// naming the key and the fix.
func TestNullSinkBatchAboveTransactionCapacity(t *testing.T) {
	cfg, err := config.Parse("k.properties", ch+"a.sinks = k1\na.sinks.k1.type = null\na.sinks.k1.channel = c1\na.sinks.k1.batchSize = 1000\n", "a", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.Build(cfg, agent.Options{Registry: builtin.Registry()})
	want := "k.properties:7: key a.sinks.k1.batchSize: sink k1's batch size 1000 is above the transactionCapacity 100 of channel c1"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v\nwant %s", err, want)
	}
}
