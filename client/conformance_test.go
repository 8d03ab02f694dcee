package client_test

import (
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/channeltest"
	"github.com/sluicehq/sluice/channel/filestore"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/client"
	"github.com/sluicehq/sluice/server"
)

// remote is a client whose Close also stops its server and closes the
// store behind it, so the suite's Close covers the whole chain.
type remote struct {
	*client.Client
	stop func()
	once sync.Once
}

func (r *remote) Close() error {
	err := r.Client.Close()
	r.once.Do(r.stop)
	return err
}

// reopenable is a remote of a file store that the suite can restart
// (channeltest.Reopener): a new store on the same directories, a new server
// and a new client.
type reopenable struct {
	*remote
	cfgs []channel.ChannelConfig
	root string
}

// Reopen implements channeltest.Reopener.
func (r *reopenable) Reopen(t testing.TB) channel.Store { return openRemote(t, "file", r.cfgs, r.root) }

// openRemote serves a store of kind over bufconn and dials it; a file
// store lives under root (a new temporary directory when empty).
func openRemote(t testing.TB, kind string, cfgs []channel.ChannelConfig, root string) channel.Store {
	var st channel.Store
	var err error
	if kind == "memory" {
		st, err = memstore.New(memstore.Options{Channels: cfgs})
	} else {
		if root == "" {
			root = t.TempDir()
		}
		st, err = filestore.Open(filestore.Options{
			DataDirs:      []string{filepath.Join(root, "d1")},
			CheckpointDir: filepath.Join(root, "ckpt"),
			Channels:      cfgs,
			SegmentSize:   4 << 20,
			MinFreeBytes:  -1,
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(st, server.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e := serveOn(t, srv)
	c, err := e.tryDial(client.Options{RetryBudget: -1})
	if err != nil {
		t.Fatal(err)
	}
	r := &remote{Client: c, stop: func() {
		srv.Stop()
		<-e.done
		st.Close()
	}}
	if kind == "memory" {
		return r
	}
	return &reopenable{remote: r, cfgs: cfgs, root: root}
}

// The gRPC client obeys the same contract as the stores it fronts: the
// shared conformance suite runs against a client of a server of a memory
// store and of a file store (which the suite's restart rules restart).
func TestClientConformance(t *testing.T) {
	for _, kind := range []string{"memory", "file"} {
		t.Run(kind, func(t *testing.T) {
			channeltest.RunRemote(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
				return openRemote(t, kind, cfgs, "")
			})
		})
	}
}
