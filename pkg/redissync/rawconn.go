package redissync

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
)

// rawConn is a connection to a single-server target that carries the
// writer's plain pipelines (one RESTORE, or one DEL, a key): the commands
// are encoded straight into a buffered connection and the replies read
// with a minimal RESP2 parser. Through go-redis each such key cost a Cmd,
// an []any of boxed arguments and the library's pooled reader: about a
// fifth of the replicator's CPU on a sync of small keys. Transactions
// (MULTI/EXEC around a native key, keys spanning several jobs) and every
// cluster target stay on go-redis, which routes them.
//
// A rawConn is used by one worker only. After a network error it is
// closed and must not be used again: the writer stops at its first error.
type rawConn struct {
	conn    net.Conn
	bw      respWriter
	br      *bufio.Reader
	timeout time.Duration // no read or write may stall longer; 0: none
}

// replyError is an error reply of the target (-ERR ...). It satisfies
// go-redis' redis.Error, as the replies read through go-redis do.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

var _ redis.Error = replyError("")

// dialRaw opens a connection to the target o, authenticated, on database
// db. Its errors are explained as those of go-redis' connections are.
func dialRaw(ctx context.Context, o *redis.Options, db int) (*rawConn, error) {
	timeout := 3 * time.Second // go-redis' ReadTimeout default
	switch {
	case o.ReadTimeout < 0:
		timeout = 0
	case o.ReadTimeout > 0:
		timeout = o.ReadTimeout
	}
	dt := o.DialTimeout
	if dt == 0 {
		dt = 5 * time.Second
	}
	conn, err := dialRedis(ctx, o, "target", dt)
	if err != nil {
		return nil, err
	}
	c := &rawConn{conn: conn, timeout: timeout}
	c.bw = respWriter{Writer: bufio.NewWriterSize(deadlineWriter{c}, 64<<10)}
	c.br = bufio.NewReaderSize(deadlineReader{c}, 64<<10)
	var hello []command
	if auth := authCommand(o); auth != nil {
		hello = append(hello, auth)
	}
	if db != 0 {
		hello = append(hello, command{"SELECT", db})
	}
	for _, cmd := range hello {
		c.write(cmd)
	}
	if err := c.bw.Flush(); err != nil {
		c.Close()
		return nil, redisconn.Explain("target", o, err)
	}
	for _, cmd := range hello {
		if rerr, err := c.reply(); err != nil || rerr != nil {
			c.Close()
			if err == nil {
				err = rerr
			}
			if cmdName(cmd) == "AUTH" {
				return nil, redisconn.Explain("target", o, err)
			}
			return nil, fmt.Errorf("target %s: SELECT %d: %w", o.Addr, db, err)
		}
	}
	return c, nil
}

func (c *rawConn) Close() error { return c.conn.Close() }

// deadlineWriter and deadlineReader put a fresh deadline on every write
// and read: a stalled target fails the pipeline, a slow one does not.
type deadlineWriter struct{ c *rawConn }
type deadlineReader struct{ c *rawConn }

func (w deadlineWriter) Write(p []byte) (int, error) {
	if w.c.timeout > 0 {
		w.c.conn.SetWriteDeadline(time.Now().Add(w.c.timeout))
	}
	return w.c.conn.Write(p)
}

func (r deadlineReader) Read(p []byte) (int, error) {
	if r.c.timeout > 0 {
		r.c.conn.SetReadDeadline(time.Now().Add(r.c.timeout))
	}
	return r.c.conn.Read(p)
}

// write appends cmd to the send buffer (respWriter.command).
func (c *rawConn) write(cmd command) { c.bw.command(cmd) }

// reply reads one reply. rerr is the target's error reply, if it is one
// (the first error inside an array, as EXEC's); err is a broken
// connection or protocol, after which the connection is useless.
func (c *rawConn) reply() (rerr error, err error) {
	l, err := readLine(c.br)
	if err != nil {
		return nil, eofErr(err)
	}
	if len(l) == 0 {
		return nil, fmt.Errorf("target reply: empty line")
	}
	body := l[1:]
	switch l[0] {
	case '+', ':':
		return nil, nil
	case '-':
		return replyError(string(body)), nil
	case '$':
		n, perr := strconv.Atoi(string(body))
		if perr != nil || n < -1 || n > math.MaxInt32 {
			return nil, fmt.Errorf("target reply: bulk header %q", l)
		}
		if n >= 0 {
			if _, err := c.br.Discard(n + 2); err != nil {
				return nil, eofErr(err)
			}
		}
		return nil, nil
	case '*':
		n, perr := strconv.Atoi(string(body))
		if perr != nil || n < -1 || n > math.MaxInt32 {
			return nil, fmt.Errorf("target reply: array header %q", l)
		}
		var first error
		for range n {
			e, err := c.reply()
			if err != nil {
				return nil, err
			}
			if first == nil {
				first = e
			}
		}
		return first, nil
	}
	return nil, fmt.Errorf("target reply: unexpected type %q", l[0])
}

var _ io.Writer = deadlineWriter{}
