package channel

import (
	"fmt"
	"regexp"
	"time"
)

// Defaults for ChannelConfig and store options.
const (
	DefaultCapacity            = 1_000_000
	DefaultTransactionCapacity = 10_000
	DefaultMaxEventSize        = 1 << 20
)

// ChannelConfig describes one named channel of a store.
type ChannelConfig struct {
	// Name: 1–128 characters of [A-Za-z0-9._-].
	Name string
	// Capacity bounds queued events (default DefaultCapacity).
	Capacity int64
	// MaxBytes bounds queued bytes (Event.Size); 0 means unbounded.
	MaxBytes int64
	// TransactionCapacity bounds events per transaction (default
	// DefaultTransactionCapacity).
	TransactionCapacity int
	// KeepAlive is how long a put that does not fit waits for space before
	// failing with ErrChannelFull; 0 fails at once.
	KeepAlive time.Duration
}

var channelNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// EnsureDefaults fills zero fields with their defaults.
func (c *ChannelConfig) EnsureDefaults() {
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.TransactionCapacity == 0 {
		c.TransactionCapacity = DefaultTransactionCapacity
	}
}

// Validate reports the first invalid field.
func (c *ChannelConfig) Validate() error {
	switch {
	case !channelNameRE.MatchString(c.Name):
		return fmt.Errorf("channel %q: name must be 1-128 characters of [A-Za-z0-9._-]", c.Name)
	case c.Capacity < 1:
		return fmt.Errorf("channel %q: capacity %d must be at least 1", c.Name, c.Capacity)
	case c.MaxBytes < 0:
		return fmt.Errorf("channel %q: maxBytes %d must not be negative", c.Name, c.MaxBytes)
	case c.TransactionCapacity < 1:
		return fmt.Errorf("channel %q: transactionCapacity %d must be at least 1", c.Name, c.TransactionCapacity)
	case int64(c.TransactionCapacity) > c.Capacity:
		return fmt.Errorf("channel %q: transactionCapacity %d exceeds capacity %d", c.Name, c.TransactionCapacity, c.Capacity)
	case c.KeepAlive < 0:
		return fmt.Errorf("channel %q: keepAlive %v must not be negative", c.Name, c.KeepAlive)
	}
	return nil
}
