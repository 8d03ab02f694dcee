// Package filestore: TEMPORARY shim (branch agent) for main's rename of
// channel.OpenFile; deleted when the rename is merged.
package filestore

import "github.com/sluicehq/sluice/channel"

type (
	Options = channel.FileOptions
	Store   = channel.File
)

func Open(o Options) (*Store, error) { return channel.OpenFile(o) }
