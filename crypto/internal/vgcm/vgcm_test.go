package vgcm

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
)

func skipIfUnsupported(tb testing.TB) {
	tb.Helper()
	if !Supported() {
		if _, err := New(make([]byte, 32)); err == nil {
			tb.Fatal("New succeeded although Supported() is false")
		}
		tb.Skip("vgcm: CPU lacks AVX-512 VAES/VPCLMULQDQ; accelerated AES-GCM not tested")
	}
}

func newPair(tb testing.TB, key []byte) (ours, ref cipher.AEAD) {
	tb.Helper()
	ours, err := New(key)
	if err != nil {
		tb.Fatal(err)
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	ref, err = cipher.NewGCM(blk)
	if err != nil {
		tb.Fatal(err)
	}
	return ours, ref
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// check seals with both implementations, compares, and cross-opens.
func check(t *testing.T, ours, ref cipher.AEAD, nonce, pt, ad []byte) {
	t.Helper()
	want := ref.Seal(nil, nonce, pt, ad)
	got := ours.Seal(nil, nonce, pt, ad)
	if !bytes.Equal(got, want) {
		t.Fatalf("Seal mismatch len(pt)=%d len(ad)=%d\n got %x\nwant %x", len(pt), len(ad), got, want)
	}
	dec, err := ours.Open(nil, nonce, want, ad)
	if err != nil || !bytes.Equal(dec, pt) {
		t.Fatalf("Open(stdlib ciphertext) failed len(pt)=%d len(ad)=%d err=%v", len(pt), len(ad), err)
	}
	dec, err = ref.Open(nil, nonce, got, ad)
	if err != nil || !bytes.Equal(dec, pt) {
		t.Fatalf("stdlib Open(our ciphertext) failed len(pt)=%d len(ad)=%d err=%v", len(pt), len(ad), err)
	}
}

func TestNewErrors(t *testing.T) {
	skipIfUnsupported(t)
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := New(make([]byte, n)); err == nil {
			t.Errorf("New with %d-byte key succeeded", n)
		}
	}
	a, err := New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if a.NonceSize() != 12 || a.Overhead() != 16 {
		t.Fatalf("NonceSize %d Overhead %d", a.NonceSize(), a.Overhead())
	}
}

// Known-answer test: NIST GCM test vector (AES-256, test case 16 of the
// original GCM spec, truncated to the 96-bit-nonce form).
func TestKnownAnswer(t *testing.T) {
	skipIfUnsupported(t)
	key := unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
	nonce := unhex("cafebabefacedbaddecaf888")
	pt := unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39")
	ad := unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
	want := unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662" +
		"76fc6ece0f4e1768cddf8853bb2d551b")
	a, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Seal(nil, nonce, pt, ad); !bytes.Equal(got, want) {
		t.Fatalf("got %x\nwant %x", got, want)
	}
}

func unhex(s string) []byte {
	var b []byte
	_, err := fmt.Sscanf(s, "%x", &b)
	if err != nil {
		panic(err)
	}
	return b
}

func TestAllLengths(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 3; iter++ {
		key := randBytes(r, 32)
		ours, ref := newPair(t, key)
		pt := randBytes(r, 1101)
		ad := randBytes(r, 81)
		for n := 0; n <= 1100; n++ {
			nonce := randBytes(r, 12)
			adn := (n + iter) % 81
			check(t, ours, ref, nonce, pt[:n], ad[:adn])
		}
	}
}

func TestADLengths(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(3, 4))
	key := randBytes(r, 32)
	ours, ref := newPair(t, key)
	ad := randBytes(r, 5000)
	for _, n := range []int{0, 1, 15, 16, 17, 63, 64, 65, 100, 255, 256, 257, 1024} {
		pt := randBytes(r, n)
		for adn := 0; adn <= 80; adn++ {
			check(t, ours, ref, randBytes(r, 12), pt, ad[:adn])
		}
		for _, adn := range []int{127, 128, 129, 255, 256, 257, 1000, 4999, 5000} {
			check(t, ours, ref, randBytes(r, 12), pt, ad[:adn])
		}
	}
}

func TestRandomLarge(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(5, 6))
	iters := 300
	if testing.Short() {
		iters = 50
	}
	for i := 0; i < iters; i++ {
		ours, ref := newPair(t, randBytes(r, 32))
		n := r.IntN(70 * 1024)
		check(t, ours, ref, randBytes(r, 12), randBytes(r, n), randBytes(r, r.IntN(100)))
	}
	// Explicit ~64 KiB messages, including exactly 64 KiB and odd sizes.
	ours, ref := newPair(t, randBytes(r, 32))
	for _, n := range []int{65535, 65536, 65537, 64*1024 + 200, 70 * 1024} {
		check(t, ours, ref, randBytes(r, 12), randBytes(r, n), randBytes(r, 16))
	}
}

// Nonces whose bytes are all 0xff or 0x00 (the counter field is separate
// from the nonce for 96-bit nonces, but exercise them anyway).
func TestSpecialNonces(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(7, 8))
	ours, ref := newPair(t, randBytes(r, 32))
	for _, nonce := range [][]byte{bytes.Repeat([]byte{0xff}, 12), make([]byte, 12)} {
		for _, n := range []int{0, 1, 16, 255, 256, 1024, 65536 + 17} {
			check(t, ours, ref, nonce, randBytes(r, n), randBytes(r, 13))
		}
	}
}

func TestDstPrefixAndOffsets(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(9, 10))
	ours, ref := newPair(t, randBytes(r, 32))
	for _, n := range []int{0, 1, 15, 16, 17, 64, 100, 128, 200, 256, 257, 1000, 1024, 4097} {
		for _, off := range []int{0, 1, 3, 7, 13} {
			nonce := randBytes(r, 12)
			ad := randBytes(r, 16+off)[off:]
			ptBuf := randBytes(r, n+off)
			pt := ptBuf[off:]
			want := ref.Seal(nil, nonce, pt, ad)

			// Non-empty prefix, no spare capacity (forces reallocation).
			prefix := randBytes(r, 5+off)
			got := ours.Seal(prefix[:len(prefix):len(prefix)], nonce, pt, ad)
			if !bytes.Equal(got[:len(prefix)], prefix) || !bytes.Equal(got[len(prefix):], want) {
				t.Fatalf("Seal with prefix n=%d off=%d", n, off)
			}
			// Prefix with spare capacity, output at odd offset.
			buf := make([]byte, off+3, off+3+n+16+9)
			copy(buf, prefix)
			got = ours.Seal(buf, nonce, pt, ad)
			if &got[0] != &buf[0] {
				t.Fatal("Seal reallocated despite spare capacity")
			}
			if !bytes.Equal(got[off+3:], want) || !bytes.Equal(got[:off+3], buf[:off+3]) {
				t.Fatalf("Seal with capacity n=%d off=%d", n, off)
			}
			// Guard bytes beyond the output must be untouched.
			full := buf[:cap(buf)]
			for i := off + 3 + n + 16; i < len(full); i++ {
				if full[i] != 0 {
					t.Fatalf("Seal wrote beyond output (n=%d off=%d)", n, off)
				}
			}

			// Open with prefix and at odd offsets.
			ctBuf := make([]byte, off+len(want))
			copy(ctBuf[off:], want)
			ct := ctBuf[off:]
			obuf := make([]byte, off, off+n+7)
			dec, err := ours.Open(obuf, nonce, ct, ad)
			if err != nil || !bytes.Equal(dec[off:], pt) {
				t.Fatalf("Open with prefix n=%d off=%d err=%v", n, off, err)
			}
			full = obuf[:cap(obuf)]
			for i := off + n; i < len(full); i++ {
				if full[i] != 0 {
					t.Fatalf("Open wrote beyond output (n=%d off=%d)", n, off)
				}
			}
		}
	}
}

func TestInPlace(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(11, 12))
	ours, ref := newPair(t, randBytes(r, 32))
	for n := 0; n <= 600; n++ {
		for _, off := range []int{0, 1, 5} {
			nonce := randBytes(r, 12)
			ad := randBytes(r, 16)
			pt := randBytes(r, n)
			want := ref.Seal(nil, nonce, pt, ad)

			buf := make([]byte, off+n+16)
			b := buf[off:]
			copy(b, pt)
			ct := ours.Seal(b[:0], nonce, b[:n], ad)
			if !bytes.Equal(ct, want) || &ct[0] != &b[0] {
				t.Fatalf("in-place Seal n=%d off=%d", n, off)
			}
			dec, err := ours.Open(ct[:0], nonce, ct, ad)
			if err != nil || !bytes.Equal(dec, pt) {
				t.Fatalf("in-place Open n=%d off=%d err=%v", n, off, err)
			}
		}
	}
}

func expectPanic(t *testing.T, substr string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("expected panic containing %q", substr)
		}
		if s := fmt.Sprint(r); !strings.Contains(s, substr) {
			t.Fatalf("panic %q does not contain %q", s, substr)
		}
	}()
	f()
}

func TestPanics(t *testing.T) {
	skipIfUnsupported(t)
	a, _ := New(make([]byte, 32))
	nonce := make([]byte, 12)
	for _, nl := range []int{0, 11, 13, 16} {
		expectPanic(t, "incorrect nonce length", func() { a.Seal(nil, make([]byte, nl), nil, nil) })
		expectPanic(t, "incorrect nonce length", func() { a.Open(nil, make([]byte, nl), make([]byte, 16), nil) })
	}
	buf := make([]byte, 200)
	expectPanic(t, "invalid buffer overlap", func() { a.Seal(buf[1:1], nonce, buf[:100], nil) })
	expectPanic(t, "invalid buffer overlap", func() { a.Seal(buf[:0], nonce, buf[1:100], nil) })
	expectPanic(t, "invalid buffer overlap", func() { a.Seal(buf[:0], nonce, buf[:50], buf[60:70]) })
	ct := a.Seal(nil, nonce, make([]byte, 100), nil)
	copy(buf, ct)
	expectPanic(t, "invalid buffer overlap", func() { a.Open(buf[1:1], nonce, buf[:len(ct)], nil) })
	expectPanic(t, "invalid buffer overlap", func() { a.Open(buf[:0], nonce, buf[:len(ct)], buf[50:60]) })
	// Exact overlap is allowed.
	if _, err := a.Open(buf[:0], nonce, buf[:len(ct)], nil); err != nil {
		t.Fatal(err)
	}
	// Short ciphertexts fail without panicking.
	for n := 0; n < 16; n++ {
		if out, err := a.Open(nil, nonce, make([]byte, n), nil); err == nil || out != nil {
			t.Fatalf("Open of %d-byte ciphertext succeeded", n)
		}
	}
}

// tamperCheck verifies that Open fails, returns nil and leaves dst's new
// region zeroed.
func tamperCheck(t *testing.T, a cipher.AEAD, nonce, ct, ad []byte, what string, i int) {
	t.Helper()
	out := make([]byte, 0, len(ct))
	res, err := a.Open(out, nonce, ct, ad)
	if err == nil || res != nil {
		t.Fatalf("tampered %s byte %d accepted", what, i)
	}
	for j, c := range out[:cap(out)] {
		if c != 0 {
			t.Fatalf("tampered %s byte %d: output byte %d not cleared", what, i, j)
		}
	}
}

func TestTamper(t *testing.T) {
	skipIfUnsupported(t)
	r := rand.New(rand.NewPCG(13, 14))
	a, _ := New(randBytes(r, 32))
	for _, n := range []int{0, 1, 15, 16, 17, 31, 64, 65, 100, 129, 256, 257, 300, 1024, 1040, 20000} {
		nonce := randBytes(r, 12)
		ad := randBytes(r, 1+n%40)
		pt := randBytes(r, n)
		ct := a.Seal(nil, nonce, pt, ad)
		positions := func(l int) []int {
			if l <= 1100 {
				p := make([]int, l)
				for i := range p {
					p[i] = i
				}
				return p
			}
			p := []int{0, l - 1, l - 16, l - 17}
			for k := 0; k < 200; k++ {
				p = append(p, r.IntN(l))
			}
			return p
		}
		for _, i := range positions(len(ct)) {
			bit := byte(1) << r.IntN(8)
			ct[i] ^= bit
			tamperCheck(t, a, nonce, ct, ad, "ciphertext/tag", i)
			ct[i] ^= bit
		}
		for _, i := range positions(len(ad)) {
			ad[i] ^= 0x80
			tamperCheck(t, a, nonce, ct, ad, "ad", i)
			ad[i] ^= 0x80
		}
		for i := range nonce {
			nonce[i] ^= 1
			tamperCheck(t, a, nonce, ct, ad, "nonce", i)
			nonce[i] ^= 1
		}
		// Truncation / extension of AD.
		tamperCheck(t, a, nonce, ct, append(ad[:len(ad):len(ad)], 0), "ad-extended", 0)
		tamperCheck(t, a, nonce, ct, ad[:len(ad)-1], "ad-truncated", 0)
		if len(ct) > 16 {
			tamperCheck(t, a, nonce, ct[:len(ct)-1], ad, "ct-truncated", 0)
		}
		dec, err := a.Open(nil, nonce, ct, ad)
		if err != nil || !bytes.Equal(dec, pt) {
			t.Fatal("untampered message rejected")
		}
	}
}

// In-place Open with a bad tag must clear the buffer too.
func TestTamperInPlace(t *testing.T) {
	skipIfUnsupported(t)
	a, _ := New(make([]byte, 32))
	nonce := make([]byte, 12)
	ct := a.Seal(nil, nonce, bytes.Repeat([]byte{7}, 300), nil)
	ct[len(ct)-1] ^= 1
	if res, err := a.Open(ct[:0], nonce, ct, nil); err == nil || res != nil {
		t.Fatal("accepted")
	}
	for i := 0; i < 300; i++ {
		if ct[i] != 0 {
			t.Fatal("not cleared")
		}
	}
}

// The AEAD is immutable after New and must be safe for concurrent use.
func TestConcurrent(t *testing.T) {
	skipIfUnsupported(t)
	key := make([]byte, 32)
	key[0] = 9
	ours, ref := newPair(t, key)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 99))
			for i := 0; i < 200; i++ {
				nonce, pt, ad := randBytes(r, 12), randBytes(r, r.IntN(3000)), randBytes(r, 16)
				ct := ours.Seal(nil, nonce, pt, ad)
				if !bytes.Equal(ct, ref.Seal(nil, nonce, pt, ad)) {
					errs <- "Seal mismatch"
					return
				}
				if dec, err := ours.Open(nil, nonce, ct, ad); err != nil || !bytes.Equal(dec, pt) {
					errs <- "Open mismatch"
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func FuzzSealOpen(f *testing.F) {
	if !Supported() {
		f.Skip("vgcm: CPU lacks AVX-512 VAES/VPCLMULQDQ")
	}
	f.Add(make([]byte, 32), make([]byte, 12), []byte("hello"), []byte("ad"))
	f.Add(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 12), make([]byte, 1024), make([]byte, 16))
	f.Add(bytes.Repeat([]byte{3}, 40), bytes.Repeat([]byte{4}, 12), make([]byte, 257), []byte{})
	f.Fuzz(func(t *testing.T, key, nonce, pt, ad []byte) {
		if len(key) < 32 || len(nonce) < 12 {
			return
		}
		key, nonce = key[:32], nonce[:12]
		ours, ref := newPair(t, key)
		check(t, ours, ref, nonce, pt, ad)
		ct := ours.Seal(nil, nonce, pt, ad)
		if len(pt) > 0 {
			ct[len(pt)/2] ^= 1
			if _, err := ours.Open(nil, nonce, ct, ad); err == nil {
				t.Fatal("tampered ciphertext accepted")
			}
		}
	})
}

var benchSizes = []int{128, 1024, 16384}

func benchImpls(b *testing.B) []struct {
	name string
	a    cipher.AEAD
} {
	key := make([]byte, 32)
	blk, _ := aes.NewCipher(key)
	std, _ := cipher.NewGCM(blk)
	impls := []struct {
		name string
		a    cipher.AEAD
	}{{"stdlib", std}}
	if Supported() {
		v, err := New(key)
		if err != nil {
			b.Fatal(err)
		}
		impls = append(impls, struct {
			name string
			a    cipher.AEAD
		}{"vgcm", v})
	}
	return impls
}

func BenchmarkSeal(b *testing.B) {
	for _, impl := range benchImpls(b) {
		b.Run(impl.name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					nonce := make([]byte, 12)
					ad := make([]byte, 16)
					pt := make([]byte, n)
					out := make([]byte, 0, n+16)
					b.SetBytes(int64(n))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						out = impl.a.Seal(out[:0], nonce, pt, ad)
					}
				})
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, impl := range benchImpls(b) {
		b.Run(impl.name, func(b *testing.B) {
			for _, n := range benchSizes {
				b.Run(fmt.Sprint(n), func(b *testing.B) {
					nonce := make([]byte, 12)
					ad := make([]byte, 16)
					ct := impl.a.Seal(nil, nonce, make([]byte, n), ad)
					out := make([]byte, 0, n)
					b.SetBytes(int64(n))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						var err error
						out, err = impl.a.Open(out[:0], nonce, ct, ad)
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
