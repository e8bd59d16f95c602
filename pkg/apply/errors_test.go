package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

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
		{"admin shutdown", pg("57P01"), true},
		{"crash shutdown", pg("57P02"), true},
		{"cannot connect now", pg("57P03"), true},
		{"connection exception", fmt.Errorf("wrapped: %w", pg("08006")), true},
		{"slot still active", pg("55006"), true},
		{"unexpected EOF", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true},
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"server unreachable", &pgutil.ConnError{Side: "source", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, true},
		{"wrong password", &pgutil.ConnError{Side: "source", Err: pg("28P01")}, false},
		{"unique violation", &ApplyError{Table: "t", Err: pg("23505")}, false},
		{"row missing", &ApplyError{Table: "t", Err: ErrRowMissing}, false},
		{"connection lost while applying", &ApplyError{Table: "t", Err: io.EOF}, true},
		{"undefined table", pg("42P01"), false},
		{"stage wrapper", &StageError{Stage: "capture", Err: pg("57P01")}, true},
		{"cancelled", context.Canceled, false},
		{"plain error", errors.New("something else"), false},
	} {
		if got := IsRetryable(c.err); got != c.want {
			t.Errorf("%s: IsRetryable(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
