package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// ErrPreflight is matched (errors.Is) by every *PreflightError.
var ErrPreflight = errors.New("preflight refused to start")

// Problem is one reason preflight refuses to start: the object concerned,
// what is wrong with it, and how to fix it.
type Problem struct {
	Object string
	Reason string
	Fix    string
}

func (p Problem) String() string { return p.Object + ": " + p.Reason + ": " + p.Fix }

// PreflightError lists every problem found; nothing was written.
type PreflightError struct {
	Problems []Problem
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "preflight found %d problem(s), nothing was written:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

func (e *PreflightError) Is(target error) bool { return target == ErrPreflight }

// preflight is what the checks found out and the run needs.
type preflight struct {
	capture      string       // resolved capture mode
	reason       string       // why, one line for the log
	sourceMajor  int          // e.g. 15
	noIdentity   []relName    // tables to give REPLICA IDENTITY FULL (with the flag)
	restart      *state.State // an interrupted earlier run, or nil
	tools        tools
	reusePublish bool
	targetLZ4    bool // the target can compress TOAST with lz4
}

type relName struct{ Schema, Name string }

func (r relName) String() string { return pgutil.QualifiedName(r.Schema, r.Name) }

// maxListed bounds how many objects of one kind a refusal lists.
const maxListed = 20

// runPreflight checks both sides before anything is written. prev is the
// target's state row (nil when there is none). Every check runs, so that
// one refusal lists every problem.
func runPreflight(ctx context.Context, cfg *Config, src, dst *pgx.Conn, prev *state.State) (*preflight, error) {
	c := &checker{cfg: cfg, src: src, dst: dst, prev: prev, pf: &preflight{}}
	checks := []func(context.Context) error{
		c.readSource, c.checkSourceServer, c.chooseCapture, c.checkCapturePrivileges, c.noteInterruptedRun, c.checkLogical,
		c.checkReadable, c.checkTarget,
	}
	for _, check := range checks {
		if err := check(ctx); err != nil {
			return nil, err
		}
	}
	if len(c.probs) > 0 {
		return nil, &PreflightError{Problems: c.probs}
	}
	return c.pf, nil
}

// checker is one preflight: what it found so far and the problems.
type checker struct {
	cfg      *Config
	src, dst *pgx.Conn
	prev     *state.State
	pf       *preflight
	probs    []Problem

	// restartSlot is the slot of an interrupted run of this target ("" when none).
	restartSlot string
	// Read from the source by readSource.
	srcWhere              string // "source host/db", for problems
	version               int    // server_version_num, e.g. 150004
	user, walLevel        string
	super, repl           bool
	maxSlots, usedSlots   int
	maxSenders, usedSends int
}

func (c *checker) add(object, reason, fix string) {
	c.probs = append(c.probs, Problem{object, reason, fix})
}

// readSource reads, in one query, the source settings the checks need.
func (c *checker) readSource(ctx context.Context) error {
	err := c.src.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_user, current_setting('wal_level'),
		r.rolsuper, r.rolreplication OR EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = 'rds_replication'
			AND pg_has_role(current_user, g.oid, 'MEMBER')),
		current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
		current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int
		FROM pg_roles r WHERE r.rolname = current_user`).Scan(
		&c.version, &c.user, &c.walLevel, &c.super, &c.repl, &c.maxSlots, &c.usedSlots, &c.maxSenders, &c.usedSends)
	if err != nil {
		return fmt.Errorf("preflight: read the source's settings: %w", err)
	}
	c.pf.sourceMajor = c.version / 10000
	c.srcWhere = "source " + c.src.Config().Host + "/" + c.src.Config().Database
	return nil
}

// checkSourceServer checks the source's version and role (primary or
// standby) and that a pg_dump new enough for it is installed.
func (c *checker) checkSourceServer(ctx context.Context) error {
	if v := c.version; v < 100000 {
		c.add(c.srcWhere, fmt.Sprintf("PostgreSQL %d.%d is too old", v/10000, v%10000/100),
			"the snapshot needs PostgreSQL 10 or newer on the source")
	}
	// A hot standby accepts the same reads, but no slot, publication or
	// trigger can be made there: say so first, before the problems that
	// follow from it.
	var inRecovery bool
	if err := c.src.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err == nil && inRecovery {
		c.add(c.srcWhere, "is a standby (in recovery): change capture needs a slot, publication or triggers, which only the primary can create",
			"point --source at the primary (on Heroku: the database's own credentials, not a follower's)")
	}
	var err error
	c.pf.tools, err = findTools(ctx, c.cfg.BinDir)
	if err != nil {
		c.add("pg_dump", err.Error(), "install the PostgreSQL client (apt-get install postgresql-client) or pass its directory")
	} else if c.pf.tools.major < c.pf.sourceMajor {
		c.add(c.pf.tools.pgDump, fmt.Sprintf("pg_dump %d cannot dump a PostgreSQL %d source", c.pf.tools.major, c.pf.sourceMajor),
			fmt.Sprintf("install postgresql-client-%d or newer", c.pf.sourceMajor))
	}
	return nil
}

// chooseCapture resolves the capture mode and says why.
func (c *checker) chooseCapture(ctx context.Context) error {
	if c.cfg.Capture != CaptureAuto {
		c.pf.capture, c.pf.reason = c.cfg.Capture, "capture: "+c.cfg.Capture+", as --capture asks"
		return nil
	}
	mode, reason, err := trigger.Choose(ctx, c.src)
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	c.pf.capture, c.pf.reason = mode, reason
	return nil
}

// checkCapturePrivileges checks the source role may set up the chosen
// capture.
func (c *checker) checkCapturePrivileges(ctx context.Context) error {
	switch c.pf.capture {
	case CaptureTrigger:
		if err := trigger.CheckPrivileges(ctx, c.src); err != nil {
			c.add(fmt.Sprintf("source user %q", c.user), err.Error(),
				"or use --capture logical on a source that allows logical replication")
		}
	case CaptureLogical:
		if c.walLevel != "logical" {
			c.add(c.srcWhere+" wal_level", fmt.Sprintf("is %q, logical decoding needs \"logical\"", c.walLevel),
				"set wal_level = logical and restart the source (on RDS: parameter rds.logical_replication = 1), or use --capture trigger")
		}
		if !c.super && !c.repl {
			c.add(fmt.Sprintf("source user %q", c.user), "has neither the REPLICATION attribute nor superuser, so it cannot create a replication slot",
				fmt.Sprintf("run ALTER ROLE %s REPLICATION as a superuser (on RDS: GRANT rds_replication TO %s), or use --capture trigger", pgutil.QuoteIdent(c.user), pgutil.QuoteIdent(c.user)))
		}
	}
	return nil
}

// noteInterruptedRun takes an unfinished snapshot on the target for an
// interrupted run of ours, which the run starts over (its slot may be
// reused).
func (c *checker) noteInterruptedRun(context.Context) error {
	if c.prev != nil && c.prev.SnapshotStatus == state.SnapshotCopying {
		c.pf.restart = c.prev
		c.restartSlot = c.prev.SlotName
	}
	return nil
}

// checkLogical checks what logical capture will create on the source:
// the slot, the publication, and tables whose updates the publication
// would break.
func (c *checker) checkLogical(ctx context.Context) error {
	if c.pf.capture != CaptureLogical {
		return nil
	}
	if err := c.checkSlot(ctx, c.restartSlot == c.cfg.SlotName); err != nil {
		return err
	}
	if err := c.checkPublication(ctx); err != nil {
		return err
	}
	return c.checkReplicaIdentity(ctx)
}

// checkSlot checks the slot name is free (or ours: an interrupted run of
// this target left it) and a slot and a WAL sender are to spare.
func (c *checker) checkSlot(ctx context.Context, ours bool) error {
	slot := c.cfg.SlotName
	var slotExists bool
	if err := c.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, slot).Scan(&slotExists); err != nil {
		return fmt.Errorf("preflight: look up slot %s on the source: %w", slot, err)
	}
	if slotExists && !ours {
		c.add(fmt.Sprintf("replication slot %q on the source", slot), "already exists and no unfinished snapshot on the target owns it",
			fmt.Sprintf("if it is left from an earlier migration run `replicator cleanup` or SELECT pg_drop_replication_slot('%s'); otherwise choose another slot name", slot))
	}
	free := c.maxSlots - c.usedSlots
	if slotExists {
		free++
	}
	if free < 1 {
		c.add(c.srcWhere+" max_replication_slots", fmt.Sprintf("all %d replication slots are in use", c.maxSlots),
			"drop an unused slot (SELECT slot_name, active FROM pg_replication_slots) or raise max_replication_slots and restart the source")
	}
	if c.maxSenders-c.usedSends < 1 {
		c.add(c.srcWhere+" max_wal_senders", fmt.Sprintf("all %d WAL senders are in use", c.maxSenders),
			"raise max_wal_senders and restart the source, or stop an idle replication client")
	}
	return nil
}

// checkPublication checks a publication of that name is absent (and may
// be created) or already exactly what would be created (and is reused).
func (c *checker) checkPublication(ctx context.Context) error {
	pub := c.cfg.Publication
	var pubExists, pubAll bool
	err := c.src.QueryRow(ctx, `SELECT count(*) > 0, coalesce(bool_and(puballtables), false) FROM pg_publication WHERE pubname = $1`,
		pub).Scan(&pubExists, &pubAll)
	if err != nil {
		return fmt.Errorf("preflight: look up publication %s on the source: %w", pub, err)
	}
	switch {
	case pubExists && !pubAll:
		c.add(fmt.Sprintf("publication %q on the source", pub), "already exists and does not publish all tables",
			fmt.Sprintf("drop it (DROP PUBLICATION %s) if it is a leftover, or choose another publication name", pgutil.QuoteIdent(pub)))
	case pubExists:
		c.pf.reusePublish = true // exactly what would be created: reuse it
	default:
		// Whether the user may create a FOR ALL TABLES publication
		// depends on the server (superuser; rds_superuser on RDS): try it
		// in a transaction that is rolled back.
		if err := probePublication(ctx, c.src); err != nil {
			c.add(fmt.Sprintf("source user %q", c.user), "cannot create a FOR ALL TABLES publication ("+err.Error()+")",
				fmt.Sprintf("have a superuser run CREATE PUBLICATION %s FOR ALL TABLES on the source first (it is then reused)", pgutil.QuoteIdent(pub)))
		}
	}
	return nil
}

// probePublication creates a FOR ALL TABLES publication and rolls it back.
func probePublication(ctx context.Context, src *pgx.Conn) error {
	tx, err := src.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "CREATE PUBLICATION replicator_preflight_probe FOR ALL TABLES")
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return errors.New(pgErr.Message)
	}
	return err
}

// checkReplicaIdentity finds tables whose UPDATE and DELETE would fail
// under a FOR ALL TABLES publication: no primary key and no usable replica
// identity (pgcatalog.ReplicaKey). Unlogged tables are not published, so
// they are fine.
func (c *checker) checkReplicaIdentity(ctx context.Context) error {
	cfg, add := c.cfg, c.add
	tables, err := pgcatalog.Tables(ctx, c.src, pgcatalog.Options{Tables: pgcatalog.RowTables})
	if err != nil {
		return fmt.Errorf("preflight: find tables without a replica identity: %w", err)
	}
	var list []relName
	owned := map[relName]bool{}
	for _, t := range tables {
		if !t.Unlogged && !t.HasReplicaKey {
			r := relName{t.Schema, t.Name}
			list, owned[r] = append(list, r), t.Owned
		}
	}
	for i, r := range list {
		if i == maxListed {
			add(fmt.Sprintf("%d more tables", len(list)-maxListed), "have no primary key and no replica identity either", "see above")
			break
		}
		switch {
		case !cfg.ReplicaIdentityFull:
			add("source table "+r.String(), "has no primary key and no replica identity, so its UPDATE and DELETE would fail once the publication exists",
				"add a primary key, or pass --replica-identity-full to set REPLICA IDENTITY FULL on it")
		case !owned[r]:
			add("source table "+r.String(), "needs REPLICA IDENTITY FULL but the source user does not own it",
				"run ALTER TABLE "+r.String()+" REPLICA IDENTITY FULL as its owner")
		}
	}
	if cfg.ReplicaIdentityFull {
		c.pf.noIdentity = list
	}
	return nil
}

// checkReadable finds tables and sequences the source user cannot read.
func (c *checker) checkReadable(ctx context.Context) error {
	rows, err := c.src.Query(ctx, `
		SELECT n.nspname, c.relname, c.relkind = 'S' FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.RowTables, Also: []pgcatalog.Kind{pgcatalog.Sequence}})+`
		AND (NOT has_schema_privilege(n.oid, 'USAGE') OR NOT has_table_privilege(c.oid, 'SELECT'))
		ORDER BY 1, 2 LIMIT `+fmt.Sprint(maxListed))
	if err != nil {
		return fmt.Errorf("preflight: check read privileges on the source: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r relName
		var seq bool
		if err := rows.Scan(&r.Schema, &r.Name, &seq); err != nil {
			return err
		}
		kind := "table"
		if seq {
			kind = "sequence"
		}
		c.add("source "+kind+" "+r.String(), "the source user cannot read it",
			fmt.Sprintf("GRANT USAGE ON SCHEMA %s and GRANT SELECT ON %s to the source user", pgutil.QuoteIdent(r.Schema), r.String()))
	}
	return rows.Err()
}

// checkTarget checks the target is reachable, writable, new enough, can
// switch triggers off, and is either empty or ours from an interrupted run.
func (c *checker) checkTarget(ctx context.Context) error {
	dst, pf, prev, add := c.dst, c.pf, c.prev, c.add
	where := "target " + dst.Config().Host + "/" + dst.Config().Database
	var version int
	var recovery, canCreate bool
	var readOnly string
	err := dst.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, pg_is_in_recovery(),
		current_setting('default_transaction_read_only'), has_database_privilege(current_database(), 'CREATE')`).Scan(
		&version, &recovery, &readOnly, &canCreate)
	if err != nil {
		return fmt.Errorf("preflight: read the target's settings: %w", err)
	}
	if err := dst.QueryRow(ctx, `SELECT coalesce(bool_or('lz4' = ANY(enumvals)), false) FROM pg_settings
		WHERE name = 'default_toast_compression'`).Scan(&pf.targetLZ4); err != nil {
		return fmt.Errorf("preflight: read the target's settings: %w", err)
	}
	if version/10000 < pf.sourceMajor {
		add(where, fmt.Sprintf("PostgreSQL %d is older than the source's %d", version/10000, pf.sourceMajor),
			"use a target of the source's major version or newer")
	}
	if recovery || readOnly == "on" {
		add(where, "is read-only (a standby, or default_transaction_read_only = on)", "point --target at the writable primary")
	}
	if !canCreate {
		add(where, "the target user may not create schemas in this database", "GRANT CREATE ON DATABASE to the target user, or use the database owner")
	}
	if _, err := dst.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		add(where, "the target user cannot SET session_replication_role, which keeps triggers and foreign keys from firing during the copy",
			"use a superuser on the target (on RDS: a member of rds_superuser)")
	} else {
		dst.Exec(ctx, "RESET session_replication_role")
	}
	if prev == nil {
		rows, err := dst.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables})+` ORDER BY 1, 2 LIMIT 4`)
		if err != nil {
			return fmt.Errorf("preflight: list the target's tables: %w", err)
		}
		names, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			var x relName
			err := r.Scan(&x.Schema, &x.Name)
			return x.String(), err
		})
		if err != nil {
			return fmt.Errorf("preflight: list the target's tables: %w", err)
		}
		if len(names) > 0 {
			more := ""
			if len(names) == 4 {
				names, more = names[:3], ", …"
			}
			add(where, "already holds tables ("+strings.Join(names, ", ")+more+") and no replicator state, and the snapshot never overwrites",
				"point --target at an empty database, or drop those tables if they are not needed")
		}
	}
	return nil
}
