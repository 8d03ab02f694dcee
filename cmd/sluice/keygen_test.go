package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitLog waits until the server's log contains s.
func waitLog(t *testing.T, p *serverProc, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(p.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged:\n%s", s, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// walContains reports whether any file under dir contains b.
func walContains(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	found, files := false, 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		found = found || bytes.Contains(data, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no files under %s", dir)
	}
	return found
}

func TestKeygenEncryptionAndRotation(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "sluice.keys")
	// keygen: --new creates the file, a second run appends; ids on stdout.
	if out, stderr, code := sluice(t, "", "keygen", "--key-file", keys, "--new"); code != 0 || out != "1\n" {
		t.Fatalf("keygen --new: exit %d, %q %q", code, out, stderr)
	}
	if out, stderr, code := sluice(t, "", "keygen", "--key-file", keys); code != 0 || out != "2\n" {
		t.Fatalf("keygen: exit %d, %q %q", code, out, stderr)
	}
	if _, stderr, code := sluice(t, "", "keygen", "--key-file", keys, "--new"); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Fatalf("keygen --new over an existing file: exit %d, %q", code, stderr)
	}
	if _, _, code := sluice(t, "", "keygen"); code != 2 {
		t.Fatalf("keygen without --key-file: exit %d", code)
	}
	fi, err := os.Stat(keys)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	data, _ := os.ReadFile(keys)
	var lines []string
	for l := range strings.Lines(string(data)) {
		if !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "1 ") || !strings.HasPrefix(lines[1], "2 ") {
		t.Fatalf("key file content has %d keys", len(lines))
	}

	encCfg := func(active int) string {
		return testConfig(dir, fmt.Sprintf("agent.channels.default.encryption.activeKey = %d\n"+
			"agent.channels.default.encryption.keyProvider = JCEKSFILE\n"+
			"agent.channels.default.encryption.keyProvider.keyStoreFile = %s\n", active, keys))
	}
	body := func(phase, i int) string { return fmt.Sprintf("plaintext-secret-%d-%04d", phase, i) }
	batch := func(phase, n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString(body(phase, i) + "\n")
		}
		return b.String()
	}

	srv := startServer(t, dir, encCfg(1))
	if _, stderr, code := sluice(t, batch(1, 200), "put", "--addr", srv.addr, "--batch", "50"); code != 0 {
		t.Fatalf("put: exit %d %q", code, stderr)
	}
	out, stderr, code := sluice(t, "", "take", "--addr", srv.addr, "--max", "50", "--wait", "300ms")
	if code != 0 || out != batch(1, 50) {
		t.Fatalf("take: exit %d %q %q", code, out, stderr)
	}
	if walContains(t, filepath.Join(dir, "data"), []byte("plaintext-secret")) {
		t.Fatal("a WAL file holds a plaintext body")
	}

	// Rotate: activeKey 2 in the configuration, SIGHUP.
	if err := os.WriteFile(filepath.Join(dir, "sluice.properties"), []byte(encCfg(2)), 0o644); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, srv, "SIGHUP: encryption keys reloaded")
	if s := srv.stderr.String(); !strings.Contains(s, "active_key=2") {
		t.Fatalf("rotation not logged with key 2:\n%s", s)
	}
	if _, stderr, code := sluice(t, batch(2, 100), "put", "--addr", srv.addr, "--batch", "25"); code != 0 {
		t.Fatalf("put after rotation: exit %d %q", code, stderr)
	}
	if walContains(t, filepath.Join(dir, "data"), []byte("plaintext-secret")) {
		t.Fatal("a WAL file holds a plaintext body after rotation")
	}
	manifest, err := os.ReadFile(filepath.Join(dir, "checkpoint", "crypto.manifest"))
	if err != nil || !bytes.Contains(manifest, []byte("\nkey 1 ")) || !bytes.Contains(manifest, []byte("\nkey 2 ")) {
		t.Fatalf("crypto manifest does not name keys 1 and 2: %v\n%s", err, manifest)
	}
	// A bad key file on SIGHUP is logged and the keys stay.
	os.Chmod(keys, 0o644)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, srv, "SIGHUP: loading encryption keys failed")
	os.Chmod(keys, 0o600)
	srv.stop(t)

	// Restart (records under keys 1 and 2) and take everything.
	srv = startServer(t, dir, "")
	out, stderr, code = sluice(t, "", "take", "--addr", srv.addr, "--batch", "64", "--wait", "300ms")
	if want := batch(1, 200)[len(batch(1, 50)):] + batch(2, 100); code != 0 || out != want {
		t.Fatalf("take after restart: exit %d, %d bytes (want %d) %q", code, len(out), len(want), stderr)
	}
	srv.stop(t)

	// verify and inspect open the sealed records and checkpoints with the
	// configured key file.
	cfgPath := filepath.Join(dir, "sluice.properties")
	if out, stderr, code := sluice(t, "", "verify", "--config", cfgPath); code != 0 || !strings.HasSuffix(out, "intact\n") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := sluice(t, "", "inspect", "--data-dirs", dir+"/data", "--checkpoint-dir", dir+"/checkpoint",
		"--key-file", keys, "--records"); code != 0 || !strings.Contains(out, "\ttake\t") {
		t.Fatalf("inspect --key-file: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, code := sluice(t, "", "verify", "--data-dirs", dir+"/data", "--checkpoint-dir", dir+"/checkpoint"); code != 1 {
		t.Fatalf("verify without the key file: exit %d (want 1)\n%s", code, out)
	}

	// A key file readable by others fails serve, naming the file.
	os.Chmod(keys, 0o644)
	_, stderr, code = sluice(t, "", "serve", "--config", cfgPath)
	if code != 1 || !strings.Contains(stderr, keys) {
		t.Fatalf("serve with a world-readable key file: exit %d, stderr %q", code, stderr)
	}
}
