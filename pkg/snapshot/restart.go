package snapshot

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// cleanTarget removes what an interrupted snapshot left on the target, so
// that the run can start over: every schema but public and replicator is
// dropped with its contents, and public is emptied of tables, views,
// sequences, routines and types (public itself, its owner and grants, and
// extensions stay; the schema restore skips extensions that exist).
//
// Starting over rather than resuming is deliberate: the rows already
// copied were read in the interrupted run's snapshot, which died with it.
// A new slot starts at a new consistent point; keeping old rows would
// leave the changes between the two snapshots missing from them, and
// applying those changes again is only safe for an idempotent apply. So
// everything is copied again under the new snapshot, and nothing is
// duplicated because the tables are new and empty.
//
// It is only called when the target's replicator.state row says an
// unfinished snapshot of ours is there; preflight refused to start on a
// target that held tables of its own, so these objects are ours.
func cleanTarget(ctx context.Context, dst *pgx.Conn, log *zap.Logger) error {
	schemas, err := queryStrings(ctx, dst, `SELECT nspname FROM pg_namespace n
		WHERE `+pgcatalog.UserSchema+` AND nspname <> 'public' ORDER BY 1`)
	if err != nil {
		return err
	}
	var stmts []string
	for _, s := range schemas {
		stmts = append(stmts, "DROP SCHEMA IF EXISTS "+pgutil.QuoteIdent(s)+" CASCADE")
	}
	// Objects of public that are not part of an extension, most dependent
	// kinds first; CASCADE and IF EXISTS because dropping one may already
	// have dropped another. Tables are dropped by the roots of their
	// partition trees, which take their partitions with them.
	inPublic := `SELECT quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND `
	notExt := pgcatalog.NotExtensionMember
	kinds := []struct{ drop, query string }{
		{"DROP TABLE IF EXISTS %s CASCADE", inPublic + pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.RootTables})},
		{"DROP FOREIGN TABLE IF EXISTS %s CASCADE", inPublic + `c.relkind = 'f' AND ` + pgcatalog.UserRelation},
		{"DROP VIEW IF EXISTS %s CASCADE", inPublic + `c.relkind = 'v' AND ` + pgcatalog.UserRelation},
		{"DROP MATERIALIZED VIEW IF EXISTS %s CASCADE", inPublic + `c.relkind = 'm' AND ` + pgcatalog.UserRelation},
		{"DROP SEQUENCE IF EXISTS %s CASCADE", inPublic + `c.relkind = 'S' AND ` + pgcatalog.UserRelation},
		{"DROP AGGREGATE IF EXISTS %s CASCADE", `SELECT quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind = 'a' AND ` + notExt("pg_proc", "p.oid")},
		{"DROP ROUTINE IF EXISTS %s CASCADE", `SELECT quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')' FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.prokind <> 'a' AND ` + notExt("pg_proc", "p.oid")},
		{"DROP TYPE IF EXISTS %s CASCADE", `SELECT quote_ident(t.typname) FROM pg_type t WHERE t.typnamespace = 'public'::regnamespace
			AND (t.typtype IN ('e','r','d') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) AND ` + notExt("pg_type", "t.oid")},
	}
	for _, k := range kinds {
		names, err := queryStrings(ctx, dst, k.query)
		if err != nil {
			return err
		}
		for _, n := range names {
			stmts = append(stmts, fmt.Sprintf(k.drop, "public."+n))
		}
	}
	for _, s := range stmts {
		if _, err := dst.Exec(ctx, s); err != nil {
			return fmt.Errorf("clean the interrupted snapshot from the target (%s): %w", s, err)
		}
	}
	log.Info("dropped the interrupted snapshot's objects from the target", zap.Int("statements", len(stmts)), zap.Strings("schemas", schemas))
	return nil
}

func queryStrings(ctx context.Context, db *pgx.Conn, sql string) ([]string, error) {
	rows, err := db.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("inspect the target: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("inspect the target: %w", err)
	}
	return out, nil
}
