package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/client"
)

// TestSourceResumeKill9 is issue 17's exactly-once source against a real
// server: a source reads numbered lines and puts them over gRPC with
// per-event sequences (sequence = line number) in batches of one size.
// `sluice serve` is SIGKILLed either right after a Commit returned, before
// the source recorded anything locally, or at a random moment while a
// commit is in flight (its outcome unknown to the source). After each
// restart the source resumes from the server's ProducerSequence, or from
// an older position of its own, and cuts its batches with another size. At
// the end every line is in the channel exactly once, in order.
func TestSourceResumeKill9(t *testing.T) {
	cycles := 6
	if testing.Short() {
		cycles = 3
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 17))
	dir := t.TempDir()
	cfg := testConfig(dir, `agent.channels.default.maxFileSize = 1048576
agent.channels.default.maxEventSize = 65536
agent.channels.default.checkpointInterval = 300
agent.channels.default.capacity = 100000
agent.channels.default.transactionCapacity = 1000
`)
	const lines, producer = 5000, "tail:/var/log/app.log"
	line := func(n uint64) channel.Event {
		return channel.Event{Body: []byte("line-" + strconv.FormatUint(n, 10) + "|" + strings.Repeat("x", int(n%200)))}
	}
	var local, acked uint64 // the source's own (lagging) position; the highest acknowledged sequence
	lastSize := 0
	exact := true // no commit was in flight at the last kill
	for c := 0; ; c++ {
		if c > cycles+20 {
			t.Fatalf("source not done after %d cycles", c)
		}
		srv := startServer(t, dir, cfg)
		ctx := context.Background()
		cl, err := client.Dial(ctx, srv.addr, client.Options{RetryBudget: -1})
		if err != nil {
			t.Fatal(err)
		}
		mark, _, err := cl.ProducerSequence(ctx, "default", producer)
		if err != nil {
			t.Fatal(err)
		}
		if mark < acked || (exact && mark != acked) {
			t.Fatalf("cycle %d: ProducerSequence %d after the kill, the last acknowledged commit was %d", c, mark, acked)
		}
		acked = mark // a commit in flight at the kill may have been stored
		if mark == lines {
			t.Logf("done after %d kills", c)
			cl.Close()
			verifyLines(t, srv.addr, lines)
			srv.stop(t)
			return
		}
		next := mark + 1
		if rng.IntN(2) == 0 {
			next = local + 1 // re-read what the store already holds
		}
		size := lastSize
		for size == lastSize {
			size = 1 + rng.IntN(150)
		}
		lastSize = size
		// Kill after a commit returns, or at a random moment; the last
		// cycles let the source finish.
		killAfter, killAsync := 1+rng.IntN(6), rng.IntN(2) == 0
		if c >= cycles {
			killAfter, killAsync = -1, false
		}
		if killAsync {
			d := time.Duration(5+rng.IntN(150)) * time.Millisecond
			go func() {
				time.Sleep(d)
				srv.cmd.Process.Signal(syscall.SIGKILL)
			}()
		}
		killed := false
		exact = !killAsync
		for commits := 0; next <= lines; commits++ {
			n := min(uint64(size), lines-next+1)
			tx, err := cl.BeginPut(ctx, channel.PutOptions{ProducerID: producer})
			if err != nil {
				t.Fatal(err)
			}
			evs := make([]channel.Event, n)
			for i := range evs {
				evs[i] = line(next + uint64(i))
			}
			if err := tx.PutSeq("default", next, evs...); err != nil {
				t.Fatalf("cycle %d: PutSeq: %v", c, err)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = tx.Commit(cctx)
			cancel()
			if err != nil {
				if !killAsync {
					t.Fatalf("cycle %d: Commit: %v", c, err)
				}
				killed = true // the server died under the commit: outcome unknown
				break
			}
			last := next + n - 1
			acked = max(acked, last)
			if commits+1 == killAfter && !killAsync {
				// Right after the acknowledgement, before any bookkeeping.
				srv.cmd.Process.Signal(syscall.SIGKILL)
				killed = true
				break
			}
			next = last + 1
			if rng.IntN(3) == 0 {
				local = last
			}
		}
		cl.Close()
		if killed || killAsync {
			<-srv.done
		} else {
			srv.stop(t)
		}
	}
}

// verifyLines drains the channel and checks it held lines 1..n exactly
// once, in order.
func verifyLines(t *testing.T, addr string, n uint64) {
	t.Helper()
	ctx := context.Background()
	cl, err := client.Dial(ctx, addr, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var want uint64 = 1
	for {
		tx, err := cl.BeginTake(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		evs, err := tx.Take(tctx, 1000)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		for _, e := range evs {
			s, _, _ := strings.Cut(strings.TrimPrefix(string(e.Body), "line-"), "|")
			got, err := strconv.ParseUint(s, 10, 64)
			if err != nil || got != want {
				t.Fatalf("event %d of the channel is %.30q, want line %d", want, e.Body, want)
			}
			want++
		}
	}
	if want != n+1 {
		t.Fatalf("the channel holds lines 1..%d, want 1..%d", want-1, n)
	}
}
