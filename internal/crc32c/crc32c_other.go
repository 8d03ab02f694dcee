//go:build !amd64

package crc32c

const (
	foldMin = 1 << 62
	hasFold = false
)

func foldUpdate(crc uint32, p []byte, k *[18]uint64) uint32 {
	panic("crc32c: no folding on this architecture")
}
