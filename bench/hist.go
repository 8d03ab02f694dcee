package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records durations (nanoseconds) in log-linear buckets: values
// below 128 ns are exact, larger ones fall into one of 64 buckets per power
// of two, so a reported percentile is within 1/64 (1.6 %) of the true value.
// Min, max, count and sum are exact. The zero value is ready to use; it is
// not safe for concurrent use (give each worker its own and Merge them).
type Histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64
	min, max int64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // 128: exact region and mantissa range top
	histHalf    = histSub / 2      // 64 buckets per power of two
	histBuckets = (64-histSubBits)*histHalf + histSub
)

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	if u < histSub {
		return int(u)
	}
	e := bits.Len64(u) - histSubBits // ≥ 1
	m := u >> uint(e)                // in [64, 128)
	return e*histHalf + int(m)
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	e := i/histHalf - 1
	m := uint64(i - e*histHalf)
	lo = int64(m << uint(e))
	hi = int64((m+1)<<uint(e)) - 1
	return lo, hi
}

// Record adds one value.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average recorded value.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Percentile returns the value at quantile q (0 < q ≤ 1): the smallest
// recorded value v such that at least q of the values are ≤ v (nearest
// rank), reported as the middle of its bucket and clamped to [min, max].
func (h *Histogram) Percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank > h.n {
		rank = h.n
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			v = max(h.min, min(h.max, v))
			return time.Duration(v)
		}
	}
	return time.Duration(h.max)
}
