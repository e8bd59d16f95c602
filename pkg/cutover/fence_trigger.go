package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// The trigger fence is the one that works on Heroku's real setup, where the
// app logs in with the replicator's own role: nothing that tells the two
// apart by role (a revoke, a role or database setting) can stop one and
// not the other. A table owner may create triggers, so the fence is a
// statement-level BEFORE INSERT/UPDATE/DELETE/TRUNCATE trigger on every
// user table that raises a clear error. It fires for superusers too, and
// for the app whatever role it logs in with.
//
// The replicator's own sessions pass in either of two ways:
//   - session_replication_role = replica: the triggers are plain (ENABLE
//     ORIGIN) triggers, which replica sessions do not fire. Apply runs that
//     way where it may (a superuser or rds_superuser target).
//   - the custom setting replicator.fence_bypass = on, which any role may
//     set for its own session: the way for an apply onto a Heroku source,
//     whose role may not set session_replication_role.
//
// Forward trigger capture writes only to its own tables in schema
// replicator (the changelog's rows come from AFTER ROW triggers of the
// app's statements, which the fence refuses first; ticks are not user
// tables), so the fence never stops it.
//
// The function lives in its own schema, replicator_fence, so that removing
// the replicator's bookkeeping (cleanup drops schema replicator) can never
// lift the fence by accident: only Unfence does.
const (
	fenceSchema   = "replicator_fence"
	fenceTrigger  = "replicator_fence"
	fenceFunction = fenceSchema + ".refuse"
	// FenceBypassSetting is the session setting with which the
	// replicator's own sessions write through the trigger fence.
	FenceBypassSetting = "replicator.fence_bypass"
)

const fenceFunctionDDL = `CREATE SCHEMA IF NOT EXISTS ` + fenceSchema + `;
CREATE OR REPLACE FUNCTION ` + fenceFunction + `() RETURNS trigger LANGUAGE plpgsql AS $fence$
BEGIN
	IF current_setting('` + FenceBypassSetting + `', true) = 'on' THEN
		RETURN NULL;
	END IF;
	RAISE EXCEPTION 'replicator fence: % on %.% refused: the database is moving to AWS and this source is fenced for the cutover',
		TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
		USING ERRCODE = 'read_only_sql_transaction',
		HINT = 'point the app at the new DATABASE_URL; to give this database its writes back run replicator cutover --unfence';
END
$fence$`

// rollbackFenceDDL is the same fence on the target, put there by
// `cutover --rollback`, whose message sends the app back to the source.
var rollbackFenceDDL = strings.NewReplacer(
	"the database is moving to AWS and this source is fenced for the cutover", "the database is moving back to the source and this target is fenced for the rollback",
	"point the app at the new DATABASE_URL; to give this database its writes back run replicator cutover --unfence", "point the app at the DATABASE_URL of the source (Heroku) again",
).Replace(fenceFunctionDDL)

// FenceMessage is the start of the error every write refused by the
// trigger fence carries.
const FenceMessage = "replicator fence: "

// trigTables restricts pg_class c / pg_namespace n to the tables the
// trigger fence covers: every user table of pgcatalog, partitioned parents
// and partitions alike (a statement trigger fires only for the table the
// statement names, and a statement may name a partition). Views write
// through their tables' triggers.
var trigTables = pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables})

// planTriggerFence lists the tables to fence, or says which tables the
// replicator's role may not create triggers on.
func planTriggerFence(ctx context.Context, src *pgx.Conn, p *fencePlan) error {
	rows, err := src.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname), has_table_privilege(c.oid, 'TRIGGER')
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE `+trigTables+` ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("source: list the user tables: %w", err)
	}
	var denied []string
	for rows.Next() {
		var name string
		var may bool
		if err := rows.Scan(&name, &may); err != nil {
			rows.Close()
			return fmt.Errorf("source: list the user tables: %w", err)
		}
		if may {
			p.rec.Tables = append(p.rec.Tables, name)
		} else {
			denied = append(denied, name)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("source: list the user tables: %w", err)
	}
	if len(denied) > 0 {
		p.denied = denied
	}
	var foreign []string
	frows, err := src.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables, Also: []pgcatalog.Kind{pgcatalog.Foreign}})+` AND c.relkind = 'f' ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("source: list foreign tables: %w", err)
	}
	if foreign, err = pgx.CollectRows(frows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("source: list foreign tables: %w", err)
	}
	for _, f := range foreign {
		p.warnings = append(p.warnings, "foreign table "+f+" is not fenced: its rows live on another server, which the migration does not carry")
	}
	return nil
}

// endedSession is a session the fence ended, as recorded and printed:
// never its query text, which may hold anything.
type endedSession struct {
	PID         int32     `json:"pid"`
	User        string    `json:"user"`
	Application string    `json:"application,omitempty"`
	Client      string    `json:"client,omitempty"`
	XactStart   time.Time `json:"xact_start"`
}

func (s endedSession) String() string {
	app := s.Application
	if app == "" {
		app = "no application_name"
	}
	client := s.Client
	if client == "" {
		client = "local"
	}
	return fmt.Sprintf("pid %d (%s, %s from %s, transaction open since %s)", s.PID, s.User, app, client, s.XactStart.UTC().Format("15:04:05.000"))
}

// openTableWriters selects, in pg_stat_activity a, the sessions with an
// open write transaction on a user table: they hold a transaction id and
// a RowExclusiveLock (or stronger) on one. The replicator's own sessions
// (application_name replicator…, see pgutil) and this one are left alone.
var openTableWriters = `a.datname = current_database() AND a.backend_type = 'client backend'
	AND a.pid <> pg_backend_pid() AND a.backend_xid IS NOT NULL
	AND a.application_name NOT LIKE 'replicator%'
	AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE l.pid = a.pid AND l.granted AND l.mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
		AND ` + trigTables + `)`

// applyTriggerFence creates the fence in one transaction and ends the write
// transactions still open on the fenced tables (a trigger cannot stop a
// statement that already ran). CREATE TRIGGER waits for those
// transactions' locks, so they are ended first, inside the transaction,
// and a short lock timeout retries the whole if a new writer slipped in.
// It may be repeated: the triggers are created where missing.
func applyTriggerFence(ctx context.Context, src *pgx.Conn, rec *fenceRecord) ([]endedSession, error) {
	var ended []endedSession
	for attempt := 1; ; attempt++ {
		var now []endedSession
		err := pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '2s'`); err != nil {
				return fmt.Errorf("source: set lock_timeout: %w", err)
			}
			// Materialized first: in one WHERE the planner may call
			// pg_terminate_backend before the other conditions.
			rows, err := tx.Query(ctx, `WITH w AS MATERIALIZED (SELECT a.pid, a.usename, a.application_name, coalesce(host(a.client_addr), '') AS client, a.xact_start
				FROM pg_stat_activity a WHERE `+openTableWriters+`)
				SELECT pid, usename, application_name, client, xact_start FROM w WHERE pg_terminate_backend(pid)`)
			if err != nil {
				return fmt.Errorf("source: end the open write transactions: %w", err)
			}
			now, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (endedSession, error) {
				var s endedSession
				return s, r.Scan(&s.PID, &s.User, &s.Application, &s.Client, &s.XactStart)
			})
			if err != nil {
				return fmt.Errorf("source: end the open write transactions: %w: grant the replicator's role pg_signal_backend, or stop the app yourself (e.g. heroku ps:scale web=0 worker=0) and run again", err)
			}
			// All tables in one statement, right after ending the
			// writers: the window for a new writer is as short as it gets.
			var present []string
			prows, err := tx.Query(ctx, `SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL`, rec.Tables)
			if err == nil {
				present, err = pgx.CollectRows(prows, pgx.RowTo[string])
			}
			if err != nil {
				return fmt.Errorf("source: look up the tables to fence: %w", err)
			}
			if len(present) > 0 {
				// The names are format('%I.%I') from the catalog: quoted.
				if _, err := tx.Exec(ctx, "LOCK TABLE "+strings.Join(present, ", ")+" IN SHARE ROW EXCLUSIVE MODE"); err != nil {
					return fmt.Errorf("source: lock the tables to fence: %w", err)
				}
			}
			ddl := fenceFunctionDDL
			if rec.Rollback {
				ddl = rollbackFenceDDL
			}
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return fmt.Errorf("source: create the fence function %s(): %w", fenceFunction, err)
			}
			for _, t := range rec.Tables {
				q := fmt.Sprintf(`DO $do$ BEGIN
					IF to_regclass(%[1]s) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%[1]s) AND tgname = %[2]s) THEN
						CREATE TRIGGER %[3]s BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON %[4]s FOR EACH STATEMENT EXECUTE FUNCTION %[5]s();
					END IF; END $do$`, pgutil.QuoteLiteral(t), pgutil.QuoteLiteral(fenceTrigger), pgutil.QuoteIdent(fenceTrigger), t, fenceFunction)
				if _, err := tx.Exec(ctx, q); err != nil {
					return fmt.Errorf("source: create the fence trigger on %s: %w", t, err)
				}
			}
			if rec.FencedAt.IsZero() {
				return tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&rec.FencedAt)
			}
			return nil
		})
		ended = append(ended, now...)
		var pgErr *pgconn.PgError
		lockErr := errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.LockNotAvailable || pgErr.Code == pgerrcode.DeadlockDetected)
		if lockErr && attempt < 5 {
			// A writer started between ending the others and the locks
			// (or took its locks in the other order): end it too.
			continue
		}
		if lockErr {
			return ended, fmt.Errorf("source: the fence could not lock the tables in %d attempts (%w): a session holds a lock without writing (see pg_locks); end it and run cutover again", attempt, err)
		}
		return ended, err
	}
}

// fencedTables lists the tables of the source that carry the fence
// trigger now, whatever any record says.
func fencedTables(ctx context.Context, src *pgx.Conn) ([]string, error) {
	rows, err := src.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
		WHERE t.tgname = $1 AND pn.nspname = $2 ORDER BY 1`, fenceTrigger, fenceSchema)
	if err != nil {
		return nil, fmt.Errorf("source: look for fence triggers: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("source: look for fence triggers: %w", err)
	}
	return out, nil
}

// undoTriggerFence drops the fence triggers on the recorded tables and
// then the fence's function and schema, in one transaction. Tables dropped
// since are reported.
func undoTriggerFence(ctx context.Context, src *pgx.Conn, tables []string) (restored int, gone []string, err error) {
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		for _, t := range tables {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t).Scan(&exists); err != nil {
				return fmt.Errorf("source: look up %s: %w", t, err)
			}
			if !exists {
				gone = append(gone, t)
				continue
			}
			if _, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+pgutil.QuoteIdent(fenceTrigger)+" ON "+t); err != nil {
				return fmt.Errorf("source: drop the fence trigger on %s: %w", t, err)
			}
			restored++
		}
		// Without CASCADE: a fence trigger the record does not know of
		// (a table created under the fence by hand) keeps the function,
		// and the error names it.
		if _, err := tx.Exec(ctx, "DROP FUNCTION IF EXISTS "+fenceFunction+"()"); err != nil {
			return fmt.Errorf("source: drop the fence function %s(): %w: drop the fence triggers it names, then run --unfence again", fenceFunction, err)
		}
		if _, err := tx.Exec(ctx, "DROP SCHEMA IF EXISTS "+fenceSchema); err != nil {
			return fmt.Errorf("source: drop schema %s: %w", fenceSchema, err)
		}
		return nil
	})
	return restored, gone, err
}

func describeEnded(ss []endedSession) string {
	if len(ss) == 0 {
		return "no write transaction was open"
	}
	var parts []string
	for i, s := range ss {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(ss)-5))
			break
		}
		parts = append(parts, s.String())
	}
	return fmt.Sprintf("ended %d open write transactions: %s", len(ss), strings.Join(parts, "; "))
}
