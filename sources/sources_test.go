package sources_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/agent/builtin"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/config"
)

var quiet = slog.New(slog.DiscardHandler)

// run starts an agent of text on a real memory store (one channel c1).
func run(t *testing.T, text string) (*agent.Agent, channel.Store) {
	t.Helper()
	cfg, err := config.Parse("s.properties", text, "a", quiet)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := agent.Build(cfg, agent.Options{Registry: builtin.Registry(), Log: quiet, RestartMin: 5 * time.Millisecond})
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

func take(t *testing.T, st channel.Store, n int) []string {
	t.Helper()
	txn, err := st.BeginTake(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	evs, _ := txn.Take(ctx, n)
	if err := txn.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Body))
	}
	return out
}

func size(t *testing.T, st channel.Store) int64 {
	s, err := st.Stats(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	return s.Size
}

func netcatConf(capacity int, extra string) string {
	return fmt.Sprintf(`a.channels = c1
a.channels.c1.type = memory
a.channels.c1.capacity = %d
a.channels.c1.transactionCapacity = %d
a.sources = r1
a.sources.r1.type = org.apache.flume.source.NetcatSource
a.sources.r1.bind = 127.0.0.1
a.sources.r1.port = 0
a.sources.r1.channels = c1
%s`, capacity, min(capacity, 100), extra)
}

func dial(t *testing.T, ag *agent.Agent) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", ag.Addrs()["r1"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func readLine(t *testing.T, c net.Conn, r *bufio.Reader, within time.Duration) (string, error) {
	c.SetReadDeadline(time.Now().Add(within))
	return r.ReadString('\n')
}

// Every line is acknowledged with OK only once it is committed: when the
// OK arrives the event is in the channel.
func TestNetcatAckAfterCommit(t *testing.T) {
	ag, st := run(t, netcatConf(1000, ""))
	c, r := dial(t, ag)
	for i := range 20 {
		fmt.Fprintf(c, "line %d\n", i)
		l, err := readLine(t, c, r, 5*time.Second)
		if err != nil || l != "OK\n" {
			t.Fatalf("line %d: %q %v", i, l, err)
		}
		if n := size(t, st); n != int64(i+1) {
			t.Fatalf("after the OK for line %d the channel holds %d events", i, n)
		}
	}
	// A burst: acknowledgements for every line, in one or more puts.
	var b strings.Builder
	for i := 20; i < 320; i++ {
		fmt.Fprintf(&b, "line %d\r\n", i)
	}
	fmt.Fprint(c, b.String())
	for i := 20; i < 320; i++ {
		if l, err := readLine(t, c, r, 5*time.Second); err != nil || l != "OK\n" {
			t.Fatalf("burst line %d: %q %v", i, l, err)
		}
	}
	var got []string
	for len(got) < 320 {
		n := len(got)
		if got = append(got, take(t, st, 100)...); len(got) == n {
			break
		}
	}
	if len(got) != 320 || got[0] != "line 0" || got[319] != "line 319\r" {
		t.Fatalf("%d events, first %q last %q (Flume keeps the \\r)", len(got), got[0], got[len(got)-1])
	}
	js := waitCounter(ag, "EventAcceptedCount", "320")
	if js["EventAcceptedCount"] != "320" || js["OpenConnectionCount"] != "1" {
		t.Errorf("counters %v", js)
	}
}

// A full channel stops the source reading: lines beyond capacity are not
// acknowledged, not dropped; once a consumer makes room they are stored
// and acknowledged, in order, each once.
func TestNetcatPushBack(t *testing.T) {
	ag, st := run(t, netcatConf(5, ""))
	c, r := dial(t, ag)
	for i := range 12 {
		fmt.Fprintf(c, "%d\n", i)
	}
	acks := 0
	for {
		l, err := readLine(t, c, r, 300*time.Millisecond)
		if err != nil {
			break
		}
		if l != "OK\n" {
			t.Fatalf("reply %q", l)
		}
		acks++
	}
	// Batches are all or nothing: as many acks as events stored, fewer
	// than sent.
	if n := size(t, st); acks == 0 || acks >= 12 || int64(acks) != n {
		t.Fatalf("%d acks with %d events stored (capacity 5)", acks, n)
	}
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 12 && time.Now().Before(deadline) {
		got = append(got, take(t, st, 5)...)
		for {
			l, err := readLine(t, c, r, 20*time.Millisecond)
			if err != nil {
				break
			}
			if l != "OK\n" {
				t.Fatalf("reply %q", l)
			}
			acks++
		}
	}
	for i := range 12 {
		if i >= len(got) || got[i] != strconv.Itoa(i) {
			t.Fatalf("events %v, want 0..11 in order", got)
		}
	}
	if len(got) != 12 || acks != 12 {
		t.Errorf("%d events, %d acks", len(got), acks)
	}
	if ag.JSON()["SOURCE.r1"]["ChannelWriteFail"] == "0" {
		t.Error("the full channel was not counted")
	}
}

// A line over max-line-length (newline included) is answered FAILED and
// the connection closed, as Flume does; lines before it are stored.
func TestNetcatLineTooLong(t *testing.T) {
	ag, st := run(t, netcatConf(100, "a.sources.r1.max-line-length = 8\n"))
	c, r := dial(t, ag)
	fmt.Fprint(c, "1234567\n123456789\nnext\n")
	if l, _ := readLine(t, c, r, 5*time.Second); l != "OK\n" {
		t.Fatalf("first reply %q", l)
	}
	if l, _ := readLine(t, c, r, 5*time.Second); l != "FAILED: Event exceeds the maximum length (8 chars, including newline)\n" {
		t.Fatalf("second reply %q", l)
	}
	if _, err := readLine(t, c, r, 5*time.Second); err == nil {
		t.Fatal("connection still open")
	}
	if got := take(t, st, 10); len(got) != 1 || got[0] != "1234567" {
		t.Errorf("stored %v", got)
	}
	if ag.JSON()["SOURCE.r1"]["EventReadFail"] != "1" {
		t.Errorf("EventReadFail %s", ag.JSON()["SOURCE.r1"]["EventReadFail"])
	}
}

// ack-every-event = false sends nothing back.
func TestNetcatNoAck(t *testing.T) {
	ag, st := run(t, netcatConf(100, "a.sources.r1.ack-every-event = false\n"))
	c, r := dial(t, ag)
	fmt.Fprint(c, "a\nb\n")
	deadline := time.Now().Add(5 * time.Second)
	for size(t, st) < 2 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	if l, err := readLine(t, c, r, 50*time.Millisecond); err == nil {
		t.Errorf("reply %q", l)
	}
	if got := take(t, st, 10); strings.Join(got, ",") != "a,b" {
		t.Errorf("stored %v", got)
	}
}

// seq delivers 0 … totalEvents-1 in batches of batchSize, then finishes.
func TestSeq(t *testing.T) {
	ag, st := run(t, `a.channels = c1
a.channels.c1.type = memory
a.channels.c1.capacity = 10
a.channels.c1.transactionCapacity = 5
a.sources = r1
a.sources.r1.type = seq
a.sources.r1.totalEvents = 23
a.sources.r1.batchSize = 5
a.sources.r1.channels = c1
`)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < 23 && time.Now().Before(deadline) {
		got = append(got, take(t, st, 5)...) // capacity 10: the source waits for room, never skips
	}
	for i := range 23 {
		if i >= len(got) || got[i] != strconv.Itoa(i) {
			t.Fatalf("got %v", got)
		}
	}
	js := waitCounter(ag, "EventAcceptedCount", "23")
	if js["AppendBatchAcceptedCount"] != "5" || js["EventAcceptedCount"] != "23" {
		t.Errorf("counters %v", js)
	}
}

// waitCounter waits (up to 10 s) until source r1's counter key reads want
// and returns its counters: a source counts a batch after its commit
// returns, which may be after a taker already saw the events.
func waitCounter(ag *agent.Agent, key, want string) map[string]string {
	js := ag.JSON()["SOURCE.r1"]
	for deadline := time.Now().Add(10 * time.Second); js[key] != want && time.Now().Before(deadline); js = ag.JSON()["SOURCE.r1"] {
		time.Sleep(2 * time.Millisecond)
	}
	return js
}
