package server

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/api/sluicev1"
	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
)

// FuzzPut decodes arbitrary bytes as a PutRequest and runs the Put handler
// on them: it must never panic, and an accepted request stores exactly the
// events it reports.
func FuzzPut(f *testing.F) {
	seed := func(req *sluicev1.PutRequest) {
		b, _ := proto.Marshal(req)
		f.Add(b)
	}
	seed(&sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: "a", Events: []*sluicev1.Event{{Body: []byte("x")}}}}})
	seed(&sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: "b", Events: []*sluicev1.Event{{Headers: []*sluicev1.Header{{Key: []byte("k"), Value: []byte{0xff}}}}}}}, ProducerId: "p", Sequence: 1})
	seed(&sluicev1.PutRequest{Puts: []*sluicev1.ChannelEvents{{Channel: ""}, {Channel: "zz"}}})
	mem, err := memstore.New(memstore.Options{Channels: []channel.ChannelConfig{
		{Name: "a", Capacity: 1 << 20, TransactionCapacity: 100}, {Name: "b", Capacity: 1 << 20, TransactionCapacity: 100},
	}})
	if err != nil {
		f.Fatal(err)
	}
	defer mem.Close()
	s, err := New(mem, Options{MaxEventSize: 1024, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &sluicev1.PutRequest{}
		if proto.Unmarshal(data, req) != nil {
			return
		}
		before := size(mem)
		resp, err := s.Put(context.Background(), req)
		after := size(mem)
		switch {
		case err != nil && after != before:
			t.Fatalf("failed put stored %d events: %v", after-before, err)
		case err == nil && uint64(after-before) != resp.GetCommitted():
			t.Fatalf("put reported %d events, stored %d", resp.GetCommitted(), after-before)
		}
	})
}

func size(mem *memstore.Store) int64 {
	var n int64
	for _, c := range mem.Channels() {
		st, _ := mem.Stats(context.Background(), c)
		n += st.Size
	}
	return n
}
