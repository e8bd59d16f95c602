package trigger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
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
	InsertTrigger   = "replicator_capture_insert"
	UpdateTrigger   = "replicator_capture_update"
	DeleteTrigger   = "replicator_capture_delete"
	TruncateTrigger = "replicator_capture_truncate"
	truncateFunc    = "replicator.capture_truncate"
	// EarlierRowTrigger is the one row trigger (AFTER INSERT OR UPDATE OR
	// DELETE, calling replicator.capture_row) of installs before the
	// function per operation: Install replaces it by the three above, in
	// the same transaction, and CheckInstalled asks for that.
	EarlierRowTrigger = "replicator_capture"
	earlierRowFunc    = "replicator.capture_row"
)

// rowTriggers are the row triggers Install puts on every table (the root
// of a partitioned one), each calling its operation's function.
var rowTriggers = []struct{ name, event, function string }{
	{InsertTrigger, "INSERT", "replicator.capture_insert"},
	{UpdateTrigger, "UPDATE", "replicator.capture_update"},
	{DeleteTrigger, "DELETE", "replicator.capture_delete"},
}

// TriggerNames are the names of every trigger capture creates on the
// application's tables, the earlier layout's included: what cleanup,
// reports and the schema copy (which leaves them out) look for.
func TriggerNames() []string {
	return []string{InsertTrigger, UpdateTrigger, DeleteTrigger, TruncateTrigger, EarlierRowTrigger}
}

// ApplyingSetting is the session setting this tool's apply connections
// set to "on": the capture functions record nothing of such a session, so
// changes applied to a captured database (the fallback window's reverse
// stream) do not come back as captured changes.
const ApplyingSetting = "replicator.applying"

// skipApplying is the first statement of every capture function.
const skipApplying = "\tIF pg_catalog.current_setting('" + ApplyingSetting + "', true) OPERATOR(pg_catalog.=) 'on' THEN RETURN NULL; END IF;\n"

// The changelog has no primary key: nothing looks a row up by id, and every
// index is paid for on each write of the application, so it has one: on
// txid, which serves both the batch reads and the purge (they select by
// transaction id ranges). TRUNCATEs are also written to
// replicator.truncates, which the batch reads look up (see batchSQL): an
// index of them on the changelog, even partial, would be opened and its
// predicate checked on every row the application writes. The id sequence keeps the default CACHE 1: ids
// must be handed out in time order across sessions (see batch.go). key and
// vals are hstore (column name → text output or NULL): what hstore(record)
// builds in C from the row itself, stored as it is built, and smaller on
// disk than the same object as jsonb. %[1]s is the hstore extension's
// schema.
const schemaDDL = `
CREATE TABLE IF NOT EXISTS replicator.changelog (
	id   bigserial,
	txid xid8 NOT NULL,
	rel  oid NOT NULL,
	part oid,
	op   "char" NOT NULL,
	key  %[1]s.hstore,
	vals %[1]s.hstore
);
CREATE INDEX IF NOT EXISTS changelog_txid ON replicator.changelog (txid);
CREATE TABLE IF NOT EXISTS replicator.truncates (
	id   bigint NOT NULL,
	txid xid8 NOT NULL,
	rel  oid NOT NULL,
	PRIMARY KEY (rel, id)
);
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
DECLARE
	i pg_catalog.int8;
BEGIN
` + skipApplying + `	INSERT INTO replicator.changelog (txid, rel, op) VALUES (pg_catalog.pg_current_xact_id(), TG_RELID, 'T') RETURNING id INTO i;
	INSERT INTO replicator.truncates (id, txid, rel) VALUES (i, pg_catalog.pg_current_xact_id(), TG_RELID);
	RETURN NULL;
END $f$;
REVOKE ALL ON FUNCTION replicator.capture_truncate() FROM PUBLIC;
`

// Output settings the capture function pins while it converts values to
// text: the settings some built-in type's text output depends on, with
// the value it writes under. They are pinned only when the writing
// session's values differ (with set_config(…, true), restored before the
// function returns): a SET clause on the function would be saved and
// restored around every call, which on PostgreSQL 15 walks every setting
// and costs the application's writes more than the rest. The function does
// not know the table's column types (a column added later may need any of
// them), so it checks all of them, each against the values that give
// the same text byte for byte (so that a key recorded by one session
// matches the same key recorded by another), in the function's one
// common test (see rowFunctionDDL). A session that fails the test takes
// the slower path that pins every setting: the usual values include what
// common drivers set (JDBC: DateStyle ISO, extra_float_digits 3, the
// JVM's zone), so that their writes do not pay for it.
type pin struct {
	name, value string
	// usual are the values sessions commonly have that give the same
	// text as value: no pin needed.
	usual []string
}

var pins = []pin{
	// The ISO style writes year-month-day whatever the field order, which
	// only input and the other styles follow.
	{"DateStyle", "ISO, MDY", []string{"ISO, MDY", "ISO, DMY", "ISO, YMD"}},
	{"IntervalStyle", "postgres", []string{"postgres"}},
	{"bytea_output", "hex", []string{"hex"}},
	// 1 and above all give the shortest exact text (PostgreSQL 12 and
	// later); below 1 loses digits. JDBC sessions set 3.
	{"extra_float_digits", "1", []string{"1", "2", "3"}},
	// Zones whose offset is zero at every date: the ISO style writes the
	// offset as a number (+00), never the zone's name. Servers set up on
	// a UTC host default to Etc/UTC.
	{"TimeZone", "UTC", []string{"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu", "Etc/Zulu", "Greenwich", "Etc/Greenwich"}},
}

// Table is a captured source table: as recorded at install time (Install,
// ListTables), or as a batch reader describes it for a change (then its
// columns are those the change's shape and the source's catalog name).
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
	// generated are the table's generated columns, when described by a
	// batch reader: recorded in the row, but left out of changes.
	generated map[string]bool
}

// Column is one captured column. Generated columns are not captured.
type Column struct {
	Name string
	Type string // format_type on the source, e.g. numeric(10,2); "" when read back from a change
	Key  bool   // part of the row's key (every column when Identity is 'f')
}

// String is the qualified, quoted name.
func (t *Table) String() string { return pgutil.QualifiedName(t.Namespace, t.Name) }

func (t *Table) index() {
	t.colIndex = make(map[string]int, len(t.Columns))
	for i, c := range t.Columns {
		t.colIndex[c.Name] = i
	}
}

// columnsSQL reads a table's captured columns ($1 its oid) with the key
// flag for identity $2: generated columns are left out (the target
// computes them).
const columnsSQL = `SELECT a.attname, format_type(a.atttypid, a.atttypmod),
		CASE $2 WHEN 'd' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND a.attnum = ANY (i.indkey))
		        WHEN 'i' THEN EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisreplident AND a.attnum = ANY (i.indkey))
		        ELSE true END
	FROM pg_attribute a
	WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
	ORDER BY a.attnum`

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
		crows, err := conn.Query(ctx, columnsSQL, r.OID, string(t.Identity))
		if err != nil {
			return nil, fmt.Errorf("read the columns of %s: %w", t, err)
		}
		for crows.Next() {
			var c Column
			if err := crows.Scan(&c.Name, &c.Type, &c.Key); err != nil {
				crows.Close()
				return nil, fmt.Errorf("read the columns of %s: %w", t, err)
			}
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
// changelog, ticks and tables catalog, the capture functions, and the
// triggers on every table ListTables lists. It may be repeated: the
// functions are replaced and the triggers re-created, so a table created
// since is captured from then on (InstallTables does the same for chosen
// tables only). Each table is handled in its own short transaction,
// because creating a trigger waits for the writers of that table (SHARE
// ROW EXCLUSIVE lock); a lock not obtained within cfg.LockTimeout is
// retried, and the application is never blocked longer. It returns the
// tables now captured.
func Install(ctx context.Context, conn *pgx.Conn, cfg Config, log *zap.Logger) ([]*Table, error) {
	return install(ctx, conn, cfg, log, nil)
}

// InstallTables installs capture on the tables with the given oids only
// (ordinary, partitioned roots, or partitions of a captured root), with
// schema replicator and the functions created first as by Install. It is
// for tables created while the stream runs: their changes are recorded
// from the commit of their trigger on, so the caller copies such a table
// after InstallTables returns. An oid that is not a table trigger capture
// covers (see ListTables) is an error naming it. It returns the tables
// installed, in ListTables order.
func InstallTables(ctx context.Context, conn *pgx.Conn, cfg Config, log *zap.Logger, oids ...uint32) ([]*Table, error) {
	want := map[uint32]bool{}
	for _, id := range oids {
		want[id] = true
	}
	return install(ctx, conn, cfg, log, want)
}

// Upgrade replaces, on the tables an earlier version installed capture
// on (one trigger EarlierRowTrigger each), that layout by the current one,
// each table in one transaction as Install does, so that no write is
// missed or recorded twice; tables without capture are left alone (the
// target has not copied them: CheckInstalled names them). It returns the
// tables upgraded, none when nothing was of the earlier layout.
func Upgrade(ctx context.Context, conn *pgx.Conn, cfg Config, log *zap.Logger) ([]*Table, error) {
	rows, err := conn.Query(ctx, `SELECT t.tgrelid FROM pg_trigger t
		WHERE t.tgname = $1 AND NOT t.tgisinternal AND t.tgparentid = 0
		  AND NOT EXISTS (SELECT 1 FROM pg_trigger c WHERE c.tgrelid = t.tgrelid AND c.tgname = $2)`, EarlierRowTrigger, InsertTrigger)
	if err != nil {
		return nil, fmt.Errorf("look up the capture triggers of an earlier version on the source: %w", err)
	}
	oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
	if err != nil {
		return nil, fmt.Errorf("look up the capture triggers of an earlier version on the source: %w", err)
	}
	if len(oids) == 0 {
		return nil, nil
	}
	// Only tables capture covers: one that is no longer (now a partition
	// of a table without capture) is left to CheckInstalled.
	listed, err := ListTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	covered := map[uint32]bool{}
	for _, t := range listed {
		covered[t.ID] = true
	}
	want := map[uint32]bool{}
	for _, id := range oids {
		if covered[id] {
			want[id] = true
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	tables, err := install(ctx, conn, cfg, log, want)
	if err != nil {
		return nil, fmt.Errorf("upgrade the trigger capture an earlier version installed: %w", err)
	}
	log.Info("trigger capture of an earlier version upgraded to a trigger and function per operation", zap.Int("tables", len(tables)))
	return tables, nil
}

func install(ctx context.Context, conn *pgx.Conn, cfg Config, log *zap.Logger, only map[uint32]bool) ([]*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := prepare(ctx, conn); err != nil {
		return nil, err
	}
	tables, err := ListTables(ctx, conn)
	if err != nil {
		return nil, err
	}
	if only != nil {
		var picked []*Table
		for _, t := range tables {
			if only[t.ID] {
				picked = append(picked, t)
				delete(only, t.ID)
			}
		}
		for id := range only {
			return nil, fmt.Errorf("install capture on table oid %d: no such user table on the source (or a partition of a table that is not captured): name a table that ListTables lists", id)
		}
		tables = picked
	}
	for _, t := range tables {
		if err := installTable(ctx, conn, cfg, t); err != nil {
			return nil, err
		}
	}
	// The earlier layout's function goes once no trigger calls it any more
	// (InstallTables may leave tables on it, which CheckInstalled names).
	if _, err := conn.Exec(ctx, `DROP FUNCTION IF EXISTS `+earlierRowFunc+`()`); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.DependentObjectsStillExist {
			return nil, fmt.Errorf("drop the earlier capture function %s on the source: %w", earlierRowFunc, err)
		}
	}
	log.Info("trigger capture installed on the source", zap.Int("tables", len(tables)))
	return tables, nil
}

// prepare creates schema replicator with hstore, the changelog, ticks and
// catalog, and the capture functions; it may be repeated.
func prepare(ctx context.Context, conn *pgx.Conn) error {
	if err := checkVersion(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS replicator`); err != nil {
		return fmt.Errorf("create schema replicator on the source: %w", err)
	}
	hs, err := hstoreSchema(ctx, conn, true)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf(schemaDDL, pgutil.QuoteIdent(hs))); err != nil {
		return fmt.Errorf("create the changelog in schema replicator on the source: %w", err)
	}
	// A changelog of an earlier layout (jsonb key and vals) would make the
	// capture function fail the application's writes: refuse instead.
	var typ string
	if err := conn.QueryRow(ctx, `SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'replicator.changelog'::regclass AND attname = 'vals'`).Scan(&typ); err != nil {
		return fmt.Errorf("read the changelog's layout on the source: %w", err)
	}
	if !strings.HasSuffix(typ, "hstore") {
		return fmt.Errorf("replicator.changelog on the source has vals of type %s, an earlier layout: remove schema replicator (`replicator cleanup`) and install again", typ)
	}
	// part (the partition a change was written to) came after the first
	// hstore layout; added only when missing, as ALTER TABLE would lock
	// the changelog against the application's writes for its duration.
	var hasPart bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'replicator.changelog'::regclass AND attname = 'part' AND NOT attisdropped)`).Scan(&hasPart); err != nil {
		return fmt.Errorf("read the changelog's layout on the source: %w", err)
	}
	if !hasPart {
		if _, err := conn.Exec(ctx, `ALTER TABLE replicator.changelog ADD COLUMN part oid`); err != nil {
			return fmt.Errorf("add column part to replicator.changelog on the source: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, truncateFuncDDL+rowFunctionDDL(hs)); err != nil {
		return fmt.Errorf("create the capture functions in schema replicator on the source: %w", err)
	}
	return nil
}

// hstoreSchema returns the schema of the hstore extension, creating the
// extension in schema replicator when create and it is not installed.
// hstore is a trusted extension (PostgreSQL 13+): a role with CREATE on
// the database may create it, Heroku and RDS ship it.
func hstoreSchema(ctx context.Context, conn *pgx.Conn, create bool) (string, error) {
	if create {
		if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS hstore SCHEMA replicator`); err != nil {
			return "", fmt.Errorf("create extension hstore in schema replicator on the source: %w: trigger capture records rows with hstore; let the source user create it (CREATE on the database), or create it as the database owner", err)
		}
	}
	var hs string
	err := conn.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hstore'`).Scan(&hs)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("the source has no hstore extension, which trigger capture's changelog needs: install trigger capture again")
	}
	if err != nil {
		return "", fmt.Errorf("look up the hstore extension on the source: %w", err)
	}
	return hs, nil
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

// rowArgs are the arguments of t's row trigger: the oid its changes are
// recorded under (the root), then its key columns, none when every column
// is the key (identity 'f').
func rowArgs(t *Table) []string {
	args := []string{strconv.FormatUint(uint64(t.ID), 10)}
	if t.Identity == 'f' {
		return args
	}
	for _, c := range t.Columns {
		if c.Key {
			args = append(args, c.Name)
		}
	}
	return args
}

func installTable(ctx context.Context, conn *pgx.Conn, cfg Config, t *Table) error {
	var stmts []string
	qname := t.String()
	if t.Root == t.ID {
		// Row triggers go on the root only: since PostgreSQL 13 a row
		// trigger of a partitioned table is cloned onto every partition,
		// including ones attached later, and fires with the partition's
		// row. Its first argument is the root's oid, so changes of a
		// partitioned table arrive under the root's name (like
		// publish_via_partition_root): the target routes them into its own
		// partitions, and a row moved between partitions is a DELETE and
		// an INSERT of the root.
		//
		// Each operation has its trigger and function, so that no function
		// tests which operation fired it (each test is an expression set
		// up again in every transaction, see rowFunctionDDL). The earlier
		// layout's one trigger is replaced in the same transaction as the
		// three are created: no write is recorded twice or missed.
		var args []string
		for _, a := range rowArgs(t) {
			args = append(args, pgutil.QuoteLiteral(a))
		}
		stmts = append(stmts, fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", EarlierRowTrigger, qname))
		for _, rt := range rowTriggers {
			stmts = append(stmts,
				fmt.Sprintf("DROP TRIGGER IF EXISTS %s ON %s", rt.name, qname),
				fmt.Sprintf("CREATE TRIGGER %s AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s(%s)", rt.name, rt.event, qname, rt.function, strings.Join(args, ", ")),
				fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", qname, rt.name))
		}
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
			// The install catalog names the table's changes after it is
			// dropped (the batch reader describes live tables from the
			// source's catalog).
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

// rowFunctionDDL generates the row trigger functions, one per operation,
// that every table's row triggers call (see rowTriggers), hs being
// hstore's schema.
//
// They follow the table's columns whatever they are at the time of the
// write, with no window: hstore(NEW) is built from the row itself, with
// every column's name and its type's output function (the text col::text
// gives, and that the target's input function reads back), so a column
// added, dropped or renamed is in, out of, or renamed in the very next
// change after the ALTER commits; nothing is generated per table, so
// there is nothing to regenerate. Generated columns are in the row too:
// the batch reader leaves them out (the target computes them).
//
// Where a type's text depends on a session setting (DateStyle,
// IntervalStyle, TimeZone, bytea_output, extra_float_digits), the
// functions pin it while they run (see pins), so the text is what the
// target's input functions read back identically, whatever the
// application's session set.
//
// The arguments (TG_ARGV) are the oid to record and the key columns (see
// rowArgs); part records TG_RELID, the relation written to, which is the
// recorded oid itself unless that is a partitioned root (the batch reader
// takes part = rel as "not a partition"). An UPDATE records the old key
// and only the columns whose text changed (hstore's "-" keeps the pairs
// of NEW that OLD does not have), so a large TOASTed value left alone is
// never copied into the changelog nor rewritten on the target; an UPDATE
// that changes nothing is not recorded; a row whose key changed is
// recorded whole, because after a chunked copy the stream may have to
// insert it at its new key (apply's chunk filter), where the target has
// no old row to keep values from. A key column the arguments name but
// the row no longer has (renamed or dropped since install) makes the old
// key the whole old row, so the key is never lost; CheckInstalled asks
// for a new install then.
//
// What the functions evaluate per row is kept few, since each expression
// and the changelog INSERT's executor start-up are paid on every row the
// application writes, and each plpgsql expression is also set up again
// in every transaction that reaches it, once per table and function
// (each table's trigger has its own compiled copy of its function): an
// application transaction writing a row or two per table pays that set-up
// on almost every expression it evaluates (bench/README.md, instructions
// per pgbench transaction). So: a function per operation, which never
// tests TG_OP; the apply setting and the output settings are one test,
// and only a session that fails it takes the path that checks which and
// pins; that path has its own copy of the body, so the common one does
// not test afterwards whether to restore; RETURN of a variable never set
// returns NULL without an expression; the oid argument is converted once
// into r, which the INSERT takes as a plain parameter (a cast in its
// VALUES would be set up again by every execution), and TG_RELID is one
// already; an UPDATE's key and values are each chosen in one expression.
//
// SECURITY DEFINER lets any role that writes the table record its change
// without being granted the changelog (which nobody else may write: a
// forged row would be applied to the target). Every name in the bodies
// is schema-qualified, operators included, so that no caller's
// search_path can substitute an object of its own; this spares the
// functions a pinned search_path, whose save and restore on every call
// costs the application's writes more than the rest of the function.
func rowFunctionDDL(hs string) string {
	h := pgutil.QuoteIdent(hs)
	var differs, save, set, restore []string
	// The common path's one test: this tool's apply setting (unset, or
	// left empty or off by an earlier SET LOCAL) and the output settings,
	// each against its usual values, in one expression.
	differs = append(differs, "COALESCE(pg_catalog.current_setting('"+ApplyingSetting+"', true), '') OPERATOR(pg_catalog.<>) ALL ('{\"\",off}'::pg_catalog.text[])")
	for i, p := range pins {
		if len(p.usual) == 1 {
			differs = append(differs, fmt.Sprintf("pg_catalog.current_setting('%s') OPERATOR(pg_catalog.<>) %s", p.name, pgutil.QuoteLiteral(p.usual[0])))
		} else {
			var q []string
			for _, u := range p.usual {
				q = append(q, pgutil.QuoteLiteral(u))
			}
			differs = append(differs, fmt.Sprintf("pg_catalog.current_setting('%s') OPERATOR(pg_catalog.<>) ALL (ARRAY[%s])", p.name, strings.Join(q, ", ")))
		}
		save = append(save, fmt.Sprintf("pg_catalog.current_setting('%s')", p.name))
		set = append(set, fmt.Sprintf("pg_catalog.set_config('%s', '%s', true)", p.name, p.value))
		restore = append(restore, fmt.Sprintf("pg_catalog.set_config('%s', s[%d], true)", p.name, i+1))
	}
	// The old key: the key columns of OLD, or the whole old row when the
	// table has none (identity 'f') or the row lacks one of them.
	const oldKey = `k := CASE WHEN TG_NARGS OPERATOR(pg_catalog.>) 1 AND o OPERATOR($H.?&) TG_ARGV[1:] THEN $H.slice(o, TG_ARGV[1:]) ELSE o END;`
	bodies := []struct{ function, body string }{
		{"replicator.capture_insert", `	r := TG_ARGV[0]::pg_catalog.oid;
	INSERT INTO replicator.changelog (txid, rel, part, op, vals) VALUES (pg_catalog.pg_current_xact_id(), r, TG_RELID, 'I', $H.hstore(NEW));
`},
		{"replicator.capture_update", `	r := TG_ARGV[0]::pg_catalog.oid;
	o := $H.hstore(OLD);
	` + oldKey + `
	n := $H.hstore(NEW);
	n := CASE WHEN TG_NARGS OPERATOR(pg_catalog.=) 1 OR $H.slice(n, TG_ARGV[1:]) OPERATOR($H.=) k THEN n OPERATOR($H.-) o ELSE n END;
	IF n OPERATOR($H.<>) ''::$H.hstore THEN
		INSERT INTO replicator.changelog (txid, rel, part, op, key, vals) VALUES (pg_catalog.pg_current_xact_id(), r, TG_RELID, 'U', k, n);
	END IF;
`},
		{"replicator.capture_delete", `	r := TG_ARGV[0]::pg_catalog.oid;
	o := $H.hstore(OLD);
	` + oldKey + `
	INSERT INTO replicator.changelog (txid, rel, part, op, key) VALUES (pg_catalog.pg_current_xact_id(), r, TG_RELID, 'D', k);
`},
	}
	r := strings.NewReplacer("$H", h,
		"$USUAL", strings.Join(differs, " OR "),
		"$SAVE", strings.Join(save, ", "),
		"$SET", strings.Join(set, ", "),
		"$RESTORE", strings.Join(restore, ", "),
		"$SKIP", skipApplying)
	var ddl strings.Builder
	for _, b := range bodies {
		// The body goes in first, so that the replacements reach it and
		// nothing they insert is read as a placeholder.
		ddl.WriteString(r.Replace(strings.NewReplacer("$BODY", b.body, "$FUNC", b.function).Replace(`
CREATE OR REPLACE FUNCTION $FUNC() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $f$
DECLARE
	o $H.hstore;
	n $H.hstore;
	k $H.hstore;
	s pg_catalog.text[];
	r pg_catalog.oid;
	z pg_catalog.int4; -- never set: RETURN z returns NULL without an expression
BEGIN
	IF $USUAL THEN
$SKIP		s := ARRAY[$SAVE];
		PERFORM $SET;
	$BODY	PERFORM $RESTORE;
		RETURN z;
	END IF;
$BODY	RETURN z;
END $f$;
REVOKE ALL ON FUNCTION $FUNC() FROM PUBLIC;
`)))
	}
	return ddl.String()
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
