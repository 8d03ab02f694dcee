package client_test

import (
	"context"
	"fmt"
	"net"
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

const benchCapacity = 200_000

// benchServer serves a memory channel on a 127.0.0.1 listener.
func benchServer(b *testing.B) (*memstore.Store, *client.Client) {
	b.Helper()
	mem, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{
		{Name: "bench", Capacity: benchCapacity, TransactionCapacity: 1000},
	}})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(mem, server.Options{})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	c, err := client.Dial(context.Background(), lis.Addr().String(), client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		c.Close()
		srv.Stop()
		mem.Close()
	})
	return mem, c
}

func benchEvents(size, n int) []channel.Event {
	body := make([]byte, size)
	evs := make([]channel.Event, n)
	for i := range evs {
		evs[i] = channel.Event{Body: body}
	}
	return evs
}

// emptyInProcess drains the channel without gRPC.
func emptyInProcess(b *testing.B, mem *memstore.Store) {
	ctx := context.Background()
	for {
		txn, _ := mem.BeginTake(ctx, "bench")
		done, cancel := context.WithCancel(ctx)
		cancel()
		evs, _ := txn.Take(done, 1000)
		if err := txn.Commit(ctx); err != nil {
			b.Fatal(err)
		}
		if len(evs) == 0 {
			return
		}
	}
}

var benchSizes = []int{100, 1024}
var benchBatches = []int{1, 100, 1000}

func BenchmarkGRPCPut(b *testing.B) {
	for _, size := range benchSizes {
		for _, batch := range benchBatches {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				mem, c := benchServer(b)
				evs := benchEvents(size, batch)
				ctx := context.Background()
				queued := 0
				b.SetBytes(int64(size * batch))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if queued+batch > benchCapacity {
						b.StopTimer()
						emptyInProcess(b, mem)
						queued = 0
						b.StartTimer()
					}
					txn, _ := c.BeginPut(ctx, channel.PutOptions{})
					txn.Put("bench", evs...)
					if err := txn.Commit(ctx); err != nil {
						b.Fatal(err)
					}
					queued += batch
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}

func BenchmarkGRPCTake(b *testing.B) {
	for _, size := range benchSizes {
		for _, batch := range benchBatches {
			b.Run(fmt.Sprintf("size=%d/batch=%d", size, batch), func(b *testing.B) {
				mem, c := benchServer(b)
				evs := benchEvents(size, batch)
				ctx := context.Background()
				fill := func() int {
					n := 0
					for n+batch <= benchCapacity/2 {
						txn, _ := mem.BeginPut(ctx, channel.PutOptions{})
						txn.Put("bench", evs...)
						if err := txn.Commit(ctx); err != nil {
							b.Fatal(err)
						}
						n += batch
					}
					return n
				}
				queued := fill()
				b.SetBytes(int64(size * batch))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if queued < batch {
						b.StopTimer()
						queued = fill()
						b.StartTimer()
					}
					tk, err := c.BeginTake(ctx, "bench")
					if err != nil {
						b.Fatal(err)
					}
					got, err := tk.Take(ctx, batch)
					if err != nil || len(got) != batch {
						b.Fatalf("Take: %d %v", len(got), err)
					}
					if err := tk.Commit(ctx); err != nil {
						b.Fatal(err)
					}
					queued -= batch
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
