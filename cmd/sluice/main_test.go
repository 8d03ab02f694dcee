package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/config"
)

var bin string // the sluice binary built by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "sluice")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type serverProc struct {
	cmd    *exec.Cmd
	addr   string
	maddr  string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// testConfig is a small-footprint configuration under dir on loopback
// ports chosen by the kernel.
func testConfig(dir, extra string) string {
	return fmt.Sprintf(`sluice.server.grpc.address = 127.0.0.1:0
sluice.server.metrics.address = 127.0.0.1:0
agent.channels = default
agent.channels.default.type = file
agent.channels.default.dataDirs = %[1]s/data
agent.channels.default.checkpointDir = %[1]s/checkpoint
agent.channels.default.maxFileSize = 4194304
agent.channels.default.minimumRequiredSpace = 0
%[2]s`, dir, extra)
}

// startServer runs `sluice serve` on the config in dir/sluice.properties
// (written from cfg when not empty) and waits until it is ready.
func startServer(t *testing.T, dir, cfg string, args ...string) *serverProc {
	t.Helper()
	cfgPath := filepath.Join(dir, "sluice.properties")
	if cfg != "" {
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	if len(args) == 0 {
		args = []string{"serve", "--config", cfgPath}
	}
	args = append(args, "--ready-file", ready)
	p := &serverProc{cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Dir = dir
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("server stderr:\n%s", p.stderr)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := os.ReadFile(ready)
		if err == nil {
			for _, l := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(l, "grpc="); ok {
					p.addr = v
				}
				if v, ok := strings.CutPrefix(l, "metrics="); ok {
					p.maddr = v
				}
			}
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("server exited before ready: %v\n%s", p.err, p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready after 15s:\n%s", p.stderr)
		}
	}
}

// stop sends SIGTERM and expects a clean exit.
func (p *serverProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("server did not stop on SIGTERM:\n%s", p.stderr)
	}
	if p.err != nil {
		t.Fatalf("server exit: %v\n%s", p.err, p.stderr)
	}
}

// sluice runs the binary with stdin and returns stdout, stderr, exit code.
func sluice(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errb.String(), code
}

func TestPutTakeRoundTrip(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, testConfig(dir, ""))
	var in strings.Builder
	for i := range 250 {
		switch i {
		case 17:
			in.WriteString("\n") // an empty body
		case 18:
			in.WriteString("  spaces\tand tabs, ünïcode ✓  \n")
		default:
			fmt.Fprintf(&in, "line %d %s\n", i, strings.Repeat("x", i%13))
		}
	}
	_, stderr, code := sluice(t, in.String(), "put", "--addr", srv.addr, "--batch", "7")
	if code != 0 || stderr != "committed 250 events\n" {
		t.Fatalf("put: exit %d, stderr %q", code, stderr)
	}
	out, stderr, code := sluice(t, "", "take", "--addr", srv.addr, "--batch", "33", "--wait", "300ms")
	if code != 0 {
		t.Fatalf("take: exit %d, stderr %q", code, stderr)
	}
	if out != in.String() {
		t.Fatalf("take output differs from put input:\n got %q\nwant %q", out, in.String())
	}
	if stderr != "took 250 events\n" {
		t.Errorf("take stderr %q", stderr)
	}
	// --max stops early and leaves the rest queued.
	sluice(t, "a\nb\nc\n", "put", "--addr", srv.addr)
	out, _, code = sluice(t, "", "take", "--addr", srv.addr, "--max", "2", "--wait", "300ms")
	if code != 0 || out != "a\nb\n" {
		t.Fatalf("take --max 2: exit %d, %q", code, out)
	}
	out, _, code = sluice(t, "", "stats", "--addr", srv.addr, "--json")
	if code != 0 || !strings.Contains(out, `"size": 1,`) || !strings.Contains(out, `"name": "default"`) {
		t.Fatalf("stats --json: exit %d\n%s", code, out)
	}
	out, _, code = sluice(t, "", "stats", "--addr", srv.addr)
	if code != 0 || !strings.Contains(out, "CHANNEL") || !strings.Contains(out, "default") {
		t.Fatalf("stats: exit %d\n%s", code, out)
	}
	srv.stop(t)
	if !strings.Contains(srv.stderr.String(), "stores closed") {
		t.Errorf("no clean close in the log:\n%s", srv.stderr)
	}

	// Offline: verify says intact, inspect dumps, a damaged checkpoint is found.
	cfgPath := filepath.Join(dir, "sluice.properties")
	out, stderr, code = sluice(t, "", "verify", "--config", cfgPath)
	if code != 0 || !strings.HasSuffix(out, "intact\n") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, stderr)
	}
	out, stderr, code = sluice(t, "", "inspect", "--config", cfgPath, "--records", "--limit", "3")
	if code != 0 || !strings.Contains(out, "WAL records") || !strings.Contains(out, "default: size 1,") || strings.Count(out, "\tput\t") != 3 {
		t.Fatalf("inspect: exit %d\n%s%s", code, out, stderr)
	}
	if _, _, code = sluice(t, "", "inspect", "--data-dirs", dir+"/data", "--checkpoint-dir", dir+"/checkpoint", "--json"); code != 0 {
		t.Fatalf("inspect --json: exit %d", code)
	}
	cp := filepath.Join(dir, "checkpoint", "checkpoint.A")
	data, err := os.ReadFile(cp)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	os.WriteFile(cp, data, 0o644)
	out, _, code = sluice(t, "", "verify", "--config", cfgPath)
	if code != 1 || !strings.Contains(out, "PROBLEM: checkpoint") || !strings.HasSuffix(out, "NOT INTACT\n") {
		t.Fatalf("verify of a damaged checkpoint: exit %d\n%s", code, out)
	}
}

func TestPutErrors(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, testConfig(dir, `agent.channels = default other mem
agent.channels.other.type = file
agent.channels.other.dataDirs = `+dir+`/data
agent.channels.other.checkpointDir = `+dir+`/checkpoint
agent.channels.mem.type = memory
`))
	_, stderr, code := sluice(t, "x\ny\n", "put", "--addr", srv.addr, "--channel", "nope")
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 1 || len(lines) != 2 || lines[0] != "committed 0 events" || !strings.Contains(lines[1], `unknown channel "nope"`) {
		t.Errorf("unknown channel: exit %d, stderr %q", code, stderr)
	}
	// Two channels of one store: atomic, both get every line.
	_, stderr, code = sluice(t, "1\n2\n3\n", "put", "--addr", srv.addr, "--channel", "default,other")
	if code != 0 || stderr != "committed 3 events\n" {
		t.Errorf("multi-channel put: exit %d, stderr %q", code, stderr)
	}
	for _, ch := range []string{"default", "other"} {
		out, _, _ := sluice(t, "", "take", "--addr", srv.addr, "--channel", ch, "--wait", "200ms")
		if out != "1\n2\n3\n" {
			t.Errorf("take %s: %q", ch, out)
		}
	}
	// Channels of different stores cannot share a transaction.
	_, stderr, code = sluice(t, "1\n", "put", "--addr", srv.addr, "--channel", "default,mem")
	lines = strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 1 || lines[0] != "committed 0 events" || !strings.Contains(stderr, "different stores") || !strings.Contains(stderr, "InvalidArgument") {
		t.Errorf("cross-store put: exit %d, stderr %q", code, stderr)
	}
	// A server that is not there.
	_, stderr, code = sluice(t, "1\n", "put", "--addr", freeAddr(t), "--dial-timeout", "300ms", "--retry", "0")
	if code != 1 || !strings.HasPrefix(stderr, "committed 0 events\n") {
		t.Errorf("no server: exit %d, stderr %q", code, stderr)
	}
	srv.stop(t)
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"put", "--bogus"},
		{"put", "--batch", "0"},
		{"take", "extra-arg"},
		{"take", "--wait", "soon"},
		{"stats", "--json=maybe"},
		{"serve", "--nope"},
		{"serve", "--log-level", "loud"},
		{"agent", "--conf-file", "x"}, // --name missing
	} {
		_, stderr, code := sluice(t, "", args...)
		if code != 2 || !strings.Contains(stderr, "sluice") {
			t.Errorf("%v: exit %d (want 2), stderr %q", args, code, stderr)
		}
	}
	out, _, code := sluice(t, "", "serve", "--print-default-config")
	if code != 0 || out != config.Default {
		t.Errorf("--print-default-config: exit %d, %q", code, out)
	}
	out, _, code = sluice(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "sluice ") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	out, _, code = sluice(t, "", "help")
	if code != 0 || !strings.Contains(out, "sluice serve") {
		t.Errorf("help: exit %d, %q", code, out)
	}
	// A configuration error names file:line:key and exits 1.
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.properties")
	os.WriteFile(bad, []byte("agent.channels = c\nagent.channels.c.type = memory\nagent.channels.c.capacity = lots\n"), 0o644)
	_, stderr, code := sluice(t, "", "agent", "--conf-file", bad, "--name", "agent")
	if code != 1 || !strings.Contains(stderr, bad+`:3: key agent.channels.c.capacity: "lots" is not an integer`) {
		t.Errorf("bad config: exit %d, stderr %q", code, stderr)
	}
}

// TestAgentFlumeSpelling serves a memory channel through `sluice agent`.
func TestAgentFlumeSpelling(t *testing.T) {
	dir := t.TempDir()
	cfg := "sluice.server.grpc.address = 127.0.0.1:0\nsluice.server.metrics.address =\n" +
		"a1.channels = m\na1.channels.m.type = org.apache.flume.channel.MemoryChannel\n"
	os.WriteFile(filepath.Join(dir, "flume.conf"), []byte(cfg), 0o644)
	// Flume's command-line habits are accepted: --conf DIR, -Dname=value, --no-reload-conf.
	srv := startServer(t, dir, "", "agent", "--conf", dir, "-f", filepath.Join(dir, "flume.conf"), "-n", "a1",
		"-Dflume.root.logger=DEBUG,console", "-Dfoo=bar", "--no-reload-conf")
	if _, stderr, code := sluice(t, "hello\n", "put", "--addr", srv.addr, "--channel", "m"); code != 0 {
		t.Fatalf("put: %d %s", code, stderr)
	}
	out, _, _ := sluice(t, "", "take", "--addr", srv.addr, "--channel", "m", "--wait", "200ms")
	if out != "hello\n" {
		t.Errorf("take: %q", out)
	}
	srv.stop(t)
}

var committedRE = regexp.MustCompile(`(?m)^committed (\d+) events$`)

// TestKill9 kills the server with SIGKILL while `sluice put --batch 10`
// streams lines into it, three times, then restarts it and checks with
// `sluice take` that every line put reported as committed is there, in
// order, once, and that nothing else is except possibly the one batch that
// was in flight (all ten lines or none: batches are atomic).
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, "")
	const batch = 10
	type cycle struct {
		prefix    string
		committed int
	}
	var cycles []cycle
	for c := range 3 {
		srv := startServer(t, dir, cfg)
		prefix := fmt.Sprintf("cycle%d-", c)
		put := exec.Command(bin, "put", "--addr", srv.addr, "--batch", strconv.Itoa(batch), "--linger", "0", "--retry", "0")
		stdin, err := put.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr syncBuffer
		put.Stderr = &stderr
		if err := put.Start(); err != nil {
			t.Fatal(err)
		}
		fed := make(chan int)
		go func() {
			w := bufio.NewWriterSize(stdin, 4096)
			i := 0
			for ; ; i++ {
				if _, err := fmt.Fprintf(w, "%s%07d\n", prefix, i); err != nil {
					break
				}
			}
			fed <- i
		}()
		// Let some batches commit, then kill the server mid-stream.
		time.Sleep(time.Duration(300+100*c) * time.Millisecond)
		if err := srv.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-srv.done
		putDone := make(chan error, 1)
		go func() { putDone <- put.Wait() }()
		select {
		case err = <-putDone:
		case <-time.After(10 * time.Second):
			put.Process.Kill()
			t.Fatalf("put did not fail after the server was killed; stderr:\n%s", stderr.String())
		}
		stdin.Close()
		<-fed
		if err == nil {
			t.Fatalf("put exited 0 after the server was killed; stderr:\n%s", stderr.String())
		}
		m := committedRE.FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no `committed N events` line in put's stderr:\n%s", stderr.String())
		}
		if !strings.HasPrefix(stderr.String(), m[0]+"\n") {
			t.Errorf("stderr does not start with the committed line:\n%s", stderr.String())
		}
		n, _ := strconv.Atoi(m[1])
		if n == 0 {
			t.Fatalf("nothing committed before the kill; stderr:\n%s", stderr.String())
		}
		t.Logf("cycle %d: killed after %d committed lines (%s)", c, n, strings.TrimSpace(strings.SplitN(stderr.String(), "\n", 3)[1]))
		cycles = append(cycles, cycle{prefix, n})
	}

	srv := startServer(t, dir, cfg)
	out, stderr, code := sluice(t, "", "take", "--addr", srv.addr, "--batch", "1000", "--wait", "500ms")
	if code != 0 {
		t.Fatalf("take: exit %d: %s", code, stderr)
	}
	srv.stop(t)
	if out, _, code := sluice(t, "", "verify", "--config", filepath.Join(dir, "sluice.properties")); code != 0 {
		t.Errorf("verify after the kills and a clean stop: exit %d\n%s", code, out)
	}
	got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	i := 0
	for _, c := range cycles {
		k := 0
		for i < len(got) && strings.HasPrefix(got[i], c.prefix) {
			if want := fmt.Sprintf("%s%07d", c.prefix, k); got[i] != want {
				t.Fatalf("line %d is %q, want %q (missing, duplicated or out of order)", i, got[i], want)
			}
			i++
			k++
		}
		switch {
		case k == c.committed:
		case k == c.committed+batch:
			t.Logf("%s: the in-flight batch after line %d was committed too", c.prefix, c.committed)
		default:
			t.Errorf("%s: %d lines survived, put reported %d committed (allowed: %d or %d)", c.prefix, k, c.committed, c.committed, c.committed+batch)
		}
	}
	if i != len(got) {
		t.Errorf("unexpected line %d: %q", i, got[i])
	}
}

// TestDefaultServe runs `sluice serve` with no flags but --ready-file, as
// `make run` does: the embedded default config in the working directory.
func TestDefaultServe(t *testing.T) {
	for _, a := range []string{config.DefaultGRPCAddress, config.DefaultMetricsAddress} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Skipf("default address %s is busy: %v", a, err)
		}
		l.Close()
	}
	var st syscall.Statfs_t
	dir := t.TempDir()
	if err := syscall.Statfs(dir, &st); err == nil && st.Bavail*uint64(st.Bsize) < 4<<30 {
		t.Skip("less than 4 GiB free for the default 1 GiB WAL segments")
	}
	srv := startServer(t, dir, "", "serve")
	if srv.addr != config.DefaultGRPCAddress || srv.maddr != config.DefaultMetricsAddress {
		t.Errorf("addresses %s %s", srv.addr, srv.maddr)
	}
	if _, stderr, code := sluice(t, "hi\n", "put"); code != 0 {
		t.Fatalf("put: %s", stderr)
	}
	if out, _, _ := sluice(t, "", "take", "--wait", "200ms"); out != "hi\n" {
		t.Errorf("take: %q", out)
	}
	srv.stop(t)
	for _, d := range []string{"sluice-data/data", "sluice-data/checkpoint"} {
		if _, err := os.Stat(filepath.Join(dir, d)); err != nil {
			t.Errorf("default data dir: %v", err)
		}
	}
}

// TestTokensAndSIGHUP: bearer tokens from sluice.server.auth.tokensFile,
// reloaded on SIGHUP.
func TestTokensAndSIGHUP(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	os.WriteFile(tokens, []byte("# tokens\nfirst-token\n"), 0o600)
	srv := startServer(t, dir, testConfig(dir, "sluice.server.auth.tokensFile = "+tokens+"\n"))
	first, second := filepath.Join(dir, "t1"), filepath.Join(dir, "t2")
	os.WriteFile(first, []byte("first-token\n"), 0o600)
	os.WriteFile(second, []byte("second-token\n"), 0o600)

	if _, stderr, code := sluice(t, "x\n", "put", "--addr", srv.addr, "--retry", "0"); code != 1 || !strings.Contains(stderr, "Unauthenticated") {
		t.Errorf("no token: exit %d %q", code, stderr)
	}
	if _, stderr, code := sluice(t, "x\n", "put", "--addr", srv.addr, "--token-file", first); code != 0 {
		t.Errorf("first token: exit %d %q", code, stderr)
	}
	os.WriteFile(tokens, []byte("second-token\n"), 0o600)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(srv.stderr.String(), "tokens reloaded") {
		if time.Now().After(deadline) {
			t.Fatal("no reload logged")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, stderr, code := sluice(t, "", "stats", "--addr", srv.addr, "--token-file", first); code != 1 || !strings.Contains(stderr, "Unauthenticated") {
		t.Errorf("old token after SIGHUP: exit %d %q", code, stderr)
	}
	if out, stderr, code := sluice(t, "", "take", "--addr", srv.addr, "--token-file", second, "--wait", "200ms"); code != 0 || out != "x\n" {
		t.Errorf("new token: exit %d %q %q", code, out, stderr)
	}
	srv.stop(t)
}

// An error raised while a store opens names the config entry that set the
// path it is about (here a key file readable by others), so the operator
// knows which line to fix.
func TestOpenErrorNamesConfigLine(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, _, code := sluice(t, "", "keygen", "--key-file", keys, "--new"); code != 0 {
		t.Fatal("keygen failed")
	}
	if err := os.Chmod(keys, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "sluice.properties")
	os.WriteFile(conf, []byte(testConfig(dir, "agent.channels.default.encryption.keyProvider.keyFile = "+keys+"\n")), 0o644)
	_, stderr, code := sluice(t, "", "serve", "--config", conf)
	want := keys + " is set by " + conf + ":9, key agent.channels.default.encryption.keyProvider.keyFile"
	if code == 0 || !strings.Contains(stderr, want) {
		t.Fatalf("serve with a world-readable key file: exit %d, stderr lacks %q:\n%s", code, want, stderr)
	}
}
