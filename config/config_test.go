package config

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/channel"
	"github.com/sluicehq/sluice/crypto"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestBadConfigs(t *testing.T) {
	// Each file under testdata/bad and the exact error it must produce.
	tests := map[string]string{
		"bad_address.properties":              "testdata/bad/bad_address.properties:3: key sluice.server.grpc.address: address \"localhost\" has no port (want host:port)",
		"bad_escape.properties":               "testdata/bad/bad_escape.properties:3: key agent.channels.c1.capacity: malformed \\uXXXX escape",
		"bad_name.properties":                 "testdata/bad/bad_name.properties:1: key agent.channels: channel name \"bad/name\" must be 1-128 characters of [A-Za-z0-9._-]",
		"bad_type.properties":                 "testdata/bad/bad_type.properties:2: key agent.channels.c1.type: channel type \"jdbc\" is not supported (want file or memory, or Flume's org.apache.flume.channel.file.FileChannel or org.apache.flume.channel.MemoryChannel)",
		"capacity_not_int.properties":         "testdata/bad/capacity_not_int.properties:5: key agent.channels.c1.capacity: \"ten\" is not an integer",
		"capacity_zero.properties":            "testdata/bad/capacity_zero.properties:5: key agent.channels.c1.capacity: 0 must be at least 1",
		"checkpoint_interval_zero.properties": "testdata/bad/checkpoint_interval_zero.properties:5: key agent.channels.c1.checkpointInterval: 0 must be at least 1",
		"continuation_value.properties":       "testdata/bad/continuation_value.properties:3: key agent.channels.c1.byteCapacity: \"12x\" is not an integer: the key takes a whole number of bytes, with no unit suffix",
		"dir_twice.properties":                "testdata/bad/dir_twice.properties:3: key agent.channels.c1.dataDirs: directory /c is also the channel's checkpointDir",
		"event_vs_segment.properties":         "testdata/bad/event_vs_segment.properties:6: key agent.channels.c1.maxEventSize: maxEventSize 524288 must be at most a quarter of maxFileSize 1048576",
		"keepalive_negative.properties":       "testdata/bad/keepalive_negative.properties:5: key agent.channels.c1.keep-alive: -1 must be at least 0",
		"listed_twice.properties":             "testdata/bad/listed_twice.properties:1: key agent.channels: channel \"c1\" listed twice",
		"maxfilesize_too_big.properties":      "testdata/bad/maxfilesize_too_big.properties:5: key agent.channels.c1.maxFileSize: 2147483648 is more than the maximum segment size 1073741824 (1 GiB)",
		"spare_segments_too_many.properties":  "testdata/bad/spare_segments_too_many.properties:5: key agent.channels.c1.spareSegments: 70000 is more than 65536",
		"producer_expiry_negative.properties": "testdata/bad/producer_expiry_negative.properties:4: key agent.channels.c1.producerExpiry: -5 must be at least 0",
		"max_producers_zero.properties":       "testdata/bad/max_producers_zero.properties:4: key agent.channels.c1.maxProducers: 0 must be at least 1",
		"missing_checkpointdir.properties":    "testdata/bad/missing_checkpointdir.properties:2: key agent.channels.c1.checkpointDir: missing: required for a file channel",
		"missing_datadirs.properties":         "testdata/bad/missing_datadirs.properties:2: key agent.channels.c1.dataDirs: missing: required for a file channel",
		"missing_type.properties":             "testdata/bad/missing_type.properties:1: key agent.channels: channel \"c2\" has no type (set agent.channels.c2.type = file or memory)",
		"no_channels.properties":              "testdata/bad/no_channels.properties: key agent.channels: missing: no channels configured for agent \"agent\"",
		"shared_checkpoint_dir.properties":    "testdata/bad/shared_checkpoint_dir.properties:5: key agent.channels.c2.checkpointDir: directory /c is also used by channel \"c1\", whose dataDirs and checkpointDir differ; channels share a store only when both are identical",
		"store_conflict.properties":           "testdata/bad/store_conflict.properties:9: key agent.channels.c2.maxEventSize: differs from channel \"c1\" (line 5), which shares its store; store-wide settings must agree",
		"tls_no_key.properties":               "testdata/bad/tls_no_key.properties:3: key sluice.server.tls.certFile: sluice.server.tls.keyFile is required too",
		"txn_over_capacity.properties":        "testdata/bad/txn_over_capacity.properties:4: key agent.channels.c1.transactionCapacity: transactionCapacity 11 exceeds capacity 10",
		// Encryption and compression.
		"enc_active_key_range.properties":         "testdata/bad/enc_active_key_range.properties:6: key agent.channels.c1.encryption.activeKey: key id 70000 is out of range (1-65535)",
		"enc_active_key_not_int.properties":       "testdata/bad/enc_active_key_not_int.properties:6: key agent.channels.c1.encryption.activeKey: \"first\" is not an integer",
		"enc_bad_provider.properties":             "testdata/bad/enc_bad_provider.properties:5: key agent.channels.c1.encryption.keyProvider: key provider \"KMS\" is not supported (want file, or Flume's JCEKSFILE; either reads a Sluice key file)",
		"enc_no_key_file.properties":              "testdata/bad/enc_no_key_file.properties:5: key agent.channels.c1.encryption.activeKey: an active key needs a key file: set agent.channels.c1.encryption.keyProvider.keyFile (see sluice keygen)",
		"enc_active_key_other_channel.properties": "testdata/bad/enc_active_key_other_channel.properties:5: key agent.channels.c1.encryption.activeKey: an active key needs a key file: set agent.channels.c1.encryption.keyProvider.keyFile (see sluice keygen)",
		"enc_alias_conflict.properties":           "testdata/bad/enc_alias_conflict.properties:6: key agent.channels.c1.encryption.keyProvider.keyStoreFile: encryption.keyProvider.keyFile and its alias keyStoreFile name different files (\"/k1\", \"/k2\"); set one of them",
		"enc_empty_key_file.properties":           "testdata/bad/enc_empty_key_file.properties:5: key agent.channels.c1.encryption.keyProvider.keyFile: empty path",
		"enc_store_conflict.properties":           "testdata/bad/enc_store_conflict.properties:9: key agent.channels.c2.encryption.keyProvider.keyStoreFile: differs from channel \"c1\" (line 5), which shares its store; store-wide settings must agree",
		"compression_bad.properties":              "testdata/bad/compression_bad.properties:5: key agent.channels.c1.compression: compression \"lz4\" is not supported (want none, zstd or s2)",
		"compression_store_conflict.properties":   "testdata/bad/compression_store_conflict.properties:9: key agent.channels.c2.compression: differs from channel \"c1\" (line 5), which shares its store; store-wide settings must agree",
	}
	files, _ := filepath.Glob("testdata/bad/*.properties")
	if len(files) != len(tests) {
		t.Errorf("%d files in testdata/bad, %d table entries", len(files), len(tests))
	}
	for name, want := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata/bad", name), "", quiet)
			if err == nil {
				t.Fatalf("no error, want %q", want)
			}
			if err.Error() != want {
				t.Fatalf("error\n got %s\nwant %s", err, want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error is %T, not *Error", err)
			}
		})
	}
}

func TestGoodConfig(t *testing.T) {
	cfg, err := Load("testdata/good/full.properties", "agent", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(cfg.Channels); got != 3 {
		t.Fatalf("%d channels, want 3", got)
	}
	c1 := cfg.Channels[0]
	want := channel.ChannelConfig{Name: "c1", Capacity: 5000, TransactionCapacity: 500, MaxBytes: 1000000, KeepAlive: 3 * time.Second}
	if c1.Config != want || c1.Type != TypeFile {
		t.Errorf("c1 = %+v %s", c1.Config, c1.Type)
	}
	if cfg.Channels[2].Type != TypeMemory || cfg.Channels[2].Config.Capacity != 100 || cfg.Channels[2].Config.TransactionCapacity != 100 {
		t.Errorf("m1 = %+v", cfg.Channels[2])
	}
	wantSrv := Server{GRPCAddress: "0.0.0.0:9000", MetricsAddress: "", CertFile: "/tls/cert.pem", KeyFile: "/tls/key.pem", ClientCAFile: "/tls/ca.pem", TokensFile: "/tokens"}
	if cfg.Server != wantSrv {
		t.Errorf("server = %+v", cfg.Server)
	}
	stores := cfg.Stores()
	if len(stores) != 2 {
		t.Fatalf("%d stores, want 2: %+v", len(stores), stores)
	}
	f := stores[0]
	if f.Type != TypeFile || !slices.Equal(f.Channels, []string{"c1", "c2"}) {
		t.Errorf("file store: %+v", f)
	}
	o := f.File
	if !slices.Equal(o.DataDirs, []string{"/d1", "/d2"}) || o.CheckpointDir != "/cp" || o.BackupCheckpointDir != "/cp-backup" ||
		o.CheckpointInterval != 15*time.Second || o.SegmentSize != 64<<20 || o.MinFreeBytes != 1<<20 || o.MaxEventSize != 65536 || o.SpareSegments != 8 || o.ProducerExpiry != 24*time.Hour || o.MaxProducers != 5000 {
		t.Errorf("file options: %+v", o)
	}
	if stores[1].Type != TypeMemory || !slices.Equal(stores[1].Channels, []string{"m1"}) || stores[1].Memory.ProducerExpiry >= 0 {
		t.Errorf("memory store: %+v", stores[1])
	}
	// Every warning names file:line and key.
	wantWarn := []string{
		"full.properties:23: key agent.channels.c1.useDualCheckpoints: Flume property not used",
		"full.properties:32: key agent.channels.m1.dataDirs: applies to file channels only",
		"full.properties:41: key sluice.server.bogus: unknown key",
		"full.properties:42: key agent.channels.zz.type: channel \"zz\" is not listed",
	}
	all := strings.Join(cfg.Warnings, "\n")
	for _, w := range wantWarn {
		if !strings.Contains(all, w) {
			t.Errorf("missing warning %q in:\n%s", w, all)
		}
	}
	if len(cfg.Warnings) != len(wantWarn) {
		t.Errorf("%d warnings, want %d:\n%s", len(cfg.Warnings), len(wantWarn), all)
	}
}

func TestDefault(t *testing.T) {
	cfg, err := LoadDefault("", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}
	st := cfg.Stores()
	if len(st) != 1 || st[0].Type != TypeFile || !slices.Equal(st[0].Channels, []string{"default"}) ||
		!slices.Equal(st[0].File.DataDirs, []string{"sluice-data/data"}) || st[0].File.CheckpointDir != "sluice-data/checkpoint" {
		t.Errorf("stores: %+v", st)
	}
	if cfg.Server.GRPCAddress != "127.0.0.1:7070" || cfg.Server.MetricsAddress != "127.0.0.1:7071" {
		t.Errorf("server: %+v", cfg.Server)
	}
	if _, err := LoadDefault("other", quiet); err == nil || !strings.Contains(err.Error(), "key other.channels: missing") {
		t.Errorf("other agent: %v", err)
	}
}

func TestAgentName(t *testing.T) {
	src := "a1.channels = c\na1.channels.c.type = memory\na2.channels = d\na2.channels.d.type = memory\n"
	for agent, want := range map[string]string{"a1": "c", "a2": "d"} {
		cfg, err := Parse("x", src, agent, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if len(cfg.Channels) != 1 || cfg.Channels[0].Name != want || len(cfg.Warnings) != 0 {
			t.Errorf("agent %s: %+v %v", agent, cfg.Channels, cfg.Warnings)
		}
	}
}

func TestParseProperties(t *testing.T) {
	src := "# c\n  ! c\n\na=1\nb : 2\nc 3\nd=x\\\n   y\\\\\ne\\ f = \\u0041\\t\n  g=  spaced  \r\nh\nlast=end\\"
	got, err := ParseProperties(src)
	if err != nil {
		t.Fatal(err)
	}
	want := []Property{
		{"a", "1", 4}, {"b", "2", 5}, {"c", "3", 6}, {"d", "xy\\", 7}, {"e f", "A\t", 9},
		{"g", "spaced", 10}, {"h", "", 11}, {"last", "end", 12},
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestMultiStoreGrouping(t *testing.T) {
	src := `agent.channels = a b c m n
agent.channels.a.type = file
agent.channels.a.dataDirs = /x/d
agent.channels.a.checkpointDir = /x/c
agent.channels.b.type = file
agent.channels.b.dataDirs = /x/d/
agent.channels.b.checkpointDir = /x/c
agent.channels.c.type = file
agent.channels.c.dataDirs = /y/d
agent.channels.c.checkpointDir = /y/c
agent.channels.m.type = memory
agent.channels.n.type = memory
`
	cfg, err := Parse("x", src, "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, s := range cfg.Stores() {
		got = append(got, s.Channels)
	}
	if want := [][]string{{"a", "b"}, {"c"}, {"m", "n"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("stores %v, want %v", got, want)
	}
}

func TestEncryptionConfig(t *testing.T) {
	src := `agent.channels = a b c m
agent.channels.a.type = file
agent.channels.a.dataDirs = /x/d
agent.channels.a.checkpointDir = /x/c
agent.channels.a.encryption.activeKey = 2
agent.channels.a.encryption.cipherProvider = AESCTRNOPADDING
agent.channels.a.encryption.keyProvider = JCEKSFILE
agent.channels.a.encryption.keyProvider.keyStoreFile = /keys/sluice.keys
agent.channels.a.encryption.keyProvider.keyStorePasswordFile = /keys/pw
agent.channels.a.encryption.keyProvider.keys = key-0
agent.channels.a.compression = ZSTD
agent.channels.b.type = file
agent.channels.b.dataDirs = /x/d
agent.channels.b.checkpointDir = /x/c
agent.channels.b.encryption.keyProvider = file
agent.channels.b.encryption.keyProvider.keyFile = /keys/./sluice.keys
agent.channels.c.type = file
agent.channels.c.dataDirs = /y/d
agent.channels.c.checkpointDir = /y/c
agent.channels.c.compression = none
agent.channels.m.type = memory
agent.channels.m.encryption.activeKey = 1
agent.channels.m.compression = s2
`
	cfg, err := Parse("x", src, "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Stores()
	if len(st) != 3 {
		t.Fatalf("%d stores: %+v", len(st), st)
	}
	if st[0].KeyFile != "/keys/sluice.keys" || st[0].ActiveKey != 2 || st[0].File.Compression != "zstd" {
		t.Errorf("store a+b: key file %q, active %d, compression %q", st[0].KeyFile, st[0].ActiveKey, st[0].File.Compression)
	}
	if st[1].KeyFile != "" || st[1].ActiveKey != 0 || st[1].File.Compression != "" {
		t.Errorf("store c: key file %q, active %d, compression %q", st[1].KeyFile, st[1].ActiveKey, st[1].File.Compression)
	}
	if kr, err := st[1].Keyring(); kr != nil || err != nil {
		t.Errorf("unencrypted store: Keyring() = %v, %v", kr, err)
	}
	wantWarn := []string{
		"x:6: key agent.channels.a.encryption.cipherProvider: ignored: Sluice always encrypts with AES-256-GCM",
		"x:9: key agent.channels.a.encryption.keyProvider.keyStorePasswordFile: Flume key store property not used by Sluice, ignored: keys come from encryption.keyProvider.keyFile",
		"x:10: key agent.channels.a.encryption.keyProvider.keys: Flume key store property not used by Sluice, ignored: keys come from encryption.keyProvider.keyFile",
		"x:22: key agent.channels.m.encryption.activeKey: applies to file channels only, ignored",
		"x:23: key agent.channels.m.compression: applies to file channels only, ignored",
	}
	if !slices.Equal(cfg.Warnings, wantWarn) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(wantWarn, "\n"))
	}
}

func TestStoreKeyring(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	if _, err := crypto.AppendKey(path); err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.AppendKey(path); err != nil {
		t.Fatal(err)
	}
	kr, err := Store{Type: TypeFile, KeyFile: path, ActiveKey: 1}.Keyring()
	if err != nil || kr.Active() != 1 || !slices.Equal(kr.IDs(), []uint16{1, 2}) {
		t.Fatalf("keyring: %v %v", kr, err)
	}
	if kr, err = (Store{Type: TypeFile, KeyFile: path}).Keyring(); err != nil || kr.Active() != 2 {
		t.Fatalf("default active key: %v %v", kr, err)
	}
	if _, err := (Store{Type: TypeFile, KeyFile: path, ActiveKey: 3}).Keyring(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("missing active key: %v", err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := (Store{Type: TypeFile, KeyFile: path}).Keyring(); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("group-readable key file: %v", err)
	}
}

func TestServerLimits(t *testing.T) {
	base := "agent.channels = m\nagent.channels.m.type = memory\n"
	cfg, err := Parse("t.properties", base+`sluice.server.limits.maxRecvMsgSize = 8388608
sluice.server.limits.maxConcurrentStreams = 32
sluice.server.limits.maxConcurrentPuts = 16
sluice.server.limits.maxTakeStreams = 8
sluice.server.limits.maxTakeBytes = 4194304
sluice.server.limits.maxHeadersPerEvent = 64
`, "agent", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	want := ServerLimits{MaxRecvMsgSize: 8 << 20, MaxConcurrentStreams: 32, MaxConcurrentPuts: 16, MaxTakeStreams: 8, MaxTakeBytes: 4 << 20, MaxHeadersPerEvent: 64}
	if cfg.Server.Limits != want {
		t.Fatalf("limits %+v, want %+v", cfg.Server.Limits, want)
	}
	for v, msg := range map[string]string{
		"0":          "t.properties:3: key sluice.server.limits.maxConcurrentPuts: 0 must be at least 1",
		"many":       "t.properties:3: key sluice.server.limits.maxConcurrentPuts: \"many\" is not an integer",
		"4294967296": "t.properties:3: key sluice.server.limits.maxConcurrentPuts: 4294967296 is more than 2147483647",
	} {
		_, err := Parse("t.properties", base+"sluice.server.limits.maxConcurrentPuts = "+v+"\n", "agent", slog.New(slog.DiscardHandler))
		if err == nil || err.Error() != msg {
			t.Errorf("maxConcurrentPuts = %s: %v, want %s", v, err, msg)
		}
	}
}
