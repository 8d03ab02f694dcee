package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A client application imports the client and the channel interface, never
// the storage engine: `go list -deps ./client` names no engine package.
func TestClientImportsNoEngine(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go toolchain on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	engine := []string{
		"github.com/sluicehq/sluice/wal", "github.com/sluicehq/sluice/queue",
		"github.com/sluicehq/sluice/checkpoint", "github.com/sluicehq/sluice/crypto",
		"github.com/sluicehq/sluice/channel/filestore", "github.com/sluicehq/sluice/channel/memstore",
		"github.com/cockroachdb/pebble", "github.com/edsrzf/mmap-go", "github.com/klauspost/compress",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, e := range engine {
			if dep == e || strings.HasPrefix(dep, e+"/") {
				t.Errorf("the client imports %s", dep)
			}
		}
	}
}
