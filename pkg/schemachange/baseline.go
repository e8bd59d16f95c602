package schemachange

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Kept is a constraint of the source's that the target lacks on purpose
// for a while, so a baseline takes it as reflected and no stream adds it:
// the fallback window drops the foreign keys with ON DELETE/ON UPDATE
// actions of the side it streams back to (pkg/cutover), since the cascade
// already ran where the app writes.
type Kept struct {
	Table string // schema-qualified, quoted as format('%I.%I') quotes it
	Name  string
}

// RecordBaseline records on dst the catalog it reflects of src, the way
// the first stream after a snapshot takes it (dst's own schema keyed
// like src's, Align), with the constraints in kept as src has them,
// unless dst already keeps a catalog; the result says whether it
// recorded one. A stream that starts on a new pair of sides (the
// fallback window's reverse stream) needs it before it starts: the
// baseline it would take by itself would lack the constraints in kept,
// and the stream would add them. Taken any time before that stream's
// first poll, it is right as long as only that stream changes dst's
// schema: dst's own schema is what dst reflects.
func RecordBaseline(ctx context.Context, src, dst *pgx.Conn, kept []Kept) (bool, error) {
	stored, err := loadStored(ctx, dst)
	if err != nil {
		return false, err
	}
	if stored != nil {
		return false, nil
	}
	srcCat, err := readCatalogTx(ctx, src)
	if err != nil {
		return false, fmt.Errorf("source: %w", err)
	}
	dstCat, err := readCatalogTx(ctx, dst)
	if err != nil {
		return false, fmt.Errorf("target: %w", err)
	}
	// Align keys dst's tables by src's oids, so src's own constraints
	// are what withKept takes them from.
	base := Align(dstCat, srcCat)
	withKept(base, srcCat, kept)
	if err := pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error { return saveStored(ctx, tx, base) }); err != nil {
		return false, err
	}
	return true, nil
}

// ForgetBaseline removes the catalog dst keeps, if any: the next stream
// into dst starts from a new baseline (a new fallback window's reverse
// stream, whose earlier window's catalog is stale).
func ForgetBaseline(ctx context.Context, dst *pgx.Conn) error {
	return emptyIfExists(ctx, dst, "replicator.schema_catalog")
}

// emptyIfExists deletes every row of table, one of this package's own,
// when dst has it.
func emptyIfExists(ctx context.Context, dst *pgx.Conn, table string) error {
	if _, err := dst.Exec(ctx, `DO $$ BEGIN IF to_regclass('`+table+`') IS NOT NULL THEN DELETE FROM `+table+`; END IF; END $$`); err != nil {
		return fmt.Errorf("target: empty %s: %w", table, err)
	}
	return nil
}

// What the source lacks on purpose, kept on the target: while a
// constraint is listed here, a poll of the source takes it as the target
// reflects it, so the stream neither drops it on the target nor stops
// for it. The fallback window lists the foreign keys it drops on the
// source (they must stay on the target, where the app writes and their
// cascades run), before it drops them, and unlists them once they are
// back.
const keptDDL = `CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.schema_kept (
	tbl  text NOT NULL,
	name text NOT NULL,
	PRIMARY KEY (tbl, name)
)`

// Keep lists, on dst, constraints the source is about to lack on purpose.
func Keep(ctx context.Context, dst *pgx.Conn, kept []Kept) error {
	if len(kept) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, dst, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, keptDDL); err != nil {
			return fmt.Errorf("target: create replicator.schema_kept: %w", err)
		}
		for _, k := range kept {
			if _, err := tx.Exec(ctx, `INSERT INTO replicator.schema_kept (tbl, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, k.Table, k.Name); err != nil {
				return fmt.Errorf("target: record constraint %s of %s in replicator.schema_kept: %w", k.Name, k.Table, err)
			}
		}
		return nil
	})
}

// Unkeep empties the list on dst: the source has them back.
func Unkeep(ctx context.Context, dst *pgx.Conn) error {
	return emptyIfExists(ctx, dst, "replicator.schema_kept")
}

func loadKept(ctx context.Context, dst *pgx.Conn) ([]Kept, error) {
	rows, err := dst.Query(ctx, `SELECT tbl, name FROM replicator.schema_kept`)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedTable {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("target: read replicator.schema_kept: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Kept, error) {
		var k Kept
		return k, r.Scan(&k.Table, &k.Name)
	})
}

// withKept puts into cat the kept constraints it lacks, as known (keyed
// by the same oids) has them: into a catalog just read from the source,
// from the one the target reflects; into a baseline, from the source's.
func withKept(cat, known *Catalog, kept []Kept) {
	for _, k := range kept {
		for oid, t := range cat.Tables {
			if t.display() != k.Table && t.Qualified() != k.Table {
				continue
			}
			kt := known.Tables[oid]
			if _, has := t.Constraints[k.Name]; has || kt == nil {
				break
			}
			if c, ok := kt.Constraints[k.Name]; ok {
				if t.Constraints == nil {
					t.Constraints = map[string]Constraint{}
				}
				t.Constraints[k.Name] = c
			}
			break
		}
	}
}
