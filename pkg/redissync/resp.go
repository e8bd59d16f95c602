package redissync

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
	"replicator/pkg/redisrdb"
)

// The RESP pieces shared by the two connections this package speaks the
// protocol on itself: the replica link to the source (psync.go) and the
// target's raw pipelines (rawconn.go).

// dialRedis opens a connection to o.Addr, over TLS when o.TLSConfig is
// set (its ServerName defaulting to the address' host): timeout bounds
// the dial, and the TLS handshake gets 10s more. role ("source",
// "target") names the side in the errors, which are explained as those
// of go-redis' connections are.
func dialRedis(ctx context.Context, o *redis.Options, role string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, redisconn.Explain(role, o, err)
	}
	if o.TLSConfig == nil {
		return conn, nil
	}
	cfg := o.TLSConfig.Clone()
	if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg.ServerName, _, _ = net.SplitHostPort(o.Addr)
	}
	tc := tls.Client(conn, cfg)
	tc.SetDeadline(time.Now().Add(timeout + 10*time.Second))
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, redisconn.Explain(role, o, err)
	}
	tc.SetDeadline(time.Time{})
	return tc, nil
}

// authCommand is the AUTH that o's credentials ask for; nil without a
// password.
func authCommand(o *redis.Options) command {
	switch {
	case o.Password == "":
		return nil
	case o.Username != "":
		return command{"AUTH", o.Username, o.Password}
	}
	return command{"AUTH", o.Password}
}

// respWriter encodes commands into a buffered connection; write errors
// surface at Flush (bufio keeps the first).
type respWriter struct {
	*bufio.Writer
	num []byte // scratch for numbers
}

// command appends cmd as a RESP array of bulk strings. Its arguments are
// of the types rawEncodable accepts.
func (w *respWriter) command(cmd command) {
	w.header('*', len(cmd))
	for _, a := range cmd {
		switch v := a.(type) {
		case []byte:
			w.header('$', len(v))
			w.Write(v)
		case string:
			w.header('$', len(v))
			w.WriteString(v)
		case int:
			w.bulkInt(int64(v))
		case int64:
			w.bulkInt(v)
		}
		w.WriteString("\r\n")
	}
}

func (w *respWriter) header(kind byte, n int) {
	w.WriteByte(kind)
	w.num = strconv.AppendInt(w.num[:0], int64(n), 10)
	w.Write(w.num)
	w.WriteString("\r\n")
}

func (w *respWriter) bulkInt(v int64) {
	w.num = strconv.AppendInt(w.num[:0], v, 10)
	n := len(w.num)
	w.WriteByte('$')
	w.num = strconv.AppendInt(w.num, int64(n), 10)
	w.Write(w.num[n:])
	w.WriteString("\r\n")
	w.Write(w.num[:n])
}

// rawEncodable reports whether every argument of cmd is of a type
// respWriter encodes.
func rawEncodable(cmd command) bool {
	for _, a := range cmd {
		switch a.(type) {
		case string, []byte, int, int64:
		default:
			return false
		}
	}
	return true
}

// readLine reads one line of a reply and returns it without its "\r\n"
// (or a bare "\n", as the source's keepalives are). It is valid until the
// next read of br; a line must fit br's buffer.
func readLine(br *bufio.Reader) ([]byte, error) {
	l, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: protocol line longer than %d KiB", redisrdb.ErrCorrupt, br.Size()>>10)
		}
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// Limits on one replicated command, against a corrupt stream.
const (
	maxCommandArgs = 1 << 24
	maxBulkBytes   = 512 << 20
)

// readCommand reads one RESP array of bulk strings from the replication
// stream and returns it with the number of bytes it took (also on error,
// so far). Each argument is a fresh allocation that belongs to the caller:
// commands wait in the follower's relay while more are read.
func (c *replConn) readCommand() (args [][]byte, n int64, err error) {
	l, err := c.br.ReadSlice('\n')
	n += int64(len(l))
	if err != nil {
		return nil, n, err
	}
	if len(l) < 3 || l[0] != '*' {
		return nil, n, fmt.Errorf("%w: replication stream: expected an array, got %q", redisrdb.ErrCorrupt, l)
	}
	count, err := strconv.Atoi(string(l[1 : len(l)-2]))
	if err != nil || count < 0 || count > maxCommandArgs {
		return nil, n, fmt.Errorf("%w: replication stream: array header %q", redisrdb.ErrCorrupt, l)
	}
	args = make([][]byte, 0, min(count, 64))
	for range count {
		h, err := c.br.ReadSlice('\n')
		n += int64(len(h))
		if err != nil {
			return nil, n, err
		}
		if len(h) < 3 || h[0] != '$' {
			return nil, n, fmt.Errorf("%w: replication stream: expected a bulk string, got %q", redisrdb.ErrCorrupt, h)
		}
		size, err := strconv.Atoi(string(h[1 : len(h)-2]))
		if err != nil || size < 0 || size > maxBulkBytes {
			return nil, n, fmt.Errorf("%w: replication stream: bulk header %q", redisrdb.ErrCorrupt, h)
		}
		buf, err := readGrowing(c.br, size+2)
		n += int64(len(buf))
		if err != nil {
			return nil, n, err
		}
		if buf[size] != '\r' || buf[size+1] != '\n' {
			return nil, n, fmt.Errorf("%w: replication stream: bulk string not followed by CRLF", redisrdb.ErrCorrupt)
		}
		args = append(args, buf[:size])
	}
	return args, n, nil
}

// readGrowing reads exactly n bytes, growing its buffer as data arrives so
// that a lying length cannot allocate ahead of the input.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, 64<<10))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, 2*cap(buf)))
			copy(nb, buf)
			buf = nb
		}
		m, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		if err != nil {
			return buf, eofErr(err)
		}
	}
	return buf, nil
}

// eofErr turns an EOF in the middle of something into ErrUnexpectedEOF,
// which the callers report as a cut connection.
func eofErr(err error) error {
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: unexpected end of data", io.ErrUnexpectedEOF)
	}
	return err
}
