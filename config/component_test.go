package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

const treeBase = `a1.channels = c1 c2
a1.channels.c1.type = memory
a1.channels.c2.type = memory
`

func parseTree(t *testing.T, extra string) (*Config, error) {
	t.Helper()
	return Parse("tree.properties", treeBase+extra, "a1", quiet)
}

func TestComponentTree(t *testing.T) {
	cfg, err := parseTree(t, `a1.sources = r1 r2
a1.sources.r1.type = netcat
a1.sources.r1.channels = c2 c1
a1.sources.r1.bind = 127.0.0.1
a1.sources.r1.port = 44444
a1.sources.r1.batchSize = 50
a1.sources.r1.interceptors = ts host
a1.sources.r1.interceptors.ts.type = timestamp
a1.sources.r1.interceptors.host.type = host
a1.sources.r1.interceptors.host.hostHeader = h
a1.sources.r1.selector.type = multiplexing
a1.sources.r1.selector.header = region
a1.sources.r1.selector.mapping.eu = c1
a1.sources.r2.type = org.example.Custom
a1.sources.r2.channels = c1
a1.sources.r2.kafka.consumer.auto.offset.reset = earliest
a1.sources.r2.kafka.bootstrap.servers = 127.0.0.1:9092
a1.sinks = k1 k2
a1.sinks.k1.type = logger
a1.sinks.k1.channel = c1
a1.sinks.k2.type = logger
a1.sinks.k2.channel = c2
a1.sinks.k2.mystery = 1
a1.sinkgroups = g1
a1.sinkgroups.g1.sinks = k2 k1
a1.sinkgroups.g1.processor.type = failover
a1.sinkgroups.g1.processor.priority.k1 = 10
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sources) != 2 || len(cfg.Sinks) != 2 || len(cfg.SinkGroups) != 1 {
		t.Fatalf("tree: %d sources, %d sinks, %d groups", len(cfg.Sources), len(cfg.Sinks), len(cfg.SinkGroups))
	}
	r1 := cfg.Sources[0]
	if r1.Name != "r1" || r1.Type != "netcat" || r1.Line != 5 || !slices.Equal(r1.Channels, []string{"c2", "c1"}) {
		t.Fatalf("r1: %+v", r1)
	}
	if len(r1.Interceptors) != 2 || r1.Interceptors[0].Name != "ts" || r1.Interceptors[1].Type != "host" ||
		r1.Interceptors[1].Prefix != "a1.sources.r1.interceptors.host." {
		t.Fatalf("interceptors (in list order): %+v", r1.Interceptors)
	}
	if hv := r1.Interceptors[1].View(); hv.String("hostHeader", "host") != "h" || len(hv.Unread()) != 0 {
		t.Fatalf("host interceptor view: %v", hv.Unread())
	}
	if r1.Selector.Type != "multiplexing" || r1.Selector.View().String("header", "") != "region" {
		t.Fatalf("selector: %+v", r1.Selector)
	}
	if cfg.Sources[1].Selector.Type != "replicating" {
		t.Fatalf("default selector: %q", cfg.Sources[1].Selector.Type)
	}

	// A typed view: values, defaults, and the keys nobody read.
	v := r1.View()
	if port, err := v.Int("port", 0, 1, 65535); err != nil || port != 44444 {
		t.Fatalf("port: %d %v", port, err)
	}
	if n, err := v.Int("maxLineLength", 512, 1, 1<<20); err != nil || n != 512 {
		t.Fatalf("default: %d %v", n, err)
	}
	un := v.Unread()
	if len(un) != 2 || un[0].Key != "a1.sources.r1.bind" || un[1].Key != "a1.sources.r1.batchSize" {
		t.Fatalf("unread: %+v", un)
	}
	if v.String("bind", "") != "127.0.0.1" || len(v.Unread()) != 1 {
		t.Fatalf("bind not marked read: %+v", v.Unread())
	}
	// The selector's mapping is the selector's, not unread by the source.
	if sv := r1.Selector.View(); len(sv.Unread()) != 1 || sv.Unread()[0].Key != "a1.sources.r1.selector.mapping.eu" {
		t.Fatalf("selector unread: %+v", sv.Unread())
	}
	kafka := cfg.Sources[1].View().Prefixed("kafka.")
	if len(kafka) != 2 || kafka["bootstrap.servers"].Value != "127.0.0.1:9092" || len(cfg.Sources[1].View().Unread()) != 0 {
		t.Fatalf("kafka pass-through: %+v", kafka)
	}
	if un := cfg.Sinks[1].View().Unread(); len(un) != 1 || un[0].Key != "a1.sinks.k2.mystery" || un[0].Line != 26 {
		t.Fatalf("sink unread: %+v", un)
	}
	g := cfg.SinkGroups[0]
	if !slices.Equal(g.Sinks, []string{"k2", "k1"}) || g.Processor.Type != "failover" ||
		g.Processor.View().Prefixed("priority.")["k1"].Value != "10" {
		t.Fatalf("group: %+v %+v", g, g.Processor)
	}
	if cfg.Sinks[0].Channels[0] != "c1" {
		t.Fatalf("sink channel: %v", cfg.Sinks[0].Channels)
	}
}

func TestComponentViewErrors(t *testing.T) {
	cfg, err := parseTree(t, `a1.sources = r1
a1.sources.r1.type = netcat
a1.sources.r1.channels = c1
a1.sources.r1.port = 44444x
a1.sources.r1.keep-alive = 3s
a1.sources.r1.batchTimeout = 1000
a1.sources.r1.enabled = yes
`)
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.Sources[0].View()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{second(v.Int("port", 0, 1, 65535)), `tree.properties:7: key a1.sources.r1.port: "44444x" is not an integer`},
		{second(v.Seconds("keep-alive", 3*time.Second, time.Hour)), `tree.properties:8: key a1.sources.r1.keep-alive: "3s" is not an integer (the key takes a whole number of seconds, with no unit suffix)`},
		{second(v.Millis("batchTimeout", 0, 500*time.Millisecond)), `tree.properties:9: key a1.sources.r1.batchTimeout: 1000 is out of range [0, 500]`},
		{second(v.Bool("enabled", false)), `tree.properties:10: key a1.sources.r1.enabled: "yes" is not true or false`},
		{second(v.Required("path")), `tree.properties:5: key a1.sources.r1.path: missing: required for source r1`},
	} {
		if tc.err == nil || tc.err.Error() != tc.want {
			t.Errorf("got %v\nwant %s", tc.err, tc.want)
		}
	}
	if d, err := v.Millis("unset", 250*time.Millisecond, time.Second); err != nil || d != 250*time.Millisecond {
		t.Fatalf("millis default: %v %v", d, err)
	}
}

func second[T any](_ T, err error) error { return err }

// Flume's wiring traps are errors naming the file, line and key, with the fix.
func TestComponentTreeErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"a1.sources = r1\na1.sources.r1.channels = c1\n",
			"tree.properties:4: key a1.sources.r1.type: source r1 has no type (set a1.sources.r1.type; Flume would silently drop the source)"},
		{"a1.sources = r1\na1.sources.r1.type = netcat\na1.sources.r1.channel = c1\n",
			"tree.properties:6: key a1.sources.r1.channel: a source names its channels with a1.sources.r1.channels (plural; Flume would silently drop the source)"},
		{"a1.sources = r1\na1.sources.r1.type = netcat\n",
			"tree.properties:5: key a1.sources.r1.channels: missing: source r1 needs the channels it puts into (a1.sources.r1.channels = c1 c2)"},
		{"a1.sources = r1\na1.sources.r1.type = netcat\na1.sources.r1.channels = c1 c9\n",
			`tree.properties:6: key a1.sources.r1.channels: channel "c9" is not in a1.channels`},
		{"a1.sinks = k1\na1.sinks.k1.type = logger\na1.sinks.k1.channels = c1\n",
			"tree.properties:6: key a1.sinks.k1.channels: a sink takes from one channel, named with a1.sinks.k1.channel (singular; Flume would silently drop the sink)"},
		{"a1.sinks = k1\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1 c2\n",
			`tree.properties:6: key a1.sinks.k1.channel: a sink takes from exactly one channel (got "c1 c2"); use one sink per channel, or a sink group`},
		{"a1.sinks = k1\na1.sinks.k1.type = logger\na1.sinks.k1.channel = nope\n",
			`tree.properties:6: key a1.sinks.k1.channel: channel "nope" is not in a1.channels`},
		{"a1.sources = r1\na1.sources.r1.type = netcat\na1.sources.r1.channels = c1\na1.sources.r1.interceptors = i1\n",
			"tree.properties:7: key a1.sources.r1.interceptors.i1.type: interceptor i1 of source r1 has no type (set a1.sources.r1.interceptors.i1.type)"},
		{"a1.sinks = k1\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\na1.sinkgroups = g1 g2\na1.sinkgroups.g1.sinks = k1\na1.sinkgroups.g2.sinks = k1\n",
			`tree.properties:9: key a1.sinkgroups.g2.sinks: sink "k1" is already in sink group g1 (a sink belongs to at most one group; Flume would silently leave it out of this one)`},
		{"a1.sinks = k1\na1.sinks.k1.type = logger\na1.sinks.k1.channel = c1\na1.sinkgroups = g1\na1.sinkgroups.g1.sinks = k1 k5\n",
			`tree.properties:8: key a1.sinkgroups.g1.sinks: sink "k5" is not in a1.sinks`},
		{"a1.sinkgroups = g1\na1.sinkgroups.g1.processor.type = failover\n",
			"tree.properties:4: key a1.sinkgroups.g1.sinks: missing: sink group g1 needs the sinks it balances or fails over (a1.sinkgroups.g1.sinks = k1 k2)"},
	} {
		_, err := parseTree(t, tc.conf)
		if err == nil || err.Error() != tc.want {
			t.Errorf("config:\n%s\ngot  %v\nwant %s", tc.conf, err, tc.want)
		}
	}
}

// Components configured but not listed, and interceptors not listed by
// their source, are warned about (Flume ignores them silently).
func TestComponentTreeWarnings(t *testing.T) {
	cfg, err := parseTree(t, `a1.sources = r1
a1.sources.r1.type = netcat
a1.sources.r1.channels = c1
a1.sources.r1.interceptors.stray.type = timestamp
a1.sources.ri.maxBatchCount = 10
a1.sinks.k1.type = logger
`)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(cfg.Warnings, "\n")
	for _, w := range []string{
		`tree.properties:7: key a1.sources.r1.interceptors.stray.type: interceptor "stray" is not listed in a1.sources.r1.interceptors, ignored`,
		`tree.properties:8: key a1.sources.ri.maxBatchCount: source "ri" is not listed in a1.sources (line 4), ignored`,
		`tree.properties:9: key a1.sinks.k1.type: sink "k1" is configured but a1.sinks is not set, ignored (add a1.sinks = k1)`,
	} {
		if !strings.Contains(all, w) {
			t.Errorf("missing warning %q in:\n%s", w, all)
		}
	}
}

// Flume users' habits get the fix in the message.
func TestFlumeHabits(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{"a1.channels.c1.minimumRequiredSpace = 1G\n",
			`tree.properties:4: key a1.channels.c1.minimumRequiredSpace: "1G" is not an integer: the key takes a whole number of bytes, with no unit suffix`},
		{"a1.channels.c1.keep-alive = 3s\n",
			`tree.properties:4: key a1.channels.c1.keep-alive: "3s" is not an integer: the key takes a whole number of seconds, with no unit suffix`},
	} {
		_, err := Parse("tree.properties", "a1.channels = c1\na1.channels.c1.type = file\na1.channels.c1.dataDirs = /d\n"+tc.conf+"a1.channels.c1.checkpointDir = /c\n", "a1", quiet)
		if err == nil || err.Error() != tc.want {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
	// A config for another agent name says which agents the file defines.
	_, err := Parse("f.properties", "agent1.channels = c1\nagent1.channels.c1.type = memory\nweb.channels = c\n", "", quiet)
	if want := `f.properties: key agent.channels: missing: no channels configured for agent "agent"; the file configures agent agent1, web (choose one with --name)`; err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	// Flume's default maxFileSize loads as Sluice's largest segment; a
	// misspelt key gets a suggestion.
	cfg, err := Parse("f.properties", "a1.channels = c1\na1.channels.c1.type = file\na1.channels.c1.dataDirs = /d\na1.channels.c1.checkpointDir = /c\na1.channels.c1.maxFileSize = 2146435071\na1.channels.c1.capacty = 10\n", "a1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Stores()[0].File.SegmentSize; got != MaxSegmentSize {
		t.Errorf("segment size %d, want %d", got, MaxSegmentSize)
	}
	w := strings.Join(cfg.Warnings, "\n")
	for _, want := range []string{
		"f.properties:5: key a1.channels.c1.maxFileSize: 2146435071 is more than Sluice's largest WAL segment; using 1073741824 (1 GiB)",
		"f.properties:6: key a1.channels.c1.capacty: unknown channel property, ignored; did you mean capacity?",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("missing warning %q in:\n%s", want, w)
		}
	}
}

// An error raised while a store opens names the entry that set its path.
func TestStoreExplain(t *testing.T) {
	cfg, err := Parse("s.properties", "a1.channels = c1\na1.channels.c1.type = file\na1.channels.c1.dataDirs = /srv/d1, /srv/d10\na1.channels.c1.checkpointDir = /srv/ck\na1.channels.c1.encryption.keyProvider.keyFile = /etc/k\n", "a1", quiet)
	if err != nil {
		t.Fatal(err)
	}
	st := cfg.Stores()[0]
	for _, tc := range []struct{ err, want string }{
		{"open /srv/d10/0000000001.wal: permission denied", "open /srv/d10/0000000001.wal: permission denied (/srv/d10 is set by s.properties:3, key a1.channels.c1.dataDirs)"},
		{"lock /srv/ck/LOCK: resource busy", "lock /srv/ck/LOCK: resource busy (/srv/ck is set by s.properties:4, key a1.channels.c1.checkpointDir)"},
		{"key file /etc/k: mode 0644", "key file /etc/k: mode 0644 (/etc/k is set by s.properties:5, key a1.channels.c1.encryption.keyProvider.keyFile)"},
		{"something else", "something else"},
	} {
		if got := st.Explain(errors.New(tc.err)).Error(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}
