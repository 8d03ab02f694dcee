package agent

import (
	"slices"
	"strings"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/config"
)

// Selector routes one event to channels, Flume's ChannelSelector: a put
// into a required channel must succeed for Deliver to succeed; a put into
// an optional one is attempted afterwards and its failure only logged and
// counted. required and optional never share a channel.
type Selector interface {
	Select(ev channel.Event) (required, optional []string)
}

// Flume's selector class names, aliases of the built-in types.
const (
	FlumeReplicatingSelector  = "org.apache.flume.channel.ReplicatingChannelSelector"
	FlumeMultiplexingSelector = "org.apache.flume.channel.MultiplexingChannelSelector"
	FlumeLoadBalancingSel     = "org.apache.flume.channel.LoadBalancingChannelSelector"
)

// DefaultSelectorHeader is the multiplexing selector's header by default.
const DefaultSelectorHeader = "flume.selector.header"

func buildSelector(c *config.Component, channels []string) (Selector, error) {
	v := c.View()
	switch lookupKey(c.Type) {
	case "replicating", lookupKey(FlumeReplicatingSelector):
		return newReplicating(v, channels)
	case "multiplexing", lookupKey(FlumeMultiplexingSelector):
		return newMultiplexing(v, channels)
	case "load_balancing", lookupKey(FlumeLoadBalancingSel):
		return nil, v.Errorf("type", "the load_balancing channel selector (Flume 1.10+) is not supported yet; use replicating or multiplexing")
	}
	return nil, v.Errorf("type", "unknown channel selector type %q (known: replicating, multiplexing)", c.Type)
}

// channelList reads prop as a list of the source's channels.
func channelList(v *config.View, prop string, channels []string) ([]string, error) {
	var out []string
	for _, ch := range v.List(prop) {
		if !slices.Contains(channels, ch) {
			return nil, v.Errorf(prop, "channel %q is not one of the source's channels (%s)", ch, strings.Join(channels, " "))
		}
		if slices.Contains(out, ch) {
			return nil, v.Errorf(prop, "channel %q is listed twice", ch)
		}
		out = append(out, ch)
	}
	return out, nil
}

// replicating sends every event to every channel of the source; those in
// selector.optional are optional.
type replicating struct{ required, optional []string }

func newReplicating(v *config.View, channels []string) (Selector, error) {
	opt, err := channelList(v, "optional", channels)
	if err != nil {
		return nil, err
	}
	r := &replicating{optional: opt}
	for _, ch := range channels {
		if !slices.Contains(opt, ch) {
			r.required = append(r.required, ch)
		}
	}
	return r, nil
}

func (r *replicating) Select(channel.Event) ([]string, []string) { return r.required, r.optional }

// multiplexing routes by the value of one header: selector.mapping.<value>
// lists the required channels for the value, selector.optional.<value> the
// optional ones, selector.default the required ones when the header is
// missing or its value has no mapping (Flume's MultiplexingChannelSelector).
// A channel both required and optional for a value is required.
type multiplexing struct {
	header   string
	mapping  map[string][]string
	optional map[string][]string
	def      []string
}

func newMultiplexing(v *config.View, channels []string) (Selector, error) {
	m := &multiplexing{header: v.String("header", DefaultSelectorHeader), mapping: map[string][]string{}, optional: map[string][]string{}}
	var err error
	if m.def, err = channelList(v, "default", channels); err != nil {
		return nil, err
	}
	for val := range v.Prefixed("mapping.") {
		if m.mapping[val], err = channelList(v, "mapping."+val, channels); err != nil {
			return nil, err
		}
	}
	for val := range v.Prefixed("optional.") {
		opt, err := channelList(v, "optional."+val, channels)
		if err != nil {
			return nil, err
		}
		req, ok := m.mapping[val]
		if !ok {
			req = m.def
		}
		m.optional[val] = slices.DeleteFunc(opt, func(ch string) bool { return slices.Contains(req, ch) })
	}
	if len(m.mapping) == 0 && len(m.def) == 0 && len(m.optional) == 0 {
		return nil, v.Errorf("mapping", "a multiplexing selector needs %s.<value> (or %s): without either it routes no event anywhere",
			v.Key("mapping"), v.Key("default"))
	}
	return m, nil
}

func (m *multiplexing) Select(ev channel.Event) ([]string, []string) {
	val, ok := ev.Headers[m.header]
	if !ok {
		return m.def, nil
	}
	req, mapped := m.mapping[val]
	if !mapped {
		req = m.def
	}
	return req, m.optional[val]
}
