package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/client"
)

// clientFlags are the connection flags of put, take and stats.
type clientFlags struct {
	addr        string
	tokenFile   string
	tlsCA       string
	tlsCert     string
	tlsKey      string
	tls         bool
	dialTimeout time.Duration
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "127.0.0.1:7070", "server `address` (host:port)")
	fs.StringVar(&c.tokenFile, "token-file", "", "`file` whose first non-blank, non-# line is the bearer token")
	fs.BoolVar(&c.tls, "tls", false, "use TLS, verifying the server against the system roots (implied by --tls-ca)")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "CA certificate `file` (PEM) that verifies the server; enables TLS")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "client certificate `file` (PEM) for mutual TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "client key `file` (PEM) for mutual TLS")
	fs.DurationVar(&c.dialTimeout, "dial-timeout", 10*time.Second, "how long to keep trying to reach the server")
}

func (c *clientFlags) options() (client.Options, error) {
	var o client.Options
	if c.tls || c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" {
		if (c.tlsCert == "") != (c.tlsKey == "") {
			return o, fmt.Errorf("--tls-cert and --tls-key go together")
		}
		t, err := client.TLSConfigFromFiles(c.tlsCA, c.tlsCert, c.tlsKey)
		if err != nil {
			return o, err
		}
		o.TLS = t
	}
	if c.tokenFile != "" {
		data, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return o, fmt.Errorf("--token-file: %w", err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				o.Token = l
				break
			}
		}
		if o.Token == "" {
			return o, fmt.Errorf("--token-file %s: no token", c.tokenFile)
		}
	}
	o.RetryBudget = c.dialTimeout
	return o, nil
}

// dial connects; opts come from options() and may be adjusted by the
// caller. Dial retries an unavailable server within opts.RetryBudget and
// --dial-timeout.
func (c *clientFlags) dial(ctx context.Context, opts client.Options) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, max(c.dialTimeout, time.Second))
	defer cancel()
	cl, err := client.Dial(dctx, c.addr, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", c.addr, err)
	}
	return cl, nil
}

// checkChannels fails for names the server does not have.
func checkChannels(cl *client.Client, names []string) error {
	have := cl.Channels()
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("empty channel name")
		}
		if !slices.Contains(have, n) {
			return fmt.Errorf("unknown channel %q (the server has: %s)", n, strings.Join(have, ", "))
		}
	}
	return nil
}
