package trigger

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"replicator/pkg/pgutil"
)

// poolConns is the size of Capture's pool: one connection for each role
// that runs at once (the ticker, the batch reader holding a cursor, the
// bookkeeping of purge and metrics). No role takes a second connection
// while it holds one, so the roles never wait on each other for one.
const poolConns = 3

// openPool makes the pool of source connections; it connects only when a
// connection is first taken. The URL is parsed by pgutil first so that a
// bad one is reported without echoing it.
func openPool(ctx context.Context, sourceURL string) (*pgxpool.Pool, *pgx.ConnConfig, error) {
	cc, err := pgutil.ParseConfig(sourceURL, "source")
	if err != nil {
		return nil, nil, err
	}
	pc, err := pgxpool.ParseConfig(sourceURL)
	if err != nil {
		return nil, nil, &pgutil.ConnError{Side: "source", Where: pgutil.Redact(sourceURL), Reason: "malformed connection URL", Err: err}
	}
	pc.MaxConns, pc.MinConns = poolConns, 0
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, nil, pgutil.DescribeConnError(err, "source", cc.Host, cc.Port, cc.Database, cc.User)
	}
	return pool, cc, nil
}

// acquire takes a connection for one step of a role; the caller releases
// it. A connection lost to a network error or a restart of the source is
// replaced on the next use: the pool destroys one released closed or in a
// broken state, and pings one idle for over a second before handing it
// out, so a dead one is found before a step fails on it.
func (c *Capture) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, pgutil.DescribeConnError(err, "source", c.where.Host, c.where.Port, c.where.Database, c.where.User)
	}
	return conn, nil
}
