package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// runPut reads newline-delimited bodies from stdin and puts them, one
// transaction per batch, into every listed channel at once. It always ends
// by printing "committed N events" to stderr: the first N input lines are
// durable, and no later line was acknowledged.
func runPut(args []string) int {
	fs := newFlagSet("put", "[--addr ADDR] [--channel C[,C2...]] [--batch N] < lines")
	var cf clientFlags
	cf.register(fs)
	var channels, producer string
	var batch int
	var firstSeq uint64
	var linger, retry time.Duration
	fs.StringVar(&channels, "channel", "default", "channel `names`, comma-separated: every line goes to each of them, atomically")
	fs.IntVar(&batch, "batch", 100, "lines per transaction")
	fs.DurationVar(&linger, "linger", 200*time.Millisecond, "commit a partial batch when no new line arrives for this `long` (0: only full batches and EOF)")
	fs.StringVar(&producer, "producer-id", "", "producer `id` for deduplication (default: random per run); batch k is sequence first-sequence+k-1")
	fs.Uint64Var(&firstSeq, "first-sequence", 1, "sequence `number` of the first batch (to resume a run with the same --producer-id)")
	fs.DurationVar(&retry, "retry", 10*time.Second, "how long a failed commit is retried (same producer sequence, so never duplicated); 0: no retries")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if batch < 1 || firstSeq < 1 || linger < 0 || retry < 0 {
		fmt.Fprintln(os.Stderr, "sluice put: --batch and --first-sequence must be at least 1, --linger and --retry not negative")
		fs.Usage()
		return 2
	}
	var names []string
	for _, n := range strings.Split(channels, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "sluice put: --channel: no channel names")
		fs.Usage()
		return 2
	}
	if producer == "" {
		var b [8]byte
		rand.Read(b[:])
		producer = "sluice-put-" + hex.EncodeToString(b[:])
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	p := &putter{names: names, batch: batch, linger: linger, producer: producer, seq: firstSeq}
	err := p.run(ctx, &cf, retry, os.Stdin)
	fmt.Fprintf(os.Stderr, "committed %d events\n", p.committed)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice put: %v\n", err)
		return 1
	}
	return 0
}

type putter struct {
	names     []string
	batch     int
	linger    time.Duration
	producer  string
	seq       uint64
	committed int64
}

func (p *putter) run(ctx context.Context, cf *clientFlags, retry time.Duration, in io.Reader) error {
	opts, err := cf.options()
	if err != nil {
		return err
	}
	opts.RetryBudget = retry
	if retry == 0 {
		opts.RetryBudget = -1
	}
	cl, err := cf.dial(ctx, opts)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := checkChannels(cl, p.names); err != nil {
		return err
	}

	lines := make(chan []byte, p.batch)
	readErr := make(chan error, 1)
	go func() {
		r := bufio.NewReaderSize(in, 1<<20)
		for {
			b, err := r.ReadBytes('\n')
			if len(b) > 0 {
				if b[len(b)-1] == '\n' {
					b = b[:len(b)-1]
				}
				select {
				case lines <- b:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				readErr <- err
				close(lines)
				return
			}
		}
	}()

	events := make([]channel.Event, 0, p.batch)
	var timer *time.Timer
	for {
		events = events[:0]
		eof := false
		// The first line of a batch: wait as long as it takes.
		select {
		case b, ok := <-lines:
			if !ok {
				eof = true
				break
			}
			events = append(events, channel.Event{Body: b})
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		}
		var lingerC <-chan time.Time
		if p.linger > 0 && !eof {
			if timer == nil {
				timer = time.NewTimer(p.linger)
			} else {
				timer.Reset(p.linger)
			}
			lingerC = timer.C
		}
	fill:
		for !eof && len(events) < p.batch {
			select {
			case b, ok := <-lines:
				if !ok {
					eof = true
					break fill
				}
				events = append(events, channel.Event{Body: b})
			case <-lingerC:
				break fill
			case <-ctx.Done():
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if eof {
			if err := <-readErr; err != nil {
				return fmt.Errorf("reading stdin: %w", err)
			}
		}
		if len(events) > 0 {
			if err := p.commit(ctx, cl, events); err != nil {
				return err
			}
		}
		if eof {
			return nil
		}
	}
}

// commit puts one batch into every channel in one transaction whose
// (producer, sequence) makes a retry of it a no-op.
func (p *putter) commit(ctx context.Context, cl channel.Store, events []channel.Event) error {
	seq := p.seq
	txn, err := cl.BeginPut(ctx, channel.PutOptions{ProducerID: p.producer, Sequence: seq})
	if err != nil {
		return err
	}
	defer txn.Rollback()
	for _, n := range p.names {
		if err := txn.Put(n, events...); err != nil {
			return fmt.Errorf("batch %d (lines %d-%d): %w", seq, p.committed+1, p.committed+int64(len(events)), err)
		}
	}
	if err := txn.Commit(ctx); err != nil {
		return fmt.Errorf("batch %d (lines %d-%d): %w", seq, p.committed+1, p.committed+int64(len(events)), err)
	}
	if txn.Deduplicated() {
		fmt.Fprintf(os.Stderr, "sluice put: batch %d (producer %s) was already committed; counted as committed\n", seq, p.producer)
	}
	p.seq++
	p.committed += int64(len(events))
	return nil
}
