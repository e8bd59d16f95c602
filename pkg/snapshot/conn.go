package snapshot

import (
	"context"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
)

// sessionParams make both sides print and parse values the same way, so
// that COPY text written by the source is read back identically by the
// target whatever the servers' defaults: shortest exact floats, ISO dates,
// UTC, hex bytea, UTF-8, C money. row_security = off makes a read that a
// row-level security policy would filter fail loudly instead of copying
// fewer rows. Timeouts a role may carry (an app's statement_timeout) must
// not cut a long COPY or the catalog session that waits, idle in its
// snapshot transaction, for the copy to end.
var sessionParams = map[string]string{
	"statement_timeout":                   "0",
	"lock_timeout":                        "0",
	"idle_in_transaction_session_timeout": "0",
	"lc_monetary":                         "C",
	"row_security":                        "off",
	"DateStyle":                           "ISO, MDY",
	"IntervalStyle":                       "postgres",
	"TimeZone":                            "UTC",
	"extra_float_digits":                  "3",
	"bytea_output":                        "hex",
	"client_encoding":                     "UTF8",
}

// connect opens one connection to side ("source" or "target") with the
// session parameters above plus extra.
func connect(ctx context.Context, connString, side string, extra map[string]string) (*pgx.Conn, error) {
	cfg, err := pgutil.ParseConfig(connString, side)
	if err != nil {
		return nil, err
	}
	for k, v := range sessionParams {
		cfg.RuntimeParams[k] = v
	}
	for k, v := range extra {
		cfg.RuntimeParams[k] = v
	}
	return pgutil.ConnectConfig(ctx, cfg, side)
}

// toolConn splits a connection URL for pg_dump and pg_restore into a
// connection string without the password (it goes on their command line,
// visible in ps) and the environment that carries the password instead.
func toolConn(connString string) (dsn string, env []string) {
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		// A keyword/value string: libpq reads it as is.
		return connString, nil
	}
	var password string
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			password = p
			u.User = url.User(u.User.Username())
		}
	}
	q := u.Query()
	if p := q.Get("password"); p != "" {
		password = p
		q.Del("password")
	}
	// pgx-only parameters that libpq would reject.
	for k := range q {
		if strings.HasPrefix(k, "pool_") || k == "statement_cache_capacity" || k == "default_query_exec_mode" ||
			k == "description_cache_capacity" {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return u.String(), env
}
