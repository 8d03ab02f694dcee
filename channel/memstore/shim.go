// Package memstore: TEMPORARY shim (branch agent) for main's rename of
// channel.NewMemory; deleted when the rename is merged.
package memstore

import "github.com/sluicehq/sluice/channel"

type (
	Options = channel.MemoryOptions
	Store   = channel.Memory
)

func New(o Options) (*Store, error) { return channel.NewMemory(o) }
