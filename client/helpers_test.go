package client_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

type env struct {
	mem  *memstore.Store
	srv  *server.Server
	lis  *bufconn.Listener
	done chan error
}

func newMemory(t testing.TB, cfgs ...channel.ChannelConfig) *memstore.Store {
	t.Helper()
	if len(cfgs) == 0 {
		cfgs = []channel.ChannelConfig{{Name: "a", Capacity: 10000, TransactionCapacity: 1000}, {Name: "b", Capacity: 10000, TransactionCapacity: 1000}}
	}
	mem, err := memstore.New(memstore.Options{Channels: cfgs, MaxEventSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

// start serves mem over bufconn.
func start(t testing.TB, mem *memstore.Store, opts server.Options) *env {
	t.Helper()
	if opts.MaxEventSize == 0 {
		opts.MaxEventSize = 64 << 10
	}
	srv, err := server.New(mem, opts)
	if err != nil {
		t.Fatal(err)
	}
	e := serveOn(t, srv)
	e.mem = mem
	t.Cleanup(func() {
		srv.Stop()
		if err := <-e.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return e
}

// serveOn serves srv over bufconn; the caller stops it and reads e.done.
func serveOn(t testing.TB, srv *server.Server) *env {
	e := &env{srv: srv, lis: bufconn.Listen(1 << 20), done: make(chan error, 1)}
	go func() { e.done <- srv.Serve(e.lis) }()
	return e
}

func (e *env) dial(t testing.TB, opts client.Options) *client.Client {
	t.Helper()
	c, err := e.tryDial(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) tryDial(opts client.Options) (*client.Client, error) {
	opts.DialOptions = append(opts.DialOptions, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return e.lis.DialContext(ctx)
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return client.Dial(ctx, "passthrough:///bufnet", opts)
}

func events(prefix string, n int) []channel.Event {
	evs := make([]channel.Event, n)
	for i := range evs {
		evs[i] = channel.Event{Body: fmt.Appendf(nil, "%s%d", prefix, i)}
	}
	return evs
}

func put(t testing.TB, ch channel.Store, name string, evs ...channel.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	txn, err := ch.BeginPut(ctx, channel.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Put(name, evs...); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// drain takes and commits everything queued in name, in-process.
func drain(t testing.TB, ch channel.Store, name string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	for {
		txn, err := ch.BeginTake(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		done, dcancel := context.WithCancel(ctx)
		dcancel()
		evs, err := txn.Take(done, 1000)
		if err != nil && len(evs) == 0 {
			txn.Rollback()
			return out
		}
		for _, ev := range evs {
			out = append(out, string(ev.Body))
		}
		if err := txn.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func bodies(evs []channel.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = string(ev.Body)
	}
	return out
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// waitInFlight waits until no events of name are held by take transactions.
func waitInFlight(t testing.TB, ch channel.Store, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := ch.Stats(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if st.InFlightTakes == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel %s: %d events still held by takes", name, st.InFlightTakes)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
