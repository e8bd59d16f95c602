package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// querier is a connection or transaction to read the catalog with.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// table is one source table whose rows are copied.
type table struct {
	Schema, Name string
	Columns      []string // written columns, in order: no generated or dropped ones
	HeapBytes    int64    // main fork: what ctid ranges split
	Bytes        int64    // heap and TOAST: what a copy of it costs
	EstRows      int64
	Unlogged     bool
	Partition    bool
	// Binary copies the table in binary COPY format (chooseFormats);
	// false: text.
	Binary bool
}

func (t *table) qualified() string { return pgutil.QualifiedName(t.Schema, t.Name) }

func (t *table) columnList() string {
	s := ""
	for i, c := range t.Columns {
		if i > 0 {
			s += ", "
		}
		s += pgutil.QuoteIdent(c)
	}
	return s
}

// listTables returns every user table holding rows (pgcatalog.RowTables):
// plain tables and the leaf partitions of partitioned ones. Partitioned
// parents hold no rows of their own, so each row is copied once, through
// its leaf. Views, materialized views and foreign tables hold no rows to
// copy.
func listTables(ctx context.Context, db querier) ([]*table, error) {
	rows, err := db.Query(ctx, `
		SELECT n.nspname, c.relname, c.relpersistence = 'u', c.relispartition,
			pg_relation_size(c.oid), pg_table_size(c.oid), c.reltuples::bigint,
			coalesce((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
				WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.RowTables})+`
		ORDER BY pg_table_size(c.oid) DESC, n.nspname, c.relname`)
	if err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	var out []*table
	for rows.Next() {
		t := &table{}
		if err := rows.Scan(&t.Schema, &t.Name, &t.Unlogged, &t.Partition, &t.HeapBytes, &t.Bytes, &t.EstRows, &t.Columns); err != nil {
			return nil, fmt.Errorf("list source tables: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list source tables: %w", err)
	}
	return out, nil
}

// lockTables takes ACCESS SHARE locks on every table to copy, held until
// the session's snapshot transaction ends, as pg_dump does. TRUNCATE and
// table rewrites are not MVCC-safe: committed after the snapshot but
// before a chunk is read, they would make the snapshot see an empty table.
// With the locks held they wait, and come after the copy.
//
// The catalog session locks first and waits if it must. Every copy worker
// then locks with NOWAIT: an exclusive request queued behind the first
// lock would make a waiting worker wait on it, and it on the catalog
// session, which waits for the workers — a deadlock the server cannot see.
// Failing fast names the table instead.
func lockTables(ctx context.Context, conn *pgx.Conn, tables []*table, nowait bool) error {
	const batch = 500
	mode := " IN ACCESS SHARE MODE"
	if nowait {
		mode += " NOWAIT"
	}
	for i := 0; i < len(tables); i += batch {
		var names []string
		for _, t := range tables[i:min(i+batch, len(tables))] {
			names = append(names, t.qualified())
		}
		if _, err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(names, ", ")+mode); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
				return fmt.Errorf("a session on the source is waiting for an exclusive lock (TRUNCATE, ALTER TABLE, VACUUM FULL…) on a table to copy, and the copy cannot share it: run again once that statement is done (see pg_locks where not granted): %w", err)
			}
			return fmt.Errorf("lock the source tables against TRUNCATE and rewrites during the copy: %w", err)
		}
	}
	return nil
}

// sequence is one source sequence and its value in the snapshot.
type sequence struct {
	Schema, Name string
	LastValue    int64
	IsCalled     bool
}

// readSequences lists the sequences (identity and serial ones included)
// and reads their values. Sequences are not transactional: what is read is
// the value now, at least the value at the snapshot, never less, which is
// what a stream that follows needs.
func readSequences(ctx context.Context, db querier) ([]sequence, error) {
	rows, err := db.Query(ctx, `
		SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'S' AND `+pgcatalog.UserRelation+` ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list source sequences: %w", err)
	}
	seqs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sequence, error) {
		var s sequence
		return s, r.Scan(&s.Schema, &s.Name)
	})
	if err != nil {
		return nil, fmt.Errorf("list source sequences: %w", err)
	}
	for i := range seqs {
		s := &seqs[i]
		q := "SELECT last_value, is_called FROM " + pgutil.QualifiedName(s.Schema, s.Name)
		if err := db.QueryRow(ctx, q).Scan(&s.LastValue, &s.IsCalled); err != nil {
			return nil, fmt.Errorf("read sequence %s on the source: %w", pgutil.QualifiedName(s.Schema, s.Name), err)
		}
	}
	return seqs, nil
}

// setSequences sets the target's sequences to the source's values in one
// transaction.
func setSequences(ctx context.Context, target *pgx.Conn, seqs []sequence) error {
	if len(seqs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, s := range seqs {
		b.Queue(`SELECT setval($1::regclass, $2, $3)`, pgutil.QualifiedName(s.Schema, s.Name), s.LastValue, s.IsCalled)
	}
	tx, err := target.Begin(ctx)
	if err != nil {
		return fmt.Errorf("set sequences on the target: %w", err)
	}
	defer tx.Rollback(ctx)
	br := tx.SendBatch(ctx, b)
	for _, s := range seqs {
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("set sequence %s on the target: %w", pgutil.QualifiedName(s.Schema, s.Name), err)
		}
	}
	if err := br.Close(); err != nil {
		return fmt.Errorf("set sequences on the target: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("set sequences on the target: %w", err)
	}
	return nil
}

// listMatviews lists the source's filled materialized views.
func listMatviews(ctx context.Context, ctl querier) ([]string, error) {
	rows, err := ctl.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'm' AND c.relispopulated AND `+pgcatalog.UserRelation+` ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("list source materialized views: %w", err)
	}
	mvs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var s, n string
		err := r.Scan(&s, &n)
		return pgutil.QualifiedName(s, n), err
	})
	if err != nil {
		return nil, fmt.Errorf("list source materialized views: %w", err)
	}
	return mvs, nil
}

// refreshMatviews fills the target's materialized views that are filled on
// the source: a schema-only dump creates them empty. They are computed
// from the target's copied rows, which are the snapshot's. A view that
// reads another not yet filled one fails and is tried again on the next
// pass.
func refreshMatviews(ctx context.Context, pending []string, target *pgx.Conn) (int, error) {
	total := len(pending)
	for len(pending) > 0 {
		var failed []string
		var lastErr error
		for _, mv := range pending {
			if _, err := target.Exec(ctx, "REFRESH MATERIALIZED VIEW "+mv); err != nil {
				failed, lastErr = append(failed, mv), fmt.Errorf("refresh materialized view %s on the target: %w", mv, err)
			}
		}
		if len(failed) == len(pending) {
			return total - len(failed), lastErr
		}
		pending = failed
	}
	return total, nil
}

// analyzeTables gathers planner statistics on the target for every copied
// table, jobs at a time: without them the application's first queries
// against the new database plan blind until autovacuum gets round to it.
// ANALYZE samples a fixed number of rows, so this is short even for large
// tables.
func analyzeTables(ctx context.Context, targetURL string, tables []*table, jobs int) error {
	next := make(chan string)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for _, t := range tables {
			select {
			case next <- t.qualified():
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for i := 0; i < min(jobs, max(len(tables), 1)); i++ {
		g.Go(func() error {
			conn, err := connect(gctx, targetURL, "target", nil)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			for name := range next {
				if _, err := conn.Exec(gctx, "ANALYZE "+name); err != nil {
					return fmt.Errorf("analyze %s on the target: %w", name, err)
				}
			}
			return nil
		})
	}
	return g.Wait()
}
