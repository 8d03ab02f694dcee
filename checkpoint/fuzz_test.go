package checkpoint

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzUnmarshal checks that Unmarshal never panics and that any input it
// accepts re-marshals to the same bytes (the encoding is canonical), which
// Unmarshal accepts as an equal checkpoint. Inputs are tried both as plain
// files and as files sealed with a test Sealer.
//
//	go test -run '^$' -fuzz FuzzUnmarshal ./checkpoint/
func FuzzUnmarshal(f *testing.F) {
	sealer := xorSealer{key: 0xa5}
	for _, tc := range testCheckpoints() {
		if tc.name == "large-100k-put-entries" {
			tc.c = largeCheckpoint(20)
		}
		for _, s := range []Sealer{nil, sealer} {
			b, err := Marshal(tc.c, s)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range []Sealer{nil, sealer} {
			c, err := Unmarshal(b, s)
			if err != nil {
				if c != nil {
					t.Fatalf("checkpoint returned with error %v", err)
				}
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSealed) &&
					!errors.Is(err, ErrNotSealed) && !errors.Is(err, ErrOpen) {
					t.Fatalf("unclassified error: %v", err)
				}
				continue
			}
			b2, err := Marshal(c, s)
			if err != nil {
				t.Fatalf("re-marshal: %v", err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("accepted input is not canonical:\n in %x\nout %x", b, b2)
			}
			c2, err := Unmarshal(b2, s)
			if err != nil {
				t.Fatalf("re-marshalled checkpoint rejected: %v", err)
			}
			if !reflect.DeepEqual(c, c2) {
				t.Fatalf("re-marshalled checkpoint differs:\n%+v\n%+v", c, c2)
			}
		}
	})
}

// FuzzUnmarshalBody frames the input with a valid header and CRC, so the
// fuzzer reaches the body decoder instead of stopping at the CRC check.
func FuzzUnmarshalBody(f *testing.F) {
	for _, tc := range testCheckpoints() {
		if tc.name == "large-100k-put-entries" {
			tc.c = largeCheckpoint(20)
		}
		b, err := Marshal(tc.c, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b[headerLen : len(b)-trailerLen])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in := frame(formatVersion, 0, body)
		c, err := Unmarshal(in, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		out, err := Marshal(c, nil)
		if err != nil {
			t.Fatalf("re-marshal: %v", err)
		}
		if !bytes.Equal(in, out) {
			t.Fatalf("accepted body is not canonical:\n in %x\nout %x", in, out)
		}
	})
}
