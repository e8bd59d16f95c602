package snapshot

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Tables that appear on the source while the stream runs (a deploy's
// CREATE TABLE, a new partition) are copied by the same ledger as a
// chunked copy: PlanTables adds their chunks to replicator.chunks, inside
// the caller's target transaction (which also creates the table there),
// and CopyPending copies every chunk not done. Each chunk's snapshot is
// recorded with its rows, so the stream's ChunkFilter skips exactly the
// changes those rows already hold, as after a chunked copy.

// TableCopier is PlanTables and CopyPending as a value, for the stream's
// schema-change handler (schemachange.Copier), which cannot import this
// package.
type TableCopier struct{}

// PlanTables is the package's PlanTables.
func (TableCopier) PlanTables(ctx context.Context, src *pgx.Conn, tx pgx.Tx, names []string, chunkBytes int64) error {
	return PlanTables(ctx, src, tx, names, chunkBytes)
}

// CopyPending is the package's CopyPending.
func (TableCopier) CopyPending(ctx context.Context, sourceURL, targetURL string, jobs int, log *zap.Logger) (int, error) {
	return CopyPending(ctx, sourceURL, targetURL, jobs, log)
}

// PlanTables adds the chunks of the source tables names (qualified and
// quoted, as pgutil.QualifiedName) to the ledger within tx, creating the
// ledger when there is none. Chunks the ledger holds for them already are
// replaced: the caller empties the target tables in the same transaction
// when it copies them again. chunkBytes <= 0 means the default 32 MiB.
func PlanTables(ctx context.Context, src *pgx.Conn, tx pgx.Tx, names []string, chunkBytes int64) error {
	if chunkBytes <= 0 {
		chunkBytes = 32 << 20
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(ledgerLockKey)); err != nil {
		return fmt.Errorf("lock the chunk ledger on the target: %w", err)
	}
	if _, err := tx.Exec(ctx, ledgerDDL); err != nil {
		return fmt.Errorf("create the chunk ledger replicator.chunks on the target: %w", err)
	}
	all, err := listTables(ctx, src)
	if err != nil {
		return err
	}
	byName := map[string]*table{}
	for _, t := range all {
		byName[t.qualified()] = t
	}
	for _, name := range names {
		t := byName[name]
		if t == nil {
			return fmt.Errorf("table %s is no longer on the source: it cannot be copied", name)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM replicator.chunks WHERE table_name = $1`, name); err != nil {
			return fmt.Errorf("replace the chunks of %s on the target: %w", name, err)
		}
		if _, err := planTable(ctx, src, tx, t, 0, chunkBytes); err != nil {
			return err
		}
	}
	return nil
}

// CopyPending copies every chunk of the ledger not done yet, with jobs
// workers, and returns once none is left: the tables PlanTables planned,
// also after an interruption (a chunk interrupted committed nothing and
// is copied again). It returns at once when there is no ledger.
func CopyPending(ctx context.Context, sourceURL, targetURL string, jobs int, log *zap.Logger) (int, error) {
	if jobs < 1 {
		jobs = 2
	}
	dst, err := connect(ctx, targetURL, "target", nil)
	if err != nil {
		return 0, err
	}
	defer dst.Close(context.Background())
	var left int
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('replicator.chunks') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, fmt.Errorf("look for the chunk ledger on the target: %w", err)
	}
	if !exists {
		return 0, nil
	}
	if err := dst.QueryRow(ctx, `SELECT count(*) - count(snapshot) FROM replicator.chunks`).Scan(&left); err != nil {
		return 0, fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	if left == 0 {
		return 0, nil
	}
	src, err := connect(ctx, sourceURL, "source", nil)
	if err != nil {
		return 0, err
	}
	all, err := listTables(ctx, src)
	src.Close(context.Background())
	if err != nil {
		return 0, err
	}
	byName := make(map[string]*table, len(all))
	for _, t := range all {
		byName[t.qualified()] = t
	}
	// A column added on the source after the target's table was made is
	// not copied: the table's rows are copied with the columns the target
	// has, and the stream's schema-change handler, seeing the column added
	// to a table it just copied, copies the table again with it.
	rows, err := dst.Query(ctx, `SELECT DISTINCT c.table_name,
			coalesce((SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE a.attrelid = c.table_name::regclass
				AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''), '{}')
		FROM replicator.chunks c WHERE c.snapshot IS NULL`)
	if err != nil {
		return 0, fmt.Errorf("read the columns of the tables to copy on the target: %w", err)
	}
	for rows.Next() {
		var name string
		var cols []string
		if err := rows.Scan(&name, &cols); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read the columns of the tables to copy on the target: %w", err)
		}
		t := byName[name]
		if t == nil {
			continue // claimAll names it
		}
		has := map[string]bool{}
		for _, c := range cols {
			has[c] = true
		}
		n := *t
		n.Columns = nil
		for _, c := range t.Columns {
			if has[c] {
				n.Columns = append(n.Columns, c)
			}
		}
		byName[name] = &n
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the columns of the tables to copy on the target: %w", err)
	}
	src, err = connect(ctx, sourceURL, "source", nil)
	if err != nil {
		return 0, err
	}
	pending := make([]*table, 0, len(byName))
	for _, t := range byName {
		pending = append(pending, t)
	}
	err = chooseFormats(ctx, src, dst, pending, CopyFormatAuto, log)
	src.Close(context.Background())
	if err != nil {
		return 0, err
	}
	log.Info("copying new tables' chunks", zap.Int("chunks", left))
	cfg := &Config{SourceURL: sourceURL, TargetURL: targetURL, Jobs: jobs}
	if err := claimAll(ctx, cfg, byName, false, &reporter{}, nil, log); err != nil { // the new tables were made whole, indexes included
		return 0, err
	}
	return left, nil
}
