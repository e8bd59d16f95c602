package benchkit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PgbenchTables are the tables `pgbench -i` creates.
var PgbenchTables = []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"}

// Exec runs SQL on its own connection; the error names the statement.
func Exec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", strings.Fields(sql)[0], err)
	}
	return nil
}

// QueryRow runs a one-row query on its own connection into dst.
func QueryRow(ctx context.Context, url, sql string, dst ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dst...)
}

// WaitTrue polls query, which returns one boolean, every 10 ms until it
// is true; after limit it fails naming what was awaited.
func WaitTrue(ctx context.Context, url string, limit time.Duration, what, query string, args ...any) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(limit)
	for {
		var done bool
		if err := conn.QueryRow(ctx, query, args...).Scan(&done); err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitSlot waits until the replication slot has confirmed lsn: everything
// up to it is applied and committed on the consumer's side.
func WaitSlot(ctx context.Context, url, slot, lsn string, limit time.Duration) error {
	return WaitTrue(ctx, url, limit, fmt.Sprintf("slot %s reaching %s", slot, lsn),
		`SELECT coalesce(confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1`, slot, lsn)
}

// SameData compares the tables on both sides with an md5 of the sorted row
// texts, computed by each server independently of the replicator.
func SameData(ctx context.Context, a, b string, tables []string) error {
	for _, t := range tables {
		q := fmt.Sprintf("SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') FROM %s t", t)
		var na, nb int64
		var ha, hb string
		if err := QueryRow(ctx, a, q, &na, &ha); err != nil {
			return err
		}
		if err := QueryRow(ctx, b, q, &nb, &hb); err != nil {
			return err
		}
		if na != nb || ha != hb {
			return fmt.Errorf("table %s differs: %d rows on the source, %d on the copy (md5 %s vs %s)", t, na, nb, ha, hb)
		}
	}
	return nil
}

// LogFile opens work/name.log for appending a tool's output, or falls back
// to stderr.
func LogFile(work, name string) *os.File {
	f, err := os.OpenFile(filepath.Join(work, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return os.Stderr
	}
	return f
}
