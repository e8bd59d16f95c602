package apply

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/pgutil"
)

// ApplyError is a change the target refused: a missing table or column, a
// constraint violation, a row that is not there to update or delete. The
// stream stops on it; nothing is skipped.
type ApplyError struct {
	Table string // quoted schema.table on the target
	Op    string // insert, update, delete, truncate
	Key   string // the row's identity, e.g. (id)=(42), or the target's own description
	Where string // source position of the change, e.g. "source LSN 0/16B3748" or "changelog id 42" (a range, for a multi-row insert)
	XID   uint32 // source transaction id
	Err   error

	setWise bool // from a statement over many rows: replayed row by row to name the row
}

func (e *ApplyError) Error() string {
	s := fmt.Sprintf("apply %s on %s", e.Op, e.Table)
	if e.Key != "" {
		s += " key " + e.Key
	}
	s += fmt.Sprintf(" at %s (xid %d): %v", e.Where, e.XID, e.Err)
	var pgErr *pgconn.PgError
	if errors.As(e.Err, &pgErr) && pgErr.Detail != "" {
		s += " (" + pgutil.RedactText(pgErr.Detail) + ")"
	}
	if errors.As(e.Err, &pgErr) && pgErr.Code == pgerrcode.DiskFull {
		s += ": the target's disk is full: free space or grow its storage, then start `replicator stream` again (it resumes with this transaction, which was not applied)"
	}
	return s
}

func (e *ApplyError) Unwrap() error { return e.Err }

// PanicError is a panic recovered at the stream's boundary: a bug, fatal
// and never retried. The stack is logged where it was recovered; Error
// gives the panic's value only.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("internal error (a bug: please report it with the stack trace from the log): %s",
		pgutil.RedactText(fmt.Sprint(e.Value)))
}

// ErrRowMissing is the cause when an UPDATE or DELETE finds no row on the
// target: the target differs from the source.
var ErrRowMissing = errors.New("the row is not on the target (the target has drifted from the source: verify, and re-run the snapshot if needed)")

// IsRetryable reports whether err is worth a reconnect: a lost connection,
// a server shutting down or starting up, a network error. Errors about the
// data or the setup are not.
func IsRetryable(err error) bool {
	var pe *PanicError
	if err == nil || errors.Is(err, context.Canceled) || errors.As(err, &pe) {
		return false
	}
	var sc *SchemaCaughtUpError
	if errors.As(err, &sc) {
		return true
	}
	var le *StreamLockedError
	if errors.As(err, &le) {
		return le.Own // our own earlier session, not yet gone: it will be
	}
	var ae *ApplyError
	if errors.As(err, &ae) {
		var pgErr *pgconn.PgError
		if !errors.As(ae.Err, &pgErr) {
			return isConnectionError(ae.Err)
		}
		return retryableCode(pgErr.Code)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return retryableCode(pgErr.Code)
	}
	var ce *pgutil.ConnError
	if errors.As(err, &ce) {
		// Refused or timed-out connections: the server may be restarting.
		// Authentication or a missing database will not fix themselves.
		return !errors.As(ce.Err, &pgErr) || retryableCode(pgErr.Code)
	}
	return isConnectionError(err)
}

func retryableCode(code string) bool {
	switch code {
	case pgerrcode.TooManyConnections, pgerrcode.SerializationFailure, pgerrcode.DeadlockDetected:
		return true
	case pgerrcode.ObjectInUse: // slot still active for a previous session that is going away
		return true
	}
	return pgutil.IsConnectionLostCode(code)
}

func isConnectionError(err error) bool {
	var connectErr *pgconn.ConnectError
	// A connection that could not be opened: the server may be restarting.
	return errors.As(err, &connectErr) || pgutil.IsConnectionLost(err)
}
