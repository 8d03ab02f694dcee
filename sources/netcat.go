package sources

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/sluicehq/sluice/agent"
	"github.com/sluicehq/sluice/channel"
)

// netcatBatch bounds the lines of one put: the complete lines a connection
// has already sent commit together (Flume commits each line alone).
const netcatBatch = 100

// netcat listens on bind:port and turns every newline-terminated line into
// an event (the body without its '\n'). With ack-every-event (true) it
// answers "OK\n" for a line only after the put holding it committed. When
// the channel is full it stops reading the connection and retries the same
// lines (TCP pushes back on the sender); nothing is dropped. Another put
// error answers "FAILED: <reason>\n" for the line(s) concerned. A line longer
// than max-line-length (512) bytes, newline included, is answered
// "FAILED: Event exceeds the maximum length (N chars, including newline)"
// and the connection is closed, as Flume does. Flume also drops an
// unterminated last line at EOF; so does Sluice (counted as EventReadFail).
type netcat struct {
	addr   string
	maxLen int
	ack    bool
	batch  int
	c      *agent.SourceCounters
	log    *slog.Logger

	mu sync.Mutex
	ln net.Listener
}

func newNetcat(s *agent.Setup) (agent.Source, error) {
	bind, err := s.Conf.Required("bind")
	if err != nil {
		return nil, err
	}
	if _, err := s.Conf.Required("port"); err != nil {
		return nil, err
	}
	port, err := s.Conf.Int("port", 0, 0, 65535)
	if err != nil {
		return nil, err
	}
	maxLen, err := s.Conf.Int("max-line-length", 512, 1, 64<<20)
	if err != nil {
		return nil, err
	}
	ack, err := s.Conf.Bool("ack-every-event", true)
	if err != nil {
		return nil, err
	}
	return &netcat{addr: net.JoinHostPort(bind, strconv.FormatInt(port, 10)), maxLen: int(maxLen), ack: ack,
		batch: min(netcatBatch, s.TransactionCapacity()), c: s.Source, log: s.Log}, nil
}

// Open binds the listening socket.
func (n *netcat) Open(context.Context) error {
	ln, err := net.Listen("tcp", n.addr)
	if err != nil {
		return fmt.Errorf("netcat: %w", err)
	}
	n.mu.Lock()
	n.ln = ln
	n.mu.Unlock()
	n.log.Info("netcat source listening", "address", ln.Addr().String())
	return nil
}

// Addr is the bound address (nil before Open).
func (n *netcat) Addr() net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ln == nil {
		return nil
	}
	return n.ln.Addr()
}

// Close closes the listening socket.
func (n *netcat) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ln == nil {
		return nil
	}
	err := n.ln.Close()
	n.ln = nil
	return err
}

func (n *netcat) Run(ctx context.Context, out *agent.ChannelProcessor) error {
	n.mu.Lock()
	ln := n.ln
	n.mu.Unlock()
	if ln == nil {
		return errors.New("netcat: not open")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() {
		if tl, ok := ln.(*net.TCPListener); ok {
			tl.SetDeadline(time.Now()) // unblock Accept; Close comes later
		}
	})
	defer stop()
	delay := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if ctx.Err() != nil {
			if conn != nil {
				conn.Close()
			}
			return nil
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("netcat: accept: %w", err)
			}
			// Out of file descriptors and the like: wait and go on.
			n.log.Warn("netcat: accept failed; retrying", "err", err, "retry", delay)
			time.Sleep(delay)
			delay = min(2*delay, time.Second)
			continue
		}
		delay = 5 * time.Millisecond
		wg.Go(func() { n.serve(ctx, conn, out) })
	}
}

// serve reads one connection until EOF, an error or the agent stops.
func (n *netcat) serve(ctx context.Context, conn net.Conn, out *agent.ChannelProcessor) {
	n.c.OpenConnections.Add(1)
	defer n.c.OpenConnections.Add(-1)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) }) // stop reading; lines read are finished
	defer stop()
	r := bufio.NewReaderSize(conn, max(n.maxLen, 16))
	w := bufio.NewWriter(conn)
	for {
		lines, err := n.readLines(r)
		if len(lines) > 0 {
			if !n.deliver(ctx, conn, w, out, lines) {
				return
			}
		}
		if err != nil {
			var tooLong errLineTooLong
			switch {
			case errors.As(err, &tooLong):
				n.c.EventReadFail.Add(1)
				n.log.Warn("netcat: client sent a line over max-line-length; closing the connection", "remote", conn.RemoteAddr().String(), "max-line-length", n.maxLen)
				n.reply(conn, w, fmt.Sprintf("FAILED: Event exceeds the maximum length (%d chars, including newline)\n", n.maxLen))
			case errors.Is(err, io.EOF), ctx.Err() != nil:
			default:
				n.log.Debug("netcat: connection ended", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
	}
}

type errLineTooLong struct{ n int }

func (errLineTooLong) Error() string { return "line too long" }

// readLines blocks for one line, then takes the complete lines already
// buffered, up to the batch size. The bodies are copies.
func (n *netcat) readLines(r *bufio.Reader) ([][]byte, error) {
	var lines [][]byte
	for len(lines) < n.batch {
		if len(lines) > 0 {
			buf, _ := r.Peek(r.Buffered())
			if bytes.IndexByte(buf, '\n') < 0 {
				break // no complete line waiting: deliver what we have
			}
		}
		line, err := r.ReadSlice('\n')
		switch {
		case err == nil && len(line) > n.maxLen, errors.Is(err, bufio.ErrBufferFull):
			return lines, errLineTooLong{n: len(line)}
		case err != nil:
			if len(line) > 0 && errors.Is(err, io.EOF) {
				n.c.EventReadFail.Add(1)
				n.log.Warn("netcat: connection closed after a line without its newline; the line is dropped (as Flume does)", "bytes", len(line))
			}
			return lines, err
		}
		lines = append(lines, bytes.Clone(line[:len(line)-1]))
	}
	return lines, nil
}

// deliver puts lines in one transaction and acknowledges each after the
// commit. A full channel is retried (the connection is not read meanwhile)
// until it commits or the agent stops; it reports false when the
// connection should close.
func (n *netcat) deliver(ctx context.Context, conn net.Conn, w *bufio.Writer, out *agent.ChannelProcessor, lines [][]byte) bool {
	evs := make([]channel.Event, len(lines))
	for i, l := range lines {
		evs[i] = channel.Event{Body: l}
	}
	wait := 10 * time.Millisecond
	for {
		err := out.Deliver(ctx, evs, channel.PutOptions{})
		if err == nil {
			if n.ack {
				return n.reply(conn, w, string(bytes.Repeat([]byte("OK\n"), len(lines))))
			}
			return true
		}
		if errors.Is(err, channel.ErrChannelFull) {
			if ctx.Err() != nil {
				return false // stopping: not acknowledged, the sender resends
			}
			n.log.Debug("netcat: channel full; pushing back", "err", err, "retry", wait)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return false
			}
			wait = min(2*wait, time.Second)
			for i := range evs {
				evs[i].Headers = nil // interceptors run again
			}
			continue
		}
		if ctx.Err() != nil {
			return false
		}
		if len(evs) > 1 {
			// Find the line(s) the put refused: one put each.
			for _, l := range lines {
				if !n.deliver(ctx, conn, w, out, [][]byte{l}) {
					return false
				}
			}
			return true
		}
		n.log.Warn("netcat: put failed", "err", err)
		if n.ack {
			return n.reply(conn, w, "FAILED: "+oneLine(err.Error())+"\n")
		}
		return true
	}
}

func oneLine(s string) string { return string(bytes.ReplaceAll([]byte(s), []byte("\n"), []byte(" "))) }

func (n *netcat) reply(conn net.Conn, w *bufio.Writer, s string) bool {
	conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if _, err := w.WriteString(s); err != nil {
		return false
	}
	return w.Flush() == nil
}
