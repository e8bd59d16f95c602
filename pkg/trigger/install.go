package trigger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// Names of what Install creates on the source. Everything lives in schema
// replicator, so `DROP SCHEMA replicator CASCADE` (pkg/cleanup) also takes
// the triggers on the application's tables, which depend on the functions.
const (
	RowTrigger      = "replicator_capture"
	TruncateTrigger = "replicator_capture_truncate"
	truncateFunc    = "replicator.capture_truncate"
)

// ApplyingSetting is the session setting this tool's apply connections
// set to "on": the capture functions record nothing of such a session, so
// changes applied to a captured database (the fallback window's reverse
// stream) do not come back as captured changes.
const ApplyingSetting = "replicator.applying"

// skipApplying is the first statement of every capture function.
const skipApplying = "\tIF pg_catalog.current_setting('" + ApplyingSetting + "', true) OPERATOR(pg_catalog.=) 'on' THEN RETURN NULL; END IF;\n"

// The changelog has no primary key: nothing looks a row up by id, and every
// index is paid for on each write of the application. The index on txid
// serves both the batch reads and the purge, which select by transaction
// id ranges; the partial index of TRUNCATE rows is only written by
// TRUNCATE (see batchSQL). The id sequence keeps the default CACHE 1: ids
// must be handed out in time order across sessions (see batch.go).
const schemaDDL = `
CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.changelog (
	id   bigserial,
	txid xid8 NOT NULL,
	rel  oid NOT NULL,
	op   "char" NOT NULL,
	key  jsonb,
	vals jsonb
);
CREATE INDEX IF NOT EXISTS changelog_txid ON replicator.changelog (txid);
CREATE INDEX IF NOT EXISTS changelog_truncates ON replicator.changelog (rel, id) WHERE op = 'T';
CREATE TABLE IF NOT EXISTS replicator.ticks (
	id   bigint PRIMARY KEY,
	snap pg_snapshot NOT NULL,
	at   timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS replicator.tables (
	relid       oid PRIMARY KEY,
	root        oid NOT NULL,
	nspname     text NOT NULL,
	relname     text NOT NULL,
	identity    "char" NOT NULL,
	columns     text[] NOT NULL,
	key_columns text[] NOT NULL,
	installed   timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON ALL TABLES IN SCHEMA replicator FROM PUBLIC;
`

// A shared statement-level function serves TRUNCATE of every table: it
// records the truncated relation itself (a partition truncated alone is
// recorded as that partition). CASCADE and RESTART IDENTITY cannot be seen
// from a trigger: a cascaded truncate fires the triggers of every table it
// empties, so each is recorded on its own, and sequences are not
// replicated anyway (cutover moves them).
const truncateFuncDDL = `
CREATE OR REPLACE FUNCTION replicator.capture_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $f$
BEGIN
` + skipApplying + `	INSERT INTO replicator.changelog (txid, rel, op) VALUES (pg_catalog.pg_current_xact_id(), TG_RELID, 'T');
	RETURN NULL;
END $f$;
REVOKE ALL ON FUNCTION replicator.capture_truncate() FROM PUBLIC;
`

// Table is a captured source table as recorded at install time.
type Table struct {
	ID        uint32 // pg_class oid on the source
	Root      uint32 // the partitioned root whose trigger captures it (ID itself when not a partition)
	Namespace string
	Name      string
	// Identity is how UPDATE and DELETE locate the row, with pgoutput's
	// letters: 'd' primary key, 'i' replica identity index, 'f' every
	// column (no key).
	Identity byte
	Columns  []Column
	colIndex map[string]int
}

// Column is one captured column. Generated columns are not captured.
type Column struct {
	Name string
	Type string // format_type on the source, e.g. numeric(10,2)
	Key  bool   // part of the row's key (every column when Identity is 'f')
	fast bool   // "=" equality means identical text: plain IS DISTINCT FROM
	// settings are the output settings the column's text form depends on.
	settings []string
}

// String is the qualified, quoted name.
func (t *Table) String() string { return pgutil.QualifiedName(t.Namespace, t.Name) }

func (t *Table) index() {
	t.colIndex = make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		t.colIndex[c.Name] = i
	}
}

// Types whose "=" holds only for values with the same text form, so an
// UPDATE can compare them with plain inequality. Every other type (numeric
// 1.0 = 1.00, float8 0 = -0, jsonb, citext, interval '1 day' = '24 hours',
// …) is compared by binary image (record *<>; the casts to record keep the
// parser from comparing the row constructors column by column), which
// never calls two values with different text forms equal. char(n) is
// fast only with a length: then every value is padded alike.
var fastEquality = map[string]bool{"int2": true, "int4": true, "int8": true, "bool": true, "bytea": true,
	"uuid": true, "date": true, "timestamp": true, "timestamptz": true, "time": true, "oid": true,
	"text": true, "varchar": true, "char": true, "name": true}

// Output settings a capture function pins while it converts values to
// text, and the types whose text depends on each. A setting is pinned
// only when the writing session's value differs (with set_config(…,
// true), restored before the function returns), and only by functions of
// tables that have such a type: a SET clause on the function would be
// saved and restored around every call, which on PostgreSQL 15 walks
// every setting and costs the application's writes more than the rest.
type pin struct {
	name, value, differs string
}

var (
	pins = []pin{
		{"DateStyle", "ISO, MDY", `pg_catalog.current_setting('DateStyle') OPERATOR(pg_catalog.<>) 'ISO, MDY'`},
		{"IntervalStyle", "postgres", `pg_catalog.current_setting('IntervalStyle') OPERATOR(pg_catalog.<>) 'postgres'`},
		// Servers set up on a UTC host default to Etc/UTC: same text.
		{"TimeZone", "UTC", `pg_catalog.current_setting('TimeZone') OPERATOR(pg_catalog.<>) ALL ('{UTC,Etc/UTC,GMT,Etc/GMT,UCT,Etc/UCT,Zulu,Etc/Zulu,Universal,Etc/Universal}'::pg_catalog.text[])`},
		{"bytea_output", "hex", `pg_catalog.current_setting('bytea_output') OPERATOR(pg_catalog.<>) 'hex'`},
		// 1 and above all give the shortest exact text; below 1 loses digits.
		{"extra_float_digits", "1", `pg_catalog.current_setting('extra_float_digits')::pg_catalog.int4 OPERATOR(pg_catalog.<) 1`},
	}
	allPins = []string{"DateStyle", "IntervalStyle", "TimeZone", "bytea_output", "extra_float_digits"}
	// Types known not to depend on any of them.
	settingFree = map[string]bool{"int2": true, "int4": true, "int8": true, "bool": true, "numeric": true,
		"text": true, "varchar": true, "bpchar": true, "char": true, "name": true, "uuid": true, "json": true,
		"jsonb": true, "oid": true, "inet": true, "cidr": true, "macaddr": true, "macaddr8": true, "bit": true,
		"varbit": true, "xml": true, "tsvector": true, "tsquery": true, "money": true, "citext": true, "ltree": true, "hstore": true}
	settingsOf = map[string][]string{"date": {"DateStyle"}, "timestamp": {"DateStyle"},
		"timestamptz": {"DateStyle", "TimeZone"}, "time": {"DateStyle"}, "timetz": {"DateStyle"},
		"interval": {"IntervalStyle"}, "float4": {"extra_float_digits"}, "float8": {"extra_float_digits"},
		"bytea": {"bytea_output"}, "point": {"extra_float_digits"}, "line": {"extra_float_digits"},
		"lseg": {"extra_float_digits"}, "box": {"extra_float_digits"}, "path": {"extra_float_digits"},
		"polygon": {"extra_float_digits"}, "circle": {"extra_float_digits"}}
)

// settingsFor returns the settings a type's text output depends on: by
// name for the built-in scalar types, all of them for anything composite,
// ranged or unknown (enums are free).
func settingsFor(typname string, typtype string) []string {
	if s, ok := settingsOf[typname]; ok {
		return s
	}
	if settingFree[typname] || typtype == "e" {
		return nil
	}
	return allPins
}

// ListTables reads the tables trigger capture covers: the user tables of
// pgcatalog (ordinary and partitioned, outside the system schemas, schema
// replicator and extensions), each partition listed with the root of its
// tree, whose row trigger captures it. A partition whose root is not a
// user table has no trigger to capture it and is left out.
func ListTables(ctx context.Context, conn *pgx.Conn) ([]*Table, error) {
	all, err := pgcatalog.Tables(ctx, conn, pgcatalog.Options{Tables: pgcatalog.AllTables})
	if err != nil {
		return nil, fmt.Errorf("list the source's tables: %w", err)
	}
	roots := map[uint32]bool{}
	for _, t := range all {
		if !t.Partition {
			roots[t.OID] = true
		}
	}
	var out []*Table
	for _, r := range all {
		if !roots[r.Root] {
			continue
		}
		t := &Table{ID: r.OID, Root: r.Root, Namespace: r.Schema, Name: r.Name}
		// The key follows what logical replication would use: the primary
		// key, else a replica identity index, else the whole row.
		switch {
		case r.HasPrimaryKey:
			t.Identity = 'd'
		case r.ReplicaIdentity == 'i' && r.HasIdentityIndex:
			t.Identity = 'i'
		default:
			t.Identity = 'f'
		}
		// The element type of arrays and the base type of domains decide
		// which output settings matter (elem/base of elem/base, two levels).
		crows, err := conn.Query(ctx, `SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typname, tn.nspname = 'pg_catalog',
				coalesce(co.collisdeterministic, true), a.atttypmod,
				CASE $2 WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey))
				        WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident AND a.attnum = ANY (i.indkey))
				        ELSE true END,
				e.typname, e.typtype::text
			FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace
			LEFT JOIN pg_collation co ON co.oid = a.attcollation
			LEFT JOIN pg_type t1 ON t1.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype WHEN t.typelem <> 0 AND t.typlen = -1 THEN t.typelem ELSE t.oid END
			LEFT JOIN pg_type e ON e.oid = CASE WHEN t1.typtype = 'd' THEN t1.typbasetype WHEN t1.typelem <> 0 AND t1.typlen = -1 THEN t1.typelem ELSE t1.oid END
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
			ORDER BY a.attnum`, r.OID, string(t.Identity))
		if err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", t, err)
		}
		for crows.Next() {
			var c Column
			var typname, elemName, elemType string
			var builtin, deterministic bool
			var typmod int32
			if err := crows.Scan(&c.Name, &c.Type, &typname, &builtin, &deterministic, &typmod, &c.Key, &elemName, &elemType); err != nil {
				crows.Close()
				return nil, fmt.Errorf("read the columns of %s: %w", t, err)
			}
			c.fast = builtin && deterministic && (fastEquality[typname] || typname == "bpchar" && typmod > 0)
			c.settings = settingsFor(elemName, elemType)
			t.Columns = append(t.Columns, c)
		}
		crows.Close()
		if err := crows.Err(); err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", t, err)
		}
		t.index()
		out = append(out, t)
	}
	return out, nil
}

// Install creates, with table-owner rights, schema replicator with the
// changelog, ticks and tables catalog, a capture function per table and
// the triggers calling them. It may be repeated: functions are replaced
// and triggers re-created, so running it again after DDL on the source
// brings the column lists up to date. Each table is handled in its own
// short transaction, because creating a trigger waits for the writers of
// that table (SHARE ROW EXCLUSIVE lock); a lock not obtained within
// cfg.LockTimeout is retried, and the application is never blocked longer.
// It returns the tables now captured.
func Install(ctx context.Context, conn *pgx.Conn, cfg Config, log *zap.Logger) ([]*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkVersion(ctx, conn); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, schemaDDL+truncateFuncDDL); err != nil {
		return nil, fmt.Errorf("create schema replicator with the changelog on the source: %w", err)
	}
	tables, err := ListTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		if err := installTable(ctx, conn, cfg, t); err != nil {
			return nil, err
		}
	}
	log.Info("trigger capture installed on the source", zap.Int("tables", len(tables)))
	return tables, nil
}

func checkVersion(ctx context.Context, conn *pgx.Conn) error {
	var v int
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil {
		return fmt.Errorf("read the source's version: %w", err)
	}
	if v < 130000 {
		return fmt.Errorf("source is PostgreSQL %d.%d: trigger capture needs PostgreSQL 13 or later (xid8, pg_snapshot): upgrade the source", v/10000, v%10000/100)
	}
	return nil
}

func installTable(ctx context.Context, conn *pgx.Conn, cfg Config, t *Table) error {
	var stmts []string
	qname := t.String()
	if t.Root == t.ID {
		// Row triggers go on the root only: since PostgreSQL 13 a row
		// trigger of a partitioned table is cloned onto every partition,
		// including ones attached later, and fires with the partition's
		// row. The generated function records the root's oid, so changes
		// of a partitioned table arrive under the root's name (like
		// publish_via_partition_root): the target routes them into its own
		// partitions, a row moved between partitions is a DELETE and an
		// INSERT of the root, and the root's columns are the ones listed.
		stmts = append(stmts, rowFunctionDDL(t),
			fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", RowTrigger, qname),
			fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()", RowTrigger, qname, funcName(t)),
			fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", qname, RowTrigger))
	}
	// TRUNCATE triggers are statement triggers, never cloned: every table,
	// partitions included, gets its own.
	//
	// Both fire ALWAYS, also in sessions under session_replication_role =
	// replica: applications and tools set it on the source (bulk loads,
	// pgcopydb's fixtures, other replication tools replaying), and an
	// ordinary trigger would miss their writes without a trace. Detecting
	// such sessions instead cannot work: nothing of theirs reaches a
	// trigger that does not fire. The one writer that must not be captured
	// is this tool's own apply (the fallback window's reverse stream writes
	// to this source): its sessions set replicator.applying (see
	// ApplyingSetting), which the functions check first.
	stmts = append(stmts,
		fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", TruncateTrigger, qname),
		fmt.Sprintf("CREATE TRIGGER %s AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()", TruncateTrigger, qname, truncateFunc),
		fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", qname, TruncateTrigger))
	// Never NULL, even for a table with no captured column (none at all,
	// or only generated ones).
	cols, keys := []string{}, []string{}
	for _, c := range t.Columns {
		cols = append(cols, c.Name)
		if c.Key {
			keys = append(keys, c.Name)
		}
	}
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", cfg.LockTimeout.Milliseconds())); err != nil {
				return err
			}
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return err
				}
			}
			_, err := tx.Exec(ctx, `INSERT INTO replicator.tables (relid, root, nspname, relname, identity, columns, key_columns)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (relid) DO UPDATE SET root = EXCLUDED.root,
				nspname = EXCLUDED.nspname, relname = EXCLUDED.relname, identity = EXCLUDED.identity,
				columns = EXCLUDED.columns, key_columns = EXCLUDED.key_columns, installed = now()`,
				t.ID, t.Root, t.Namespace, t.Name, string(t.Identity), cols, keys)
			return err
		})
		var pgErr *pgconn.PgError
		// A lock timeout, or a deadlock with the application's writers
		// (whose requests queue behind ours), is retried after a pause.
		if err != nil && errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.LockNotAvailable || pgErr.Code == pgerrcode.DeadlockDetected) && attempt < cfg.LockRetries {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
			}
			continue
		}
		if err != nil {
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InsufficientPrivilege {
				return fmt.Errorf("install capture trigger on %s: %s: the source user must own the table (or hold TRIGGER on it)", qname, pgErr.Message)
			}
			if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.LockNotAvailable {
				return fmt.Errorf("install capture trigger on %s: its writers held the table lock through %d attempts of %s: retry when the application is less busy: %w", qname, attempt+1, cfg.LockTimeout, err)
			}
			return fmt.Errorf("install capture trigger on %s: %w", qname, err)
		}
		return nil
	}
}

func funcName(t *Table) string { return fmt.Sprintf("replicator.capture_%d", t.ID) }

// rowFunctionDDL generates the row trigger function of one table.
//
// Values are written as col::text. Where a type's text depends on a
// session setting (DateStyle, IntervalStyle, TimeZone, bytea_output,
// extra_float_digits), the function pins it while it runs (see pins), so
// the text is what the target's input functions read back identically,
// whatever the application's session set.
//
// SECURITY DEFINER lets any role that writes the table record its change
// without being granted the changelog (which nobody else may write: a
// forged row would be applied to the target). Every name in the body is
// schema-qualified, operators included, so that no caller's search_path
// can substitute an object of its own; this spares the function a pinned
// search_path, whose save and restore on every call costs the
// application's writes more than the rest of the function.
//
// An UPDATE records only the columns whose value changed: a large TOASTed
// value left alone is neither copied into the changelog nor rewritten on
// the target. An UPDATE that changes nothing is not recorded.
func rowFunctionDDL(t *Table) string {
	pinned := map[string]bool{}
	for _, c := range t.Columns {
		for _, g := range c.settings {
			pinned[g] = true
		}
	}
	var decl, before, after string
	for i, p := range pins {
		if !pinned[p.name] {
			continue
		}
		decl += fmt.Sprintf("\ts%d pg_catalog.text;\n", i)
		before += fmt.Sprintf("\tIF %s THEN\n\t\ts%d := pg_catalog.current_setting('%s');\n\t\tPERFORM pg_catalog.set_config('%s', '%s', true);\n\tEND IF;\n",
			p.differs, i, p.name, p.name, p.value)
		after += fmt.Sprintf("\tIF s%d IS NOT NULL THEN PERFORM pg_catalog.set_config('%s', s%d, true); END IF;\n", i, p.name, i)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `CREATE OR REPLACE FUNCTION %s() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $f$
DECLARE
	v pg_catalog.jsonb;
%sBEGIN
%s%s	IF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
		INSERT INTO replicator.changelog (txid, rel, op, vals) VALUES (pg_catalog.pg_current_xact_id(), %d, 'I', %s);
	ELSIF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
		v := '{}'::pg_catalog.jsonb;
`, funcName(t), decl, skipApplying, before, t.ID, jsonObject("NEW", t.Columns, false))
	for _, c := range t.Columns {
		q := pgutil.QuoteIdent(c.Name)
		// IS DISTINCT FROM cannot name its operator's schema: spelled out.
		cond := fmt.Sprintf("ROW(NEW.%s)::pg_catalog.record OPERATOR(pg_catalog.*<>) ROW(OLD.%s)::pg_catalog.record", q, q)
		if c.fast {
			cond = fmt.Sprintf("(NEW.%s IS NULL) OPERATOR(pg_catalog.<>) (OLD.%s IS NULL) OR NEW.%s OPERATOR(pg_catalog.<>) OLD.%s", q, q, q, q)
		}
		fmt.Fprintf(&b, "\t\tIF %s THEN v := v OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(%s, NEW.%s::pg_catalog.text); END IF;\n", cond, pgutil.QuoteLiteral(c.Name), q)
	}
	if cond := keyChanged(t); cond != "" {
		// A row moved by its key is recorded whole: after a chunked copy
		// the stream may have to insert it at its new key (apply's chunk
		// filter), where the target has no old row to keep values from.
		fmt.Fprintf(&b, "\t\tIF %s THEN v := %s; END IF;\n", cond, jsonObject("NEW", t.Columns, false))
	}
	fmt.Fprintf(&b, `		IF v OPERATOR(pg_catalog.<>) '{}'::pg_catalog.jsonb THEN
			INSERT INTO replicator.changelog (txid, rel, op, key, vals) VALUES (pg_catalog.pg_current_xact_id(), %d, 'U', %s, v);
		END IF;
	ELSE
		INSERT INTO replicator.changelog (txid, rel, op, key) VALUES (pg_catalog.pg_current_xact_id(), %d, 'D', %s);
	END IF;
%s	RETURN NULL;
END $f$;
REVOKE ALL ON FUNCTION %s() FROM PUBLIC`, t.ID, jsonObject("OLD", t.Columns, true), t.ID, jsonObject("OLD", t.Columns, true), after, funcName(t))
	return b.String()
}

// keyChanged is the condition that an UPDATE changed t's key; "" when
// every column is the key (then the whole row is recorded anyway).
func keyChanged(t *Table) string {
	if t.Identity == 'f' {
		return ""
	}
	var olds, news []string
	for _, c := range t.Columns {
		if c.Key {
			olds = append(olds, "OLD."+pgutil.QuoteIdent(c.Name))
			news = append(news, "NEW."+pgutil.QuoteIdent(c.Name))
		}
	}
	if len(olds) == 0 {
		return ""
	}
	return fmt.Sprintf("ROW(%s)::pg_catalog.record OPERATOR(pg_catalog.*<>) ROW(%s)::pg_catalog.record", strings.Join(news, ", "), strings.Join(olds, ", "))
}

// jsonObject builds a jsonb object of rec's columns (only key columns when
// keyOnly). jsonb_build_object takes at most 100 arguments, so wide tables
// are built in parts of 50 columns joined with ||.
func jsonObject(rec string, cols []Column, keyOnly bool) string {
	var parts []string
	var args []string
	flush := func() {
		if len(args) > 0 {
			parts = append(parts, "pg_catalog.jsonb_build_object("+strings.Join(args, ", ")+")")
			args = nil
		}
	}
	for _, c := range cols {
		if keyOnly && !c.Key {
			continue
		}
		args = append(args, pgutil.QuoteLiteral(c.Name), fmt.Sprintf("%s.%s::pg_catalog.text", rec, pgutil.QuoteIdent(c.Name)))
		if len(args) == 100 {
			flush()
		}
	}
	flush()
	if len(parts) == 0 {
		return "'{}'::pg_catalog.jsonb"
	}
	return strings.Join(parts, " OPERATOR(pg_catalog.||) ")
}

// Uninstall removes the capture triggers from every table, then schema
// replicator with the changelog, ticks and functions. It may be repeated.
func Uninstall(ctx context.Context, conn *pgx.Conn) error {
	rows, err := conn.Query(ctx, `SELECT format('DROP TRIGGER IF EXISTS %I ON %s', t.tgname, t.tgrelid::regclass)
		FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = $1 AND NOT t.tgisinternal AND t.tgparentid = 0`, state.Schema)
	if err != nil {
		return fmt.Errorf("list capture triggers on the source: %w", err)
	}
	drops, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list capture triggers on the source: %w", err)
	}
	for _, d := range drops {
		if _, err := conn.Exec(ctx, d); err != nil {
			return fmt.Errorf("remove capture trigger on the source (%s): %w", d, err)
		}
	}
	if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS replicator CASCADE`); err != nil {
		return fmt.Errorf("drop schema replicator on the source: %w", err)
	}
	return nil
}
