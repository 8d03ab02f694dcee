package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every ```properties block of README.md and docs/*.md loads as written,
// without errors or warnings: users paste them.
func TestDocConfigBlocksLoad(t *testing.T) {
	files, _ := filepath.Glob("../docs/*.md")
	files = append([]string{"../README.md"}, files...)
	blocks := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		for i := 0; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) != "```properties" {
				continue
			}
			start := i + 1
			var b strings.Builder
			b.WriteString(strings.Repeat("\n", start-1)) // errors name the line in the file
			for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
				b.WriteString(lines[i] + "\n")
			}
			blocks++
			name := filepath.Base(f)
			cfg, err := Parse(name, b.String(), "", quiet)
			if err != nil {
				t.Errorf("the block at %s:%d does not load: %v", name, start, err)
				continue
			}
			if len(cfg.Warnings) > 0 {
				t.Errorf("the block at %s:%d loads with warnings:\n%s", name, start, strings.Join(cfg.Warnings, "\n"))
			}
		}
	}
	if blocks < 2 {
		t.Fatalf("found %d properties blocks; the README has at least two", blocks)
	}
}

// A value with blanks then '#' is a mistaken inline comment: an error for a
// path, a hint in a number's error, a warning elsewhere.
func TestInlineComments(t *testing.T) {
	base := "agent.channels = c1\nagent.channels.c1.type = file\nagent.channels.c1.checkpointDir = /cp\n"
	for _, tc := range []struct{ line, want string }{
		{"agent.channels.c1.dataDirs = /d   # main disk",
			`x.properties:4: key agent.channels.c1.dataDirs: properties files have no inline comments: the value is "/d   # main disk"; put the comment on a line of its own`},
		{"agent.channels.c1.dataDirs = /d\nagent.channels.c1.capacity = 100 # events",
			`x.properties:5: key agent.channels.c1.capacity: "100 # events" is not an integer (properties files have no inline comments: put the comment on a line of its own)`},
	} {
		_, err := Parse("x.properties", base+tc.line+"\n", "", quiet)
		if err == nil || err.Error() != tc.want {
			t.Errorf("got  %v\nwant %s", err, tc.want)
		}
	}
	cfg, err := Parse("x.properties", base+"agent.channels.c1.dataDirs = /d\nsluice.server.grpc.address = 127.0.0.1:7070\nagent.sources = r1\nagent.sources.r1.type = netcat\nagent.sources.r1.channels = c1\nagent.sources.r1.bind = 0.0.0.0 # all\n", "", quiet)
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(cfg.Warnings, "\n"); !strings.Contains(w, `x.properties:9: key agent.sources.r1.bind: properties files have no inline comments`) {
		t.Fatalf("no inline-comment warning:\n%s", w)
	}
}
