package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// agentConfig: netcat on a kernel-chosen port → a file channel → the
// logger sink (whole bodies), served over gRPC like any server.
func agentConfig(dir string) string {
	return fmt.Sprintf(`sluice.server.grpc.address = 127.0.0.1:0
sluice.server.metrics.address = 127.0.0.1:0
a1.channels = c1
a1.channels.c1.type = file
a1.channels.c1.dataDirs = %[1]s/data
a1.channels.c1.checkpointDir = %[1]s/checkpoint
a1.channels.c1.maxFileSize = 4194304
a1.channels.c1.minimumRequiredSpace = 0
a1.channels.c1.transactionCapacity = 1000
a1.sources = r1
a1.sources.r1.type = netcat
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = 0
a1.sources.r1.channels = c1
a1.sources.r1.interceptors = i1
a1.sources.r1.interceptors.i1.type = static
a1.sources.r1.interceptors.i1.key = via
a1.sources.r1.interceptors.i1.value = netcat
a1.sinks = k1
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k1.maxBytesToLog = 64
`, dir)
}

func readyValue(t *testing.T, dir, key string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "ready"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	t.Fatalf("no %s in the ready file:\n%s", key, data)
	return ""
}

// The real binary runs a Flume properties file: lines sent to netcat from
// several connections are each acknowledged after their commit into the
// file channel and reach the logger sink exactly once; the agent is also
// the gRPC server (sluice put reaches the same sink), its metrics have
// Flume's SOURCE/SINK groups and Prometheus series, and SIGTERM stops it
// cleanly.
func TestAgentEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.properties")
	if err := os.WriteFile(cfgPath, []byte(agentConfig(dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, dir, "", "agent", "--conf-file", cfgPath, "--name", "a1")
	ncAddr := readyValue(t, dir, "source.r1")

	const conns, lines = 4, 100
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for c := range conns {
		wg.Go(func() {
			conn, err := net.Dial("tcp", ncAddr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			for i := range lines {
				fmt.Fprintf(conn, "conn%d-line%d\n", c, i)
				conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				if ack, err := r.ReadString('\n'); err != nil || ack != "OK\n" {
					errs <- fmt.Errorf("conn %d line %d: ack %q, %v", c, i, ack, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, stderr, code := sluice(t, "via-grpc\n", "put", "--addr", srv.addr, "--channel", "c1"); code != 0 {
		t.Fatalf("put: %d %s", code, stderr)
	}

	total := conns*lines + 1
	deadline := time.Now().Add(15 * time.Second)
	for {
		js := httpGet(t, "http://"+srv.maddr+"/metrics.json")
		if strings.Contains(js, fmt.Sprintf(`"EventDrainSuccessCount": "%d"`, total)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained:\n%s", js)
		}
		time.Sleep(20 * time.Millisecond)
	}
	js := httpGet(t, "http://"+srv.maddr+"/metrics.json")
	for _, want := range []string{`"SOURCE.r1": {`, fmt.Sprintf(`"EventAcceptedCount": "%d"`, conns*lines), `"SINK.k1": {`, `"CHANNEL.c1": {`} {
		if !strings.Contains(js, want) {
			t.Errorf("metrics.json lacks %s:\n%s", want, js)
		}
	}
	prom := httpGet(t, "http://"+srv.maddr+"/metrics")
	for _, want := range []string{fmt.Sprintf(`sluice_source_event_accepted_total{source="r1"} %d`, conns*lines), fmt.Sprintf(`sluice_sink_event_drain_success_total{sink="k1"} %d`, total)} {
		if !strings.Contains(prom, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	srv.stop(t)

	// Every line once at the sink, with the interceptor's header.
	logged := map[string]int{}
	re := regexp.MustCompile(`msg="Event: \{ headers:\{([^}]*)\} body: [0-9A-F ]+  (\S+) \}"`)
	for _, m := range re.FindAllStringSubmatch(srv.stderr.String(), -1) {
		logged[m[2]]++
		if m[2] != "via-grpc" && m[1] != "via=netcat" {
			t.Errorf("%s logged with headers {%s}", m[2], m[1])
		}
	}
	for c := range conns {
		for i := range lines {
			if n := logged[fmt.Sprintf("conn%d-line%d", c, i)]; n != 1 {
				t.Errorf("conn%d-line%d logged %d times", c, i, n)
			}
		}
	}
	if logged["via-grpc"] != 1 || len(logged) != total {
		t.Errorf("%d distinct bodies logged, want %d (via-grpc: %d)", len(logged), total, logged["via-grpc"])
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// --check builds every component without opening or binding anything:
// exit 0 when valid; exit 1 listing every problem with FILE:LINE and key.
func TestAgentCheck(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "agent.properties")
	os.WriteFile(cfgPath, []byte(agentConfig(dir)), 0o644)
	out, stderr, code := sluice(t, "", "agent", "-f", cfgPath, "-n", "a1", "--check")
	if code != 0 || !strings.Contains(out, "agent a1 is valid: 1 channels, 1 sources, 1 sinks, 0 sink groups; 0 warnings") {
		t.Fatalf("valid: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("--check created the data directory: %v", err)
	}
	bad := agentConfig(dir) + "a1.sinks.k1.maxBytesToLog = lots\na1.sources.r1.interceptors.i1.preserveExisting = maybe\n"
	os.WriteFile(cfgPath, []byte(bad), 0o644)
	_, stderr, code = sluice(t, "", "agent", "--conf-file", cfgPath, "--name", "a1", "--check")
	if code != 1 {
		t.Fatalf("invalid: exit %d\n%s", code, stderr)
	}
	if strings.Contains(stderr, "unknown property") {
		t.Errorf("keys of a component that failed to build are reported unread:\n%s", stderr)
	}
	for _, want := range []string{
		cfgPath + `:23: key a1.sinks.k1.maxBytesToLog: "lots" is not an integer`,
		cfgPath + `:24: key a1.sources.r1.interceptors.i1.preserveExisting: "maybe" is not true or false`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("missing %s in\n%s", want, stderr)
		}
	}
}
