package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/crypto"
	"github.com/sluicehq/sluice/server"
)

// chanName is the one channel of every benchmark store.
const chanName = "bench"

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// env is the store of one case run: the store itself and, per worker, the
// channel.Store the worker uses (the store, or a gRPC client of it).
type env struct {
	store   channel.Store
	workers []channel.Store
	closers []func() error
}

func (e *env) close() error {
	var first error
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i](); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// capacity is the channel capacity in events for a case: the byte budget
// divided by the event size, at least a few rounds of every client (and
// the transaction capacity, which a store requires).
func capacity(c Case, budget int64) int64 {
	n := budget / int64(c.EventSize+RecordOverhead)
	return max(n, int64(4*c.Batch*c.Clients), int64(txnCapacity(c)))
}

func txnCapacity(c Case) int { return max(c.Batch, 10_000) }

// openEnv opens the case's store; workers is the number of goroutines that
// each need a channel.Store.
func openEnv(ctx context.Context, c Case, budget, segment int64, workers int) (*env, error) {
	cc := channel.ChannelConfig{Name: chanName, Capacity: capacity(c, budget), TransactionCapacity: txnCapacity(c)}
	maxEvent := max(c.EventSize+1024, channel.DefaultMaxEventSize)
	e := &env{}
	switch c.Kind {
	case Memory, MemoryGRPC:
		m, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{cc}, MaxEventSize: maxEvent})
		if err != nil {
			return nil, err
		}
		e.store = m
	case File, FileGRPC, FileZstd, FileS2, FileAES:
		parent := c.DataDir
		if parent == "" {
			parent = os.TempDir()
		}
		dir, err := os.MkdirTemp(parent, "sluice-bench-")
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() error { return os.RemoveAll(dir) })
		o := filestore.Options{
			DataDirs:      []string{filepath.Join(dir, "data")},
			CheckpointDir: filepath.Join(dir, "ckpt"),
			Channels:      []channel.ChannelConfig{cc},
			MaxEventSize:  maxEvent,
			SegmentSize:   segment,
			MinFreeBytes:  -1,
			Logger:        discard,
		}
		switch c.Kind {
		case FileZstd:
			o.Compression = "zstd"
		case FileS2:
			o.Compression = "s2"
		case FileAES:
			k, err := crypto.GenerateKey()
			if err != nil {
				e.close()
				return nil, err
			}
			if o.Encryption, err = crypto.NewKeyring("(generated for the run)", []crypto.Key{{ID: 1, Secret: k}}, 1); err != nil {
				e.close()
				return nil, err
			}
		}
		f, err := filestore.Open(o)
		if err != nil {
			e.close()
			return nil, err
		}
		e.store = f
	default:
		return nil, fmt.Errorf("bench: kind %q has no store", c.Kind)
	}
	e.closers = append(e.closers, e.store.Close)
	if !c.Kind.GRPC() {
		for range workers {
			e.workers = append(e.workers, e.store)
		}
		return e, nil
	}
	srv, err := server.New(e.store, server.Options{Logger: discard, MaxEventSize: maxEvent})
	if err != nil {
		e.close()
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.close()
		return nil, err
	}
	go srv.Serve(lis)
	e.closers = append(e.closers, func() error {
		srv.Stop()
		return nil
	})
	// One connection per worker, as separate producers and consumers would.
	for range workers {
		cl, err := client.Dial(ctx, lis.Addr().String(), client.Options{})
		if err != nil {
			e.close()
			return nil, err
		}
		e.closers = append(e.closers, cl.Close)
		e.workers = append(e.workers, cl)
	}
	return e, nil
}
