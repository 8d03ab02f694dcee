package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/sluicehq/sluice/crypto"
)

// storeKey is a channel property whose value belongs to the channel's store:
// channels sharing a store must not set it differently, and a setting of any
// of them applies to the whole store. Each is declared here once: how it is
// parsed into the Channel, the value compared between channels, and where
// it goes in the Store.
type storeKey struct {
	name     string
	fileOnly bool // file channels only (a memory channel warns and ignores it)
	parse    func(p *parser, pr Property, ch *Channel) error
	value    func(ch *Channel) any // comparable
	apply    func(st *Store, ch *Channel)
}

// storeKeys in the order they are applied and reported.
var storeKeys = []storeKey{
	{name: "backupCheckpointDir", fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			if pr.Value != "" {
				ch.BackupCheckpointDir = filepath.Clean(pr.Value)
			}
			return nil
		},
		value: func(ch *Channel) any { return ch.BackupCheckpointDir },
		apply: func(st *Store, ch *Channel) { st.File.BackupCheckpointDir = ch.BackupCheckpointDir }},
	{name: "checkpointInterval", fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 1, 1<<40, "%d ms is too long")
			ch.CheckpointInterval = time.Duration(n) * time.Millisecond
			return err
		},
		value: func(ch *Channel) any { return ch.CheckpointInterval },
		apply: func(st *Store, ch *Channel) { st.File.CheckpointInterval = ch.CheckpointInterval }},
	{name: "maxFileSize", fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, MinSegmentSize, FlumeMaxFileSize, fmt.Sprintf("%%d is more than the maximum segment size %d (1 GiB)", MaxSegmentSize))
			if err == nil && n > MaxSegmentSize {
				// Flume's default and limit, copied from a Flume file.
				p.warn(pr.Line, pr.Key, fmt.Sprintf("%d is more than Sluice's largest WAL segment; using %d (1 GiB)", n, MaxSegmentSize))
				n = MaxSegmentSize
			}
			ch.SegmentSize = n
			return err
		},
		value: func(ch *Channel) any { return ch.SegmentSize },
		apply: func(st *Store, ch *Channel) { st.File.SegmentSize = ch.SegmentSize }},
	{name: "minimumRequiredSpace", fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			var err error
			ch.MinFreeBytes, err = p.int64(pr, 0)
			if ch.MinFreeBytes == 0 {
				ch.MinFreeBytes = -1 // 0 disables the check
			}
			return err
		},
		value: func(ch *Channel) any { return ch.MinFreeBytes },
		apply: func(st *Store, ch *Channel) { st.File.MinFreeBytes = ch.MinFreeBytes }},
	{name: "maxEventSize",
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 1, MaxSegmentSize/4, fmt.Sprintf("%%d is more than %d (a quarter of the largest segment)", MaxSegmentSize/4))
			ch.MaxEventSize = int(n)
			return err
		},
		value: func(ch *Channel) any { return ch.MaxEventSize },
		apply: func(st *Store, ch *Channel) {
			st.File.MaxEventSize = ch.MaxEventSize
			st.Memory.MaxEventSize = ch.MaxEventSize
		}},
	{name: "spareSegments", fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 0, MaxSpareSegments, fmt.Sprintf("%%d is more than %d", MaxSpareSegments))
			ch.SpareSegments = int(n)
			if n == 0 {
				ch.SpareSegments = -1 // 0 keeps none
			}
			return err
		},
		value: func(ch *Channel) any { return ch.SpareSegments },
		apply: func(st *Store, ch *Channel) { st.File.SpareSegments = ch.SpareSegments }},
	{name: "producerExpiry",
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 0, 100*365*24*3600, "%d seconds is more than a century")
			ch.ProducerExpiry = time.Duration(n) * time.Second
			if n == 0 {
				ch.ProducerExpiry = -1 // 0 keeps entries forever
			}
			return err
		},
		value: func(ch *Channel) any { return ch.ProducerExpiry },
		apply: func(st *Store, ch *Channel) {
			st.File.ProducerExpiry = ch.ProducerExpiry
			st.Memory.ProducerExpiry = ch.ProducerExpiry
		}},
	{name: "maxProducers",
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 1, 10_000_000, "%d is more than 10000000 (every id is kept in memory and in every checkpoint)")
			ch.MaxProducers = int(n)
			return err
		},
		value: func(ch *Channel) any { return ch.MaxProducers },
		apply: func(st *Store, ch *Channel) {
			st.File.MaxProducers = ch.MaxProducers
			st.Memory.MaxProducers = ch.MaxProducers
		}},
	{name: keyKeyFile, fileOnly: true, // also set by its Flume alias keyStoreFile
		parse: func(p *parser, pr Property, ch *Channel) error {
			if strings.TrimSpace(pr.Value) == "" {
				return p.errorf(pr.Line, pr.Key, "empty path")
			}
			ch.KeyFile = filepath.Clean(strings.TrimSpace(pr.Value))
			if ch.keyFileKey == "" || pr.Line > ch.set[keyKeyFile] {
				ch.keyFileKey = pr.Key
			}
			return nil
		},
		value: func(ch *Channel) any { return ch.KeyFile },
		apply: func(st *Store, ch *Channel) { st.KeyFile = ch.KeyFile }},
	{name: keyActiveKey, fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			n, err := p.intMax(pr, 1, 65535, "key id %d is out of range (1-65535)")
			ch.ActiveKey = uint16(n)
			return err
		},
		value: func(ch *Channel) any { return ch.ActiveKey },
		apply: func(st *Store, ch *Channel) { st.ActiveKey = ch.ActiveKey }},
	{name: keyCompression, fileOnly: true,
		parse: func(p *parser, pr Property, ch *Channel) error {
			v := strings.ToLower(strings.TrimSpace(pr.Value))
			c, err := crypto.ParseCompression(v)
			if err != nil || v == "" {
				return p.errorf(pr.Line, pr.Key, "compression %q is not supported (want none, zstd or s2)", pr.Value)
			}
			if c != crypto.CompressNone {
				ch.Compression = c.String()
			}
			return nil
		},
		value: func(ch *Channel) any { return ch.Compression },
		apply: func(st *Store, ch *Channel) { st.File.Compression = ch.Compression }},
}

// storeKeyNamed returns the store key prop names (keyStoreFile is keyFile).
func storeKeyNamed(prop string) (storeKey, bool) {
	if prop == keyKeyStoreFile {
		prop = keyKeyFile
	}
	for _, k := range storeKeys {
		if k.name == prop {
			return k, true
		}
	}
	return storeKey{}, false
}

// intMax is int64 with an upper bound whose message (a format with one %d)
// says why.
func (p *parser) intMax(pr Property, min, max int64, tooBig string) (int64, error) {
	n, err := p.int64(pr, min)
	if err == nil && n > max {
		return n, p.errorf(pr.Line, pr.Key, tooBig, n)
	}
	return n, err
}

// channelProps lists every channel property Sluice reads, for suggestions.
func channelProps() []string {
	out := []string{"type", "capacity", "transactionCapacity", "byteCapacity", "keep-alive", "dataDirs", "checkpointDir",
		keyKeyProvider, keyKeyStoreFile, keyCipher}
	for _, k := range storeKeys {
		out = append(out, k.name)
	}
	return out
}

// nearest returns the candidate within two edits of s (ignoring case), or
// "" when none is that close.
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
