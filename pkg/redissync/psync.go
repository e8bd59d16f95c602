package redissync

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
	"replicator/pkg/redisrdb"
)

// replConn is a connection to the source acting as a replica
// (src/replication.c, the replica side of the handshake):
//
//	AUTH; REPLCONF listening-port; REPLCONF capa eof capa psync2;
//	PSYNC <replid> <offset> | PSYNC ? -1
//	← +FULLRESYNC <replid> <offset>, then the RDB as $<len>\r\n<bytes> or,
//	  diskless, $EOF:<40-byte mark>\r\n<bytes><mark>; then the command stream
//	← +CONTINUE [<replid>], then the command stream from the offset asked
type replConn struct {
	conn net.Conn
	br   *bufio.Reader
	bw   respWriter
	addr string

	replid string
	offset int64 // replication offset of the first byte after the RDB
}

// sourceIdleTimeout is how long the source may stay silent. It sends
// newlines while it prepares the RDB and PINGs every 10s (by default)
// during follow, so silence this long means the link is dead (Redis' own
// repl-timeout is 60s).
const sourceIdleTimeout = 60 * time.Second

// idleReader puts a fresh read deadline on every read of the source.
type idleReader struct{ c net.Conn }

func (r idleReader) Read(p []byte) (int, error) {
	r.c.SetReadDeadline(time.Now().Add(sourceIdleTimeout))
	return r.c.Read(p)
}

// ErrPSYNCRefused says the source does not let us replicate; auto mode
// falls back to SCAN.
var ErrPSYNCRefused = errors.New("source refused replication (PSYNC)")

func dialSource(ctx context.Context, o *redis.Options) (*replConn, error) {
	conn, err := dialRedis(ctx, o, "source", 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := &replConn{conn: conn, br: bufio.NewReaderSize(idleReader{conn}, 64<<10), addr: o.Addr}
	c.bw = respWriter{Writer: bufio.NewWriter(conn)}
	if auth := authCommand(o); auth != nil {
		if _, err := c.call(auth...); err != nil {
			conn.Close()
			return nil, redisconn.Explain("source", o, err)
		}
	}
	return c, nil
}

func (c *replConn) Close() error { return c.conn.Close() }

// send sends one command; its arguments are of the types rawEncodable
// accepts. It is called by one goroutine at a time.
func (c *replConn) send(args ...any) error {
	c.conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
	c.bw.command(args)
	return c.bw.Flush()
}

// line reads one line (without its CRLF), at most 64 KiB.
func (c *replConn) line() (string, error) {
	b, err := readLine(c.br)
	return string(b), err
}

// call sends a command and reads a status reply.
func (c *replConn) call(args ...any) (string, error) {
	if err := c.send(args...); err != nil {
		return "", err
	}
	l, err := c.line()
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(l, "+"):
		return l[1:], nil
	case strings.HasPrefix(l, "-"):
		return "", errors.New(l[1:])
	}
	return l, nil
}

// handshake announces us as a replica and asks for a stream from
// (replid, offset), or a full sync when replid is "?". full reports a
// FULLRESYNC; then rdb must be read before the command stream.
func (c *replConn) handshake(replid string, offset int64) (full bool, err error) {
	// The port is informational (INFO replication on the source).
	port := "0"
	if a, ok := c.conn.LocalAddr().(*net.TCPAddr); ok {
		port = strconv.Itoa(a.Port)
	}
	if _, err := c.call("REPLCONF", "listening-port", port); err != nil {
		return false, fmt.Errorf("%w: REPLCONF listening-port: %v", ErrPSYNCRefused, err)
	}
	if _, err := c.call("REPLCONF", "capa", "eof", "capa", "psync2"); err != nil {
		return false, fmt.Errorf("%w: REPLCONF capa: %v", ErrPSYNCRefused, err)
	}
	if err := c.send("PSYNC", replid, strconv.FormatInt(offset, 10)); err != nil {
		return false, err
	}
	// The source may send newlines as keepalives while it prepares.
	var l string
	for l == "" {
		if l, err = c.line(); err != nil {
			return false, fmt.Errorf("%w: PSYNC: connection closed (%v)", ErrPSYNCRefused, err)
		}
	}
	f := strings.Fields(l)
	switch {
	case strings.HasPrefix(l, "+FULLRESYNC") && len(f) == 3:
		c.replid = f[1]
		if c.offset, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			return false, fmt.Errorf("source PSYNC reply %q: %w", l, err)
		}
		return true, nil
	case strings.HasPrefix(l, "+CONTINUE"):
		if len(f) == 2 {
			c.replid = f[1]
		} else {
			c.replid = replid
		}
		c.offset = offset
		return false, nil
	case strings.HasPrefix(l, "-"):
		return false, fmt.Errorf("%w: %s", ErrPSYNCRefused, l[1:])
	}
	return false, fmt.Errorf("%w: unexpected PSYNC reply %q", ErrPSYNCRefused, l)
}

// rdb returns a reader of exactly the RDB payload that follows FULLRESYNC;
// drain must be called after decoding to consume what the decoder left
// (the checksum trailer, the diskless end mark).
func (c *replConn) rdb() (r io.Reader, drain func() error, err error) {
	var l string
	for l == "" { // keepalive newlines while the source runs BGSAVE
		if l, err = c.line(); err != nil {
			return nil, nil, fmt.Errorf("source: reading the RDB transfer header: %w", err)
		}
	}
	if !strings.HasPrefix(l, "$") {
		return nil, nil, fmt.Errorf("%w: RDB transfer header %q", redisrdb.ErrCorrupt, l)
	}
	if mark, ok := strings.CutPrefix(l, "$EOF:"); ok {
		if len(mark) != 40 {
			return nil, nil, fmt.Errorf("%w: diskless end mark of %d bytes", redisrdb.ErrCorrupt, len(mark))
		}
		mr := &markReader{br: c.br, mark: []byte(mark)}
		return mr, func() error { _, err := io.Copy(io.Discard, mr); return err }, nil
	}
	n, err := strconv.ParseInt(l[1:], 10, 64)
	if err != nil || n < 0 {
		return nil, nil, fmt.Errorf("%w: RDB transfer header %q", redisrdb.ErrCorrupt, l)
	}
	lr := io.LimitReader(c.br, n)
	return lr, func() error {
		m, err := io.Copy(io.Discard, lr)
		if err == nil && lr.(*io.LimitedReader).N > 0 {
			err = fmt.Errorf("RDB transfer cut short after %d bytes: %w", n-lr.(*io.LimitedReader).N, io.ErrUnexpectedEOF)
		}
		_ = m
		return err
	}, nil
}

// markReader yields the bytes before a diskless transfer's end mark.
// Bytes after the mark (the command stream) stay in br.
type markReader struct {
	br   *bufio.Reader
	mark []byte
	done bool
}

func (m *markReader) Read(p []byte) (int, error) {
	if m.done {
		return 0, io.EOF
	}
	if _, err := m.br.Peek(len(m.mark)); err != nil {
		return 0, fmt.Errorf("diskless RDB transfer: %w", eofErr(err))
	}
	buf, _ := m.br.Peek(m.br.Buffered())
	if i := bytes.Index(buf, m.mark); i >= 0 {
		n := copy(p, buf[:i])
		m.br.Discard(n)
		if n == i {
			m.br.Discard(len(m.mark))
			m.done = true
			if n == 0 {
				return 0, io.EOF
			}
		}
		return n, nil
	}
	// The mark may straddle what is buffered: keep its length minus one.
	safe := len(buf) - (len(m.mark) - 1)
	if safe <= 0 {
		// Not enough buffered to decide; wait for more.
		if _, err := m.br.Peek(len(buf) + 1); err != nil {
			return 0, fmt.Errorf("diskless RDB transfer: %w", eofErr(err))
		}
		return 0, nil
	}
	n := copy(p, buf[:safe])
	m.br.Discard(n)
	return n, nil
}
