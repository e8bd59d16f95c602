package redissync

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"replicator/pkg/redisrdb"
)

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
