package main

import (
	"slices"
	"testing"

	"github.com/sluicehq/sluice/bench"
)

func TestBenchParseKinds(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []bench.Kind
	}{
		{"memory,file,grpc", []bench.Kind{bench.Memory, bench.File, bench.MemoryGRPC, bench.FileGRPC}},
		{"file,grpc", []bench.Kind{bench.File, bench.FileGRPC}},
		{"grpc", []bench.Kind{bench.MemoryGRPC, bench.FileGRPC}},
		{"file+s2, memory", []bench.Kind{bench.Memory, bench.FileS2}},
	} {
		got, err := parseKinds(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseKinds(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	if _, err := parseKinds("disk"); err == nil {
		t.Error("unknown kind accepted")
	}
	if _, err := parseOps("put,nope"); err == nil {
		t.Error("unknown op accepted")
	}
}

func TestBenchUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--channels", "disk"},
		{"bench", "--batch", "0"},
		{"bench", "--ops", ""},
		{"bench", "recovery", "--events", "0"},
	} {
		if rc := run(args); rc != 2 {
			t.Errorf("%q: exit %d, want 2", args, rc)
		}
	}
}
