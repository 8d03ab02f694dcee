package storekit

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
)

func TestProducerTable(t *testing.T) {
	tab := make(ProducerTable)
	tab.Note("a", 5, 100)
	tab.Note("a", 3, 50) // a replayed older commit moves neither field back
	if e := tab["a"]; e.Seq != 5 || e.Last != 100 {
		t.Fatalf("entry %+v, want seq 5 last 100", e)
	}
	for seq, want := range map[uint64]bool{4: true, 5: true, 6: false} {
		if got := tab.Committed("a", seq); got != want {
			t.Fatalf("committed(a, %d) = %v", seq, got)
		}
	}
	if tab.Committed("b", 0) {
		t.Fatal("unknown producer reported committed")
	}
	tab.Note("b", 1, 200)
	if n := tab.Sweep(150); n != 1 || len(tab) != 1 || !tab.Committed("b", 1) {
		t.Fatalf("sweep(150) dropped %d, left %v", n, tab)
	}
	if ProducerExpiry(0) != channel.DefaultProducerExpiry || ProducerExpiry(-1) != 0 || ProducerExpiry(time.Hour) != time.Hour {
		t.Fatal("ProducerExpiry defaults")
	}
}
