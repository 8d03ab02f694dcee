package router

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/memstore"
)

func mem(t *testing.T, names ...string) *memstore.Store {
	t.Helper()
	var cfgs []channel.ChannelConfig
	for _, n := range names {
		cfgs = append(cfgs, channel.ChannelConfig{Name: n})
	}
	m, err := memstore.New(memstore.Options{Channels: cfgs})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRouter(t *testing.T) {
	ctx := context.Background()
	r, err := New([][]string{{"b", "a"}, {"c"}}, []string{"store one", "store two"})
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Channels(); len(got) != 3 || got[0] != "a" || got[2] != "c" {
		t.Errorf("channels %v", got)
	}
	// Before SetStores: UNAVAILABLE (ErrClosed) with a recovering message.
	if _, err := r.BeginPut(ctx, channel.PutOptions{}); !errors.Is(err, channel.ErrClosed) || !errors.Is(err, ErrRecovering) {
		t.Errorf("BeginPut while recovering: %v", err)
	}
	if _, err := r.Stats(context.Background(), "a"); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("Stats while recovering: %v", err)
	}
	r.SetStores([]channel.Store{mem(t, "a", "b"), mem(t, "c")})
	select {
	case <-r.Ready():
	default:
		t.Fatal("not ready")
	}

	// One transaction over a and b (same store): atomic.
	txn, _ := r.BeginPut(ctx, channel.PutOptions{ProducerID: "p", Sequence: 1})
	ev := channel.Event{Body: []byte("x")}
	if err := txn.Put("a", ev); err != nil {
		t.Fatal(err)
	}
	if err := txn.Put("b", ev); err != nil {
		t.Fatal(err)
	}
	if err := txn.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b"} {
		if st, _ := r.Stats(context.Background(), n); st.Size != 1 {
			t.Errorf("%s size %d", n, st.Size)
		}
	}
	// A retry of the same (producer, sequence) is deduplicated.
	txn, _ = r.BeginPut(ctx, channel.PutOptions{ProducerID: "p", Sequence: 1})
	txn.Put("a", ev)
	if err := txn.Commit(ctx); err != nil || !txn.Deduplicated() {
		t.Errorf("retry: %v dedup=%v", err, txn.Deduplicated())
	}

	// a and c are in different stores.
	txn, _ = r.BeginPut(ctx, channel.PutOptions{})
	txn.Put("a", ev)
	err = txn.Put("c", ev)
	var cse *CrossStoreError
	if !errors.As(err, &cse) || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("cross-store put: %v", err)
	}
	txn.Rollback()
	if st, _ := r.Stats(context.Background(), "a"); st.Size != 1 {
		t.Errorf("rolled back put stored something: size %d", st.Size)
	}
	// Unknown channels.
	txn, _ = r.BeginPut(ctx, channel.PutOptions{})
	if err := txn.Put("zz", ev); !errors.Is(err, channel.ErrUnknownChannel) {
		t.Errorf("unknown put: %v", err)
	}
	if _, err := r.BeginTake(ctx, "zz"); !errors.Is(err, channel.ErrUnknownChannel) {
		t.Errorf("unknown take: %v", err)
	}
	// Takes go to the owning store.
	tk, err := r.BeginTake(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := tk.Take(ctx, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("take: %v %v", evs, err)
	}
	// A move stays in the take's store: into c (the other store) it is
	// refused and the txn stays usable; into a (the same store) it commits
	// with the take.
	err = tk.Put("c", evs[0])
	if !errors.As(err, &cse) || !cse.Move || status.Code(err) != codes.InvalidArgument {
		t.Fatalf("cross-store move: %v", err)
	}
	if err := tk.Put("zz", evs[0]); !errors.Is(err, channel.ErrUnknownChannel) {
		t.Errorf("move to an unknown channel: %v", err)
	}
	if err := tk.Put("a", evs[0]); err != nil {
		t.Fatalf("move within the store: %v", err)
	}
	if err := tk.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]int64{"a": 2, "b": 0, "c": 0} {
		if st, _ := r.Stats(ctx, n); st.Size != want {
			t.Errorf("after the move %s holds %d events, want %d", n, st.Size, want)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.BeginPut(ctx, channel.PutOptions{}); !errors.Is(err, channel.ErrClosed) {
		t.Errorf("after close: %v", err)
	}
}
