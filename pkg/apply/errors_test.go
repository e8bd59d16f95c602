package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/pgutil"
)

func TestIsRetryable(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"admin shutdown", pg(pgerrcode.AdminShutdown), true},
		{"crash shutdown", pg(pgerrcode.CrashShutdown), true},
		{"cannot connect now", pg(pgerrcode.CannotConnectNow), true},
		{"connection exception", fmt.Errorf("wrapped: %w", pg(pgerrcode.ConnectionFailure)), true},
		{"slot still active", pg(pgerrcode.ObjectInUse), true},
		{"unexpected EOF", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"server unreachable", &pgutil.ConnError{Side: "source", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"wrong password", &pgutil.ConnError{Side: "source", Err: pg(pgerrcode.InvalidPassword)}, false},
		{"unique violation", &ApplyError{Table: "t", Err: pg(pgerrcode.UniqueViolation)}, false},
		{"row missing", &ApplyError{Table: "t", Err: ErrRowMissing}, false},
		{"connection lost while applying", &ApplyError{Table: "t", Err: io.EOF}, true},
		{"undefined table", pg(pgerrcode.UndefinedTable), false},
		{"stage wrapper", &StageError{Stage: "capture", Err: pg(pgerrcode.AdminShutdown)}, true},
		{"cancelled", context.Canceled, false},
		{"plain error", errors.New("something else"), false},
	} {
		if got := IsRetryable(c.err); got != c.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
