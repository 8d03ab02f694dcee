package agent

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
)

// Flume's selector semantics, one row per documented behaviour.
func TestSelectors(t *testing.T) {
	base := "a.channels = c1 c2 c3\na.channels.c1.type = memory\na.channels.c2.type = memory\na.channels.c3.type = memory\n" +
		"a.sources = r1\na.sources.r1.type = seq\na.sources.r1.channels = c1 c2 c3\n"
	ev := func(kv ...string) channel.Event {
		e := channel.Event{Headers: map[string]string{}}
		for i := 0; i < len(kv); i += 2 {
			e.Headers[kv[i]] = kv[i+1]
		}
		return e
	}
	for _, tc := range []struct {
		name, props string
		ev          channel.Event
		want        string
	}{
		{"replicating: all required", "", ev(), "[c1 c2 c3] []"},
		{"replicating: optional", "selector.optional = c3", ev(), "[c1 c2] [c3]"},
		{"replicating by class name", "selector.type = org.apache.flume.channel.ReplicatingChannelSelector\na.sources.r1.selector.optional = c1 c2", ev(), "[c3] [c1 c2]"},
		{"multiplexing: mapped value", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.x = c1 c2\na.sources.r1.selector.default = c3", ev("h", "x"), "[c1 c2] []"},
		{"multiplexing: unmapped value goes to default", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.x = c1\na.sources.r1.selector.default = c3", ev("h", "y"), "[c3] []"},
		{"multiplexing: missing header goes to default", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.x = c1\na.sources.r1.selector.default = c3", ev("other", "x"), "[c3] []"},
		{"multiplexing: default header name", "selector.type = multiplexing\na.sources.r1.selector.mapping.x = c2", ev("flume.selector.header", "x"), "[c2] []"},
		{"multiplexing: optional for a value", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.x = c1\na.sources.r1.selector.optional.x = c2 c3", ev("h", "x"), "[c1] [c2 c3]"},
		{"multiplexing: optional also mapped is required", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.x = c1\na.sources.r1.selector.optional.x = c1 c2", ev("h", "x"), "[c1] [c2]"},
		{"multiplexing: only optional for a value: default is required", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.optional.x = c2\na.sources.r1.selector.default = c3", ev("h", "x"), "[c3] [c2]"},
		{"multiplexing: no default, no mapping: only optional", "selector.type = multiplexing\na.sources.r1.selector.header = h\na.sources.r1.selector.optional.x = c2", ev("h", "x"), "[] [c2]"},
		{"multiplexing: values are case-sensitive", "selector.type = org.apache.flume.channel.MultiplexingChannelSelector\na.sources.r1.selector.header = h\na.sources.r1.selector.mapping.X = c1\na.sources.r1.selector.default = c2", ev("h", "x"), "[c2] []"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := base
			if tc.props != "" {
				text += "a.sources.r1." + tc.props + "\n"
			}
			cfg, err := config.Parse("s.properties", text, "a", slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			src := cfg.Sources[0]
			sel, err := buildSelector(src.Selector, src.Channels)
			if err != nil {
				t.Fatal(err)
			}
			if un := src.Selector.View().Unread(); len(un) > 0 {
				t.Errorf("unread: %v", un)
			}
			req, opt := sel.Select(tc.ev)
			if got := fmt.Sprintf("%v %v", req, opt); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}
