// Command sluice is the Sluice server and its command-line client.
//
//	sluice serve [--config F] [--name A]       run the server (embedded default config without --config)
//	sluice agent --conf-file F --name A        the same, in Flume's spelling (--check: validate only)
//	sluice put   [--addr] [--channel C[,C2…]] [--batch N]   stdin lines → events
//	sluice take  [--addr] [--channel C] [--max N] [--batch B] [--wait D]   events → stdout lines
//	sluice stats [--addr] [--json]
//	sluice verify [--config F | --data-dirs D --checkpoint-dir C]   offline integrity check
//	sluice inspect [--config F | --data-dirs D --checkpoint-dir C] [--records] [--json]
//	sluice salvage --data-dirs D --checkpoint-dir C --to-data-dirs X --to-checkpoint-dir Y   copy what is readable
//	sluice keygen --key-file F [--new]         add an encryption key to a key file; print its id
//	sluice version | help
//
// Exit status: 0 on success, 1 on an error, 2 on a usage (flag) error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usageText = `sluice - durable transactional event channel server

Usage:
  sluice serve [--config FILE] [--name AGENT]   run the server (no --config: the embedded default,
                                                data under ./sluice-data, gRPC 127.0.0.1:7070,
                                                metrics 127.0.0.1:7071, one file channel "default")
  sluice agent --conf-file FILE --name AGENT    the same, with Flume's flag names; both run the file's
                                                sources and sinks (--check: validate, start nothing)
  sluice put   [flags]    put stdin lines as events, one transaction per batch
  sluice take  [flags]    take events and write their bodies to stdout, one per line
  sluice stats [flags]    print channel statistics
  sluice verify [flags]   offline integrity check of the file stores (exit 0 only when intact)
  sluice inspect [flags]  offline dump of checkpoints, queues and WAL records
  sluice salvage [flags]  copy every valid committed event of a damaged store into a new one; report losses
  sluice bench [flags]    measure throughput and latency against the raw disk limit (see docs/benchmarks.md)
  sluice bench recovery   measure open time after a clean close and after kill -9
  sluice keygen [flags]   add a new encryption key to a key file (created 0600) and print its id
  sluice version          print the version
  sluice help [COMMAND]   print this text or a command's flags

Run 'sluice COMMAND --help' for a command's flags.
Exit status: 0 success, 1 error, 2 usage error.
`

func commands() map[string]func(args []string) int {
	return map[string]func(args []string) int{
		"serve":   func(a []string) int { return runServe(a, false) },
		"agent":   func(a []string) int { return runServe(a, true) },
		"put":     runPut,
		"take":    runTake,
		"stats":   runStats,
		"verify":  runVerify,
		"inspect": runInspect,
		"salvage": runSalvage,
		"bench":   runBench,
		"keygen":  runKeygen,
		"version": runVersion,
	}
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usageText)
		return 2
	}
	cmds := commands()
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if f, ok := cmds[args[1]]; ok {
				return f([]string{"--help"})
			}
		}
		fmt.Fprint(os.Stdout, usageText)
		return 0
	case "--version", "-version":
		return runVersion(nil)
	}
	f, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", args[0], usageText)
		return 2
	}
	return f(args[1:])
}

// parseFlags parses args with fs; it returns -1 to go on, or the exit
// status: 0 for --help, 2 for a flag error or stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) int {
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sluice %s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return 2
	}
	return -1
}

func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sluice %s %s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func runVersion(args []string) int {
	fs := newFlagSet("version", "")
	if rc := parseFlags(fs, args); rc >= 0 {
		return rc
	}
	fmt.Println(versionString())
	return 0
}

func versionString() string {
	v := version
	var rev string
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			}
		}
	}
	parts := []string{"sluice", v}
	if rev != "" {
		parts = append(parts, "("+rev+")")
	}
	parts = append(parts, runtime.Version(), runtime.GOOS+"/"+runtime.GOARCH)
	return strings.Join(parts, " ")
}
