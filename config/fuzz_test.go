package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any input parses or fails with an *Error; a parsed
// configuration always groups into stores.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.properties")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(b))
		}
	}
	f.Add(Default)
	f.Fuzz(func(t *testing.T, src string) {
		cfg, err := Parse("fuzz", src, "", quiet)
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			return
		}
		n := 0
		for _, s := range cfg.Stores() {
			n += len(s.Channels)
		}
		if n != len(cfg.Channels) {
			t.Fatalf("%d channels in stores, %d configured", n, len(cfg.Channels))
		}
	})
}
