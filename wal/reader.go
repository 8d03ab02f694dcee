package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/sluicehq/sluice/internal/crc32c"
)

// Reading: single records by pointer, and whole-log replay.
//
// Replay reads each directory's segments in id order with a segScanner,
// which validates records one by one. At an invalid record it looks further
// into the segment (8-byte aligned, skipping zeroes a word at a time) for a
// valid record with a larger WOID: if there is one, the bytes in between are
// reported as damage and reading continues there; if not, the invalid record
// was the end of the written data (a torn tail, or zeroes), unless a later
// segment of the directory turns out to hold records (dirReader.unsealed).
// The directories' record streams are merged by WOID.

// ReadRecord reads and verifies the record at p. The payload may alias buf,
// which is grown if short. It is safe to call concurrently with Write.
func (w *WAL) ReadRecord(p Pointer, buf []byte) (Record, error) {
	w.mu.RLock()
	s := w.segs[p.Segment()]
	w.mu.RUnlock()
	if s == nil {
		return Record{}, fmt.Errorf("wal: read %v: unknown segment %d", p, p.Segment())
	}
	off := int64(p.Offset())
	if off < segmentHeaderSize || off%recordAlign != 0 || off+recordHeaderSize > s.size {
		return Record{}, fmt.Errorf("wal: read %v: offset %d is not a record position in %s", p, off, s.path)
	}
	f, release, err := s.reader()
	if err != nil {
		return Record{}, err
	}
	defer release()

	if cap(buf) < 512 {
		buf = make([]byte, 512)
	}
	buf = buf[:min(int64(cap(buf)), s.size-off)]
	n, err := f.ReadAt(buf, off)
	if n < recordHeaderSize {
		if err == nil || errors.Is(err, io.EOF) {
			return Record{}, &CorruptionError{File: s.path, Offset: off, Reason: "record header beyond end of file"}
		}
		return Record{}, fmt.Errorf("wal: reading %s at offset %d: %w", s.path, off, err)
	}
	h := decodeRecordHeader(buf)
	end := s.readEnd()
	if off+recordHeaderSize > end {
		return Record{}, &CorruptionError{File: s.path, Offset: off, Reason: fmt.Sprintf("no record here: the segment's records end at offset %d", end)}
	}
	if reason := checkRecordHeader(h, off, end); reason != "" {
		return Record{}, &CorruptionError{File: s.path, Offset: off, Reason: reason}
	}
	need := recordHeaderSize + int(h.Length)
	if n < need {
		if cap(buf) < need && need > maxUncheckedRead {
			// The length is not validated yet (one flipped bit makes
			// it up to a segment): checksum the record by streaming
			// before allocating for it.
			if err := streamCheck(f, s, off, h, buf[:n], need); err != nil {
				return Record{}, err
			}
		}
		if cap(buf) < need {
			nb := make([]byte, need)
			copy(nb, buf[:n])
			buf = nb
		}
		buf = buf[:need]
		m, err := f.ReadAt(buf[n:need], off+int64(n))
		if m < need-n {
			if err == nil || errors.Is(err, io.EOF) {
				return Record{}, &CorruptionError{File: s.path, Offset: off, Reason: "record payload beyond end of file"}
			}
			return Record{}, fmt.Errorf("wal: reading %s at offset %d: %w", s.path, off+int64(n), err)
		}
	}
	rec, reason := decodeRecord(segmentSeed(s.id), buf[:need], off, end)
	if reason != "" {
		return Record{}, &CorruptionError{File: s.path, Offset: off, Reason: reason}
	}
	return w.decodePayload(rec, s, off, nil)
}

// maxUncheckedRead is the largest record ReadRecord allocates for before
// its checksum is verified; a longer one is checksummed by streaming it
// through a buffer of at most streamChunk bytes first.
const (
	maxUncheckedRead = 1 << 20
	streamChunk      = 64 << 10
)

// readEnd bounds where a record of s can end: the end of the completed
// appends for a segment this process wrote (a pointer Write returned never
// lies beyond it), else the end of the valid records Replay read in it (a
// pointer into it comes from a checkpoint before them or from Replay), else
// the segment size.
func (s *segment) readEnd() int64 {
	if w := s.written.Load(); w > 0 {
		return w
	}
	if v := s.validEnd.Load(); v > 0 {
		return v
	}
	return s.size
}

// streamCheck verifies the checksum of the need-byte record at off of s
// whose first bytes are in head, reading the rest in bounded chunks, so
// that a corrupt length costs reads, not an allocation of its size.
func streamCheck(f io.ReaderAt, s *segment, off int64, h recordHeader, head []byte, need int) error {
	crc := crc32c.Update(segmentSeed(s.id), head[4:])
	chunk := make([]byte, min(streamChunk, need-len(head)))
	for pos := len(head); pos < need; {
		k := min(len(chunk), need-pos)
		m, err := f.ReadAt(chunk[:k], off+int64(pos))
		if m < k {
			if err == nil || errors.Is(err, io.EOF) {
				return &CorruptionError{File: s.path, Offset: off, Reason: fmt.Sprintf("record length %d: payload beyond end of file", h.Length)}
			}
			return fmt.Errorf("wal: reading %s at offset %d: %w", s.path, off+int64(pos), err)
		}
		crc = crc32c.Update(crc, chunk[:k])
		pos += k
	}
	if crc != h.CRC {
		return &CorruptionError{File: s.path, Offset: off, Reason: fmt.Sprintf("record length %d: checksum mismatch (stored %08x, computed %08x)", h.Length, h.CRC, crc)}
	}
	return nil
}

// readSpan bounds the bytes one pread of ReadRecords covers; readAhead is
// how far past the last pointer of a run it reads to catch that record whole.
const (
	readSpan  = 1 << 20
	readAhead = 4 << 10
)

// ReadRecords reads and verifies the records at ps and calls fn with each,
// in order: the record, or the error ReadRecord would have returned for it
// (e.g. a *CorruptionError), after which reading goes on. rec.Payload is
// valid only during fn. Runs of pointers into one segment at ascending
// offsets less than readSpan apart are read with one pread, so a stretch of
// consecutive records costs one system call, not one each. buf is a reusable
// read buffer; the grown buffer is returned. An error from fn stops the
// reading and is returned. Safe to call concurrently with Write.
func (w *WAL) ReadRecords(ps []Pointer, buf []byte, fn func(i int, rec Record, err error) error) ([]byte, error) {
	var dec []byte // codec output, reused across records
	for i := 0; i < len(ps); {
		seg, lo := ps[i].Segment(), int64(ps[i].Offset())
		j := i + 1
		for j < len(ps) && ps[j].Segment() == seg && ps[j].Offset() > ps[j-1].Offset() && int64(ps[j].Offset())-lo < readSpan {
			j++
		}
		w.mu.RLock()
		s := w.segs[seg]
		w.mu.RUnlock()
		var data []byte
		var seed uint32
		if j > i+1 && s != nil && lo >= segmentHeaderSize && lo < s.size {
			seed = segmentSeed(seg)
			hi := min(int64(ps[j-1].Offset())+readAhead, s.size)
			if int64(cap(buf)) < hi-lo {
				buf = make([]byte, hi-lo)
			}
			if f, release, err := s.reader(); err == nil {
				n, _ := f.ReadAt(buf[:hi-lo], lo)
				release()
				data = buf[:n] // a short read leaves the rest to ReadRecord
			}
		}
		for k := i; k < j; k++ {
			rec, ok, err := w.recordInRun(s, seed, data, lo, int64(ps[k].Offset()), &dec)
			if !ok {
				// Not wholly in the run's buffer (or no buffer): the
				// single-record path reads it and names any error. It
				// may use buf only when no run is being decoded from it.
				var scratch []byte
				if data == nil {
					scratch = buf
				}
				rec, err = w.ReadRecord(ps[k], scratch)
			}
			if ferr := fn(k, rec, err); ferr != nil {
				return buf, ferr
			}
		}
		i = j
	}
	return buf, nil
}

// recordInRun decodes the record at segment offset off from data, which holds
// s from offset lo on. ok is false when the record does not lie wholly in
// data at a valid record position: ReadRecord then decides.
func (w *WAL) recordInRun(s *segment, seed uint32, data []byte, lo, off int64, dec *[]byte) (Record, bool, error) {
	rel := off - lo
	if s == nil || off%recordAlign != 0 || rel < 0 || rel+recordHeaderSize > int64(len(data)) {
		return Record{}, false, nil
	}
	h := decodeRecordHeader(data[rel:])
	segEnd := s.readEnd()
	if off+recordHeaderSize > segEnd {
		return Record{}, false, nil // ReadRecord names the problem
	}
	if reason := checkRecordHeader(h, off, segEnd); reason != "" {
		return Record{}, true, &CorruptionError{File: s.path, Offset: off, Reason: reason}
	}
	end := rel + recordHeaderSize + int64(h.Length)
	if end > int64(len(data)) {
		return Record{}, false, nil
	}
	rec, reason := decodeRecord(seed, data[rel:end], off, segEnd)
	if reason != "" {
		return Record{}, true, &CorruptionError{File: s.path, Offset: off, Reason: reason}
	}
	rec, err := w.decodePayload(rec, s, off, dec)
	return rec, true, err
}

// decodePayload passes a record's payload through the Codec.
func (w *WAL) decodePayload(rec Record, s *segment, off int64, scratch *[]byte) (Record, error) {
	file := s.path
	if w.opts.Codec == nil {
		if rec.Flags != 0 || rec.KeyID != 0 {
			return rec, fmt.Errorf("wal: %s offset %d: record has flags %#x and key id %d but no Codec is configured", file, off, rec.Flags, rec.KeyID)
		}
		return rec, nil
	}
	var dst []byte
	if scratch != nil {
		dst = (*scratch)[:0]
	}
	var out []byte
	var err error
	if rc, ok := w.opts.Codec.(RecordCodec); ok {
		out, err = rc.DecodeRecord(dst, rec.Payload, rec.Flags, rec.KeyID, RecordInfo{Type: rec.Type, TxnID: rec.TxnID, Segment: s.id, WOID: rec.WOID})
	} else {
		out, err = w.opts.Codec.Decode(dst, rec.Payload, rec.Flags, rec.KeyID)
	}
	if err != nil {
		return rec, fmt.Errorf("wal: %s offset %d: decoding payload: %w", file, off, err)
	}
	if scratch != nil {
		*scratch = out
	}
	rec.Payload = out
	return rec, nil
}

// windowSize is how much of a segment a scanner reads at once. Records
// larger than this are checksummed by streaming before being read whole.
const windowSize = 1 << 20

// maxWOIDJump bounds how far a record found while skipping damage may be
// ahead of the last good WOID; random bytes almost never fall in range.
const maxWOIDJump = 1 << 40

// segScanner reads the records of one segment sequentially.
type segScanner struct {
	s    *segment
	f    io.ReaderAt
	end  int64  // min(segment size, file size)
	seed uint32 // segmentSeed(s.id)

	win    []byte
	winOff int64
	winLen int
	big    []byte
}

// load makes [off, off+n) available in the window (n <= windowSize,
// off+n <= end) and returns it.
func (sc *segScanner) load(off int64, n int) ([]byte, error) {
	if off >= sc.winOff && off+int64(n) <= sc.winOff+int64(sc.winLen) {
		i := off - sc.winOff
		return sc.win[i : i+int64(n)], nil
	}
	if sc.win == nil {
		sc.win = make([]byte, windowSize)
	}
	want := int(min(windowSize, sc.end-off))
	m, err := sc.f.ReadAt(sc.win[:want], off)
	if m < want && err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && !(errors.Is(err, io.EOF) && m == want) {
		sc.winLen = 0
		return nil, fmt.Errorf("wal: reading %s at offset %d: %w", sc.s.path, off, err)
	}
	sc.winOff, sc.winLen = off, want
	return sc.win[:n], nil
}

// recordAt validates the record at off. It returns the record and its
// encoded size, or a reason it is not valid; err is an I/O error.
func (sc *segScanner) recordAt(off int64) (rec Record, size int64, reason string, err error) {
	if off+recordHeaderSize > sc.end {
		return Record{}, 0, "end of segment", nil
	}
	hb, err := sc.load(off, recordHeaderSize)
	if err != nil {
		return Record{}, 0, "", err
	}
	h := decodeRecordHeader(hb)
	if reason := checkRecordHeader(h, off, sc.end); reason != "" {
		return Record{}, 0, reason, nil
	}
	n := recordHeaderSize + int(h.Length)
	var data []byte
	if n <= windowSize {
		if data, err = sc.load(off, n); err != nil {
			return Record{}, 0, "", err
		}
	} else {
		// Checksum by streaming first so that a bogus length never causes a
		// large allocation.
		crc := segmentSeed(sc.s.id)
		for pos := 0; pos < n; {
			k := min(windowSize, n-pos)
			chunk, err := sc.load(off+int64(pos), k)
			if err != nil {
				return Record{}, 0, "", err
			}
			if pos == 0 {
				chunk = chunk[4:]
			}
			crc = crc32c.Update(crc, chunk)
			pos += k
		}
		if crc != h.CRC {
			return Record{}, 0, fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", h.CRC, crc), nil
		}
		if cap(sc.big) < n {
			sc.big = make([]byte, n)
		}
		data = sc.big[:n]
		if m, err := sc.f.ReadAt(data, off); m < n {
			return Record{}, 0, "", fmt.Errorf("wal: reading %s at offset %d: %w", sc.s.path, off, err)
		}
	}
	rec, reason = decodeRecord(sc.seed, data, off, sc.end)
	if reason != "" {
		return Record{}, 0, reason, nil
	}
	return rec, int64(encodedSize(int(h.Length))), "", nil
}

// skipZeros returns the first 8-aligned offset >= off whose word is not zero
// (or end).
func (sc *segScanner) skipZeros(off int64) (int64, error) {
	for off+recordAlign <= sc.end {
		b, err := sc.load(off, recordAlign)
		if err != nil {
			return off, err
		}
		if binary.LittleEndian.Uint64(b) != 0 {
			return off, nil
		}
		// Scan the rest of the window word by word without reloading.
		i := off - sc.winOff + recordAlign
		for ; i+recordAlign <= int64(sc.winLen); i += recordAlign {
			if binary.LittleEndian.Uint64(sc.win[i:]) != 0 {
				return sc.winOff + i, nil
			}
		}
		off = sc.winOff + i
	}
	return sc.end, nil
}

// plausible reports whether h, found at pos, looks like a record written
// after the one with WOID prevWOID: a sound header in range and a WOID a
// little above. (Its checksum may still fail.)
func plausible(h recordHeader, pos, end int64, prevWOID uint64) bool {
	return checkRecordHeader(h, pos, end) == "" && h.WOID > prevWOID && h.WOID-prevWOID <= maxWOIDJump
}

// suspects counts the records skipped by resync that look like records
// written after the last good one but fail their checksum, and where the
// last of them ends.
type suspects struct {
	n   int64
	end int64
}

func (t *suspects) add(pos int64, h recordHeader) {
	if h.Type != RecordSeal { // a seal holds no events
		t.n++
	}
	t.end = max(t.end, pos+int64(encodedSize(int(h.Length))))
}

// resync looks for the next valid record after the invalid one at off whose
// WOID lies above prevWOID. ok is false if there is none in the segment.
// Plausible records that fail their checksum on the way are added to sus.
func (sc *segScanner) resync(off int64, prevWOID uint64, sus *suspects) (next int64, ok bool, err error) {
	for pos := off + recordAlign; pos+recordHeaderSize <= sc.end; pos += recordAlign {
		if pos, err = sc.skipZeros(pos); err != nil {
			return 0, false, err
		}
		if pos+recordHeaderSize > sc.end {
			break
		}
		hb, err := sc.load(pos, recordHeaderSize)
		if err != nil {
			return 0, false, err
		}
		h := decodeRecordHeader(hb)
		if !plausible(h, pos, sc.end, prevWOID) {
			continue
		}
		if _, _, reason, err := sc.recordAt(pos); err != nil {
			return 0, false, err
		} else if reason == "" {
			return pos, true, nil
		}
		sus.add(pos, h)
	}
	return 0, false, nil
}

// Damage is a range of a segment whose records could not be read.
type Damage struct {
	File       string
	Start, End int64
	// EstimatedRecords is the damaged byte count divided by the average
	// size of the valid records read from the directory so far (at least 1).
	EstimatedRecords int64
	Reason           string
}

// ReplayStats summarises a Replay.
type ReplayStats struct {
	// Records and Bytes count the valid records passed to fn (Seal records
	// excluded) and their encoded size.
	Records, Bytes int64
	// MaxWOID and MaxTxnID are the largest ids seen (Seal records included).
	MaxWOID, MaxTxnID uint64
	// Segments is the number of segments read (wholly or from a frontier).
	Segments int
	Damaged  []Damage
}

// dirReader yields the valid records of one directory in order.
type dirReader struct {
	w        *WAL
	segs     []*segment
	startOff int64 // offset in segs[0] to start at
	i        int
	sc       *segScanner
	off      int64
	prevWOID uint64
	recs     int64
	bytes    int64
	scratch  []byte
	// segEnd is the end of the last valid record of the current segment.
	segEnd int64

	stats    *ReplayStats
	progress func(n int64)

	cur     Record
	curPtr  Pointer
	curSize int64
	ok      bool

	// unsealed is the invalid end of a segment that had no Seal record,
	// holding records that look written after the last good one. It is
	// a torn tail if the directory has nothing valid after it, and is
	// reported as damage if a later segment has records: a segment is
	// sealed, and the seal synced, before the next one is written.
	unsealed *Damage
}

// advance moves to the next valid non-seal record; ok is false at the end.
func (r *dirReader) advance() error {
	r.ok = false
	for {
		if r.sc == nil {
			if r.i >= len(r.segs) {
				return nil
			}
			s := r.segs[r.i]
			r.i++
			start := int64(segmentHeaderSize)
			if r.i == 1 && r.startOff > start {
				start = r.startOff
			}
			r.stats.Segments++
			if s.badHeader != "" {
				r.report(s, 0, s.fileSize(), "segment header: "+s.badHeader)
				continue
			}
			f, release, err := s.reader()
			if err != nil {
				return err
			}
			release() // Replay runs before writers and removers.
			r.sc = &segScanner{s: s, f: f, end: min(s.size, s.fileSize()), seed: segmentSeed(s.id)}
			r.off = start
			continue
		}
		sc := r.sc
		rec, size, reason, err := sc.recordAt(r.off)
		if err != nil {
			return err
		}
		if reason == "" && rec.WOID <= r.prevWOID {
			reason = fmt.Sprintf("write order id %d not above previous %d", rec.WOID, r.prevWOID)
		}
		if reason == "" {
			if u := r.unsealed; u != nil && u.File != sc.s.path {
				r.unsealed = nil
				u.Reason = fmt.Sprintf("segment ends without a seal record, but the later segment %s has records: %s", sc.s.path, u.Reason)
				r.stats.Damaged = append(r.stats.Damaged, *u)
				r.w.logger.Error("wal: damaged records skipped", "file", u.File, "start", u.Start, "end", u.End,
					"estimated_records", u.EstimatedRecords, "reason", u.Reason)
			}
			r.progress(size)
			r.segEnd = r.off + size
			r.prevWOID = rec.WOID
			r.stats.MaxWOID = max(r.stats.MaxWOID, rec.WOID)
			if rec.WOID > sc.s.maxWOID.Load() {
				sc.s.maxWOID.Store(rec.WOID)
			}
			if rec.Type == RecordSeal {
				r.progress(sc.end - r.off - size)
				r.segmentDone()
				continue
			}
			r.stats.MaxTxnID = max(r.stats.MaxTxnID, rec.TxnID)
			r.recs++
			r.bytes += size
			ptr := MakePointer(sc.s.id, uint32(r.off))
			if rec, err = r.w.decodePayload(rec, sc.s, r.off, &r.scratch); err != nil {
				if !errors.Is(err, ErrCorrupt) {
					return err // e.g. a missing key: fail closed
				}
				// The Codec says the payload is damaged (authentication or
				// decompression failed): report and skip the record.
				r.report(sc.s, r.off, r.off+size, err.Error())
				r.off += size
				continue
			}
			r.off += size
			r.cur, r.curPtr, r.curSize, r.ok = rec, ptr, size, true
			return nil
		}
		var sus suspects
		if hb, err := sc.load(r.off, recordHeaderSize); err == nil {
			if h := decodeRecordHeader(hb); plausible(h, r.off, sc.end, r.prevWOID) {
				sus.add(r.off, h)
			}
		}
		next, found, err := sc.resync(r.off, r.prevWOID, &sus)
		if err != nil {
			return err
		}
		if !found {
			// Torn tail or end of written data, unless a later segment
			// of the directory has records (see unsealed).
			if sus.n > 0 {
				r.unsealed = &Damage{File: sc.s.path, Start: r.off, End: sus.end, EstimatedRecords: sus.n, Reason: reason}
			}
			r.progress(sc.end - r.off)
			r.segmentDone()
			continue
		}
		r.report(sc.s, r.off, next, reason)
		r.progress(next - r.off)
		r.off = next
	}
}

// segmentDone ends the scan of the current segment. Only a segment read to
// its end records where its valid records end (segment.validEnd): a Replay
// stopped half way (by fn or a missing key) bounds nothing.
func (r *dirReader) segmentDone() {
	if s := r.sc.s; r.segEnd > s.validEnd.Load() {
		s.validEnd.Store(r.segEnd)
	}
	r.sc, r.segEnd = nil, 0
}

func (r *dirReader) report(s *segment, start, end int64, reason string) {
	est := int64(1)
	if r.recs > 0 {
		est = max(1, (end-start)*r.recs/r.bytes)
	}
	dmg := Damage{File: s.path, Start: start, End: end, EstimatedRecords: est, Reason: reason}
	r.stats.Damaged = append(r.stats.Damaged, dmg)
	r.w.logger.Error("wal: damaged records skipped", "file", dmg.File, "start", dmg.Start, "end", dmg.End,
		"estimated_records", dmg.EstimatedRecords, "reason", dmg.Reason)
}

// fileSize is the current size of the segment file (0 if unknown).
func (s *segment) fileSize() int64 {
	fi, err := s.dir.w.fs.Stat(s.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// Replay calls fn for every valid record after the frontiers in from, merged
// across directories in WOID order. A directory's frontier is the Position
// whose Segment lives in it: its segments with lower ids are skipped and the
// frontier segment is read from Offset; a directory without one is read
// whole, as is everything when from is nil. A Position naming an unknown
// segment is logged and ignored. rec.Payload is only valid during fn.
// progress, if not nil, is called about every 64 MiB with bytes done and
// total. An error from fn stops the replay and is returned. Replay must not
// run concurrently with Write or Remove.
func (w *WAL) Replay(from []Position, fn func(rec Record, ptr Pointer) error, progress func(done, total int64)) (ReplayStats, error) {
	var stats ReplayStats
	w.mu.RLock()
	frontier := make(map[int]Position)
	for _, p := range from {
		if p.Segment == 0 {
			continue
		}
		s, ok := w.segs[p.Segment]
		if !ok {
			w.logger.Warn("wal: replay frontier names an unknown segment; ignored", "segment", p.Segment, "offset", p.Offset)
			continue
		}
		frontier[s.dir.idx] = p
	}
	var total int64
	readers := make([]*dirReader, len(w.dirs))
	for i, d := range w.dirs {
		r := &dirReader{w: w, stats: &stats}
		for _, s := range w.segs {
			if s.dir != d {
				continue
			}
			if p, ok := frontier[i]; ok && s.id < p.Segment {
				continue
			}
			r.segs = append(r.segs, s)
		}
		slices.SortFunc(r.segs, func(a, b *segment) int { return int(a.id) - int(b.id) })
		if p, ok := frontier[i]; ok && len(r.segs) > 0 && r.segs[0].id == p.Segment {
			r.startOff = int64(p.Offset)
		}
		for j, s := range r.segs {
			n := min(s.size, s.fileSize())
			if j == 0 && r.startOff > 0 {
				n -= r.startOff
			}
			total += max(n, 0)
		}
		readers[i] = r
	}
	w.mu.RUnlock()

	const progressEvery = 64 << 20
	var done, reported int64
	onProgress := func(n int64) {
		done += n
		if progress != nil && done-reported >= progressEvery {
			reported = done
			progress(done, total)
		}
	}
	for _, r := range readers {
		r.progress = onProgress
		if err := r.advance(); err != nil {
			return stats, err
		}
	}
	for {
		var best *dirReader
		for _, r := range readers {
			if r.ok && (best == nil || r.cur.WOID < best.cur.WOID) {
				best = r
			}
		}
		if best == nil {
			break
		}
		stats.Records++
		stats.Bytes += best.curSize
		if err := fn(best.cur, best.curPtr); err != nil {
			return stats, err
		}
		if err := best.advance(); err != nil {
			return stats, err
		}
	}
	if progress != nil {
		progress(done, total)
	}
	if stats.MaxWOID > w.replayMaxWOID.Load() {
		w.replayMaxWOID.Store(stats.MaxWOID)
	}
	return stats, nil
}
