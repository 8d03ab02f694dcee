package storekit

import (
	"fmt"
	"sync/atomic"

	"github.com/sluicehq/sluice/channel"
)

// ValidateChannels applies defaults, validates each config and rejects
// duplicate names. It returns the configs by name.
func ValidateChannels(cfgs []channel.ChannelConfig) (map[string]channel.ChannelConfig, error) {
	if len(cfgs) == 0 {
		return nil, fmt.Errorf("no channels configured")
	}
	out := make(map[string]channel.ChannelConfig, len(cfgs))
	for _, c := range cfgs {
		c.EnsureDefaults()
		if err := c.Validate(); err != nil {
			return nil, err
		}
		if _, dup := out[c.Name]; dup {
			return nil, fmt.Errorf("channel %q configured twice", c.Name)
		}
		out[c.Name] = c
	}
	return out, nil
}

// Counters are the Flume-style per-channel counters every kind keeps.
type Counters struct {
	PutAttempts, PutSuccesses, TakeAttempts, TakeSuccesses atomic.Int64
}

// Fill copies the counters into st.
func (c *Counters) Fill(st *channel.Stats) {
	st.PutAttempts = c.PutAttempts.Load()
	st.PutSuccesses = c.PutSuccesses.Load()
	st.TakeAttempts = c.TakeAttempts.Load()
	st.TakeSuccesses = c.TakeSuccesses.Load()
}
