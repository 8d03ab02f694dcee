package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/client"
)

// TestMoveKill9 is the dead-letter move (TakeTxn.Put) against a real
// server that is SIGKILLed: a consumer takes batches from a work channel
// and, in the take's commit, moves some events of each batch (copies with a
// reason header) into a dead-letter channel of the same file store and
// consumes the rest. `sluice serve` is killed at a random moment, mostly
// while commits are in flight. After each restart both channels are read
// in take transactions that are rolled back, and every event must be in
// exactly one place: the work channel (not moved yet, or its move was in
// flight and did not happen), the dead-letter channel (moved: every
// acknowledged move, and a move in flight whole or not at all), or nowhere
// (consumed by an acknowledged take, or by the take in flight).
func TestMoveKill9(t *testing.T) {
	cycles := 6
	if testing.Short() {
		cycles = 3
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	dir := t.TempDir()
	cfg := testConfig(dir, fmt.Sprintf(`agent.channels = default dlq
agent.channels.default.maxFileSize = 1048576
agent.channels.default.maxEventSize = 65536
agent.channels.default.checkpointInterval = 200
agent.channels.default.capacity = 100000
agent.channels.default.transactionCapacity = 5000
agent.channels.dlq.type = file
agent.channels.dlq.dataDirs = %[1]s/data
agent.channels.dlq.checkpointDir = %[1]s/checkpoint
agent.channels.dlq.maxFileSize = 1048576
agent.channels.dlq.maxEventSize = 65536
agent.channels.dlq.checkpointInterval = 200
agent.channels.dlq.minimumRequiredSpace = 0
agent.channels.dlq.capacity = 100000
agent.channels.dlq.transactionCapacity = 5000
`, dir))
	const total = 3000
	// Where every event must be: 'w' work, 'd' dead letters, 'x' consumed.
	where := make([]byte, total)
	for i := range where {
		where[i] = 'w'
	}
	var inflight *moveBatch // the batch whose commit was under way at the kill
	judged, happened := 0, 0
	for c := 0; c <= cycles; c++ {
		srv := startServer(t, dir, cfg)
		ctx := context.Background()
		cl, err := client.Dial(ctx, srv.addr, client.Options{RetryBudget: -1})
		if err != nil {
			t.Fatal(err)
		}
		if c == 0 {
			for i := 0; i < total; i += 500 {
				tx, _ := cl.BeginPut(ctx, channel.PutOptions{})
				for j := i; j < i+500; j++ {
					tx.Put("default", moveEvent(j))
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
		}
		work, dlq := scanChannel(t, cl, "default"), scanChannel(t, cl, "dlq")
		if inflight != nil {
			applied := inflight.judge(t, c, work, dlq)
			judged++
			if applied {
				happened++
			}
			for _, id := range inflight.ids {
				if applied {
					where[id] = 'x'
					if inflight.moved[id] {
						where[id] = 'd'
					}
				}
			}
			inflight = nil
		}
		for id, w := range where {
			inW, inD := work[id], dlq[id]
			switch {
			case inW > 1 || inD > 1:
				t.Fatalf("cycle %d: event %d is %d times in work, %d times in dlq", c, id, inW, inD)
			case w == 'w' && (inW != 1 || inD != 0), w == 'd' && (inW != 0 || inD != 1), w == 'x' && (inW != 0 || inD != 0):
				t.Fatalf("cycle %d: event %d should be in %c; it is %d times in work, %d times in dlq", c, id, w, inW, inD)
			}
		}
		if c == cycles {
			cl.Close()
			srv.stop(t)
			break
		}
		kill := time.Duration(20+rng.IntN(300)) * time.Millisecond
		go func() {
			time.Sleep(kill)
			srv.cmd.Process.Signal(syscall.SIGKILL)
		}()
		left := 0
		for _, w := range where {
			if w == 'w' {
				left++
			}
		}
		for {
			if left < 100 { // keep some for the later cycles: wait for the kill
				time.Sleep(10 * time.Millisecond)
				if _, err := cl.Stats(ctx, "default"); err != nil {
					break
				}
				continue
			}
			time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
			tx, err := cl.BeginTake(ctx, "default")
			if err != nil {
				break // the server is gone
			}
			tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			evs, err := tx.Take(tctx, 1+rng.IntN(10))
			cancel()
			if err != nil || len(evs) == 0 {
				tx.Rollback()
				if err == nil || errors.Is(err, context.DeadlineExceeded) {
					continue // drained: wait for the kill
				}
				break
			}
			b := &moveBatch{moved: map[int]bool{}}
			for _, e := range evs {
				id := moveID(t, e)
				b.ids = append(b.ids, id)
				if rng.IntN(3) != 0 {
					continue // consumed
				}
				b.moved[id] = true
				h := map[string]string{"id": e.Headers["id"], "sluice.dlq.reason": "poison " + strconv.Itoa(id)}
				if err := tx.Put("dlq", channel.Event{Headers: h, Body: e.Body}); err != nil {
					t.Fatalf("cycle %d: move Put: %v", c, err)
				}
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = tx.Commit(cctx)
			cancel()
			if err != nil {
				inflight = b // outcome unknown: judged after the restart
				break
			}
			for _, id := range b.ids {
				where[id] = 'x'
				if b.moved[id] {
					where[id] = 'd'
				}
			}
			left -= len(b.ids)
		}
		cl.Close()
		<-srv.done
	}
	n := map[byte]int{}
	for _, w := range where {
		n[w]++
	}
	t.Logf("%d events: %d in work, %d moved to dlq, %d consumed; %d takes in flight at a kill, %d of them found committed",
		total, n['w'], n['d'], n['x'], judged, happened)
	if n['d'] == 0 {
		t.Fatal("no move was acknowledged: the test proved nothing")
	}
}

// moveBatch is one take of TestMoveKill9: ids taken, moved the ones put
// into dlq in the same commit.
type moveBatch struct {
	ids   []int
	moved map[int]bool
}

// judge decides, from the channels after the restart, whether the batch's
// commit happened, and fails when it happened in part.
func (b *moveBatch) judge(t *testing.T, cycle int, work, dlq map[int]int) (applied bool) {
	t.Helper()
	inW, inD := 0, 0
	for _, id := range b.ids {
		if work[id] > 0 {
			inW++
		}
		if b.moved[id] && dlq[id] > 0 {
			inD++
		}
	}
	switch {
	case inW == len(b.ids) && inD == 0:
		return false
	case inW == 0 && inD == len(b.moved):
		return true
	}
	t.Fatalf("cycle %d: the take in flight at the kill (%d events, %d moved) came back in part: %d in work, %d of the moved in dlq",
		cycle, len(b.ids), len(b.moved), inW, inD)
	return false
}

func moveEvent(id int) channel.Event {
	return channel.Event{Headers: map[string]string{"id": strconv.Itoa(id)}, Body: []byte("move-" + strconv.Itoa(id) + "|" + strings.Repeat("y", id%300))}
}

func moveID(t *testing.T, e channel.Event) int {
	t.Helper()
	s, _, _ := strings.Cut(strings.TrimPrefix(string(e.Body), "move-"), "|")
	id, err := strconv.Atoi(s)
	if err != nil || e.Headers["id"] != s {
		t.Fatalf("unexpected event %.40q headers %v", e.Body, e.Headers)
	}
	return id
}

// scanChannel reads every event of ch in one take transaction and rolls it
// back, counting the ids.
func scanChannel(t *testing.T, cl *client.Client, ch string) map[int]int {
	t.Helper()
	ctx := context.Background()
	tx, err := cl.BeginTake(ctx, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	out := map[int]int{}
	for {
		tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		evs, err := tx.Take(tctx, 5000)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("scan %s: %v", ch, err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, e := range evs {
			out[moveID(t, e)]++
		}
	}
}
