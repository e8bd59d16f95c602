package redissync

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// ErrTransferCut is added to the error of a full resynchronisation whose
// connection to the source or the target dropped before the RDB was
// loaded: the target holds part of the source, and only a new transfer can
// complete it.
var ErrTransferCut = errors.New("a connection dropped mid-transfer and the target holds a partial copy: rerun `replicator redis sync` (add --flush-target if keys may have been deleted on the source meanwhile)")

// transferError wraps an RDB transfer failure with where it happened and,
// when the connection was lost, with what to do.
func transferError(addr string, err error) error {
	var netErr net.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) ||
		errors.As(err, &netErr) {
		return fmt.Errorf("source %s RDB transfer: %w: %w", addr, err, ErrTransferCut)
	}
	return fmt.Errorf("source %s RDB transfer: %w", addr, err)
}
