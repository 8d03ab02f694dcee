package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/channel"
)

// runTake takes events and writes their bodies to stdout, one per line. A
// batch is committed only after its lines were written and flushed (and,
// when stdout is a file, fsync'd), so a crash of either side delivers an
// event again rather than losing it.
func runTake(args []string) int {
	fs := newFlagSet("take", "[--addr ADDR] [--channel C] [--max N] [--batch B] [--wait D] > lines")
	var cf clientFlags
	cf.register(fs)
	var name string
	var maxEvents int64
	var batch int
	var wait time.Duration
	fs.StringVar(&name, "channel", "default", "channel `name`")
	fs.Int64Var(&maxEvents, "max", 0, "stop after this many events (0: no limit)")
	fs.IntVar(&batch, "batch", 100, "events per take transaction")
	fs.DurationVar(&wait, "wait", time.Second, "stop when no event arrives for this `long` (0: wait forever)")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	if batch < 1 || maxEvents < 0 || wait < 0 {
		fmt.Fprintln(os.Stderr, "sluice take: --batch must be at least 1, --max and --wait not negative")
		fs.Usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var took int64
	err := take(ctx, &cf, name, maxEvents, batch, wait, os.Stdout, &took)
	fmt.Fprintf(os.Stderr, "took %d events\n", took)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice take: %v\n", err)
		return 1
	}
	return 0
}

func take(ctx context.Context, cf *clientFlags, name string, maxEvents int64, batch int, wait time.Duration, out *os.File, took *int64) error {
	opts, err := cf.options()
	if err != nil {
		return err
	}
	cl, err := cf.dial(ctx, opts)
	if err != nil {
		return err
	}
	defer cl.Close()
	if err := checkChannels(cl, []string{name}); err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 256<<10)
	syncOut := true
	for maxEvents == 0 || *took < maxEvents {
		n := batch
		if maxEvents > 0 {
			n = int(min(int64(n), maxEvents-*took))
		}
		txn, err := cl.BeginTake(ctx, name)
		if err != nil {
			return err
		}
		tctx, cancel := ctx, context.CancelFunc(func() {})
		if wait > 0 {
			tctx, cancel = context.WithTimeout(ctx, wait)
		}
		evs, err := txn.Take(tctx, n)
		cancel()
		if len(evs) == 0 {
			txn.Rollback()
			if err == nil && wait == 0 && ctx.Err() == nil {
				continue // the server's own wait limit passed: --wait 0 waits on
			}
			if err == nil || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
				return nil // nothing arrived within --wait
			}
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted: %w", ctx.Err())
			}
			return err
		}
		if err := writeBodies(w, evs); err != nil {
			txn.Rollback()
			return fmt.Errorf("writing stdout (batch rolled back): %w", err)
		}
		if syncOut {
			if err := out.Sync(); err != nil {
				// Pipes and terminals cannot be synced; files can.
				if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
					txn.Rollback()
					return fmt.Errorf("syncing stdout (batch rolled back): %w", err)
				}
				syncOut = false
			}
		}
		if err := txn.Commit(context.WithoutCancel(ctx)); err != nil {
			return fmt.Errorf("commit of %d written events failed; the server will deliver them again: %w", len(evs), err)
		}
		*took += int64(len(evs))
	}
	return nil
}

func writeBodies(w *bufio.Writer, evs []channel.Event) error {
	for _, ev := range evs {
		w.Write(ev.Body)
		w.WriteByte('\n')
	}
	return w.Flush()
}
