package router_test

import (
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/channel/channeltest"
	"github.com/sluicehq/sluice/channel/memstore"
	"github.com/sluicehq/sluice/internal/router"
)

// The router in front of stores obeys the channel contract: the shared
// suite runs against a router over one memory store holding every channel.
func TestRouterConformance(t *testing.T) {
	channeltest.Run(t, func(t testing.TB, cfgs []channel.ChannelConfig) channel.Store {
		mem, err := memstore.New(memstore.Options{Channels: cfgs})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cfgs {
			names = append(names, c.Name)
		}
		r, err := router.New([][]string{names}, []string{"memory"})
		if err != nil {
			t.Fatal(err)
		}
		r.SetStores([]channel.Store{mem})
		return r
	})
}
