package pgutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ConnError is a failed connection, described for the person running the
// command: which side, where, what went wrong, and what to check.
type ConnError struct {
	Side   string // "source" or "target"
	Where  string // host:port/database, no credentials
	Reason string // the cause, credentials removed
	Fix    string
	Err    error
}

func (e *ConnError) Error() string {
	s := fmt.Sprintf("%s %s: %s", e.Side, e.Where, e.Reason)
	if e.Fix != "" {
		s += ": " + e.Fix
	}
	return s
}

func (e *ConnError) Unwrap() error { return e.Err }

// ParseConfig parses a connection URL and reports a bad one without echoing
// it (it may hold a password).
func ParseConfig(connString, side string) (*pgx.ConnConfig, error) {
	if strings.TrimSpace(connString) == "" {
		return nil, &ConnError{Side: side, Where: "(no URL)", Reason: "no connection URL given",
			Fix: fmt.Sprintf("pass --%s postgres://user:password@host:5432/db or set REPLICATOR_%s_URL", side, strings.ToUpper(side))}
	}
	cfg, err := pgx.ParseConfig(connString)
	parsedPw := ""
	if cfg != nil {
		parsedPw = cfg.Password
	}
	if bad := badPassword(connString, side, err, parsedPw); bad != nil {
		return nil, bad
	}
	if bad := fileError(err, connString, side); bad != nil {
		return nil, bad
	}
	if err != nil {
		return nil, &ConnError{Side: side, Where: Redact(connString), Reason: "malformed connection URL: " + RedactText(unwrapMsg(err)),
			Fix: "use the form postgres://user:password@host:5432/dbname?sslmode=require", Err: err}
	}
	return cfg, nil
}

// Connect opens one connection. Its error is a *ConnError.
func Connect(ctx context.Context, connString, side string) (*pgx.Conn, error) {
	cfg, err := ParseConfig(connString, side)
	if err != nil {
		return nil, err
	}
	return ConnectConfig(ctx, cfg, side)
}

// ConnectConfig opens one connection from a parsed config.
func ConnectConfig(ctx context.Context, cfg *pgx.ConnConfig, side string) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, DescribeConnError(err, side, cfg.Host, cfg.Port, cfg.Database, cfg.User)
	}
	return conn, nil
}

// DescribeConnError turns a driver's connection error into a *ConnError.
func DescribeConnError(err error, side, host string, port uint16, db, user string) error {
	e := &ConnError{Side: side, Where: fmt.Sprintf("%s:%d/%s", host, port, db), Err: err}
	var pgErr *pgconn.PgError
	var dnsErr *net.DNSError
	var opErr *net.OpError
	switch {
	case errors.As(err, &pgErr):
		e.Reason = RedactText(pgErr.Message)
		switch pgErr.Code {
		case pgerrcode.InvalidPassword, pgerrcode.InvalidAuthorizationSpecification:
			e.Fix = fmt.Sprintf("check the user %q and password in the %s URL (and pg_hba.conf)", user, side)
		case pgerrcode.InvalidCatalogName:
			e.Fix = fmt.Sprintf("create the database or correct its name in the %s URL", side)
		case pgerrcode.TooManyConnections:
			e.Fix = "too many connections: lower --jobs or raise max_connections"
		default:
			e.Fix = "SQLSTATE " + pgErr.Code
		}
	case errors.As(err, &dnsErr):
		e.Reason = "unknown host " + dnsErr.Name
		e.Fix = fmt.Sprintf("check the host name in the %s URL", side)
	case errors.As(err, &opErr):
		e.Reason = "cannot reach the server (" + RedactText(opErr.Err.Error()) + ")"
		e.Fix = "check host, port, security groups and that the server is running"
	case errors.Is(err, context.DeadlineExceeded):
		e.Reason = "connection timed out"
		e.Fix = "check host, port and security groups; add connect_timeout=N to the URL to wait longer"
	default:
		msg := RedactText(unwrapMsg(err))
		e.Reason = msg
		if strings.Contains(msg, "SSL") || strings.Contains(msg, "tls") || strings.Contains(msg, "certificate") {
			e.Fix = "check sslmode and sslrootcert in the URL (RDS: sslmode=verify-full&sslrootcert=/path/to/global-bundle.pem)"
		}
	}
	return e
}

// unwrapMsg is the innermost useful message: pgconn wraps errors in text
// that repeats the connection string.
func unwrapMsg(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// ConnectReplication opens a logical replication connection
// (replication=database) from a connection URL: it takes the replication
// protocol's commands (CREATE_REPLICATION_SLOT, START_REPLICATION) as well
// as SQL. Like Connect, it never echoes the URL and its error is a
// *ConnError.
func ConnectReplication(ctx context.Context, connString, side string) (*pgconn.PgConn, error) {
	cfg, err := ParseConfig(connString, side)
	if err != nil {
		return nil, err
	}
	// pgx.ParseConfig has taken out its own parameters (statement cache,
	// exec mode), which the server would refuse as runtime parameters.
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, &cfg.Config)
	if err != nil {
		return nil, DescribeConnError(err, side, cfg.Host, cfg.Port, cfg.Database, cfg.User)
	}
	return conn, nil
}
