package queue

// deque is a ring buffer of uint64 supporting push at both ends and pop at
// the front. Its backing array holds at most 2 slots per element (plus a
// small minimum): it grows to 1.5× when full and shrinks to 1.5× the length
// when less than half full, so memory stays ≤ 16 bytes per element while
// resizes remain amortized O(1).
type deque struct {
	buf   []uint64
	start int // index in buf of element 0
	n     int
}

const dequeMinCap = 16

func (d *deque) len() int { return d.n }

func (d *deque) idx(i int) int {
	j := d.start + i
	if j >= len(d.buf) {
		j -= len(d.buf)
	}
	return j
}

func (d *deque) at(i int) uint64 { return d.buf[d.idx(i)] }

func (d *deque) resize(c int) {
	if c < dequeMinCap {
		c = dequeMinCap
	}
	d.resizeInto(make([]uint64, c))
}

// resizeInto moves the elements into nb (used to its capacity), which must
// hold them all.
func (d *deque) resizeInto(nb []uint64) {
	nb = nb[:cap(nb)]
	if d.n > 0 {
		k := copy(nb, d.buf[d.start:min(len(d.buf), d.start+d.n)])
		copy(nb[k:d.n], d.buf)
	}
	d.buf, d.start = nb, 0
}

func (d *deque) grow() {
	if d.n == len(d.buf) {
		d.resize(len(d.buf) + len(d.buf)/2)
	}
}

func (d *deque) pushBack(v uint64) {
	d.grow()
	d.buf[d.idx(d.n)] = v
	d.n++
}

// pushBackN appends vs in order.
func (d *deque) pushBackN(vs []uint64) {
	if len(vs) == 0 {
		return
	}
	if need := d.n + len(vs); need > len(d.buf) {
		d.resize(max(need, len(d.buf)+len(d.buf)/2))
	}
	// The free slots run from the tail to the end of buf, then from 0 up to
	// start; when the tail has wrapped, they end at start and the first
	// copy holds all of vs.
	k := copy(d.buf[d.idx(d.n):], vs)
	copy(d.buf, vs[k:])
	d.n += len(vs)
}

func (d *deque) pushFront(v uint64) {
	d.grow()
	d.start--
	if d.start < 0 {
		d.start += len(d.buf)
	}
	d.buf[d.start] = v
	d.n++
}

// popFront drops the first element.
func (d *deque) popFront() {
	d.start++
	if d.start == len(d.buf) {
		d.start = 0
	}
	d.n--
	if d.n == 0 {
		d.start = 0
		if len(d.buf) > dequeMinCap {
			d.buf = nil
		}
		return
	}
	if len(d.buf) > dequeMinCap && d.n < len(d.buf)/2 {
		d.resize(d.n + d.n/2)
	}
}

// overlay holds the values written since a reference state (the base file,
// or a frozen snapshot) whose live range was [rH, rT). For a queue with live
// range [H, T) (T ≥ rT always: the tail never moves backwards):
//
//   - pre holds positions [H, rH) (empty when H ≥ rH): written by PushFront
//     below the reference head; all of them must be stored.
//   - post holds positions [postLo, T) with max(H, rH) ≤ postLo and
//     postLo ≤ max(rT, H): everything appended since (≥ rT) plus, when a
//     PushFront wrote a changed value inside [rH, rT), the span from that
//     position up (filled from the reference).
//   - positions in [max(H, rH), postLo) are unchanged and read from the
//     reference: they cost no memory.
//
// Every stored value belongs to a live position (pops trim both deques), so
// an overlay costs at most 8 bytes (16 with ring slack) per queued event it
// covers and nothing for unchanged ones.
type overlay struct {
	rH, rT uint64
	pre    deque
	postLo uint64
	post   deque
}

func newOverlay(h, t uint64) overlay {
	return overlay{rH: h, rT: t, postLo: t}
}

// lookup returns the stored value for live position p, or ok == false when
// p falls through to the reference.
func (o *overlay) lookup(p uint64) (uint64, bool) {
	if p < o.rH {
		return o.pre.at(int(p - (o.rH - uint64(o.pre.len())))), true
	}
	if p >= o.postLo {
		return o.post.at(int(p - o.postLo)), true
	}
	return 0, false
}

// entries returns the number of values stored.
func (o *overlay) entries() int { return o.pre.len() + o.post.len() }
