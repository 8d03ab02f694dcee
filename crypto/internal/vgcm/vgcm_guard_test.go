//go:build linux && amd64 && !purego

package vgcm

import (
	"bytes"
	"math/rand/v2"
	"syscall"
	"testing"
)

// guardedPage returns a page-sized slice surrounded by PROT_NONE pages, so
// any read or write outside it faults.
func guardedPage(t *testing.T) []byte {
	t.Helper()
	ps := syscall.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, 3*ps, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Skip("mmap:", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	if err := syscall.Mprotect(mem[:ps], syscall.PROT_NONE); err != nil {
		t.Skip("mprotect:", err)
	}
	if err := syscall.Mprotect(mem[2*ps:], syscall.PROT_NONE); err != nil {
		t.Skip("mprotect:", err)
	}
	return mem[ps : 2*ps : 2*ps]
}

// TestGuardPages places inputs and outputs flush against inaccessible pages
// (at both ends) to check that the masked tail loads/stores never touch
// memory outside the slices.
func TestGuardPages(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(21, 22))
	ours, ref := newPair(t, randBytes(r, 32))
	ptPage, outPage, adPage, noncePage := guardedPage(t), guardedPage(t), guardedPage(t), guardedPage(t)
	ps := len(ptPage)
	sizes := []int{}
	for n := 0; n <= 600; n++ {
		sizes = append(sizes, n)
	}
	sizes = append(sizes, 1000, 1024, 2047, ps-16, ps)
	for _, n := range sizes {
		for _, atEnd := range []bool{true, false} {
			var pt, ad, nonce []byte
			adn := n % 70
			if atEnd {
				pt = ptPage[ps-n:]
				ad = adPage[ps-adn:]
				nonce = noncePage[ps-12:]
			} else {
				pt = ptPage[:n:n]
				ad = adPage[:adn:adn]
				nonce = noncePage[:12:12]
			}
			copy(pt, randBytes(r, n))
			copy(ad, randBytes(r, adn))
			copy(nonce, randBytes(r, 12))
			want := ref.Seal(nil, nonce, pt, ad)
			if n+16 > ps {
				continue
			}
			// Output flush against the end of the page / start of the page.
			var dst []byte
			if atEnd {
				dst = outPage[ps-n-16 : ps-n-16]
			} else {
				dst = outPage[: 0 : n+16]
			}
			got := ours.Seal(dst, nonce, pt, ad)
			if !bytes.Equal(got, want) {
				t.Fatalf("guarded Seal n=%d atEnd=%v", n, atEnd)
			}
			// Open: ciphertext at the end of the input page, output at the
			// edge of the output page.
			var ct []byte
			if atEnd {
				ct = ptPage[ps-len(want):]
			} else {
				ct = ptPage[:len(want):len(want)]
			}
			copy(ct, want)
			if atEnd {
				dst = outPage[ps-n : ps-n]
			} else {
				dst = outPage[:0:n]
			}
			dec, err := ours.Open(dst, nonce, ct, ad)
			if err != nil {
				t.Fatalf("guarded Open n=%d atEnd=%v err=%v", n, atEnd, err)
			}
			wantPT, _ := ref.Open(nil, nonce, want, ad)
			if !bytes.Equal(dec, wantPT) {
				t.Fatalf("guarded Open plaintext mismatch n=%d atEnd=%v", n, atEnd)
			}
		}
	}
}
