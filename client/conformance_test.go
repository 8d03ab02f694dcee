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

// The gRPC client obeys the same contract as the stores it fronts: the
// shared conformance suite runs against a client of a server of a memory
// store and of a file store.
func TestClientConformance(t *testing.T) {
	for _, kind := range []string{"memory", "file"} {
		t.Run(kind, func(t *testing.T) {
			channeltest.RunRemote(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
				var st channel.Store
				var err error
				if kind == "memory" {
					st, err = memstore.New(memstore.Options{Channels: cfgs})
				} else {
					root := t.TempDir()
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
				return &remote{Client: c, stop: func() {
					srv.Stop()
					<-e.done
					st.Close()
				}}
			})
		})
	}
}
