package filestore

// Stable channel offsets.
//
// Every event committed to a channel gets the channel's next offset, once:
// offsets start at 1, are unique and increase in the order events enter the
// channel, and an event keeps its offset through rollbacks, checkpoints and
// restarts (channel.Event.Offset on every taken event). A sink derives
// idempotent writes from them.
//
// Where they come from. A put commit takes its offsets when its commit
// record is written, under Store.orderMu, which also serialises the commit
// records' WAL writes: the order of offsets is the order of commit
// write-order ids, the order replay applies commits in. Commits become
// visible (their events enter the queues) in that same order, through the
// publication gate (publish in txn.go), so a queue is always sorted by
// offset and replay rebuilds exactly the offsets takers saw. A commit whose
// fdatasync failed keeps its offsets (they are skipped: replay assigns them
// too and then retracts the commit), a commit whose record could not be
// written gives them back before anyone else takes any.
//
// Where they live. The queue holds WAL pointers only; offsets are a run list
// beside it, per channel: runs of consecutive offsets at consecutive queue
// positions. Puts extend the last run, so a queue is one run unless take
// rollbacks or skipped commits cut it. Checkpoints store the list with the
// channel's next offset (checkpoint.Channel), in-flight takes their events'
// offsets and committing puts theirs (checkpoint.TakeEntry/PutEntry), so
// recovery needs nothing else.

// offRun says that queue positions from pos up to the next run's pos hold
// offsets off, off+1, ….
type offRun struct {
	pos, off uint64
}

// offList is a channel's run list for the queue positions [head, tail).
// Guarded by Store.mu with the queue.
type offList struct {
	runs  []offRun // sorted by pos; runs[start:] are live
	start int
	tail  uint64 // queue position after the last event
}

// live returns the live runs.
func (l *offList) live() []offRun { return l.runs[l.start:] }

// reset empties the list at queue position pos.
func (l *offList) reset(pos uint64) {
	l.runs, l.start, l.tail = l.runs[:0], 0, pos
}

// at returns the offset of the event at queue position p (head ≤ p < tail).
func (l *offList) at(p uint64) uint64 {
	r := l.live()
	lo, hi := 0, len(r) // last run with pos <= p
	for hi-lo > 1 {
		m := (lo + hi) / 2
		if r[m].pos <= p {
			lo = m
		} else {
			hi = m
		}
	}
	if len(r) == 0 {
		return 0
	}
	return r[lo].off + (p - r[lo].pos)
}

// pushBack records n events appended at the tail with offsets off….
func (l *offList) pushBack(off uint64, n int) {
	if n == 0 {
		return
	}
	if r := l.live(); len(r) > 0 {
		last := r[len(r)-1]
		if last.off+(l.tail-last.pos) == off {
			l.tail += uint64(n)
			return
		}
	}
	l.runs = append(l.runs, offRun{pos: l.tail, off: off})
	l.tail += uint64(n)
}

// popFront drops the head event, at queue position head, whose offset is
// returned.
func (l *offList) popFront(head uint64) uint64 {
	off := l.at(head)
	r := l.live()
	if len(r) > 1 && r[1].pos <= head+1 {
		l.start++
		if l.start > 64 && l.start > len(l.runs)/2 {
			n := copy(l.runs, l.runs[l.start:])
			l.runs, l.start = l.runs[:n], 0
		}
	}
	return off
}

// pushFront records events with offsets offs (increasing) put back at the
// head, whose new position is head.
func (l *offList) pushFront(head uint64, offs []uint64) {
	if len(offs) == 0 {
		return
	}
	var pre []offRun
	for i, o := range offs {
		p := head + uint64(i)
		if n := len(pre); n > 0 && pre[n-1].off+(p-pre[n-1].pos) == o {
			continue
		}
		pre = append(pre, offRun{pos: p, off: o})
	}
	r := l.live()
	// The old head run now starts after the pushed events; it may continue
	// the last pushed run.
	end := head + uint64(len(offs))
	if len(r) > 0 {
		first := r[0]
		r[0] = offRun{pos: end, off: first.off + (end - first.pos)}
		if last := pre[len(pre)-1]; last.off+(end-last.pos) == r[0].off {
			r = r[1:]
		}
	} else {
		l.tail = end
	}
	l.runs = append(pre, r...)
	l.start = 0
}
