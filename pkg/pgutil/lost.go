package pgutil

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// IsConnectionLost reports whether err means the connection is gone: a
// network cut (EOF, reset, closed), the server shutting down or crashing
// under it, a server that cannot be reached or cannot take connections
// now, or a statement that timed out inside the driver (pgx closes the
// connection then, so nothing can go on over it either). A command that
// stops on such an error can tell the user that running it again is the
// fix. A cancelled context is the caller stopping, not a lost connection.
func IsConnectionLost(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return IsConnectionLostCode(pgErr.Code)
	}
	var netErr net.Error
	switch {
	// SafeToRetry: the driver failed on the connection before the statement
	// reached the server (the connection was already closed, a message
	// could not be received). Timeout: see above.
	case pgconn.SafeToRetry(err), pgconn.Timeout(err):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, pgconn.ErrConnClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr):
		return true
	}
	return false
}

// IsConnectionLostCode reports whether a server error of this SQLSTATE
// ends the session or refuses it for now: admin or crash shutdown, cannot
// connect now (starting up, shutting down, in recovery), or a connection
// exception (class 08).
func IsConnectionLostCode(code string) bool {
	switch code {
	case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow:
		return true
	}
	return pgerrcode.IsConnectionException(code)
}
