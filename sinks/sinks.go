// Package sinks holds the built-in sinks: logger (each event to the log)
// and null (discards), under their aliases and Flume's class names.
package sinks

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
)

// Register adds the built-in sinks to r.
func Register(r *agent.Registry) {
	r.Sink(newLogger, "logger", "org.apache.flume.sink.LoggerSink")
	r.Sink(newNull, "null", "org.apache.flume.sink.NullSink")
}

// loggerBatch is how many events the logger sink takes per transaction
// (Flume's takes one; the log lines are the same).
const loggerBatch = 100

// logger writes every event to the agent's log at INFO: its headers and
// the first maxBytesToLog (16) bytes of its body as hex and as text, the
// way Flume's LoggerSink prints them.
type logger struct {
	max   int
	batch int
	log   *slog.Logger
}

func newLogger(s *agent.Setup) (agent.Sink, error) {
	n, err := s.Conf.Int("maxBytesToLog", 16, 0, 1<<30)
	if err != nil {
		return nil, err
	}
	return &logger{max: int(n), batch: min(loggerBatch, s.TransactionCapacity()), log: s.Log}, nil
}

func (l *logger) Process(ctx context.Context, in *agent.Input) (agent.Status, error) {
	return in.Drain(ctx, l.batch, func(ctx context.Context, evs []channel.Event) error {
		for _, ev := range evs {
			l.log.Info("Event: "+FormatEvent(ev, l.max), "channel", in.Channel())
		}
		return nil
	})
}

// FormatEvent renders an event as Flume's LoggerSink does:
// { headers:{k=v, …} body: 68 65 6C 6C 6F  hello }, the body cut to max
// bytes.
func FormatEvent(ev channel.Event, max int) string {
	var b strings.Builder
	b.WriteString("{ headers:{")
	for i, k := range slices.Sorted(maps.Keys(ev.Headers)) {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s=%s", k, ev.Headers[k])
	}
	body := ev.Body
	if len(body) > max {
		body = body[:max]
	}
	b.WriteString("} body: ")
	h := strings.ToUpper(hex.EncodeToString(body))
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i : i+2])
	}
	b.WriteString("  ")
	for _, c := range body {
		if c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		} else {
			b.WriteByte('.')
		}
	}
	b.WriteString(" }")
	return b.String()
}

// null takes batches of batchSize (100) events and discards them.
type null struct{ batch int }

func newNull(s *agent.Setup) (agent.Sink, error) {
	b, err := s.BatchSize("batchSize", 100)
	if err != nil {
		return nil, err
	}
	return &null{batch: b}, nil
}

func (n *null) Process(ctx context.Context, in *agent.Input) (agent.Status, error) {
	return in.Drain(ctx, n.batch, func(context.Context, []channel.Event) error { return nil })
}
