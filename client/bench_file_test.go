package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

// BenchmarkGRPCFilePut puts through a real loopback gRPC server into the
// durable file channel with 1, 16 and 64 concurrent clients. Compare with
// channel's BenchmarkFilePut (in-process) of the same size and batch.
func BenchmarkGRPCFilePut(b *testing.B) {
	for _, size := range benchSizes {
		for _, batch := range benchBatches {
			for _, clients := range []int{1, 16, 64} {
				if batch == 1000 && clients == 64 {
					continue
				}
				b.Run(fmt.Sprintf("size=%d/batch=%d/clients=%d", size, batch, clients), func(b *testing.B) {
					root := b.TempDir()
					store, err := filestore.Open(filestore.Options{
						DataDirs:      []string{filepath.Join(root, "data")},
						CheckpointDir: filepath.Join(root, "ckpt"),
						Channels:      []channel.ChannelConfig{{Name: "bench", Capacity: 50_000_000, TransactionCapacity: 1000}},
						SegmentSize:   256 << 20,
						MinFreeBytes:  -1,
						Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
					})
					if err != nil {
						b.Fatal(err)
					}
					srv, err := server.New(store, server.Options{})
					if err != nil {
						b.Fatal(err)
					}
					lis, err := net.Listen("tcp", "127.0.0.1:0")
					if err != nil {
						b.Fatal(err)
					}
					go srv.Serve(lis)
					defer func() { srv.Stop(); store.Close() }()
					conns := make([]*client.Client, clients)
					for i := range conns {
						if conns[i], err = client.Dial(context.Background(), lis.Addr().String(), client.Options{}); err != nil {
							b.Fatal(err)
						}
						defer conns[i].Close()
					}
					events := benchEvents(size, batch)
					b.SetBytes(int64(size * batch))
					var next atomic.Int64
					var wg sync.WaitGroup
					b.ResetTimer()
					for _, c := range conns {
						wg.Add(1)
						go func() {
							defer wg.Done()
							ctx := context.Background()
							for next.Add(1) <= int64(b.N) {
								tx, _ := c.BeginPut(ctx, channel.PutOptions{})
								tx.Put("bench", events...)
								if err := tx.Commit(ctx); err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
					wg.Wait()
					b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
				})
			}
		}
	}
}
