// Package builtin assembles the registry of Sluice's own component types:
// the sources of package sources, the sinks of package sinks and the
// interceptors of package interceptors. A custom binary starts from it and
// registers its own types next to them.
package builtin

import (
	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/interceptors"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sources"
)

// Registry returns a new registry with every built-in component type.
func Registry() *agent.Registry {
	r := agent.NewRegistry()
	sources.Register(r)
	sinks.Register(r)
	interceptors.Register(r)
	return r
}
