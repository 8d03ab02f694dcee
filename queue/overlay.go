package queue

// deque is a double-ended queue of uint64 kept in fixed-size blocks: it
// supports push at both ends and pop at the front, and never moves stored
// values, so growing costs no copy and no transient double allocation. It
// holds at most one partly used block at each end beyond its elements
// (8 bytes each). Emptied blocks go to the queue's blockPool for reuse.
type deque struct {
	blocks [][]uint64 // each dequeBlock values long
	first  int        // index in blocks[0] of element 0
	n      int
	pool   *blockPool
}

// dequeBlock is the number of values per block (8 KiB).
const dequeBlock = 1024

// blockPool keeps emptied deque blocks of one queue for reuse, up to keep of
// them: an overlay refills to about the same size every checkpoint interval,
// and allocating that much afresh each time costs fresh (zeroed) memory.
type blockPool struct {
	free [][]uint64
	keep int
}

func (p *blockPool) get() []uint64 {
	if p != nil && len(p.free) > 0 {
		b := p.free[len(p.free)-1]
		p.free[len(p.free)-1] = nil
		p.free = p.free[:len(p.free)-1]
		return b
	}
	return make([]uint64, dequeBlock)
}

func (p *blockPool) put(b []uint64) {
	if p != nil && len(p.free) < p.keep {
		p.free = append(p.free, b)
	}
}

// trim drops pooled blocks beyond keep.
func (p *blockPool) trim() {
	for len(p.free) > p.keep {
		p.free[len(p.free)-1] = nil
		p.free = p.free[:len(p.free)-1]
	}
}

func (d *deque) len() int { return d.n }

func (d *deque) at(i int) uint64 {
	j := d.first + i
	return d.blocks[j/dequeBlock][j%dequeBlock]
}

func (d *deque) pushBack(v uint64) {
	j := d.first + d.n
	if j/dequeBlock == len(d.blocks) {
		d.blocks = append(d.blocks, d.pool.get())
	}
	d.blocks[j/dequeBlock][j%dequeBlock] = v
	d.n++
}

// pushBackN appends vs in order.
func (d *deque) pushBackN(vs []uint64) {
	for len(vs) > 0 {
		j := d.first + d.n
		if j/dequeBlock == len(d.blocks) {
			d.blocks = append(d.blocks, d.pool.get())
		}
		k := copy(d.blocks[j/dequeBlock][j%dequeBlock:], vs)
		d.n += k
		vs = vs[k:]
	}
}

func (d *deque) pushFront(v uint64) {
	if d.first == 0 {
		d.blocks = append(d.blocks, nil)
		copy(d.blocks[1:], d.blocks)
		d.blocks[0] = d.pool.get()
		d.first = dequeBlock
	}
	d.first--
	d.blocks[0][d.first] = v
	d.n++
}

// popFront drops the first element.
func (d *deque) popFront() {
	d.first++
	d.n--
	if d.n == 0 {
		d.release()
		return
	}
	if d.first == dequeBlock {
		d.pool.put(d.blocks[0])
		d.blocks[0] = nil
		d.blocks = d.blocks[1:]
		d.first = 0
	}
}

// release empties d, giving its blocks to the pool.
func (d *deque) release() {
	for i, b := range d.blocks {
		d.pool.put(b)
		d.blocks[i] = nil
	}
	d.blocks, d.first, d.n = d.blocks[:0], 0, 0
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
// an overlay costs 8 bytes (plus at most two partly used blocks per deque)
// per queued event it covers and nothing for unchanged ones.
type overlay struct {
	rH, rT uint64
	pre    deque
	postLo uint64
	post   deque
}

func newOverlay(h, t uint64, pool *blockPool) overlay {
	return overlay{rH: h, rT: t, postLo: t, pre: deque{pool: pool}, post: deque{pool: pool}}
}

// blockCount is the number of blocks the overlay's deques hold.
func (o *overlay) blockCount() int { return len(o.pre.blocks) + len(o.post.blocks) }

// release gives the overlay's blocks to the pool.
func (o *overlay) release() {
	o.pre.release()
	o.post.release()
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
