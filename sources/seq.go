// Package sources holds the built-in sources: seq (a counter, for tests and
// load) and netcat (newline-terminated lines over TCP, acknowledged after
// the commit), under their aliases and Flume's class names.
package sources

import (
	"context"
	"errors"
	"math"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
)

// Register adds the built-in sources to r.
func Register(r *agent.Registry) {
	r.Source(newSeq, "seq", "org.apache.flume.source.SequenceGeneratorSource")
	r.Source(newNetcat, "netcat", "org.apache.flume.source.NetcatSource")
}

// seq delivers the bodies "0", "1", "2" … in batches of batchSize (1) until
// totalEvents (unbounded) were committed, then finishes. A batch that fails
// (a full channel) is retried with the same numbers after a pause, so the
// sequence has no gaps and no repeats.
type seq struct {
	total, batch int64
	next         int64
	retry        time.Duration
}

func newSeq(s *agent.Setup) (agent.Source, error) {
	b, err := s.BatchSize("batchSize", 1)
	if err != nil {
		return nil, err
	}
	total, err := s.Conf.Int("totalEvents", math.MaxInt64, 0, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	return &seq{total: total, batch: int64(b), retry: time.Second}, nil
}

func (q *seq) Run(ctx context.Context, out *agent.ChannelProcessor) error {
	for q.next < q.total {
		if ctx.Err() != nil {
			return nil
		}
		n := min(q.batch, q.total-q.next)
		evs := make([]channel.Event, n)
		for i := range evs {
			evs[i].Body = strconv.AppendInt(nil, q.next+int64(i), 10)
		}
		if err := out.Deliver(ctx, evs, channel.PutOptions{}); err != nil {
			if errors.Is(err, channel.ErrChannelFull) {
				select { // push back: wait, then the same batch again
				case <-time.After(q.retry):
				case <-ctx.Done():
				}
				continue
			}
			return err
		}
		q.next += n
	}
	return nil
}
