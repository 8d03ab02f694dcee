package main

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"testing"
)

func TestWarnExposure(t *testing.T) {
	listen := func(addr string) net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Skipf("listen %s: %v", addr, err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	loop := listen("127.0.0.1:0")
	all := listen("0.0.0.0:0")
	for _, tc := range []struct {
		name              string
		grpc              net.Listener
		tls, mtls, tokens bool
		metrics           net.Listener
		want              []string // substrings of the log; nil: no warning
	}{
		{"loopback", loop, false, false, false, loop, nil},
		{"protected", all, true, false, true, nil, nil},
		{"mutual TLS", all, true, true, false, nil, nil},
		{"nothing", all, false, false, false, nil, []string{"level=WARN", "address=" + all.Addr().String(), "without TLS", "and client authentication"}},
		{"tokens only", all, false, false, true, nil, []string{"level=WARN", "without TLS (", "clear text"}},
		{"TLS only", all, true, false, false, nil, []string{"level=WARN", "without client authentication"}},
		{"metrics", loop, false, false, false, all, []string{"level=WARN", "metrics endpoint has no authentication", "address=" + all.Addr().String()}},
	} {
		var buf bytes.Buffer
		warnExposure(slog.New(slog.NewTextHandler(&buf, nil)), tc.grpc.Addr(), tc.tls, tc.mtls, tc.tokens, tc.metrics)
		out := buf.String()
		if tc.want == nil && out != "" {
			t.Errorf("%s: unexpected warning %s", tc.name, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: log %q lacks %q", tc.name, out, w)
			}
		}
	}
}
