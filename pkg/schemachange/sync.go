package schemachange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// Sync applies what the last poll found to the target. Apply calls it
// between target transactions, so no lock of its own is in the way. The
// target's DDL, the new tables' chunk plan and the catalog it now reflects
// are one target transaction: after a crash the next session finds either
// none of it or all of it (and copies the chunks not done). New tables
// are then copied before Sync returns; copied is true when the caller
// must reload its chunk filter. Index builds start in the background.
func (h *Handler) Sync(ctx context.Context) (copied bool, err error) {
	changes, cat := h.pending, h.polled
	h.pending = nil
	if len(changes) == 0 {
		return false, nil
	}
	// A column added to a table copied by the last Sync may have been
	// added during its copy, which copied the columns the target had:
	// such a table is copied again (statements reads h.justCopied).
	var copiedNow map[uint32]bool
	defer func() {
		if err == nil {
			h.justCopied = copiedNow
		}
	}()
	var copyNames, builds []string
	var buildChanges []Change
	seen := map[string]bool{}
	// What must happen on the source before the target: capture for a new
	// table (so that no write after the copy's snapshots is missed).
	for _, c := range changes {
		if c.matched {
			continue
		}
		if c.Kind == CreateTable {
			t := cat.Tables[c.Table]
			if t == nil {
				return false, fmt.Errorf("%s: %w", c.Object, errNoTable)
			}
			if err := h.capture(ctx, t); err != nil {
				return false, err
			}
		}
	}
	err = pgx.BeginFunc(ctx, h.dst, func(tx pgx.Tx) error {
		for _, c := range changes {
			action := ActionApplied
			switch {
			case c.matched:
				action = ActionMatched
			case c.Stmts != nil:
				// Objects and constraints: their statements, in the
				// transaction of the rest.
				if err := h.execChange(ctx, tx, c, c.Stmts); err != nil {
					return err
				}
			default:
				t := cat.Tables[c.Table]
				if t == nil {
					return fmt.Errorf("%s: %w", c.Object, errNoTable)
				}
				stmts, recopy, err := h.statements(ctx, c, t, cat)
				if err != nil {
					return err
				}
				if err := h.execChange(ctx, tx, c, stmts); err != nil {
					return err
				}
				if c.Kind == CreateIndex {
					buildChanges = append(buildChanges, c)
					builds = append(builds, c.Def)
					continue
				}
				if recopy && h.cfg.Copier == nil {
					return &RefusedError{Change: c, Mode: h.cfg.Mode}
				}
				if recopy && !seen[t.Qualified()] {
					seen[t.Qualified()] = true
					if copiedNow == nil {
						copiedNow = map[uint32]bool{}
					}
					copiedNow[t.OID] = true
					copyNames = append(copyNames, t.Qualified())
				}
			}
			if err := recordChange(ctx, tx, action, c); err != nil {
				return err
			}
		}
		if len(copyNames) > 0 {
			if err := h.cfg.Copier.PlanTables(ctx, h.src, tx, copyNames, h.cfg.ChunkBytes); err != nil {
				return err
			}
		}
		var refused *Change
		if h.refusal != nil {
			refused = &h.refusal.Change
		}
		h.mu.Lock()
		next := merge(h.known, cat, changes, refused)
		h.mu.Unlock()
		if err := saveStored(ctx, tx, next); err != nil {
			return err
		}
		h.mu.Lock()
		h.known = next
		h.mu.Unlock()
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, c := range changes {
		if c.Kind != CreateIndex || c.matched {
			h.cfg.Metrics.add(ActionApplied)
			h.log.Info("schema change applied to the target", zap.String("change", c.String()), zap.Bool("already_there", c.matched))
		}
	}
	if len(copyNames) > 0 {
		if _, err := h.cfg.Copier.CopyPending(ctx, h.cfg.SourceURL, h.cfg.TargetURL, h.cfg.Jobs, h.log); err != nil {
			return false, fmt.Errorf("copy %s: %w", strings.Join(copyNames, ", "), err)
		}
		h.log.Info("copied tables created on the source", zap.Strings("tables", copyNames))
	}
	for i, c := range buildChanges {
		h.build(c, builds[i], cat.Tables[c.Table])
	}
	return len(copyNames) > 0, nil
}

// execChange runs stmts, the statements of change c (an object's or a
// constraint's own, or those made for a table's). A constraint that the
// target's rows break stops the stream, naming it: up to this point in
// the stream the target's rows are the source's, which passed it, so the
// target has drifted.
func (h *Handler) execChange(ctx context.Context, tx pgx.Tx, c Change, stmts []string) error {
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			var pgErr *pgconn.PgError
			if (c.Kind == AddConstraint || c.Kind == ValidateConstraint) && errors.As(err, &pgErr) &&
				(pgErr.Code == pgerrcode.CheckViolation || pgErr.Code == pgerrcode.ForeignKeyViolation) {
				r := c
				r.Detail += ", and rows on the target break it (" + pgErr.Message + ")"
				r.Fix = "make those rows as on the source (replicator verify names them), then " + strings.TrimSuffix(c.Stmts[0], " NOT VALID")
				if c.Kind == ValidateConstraint {
					r.Fix = "make those rows as on the source (replicator verify names them), then " + s
				}
				return &RefusedError{Change: r, Mode: h.cfg.Mode}
			}
			if pgutil.HoldsCredential(s) {
				s = "its statement, which holds a credential and is not shown"
			}
			return fmt.Errorf("target: apply the schema change (%s): %s: %w", c, s, err)
		}
	}
	return nil
}

// capture makes sure the source captures a new table before its rows are
// copied: logical capture through a publication that is not FOR ALL
// TABLES must list it; trigger capture installs its triggers.
func (h *Handler) capture(ctx context.Context, t *Table) error {
	if h.cfg.Capture == state.CaptureTrigger {
		// Only the new table: reinstalling every table would take each
		// table's lock again and can deadlock with the app's writes. A new
		// partition gets its root's row trigger from PostgreSQL itself,
		// but is installed the whole way, as Install treats partitions.
		install := func() error {
			_, err := trigger.InstallTables(ctx, h.src, h.cfg.Trigger, h.log, t.OID)
			return err
		}
		if t.Parent != 0 {
			install = func() error {
				_, err := trigger.Install(ctx, h.src, h.cfg.Trigger, h.log)
				return err
			}
		}
		if err := install(); err != nil {
			return fmt.Errorf("source: install trigger capture on the new table %s: %w", t.Qualified(), err)
		}
		return nil
	}
	if h.cfg.Publication == "" {
		return nil
	}
	var all, listed bool
	err := h.src.QueryRow(ctx, `SELECT p.puballtables, EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid AND r.prrelid = $2)
		FROM pg_publication p WHERE p.pubname = $1`, h.cfg.Publication, t.OID).Scan(&all, &listed)
	if err != nil {
		return fmt.Errorf("source: read publication %s: %w", pgutil.QuoteIdent(h.cfg.Publication), err)
	}
	if all || listed || t.Kind == "p" || t.Parent != 0 && h.parentPublished(ctx, t) {
		return nil
	}
	if _, err := h.src.Exec(ctx, fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgutil.QuoteIdent(h.cfg.Publication), t.Qualified())); err != nil {
		return fmt.Errorf("source: add the new table %s to publication %s (the table's owner may do it; or make the publication FOR ALL TABLES): %w",
			t.Qualified(), pgutil.QuoteIdent(h.cfg.Publication), err)
	}
	return nil
}

func (h *Handler) parentPublished(ctx context.Context, t *Table) bool {
	var ok bool
	_ = h.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
		WHERE p.pubname = $1 AND r.prrelid = $2)`, h.cfg.Publication, t.Parent).Scan(&ok)
	return ok
}

// statements are the target's DDL for change c of table t, and whether
// the table must be copied (again) through the chunk ledger afterwards.
func (h *Handler) statements(ctx context.Context, c Change, t *Table, cat *Catalog) ([]string, bool, error) {
	q := t.Qualified()
	switch c.Kind {
	case CreateTable:
		stmts, err := createTableDDL(ctx, h.src, t, cat)
		if err != nil {
			return nil, false, err
		}
		// Every new table with rows of its own is copied through the chunk
		// ledger, partitions included: under trigger capture a partition's
		// changes are recorded under its root but name the partition
		// (wal.Change.Partition), so the chunk filter judges them by the
		// partition's own chunks and none is written twice; and a table
		// filled before it was attached as a partition has rows no trigger
		// saw, which only the copy carries. A partitioned table holds no
		// rows of its own.
		recopy := t.Kind == "r"
		return stmts, recopy, nil
	case AddColumn:
		col := c.Column
		s := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", q, columnDef(col))
		// A volatile default (or an identity) gave each existing source
		// row a value of its own, which no row change carries: the table
		// is copied again, so the target holds the source's values.
		if (col.Volatile || h.justCopied[t.OID]) && t.Kind == "r" {
			return []string{s, "DELETE FROM ONLY " + q}, true, nil
		}
		if col.Volatile && t.Kind == "p" {
			return nil, false, &RefusedError{Change: Change{Kind: c.Kind, Table: c.Table, Object: c.Object,
				Detail: c.Detail + " with a volatile default, on a partitioned table",
				Fix:    "copy the table's rows again (`replicator cleanup`, then `replicator snapshot`), or add the column on the target and fill it from the source"}, Mode: h.cfg.Mode}
		}
		if col.Missing != nil && col.Default != "" && col.Generated == "" {
			// Existing rows take the very value the source's took; new
			// rows the default expression.
			m := *col
			m.Default = pgutil.QuoteLiteral(*col.Missing) + "::" + col.Type
			return []string{fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", q, columnDef(&m)),
				fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", q, pgutil.QuoteIdent(col.Name), col.Default)}, false, nil
		}
		return []string{s}, false, nil
	case SetDefault:
		if c.Column.Default == "" {
			return []string{fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", q, pgutil.QuoteIdent(c.Column.Name))}, false, nil
		}
		return []string{fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", q, pgutil.QuoteIdent(c.Column.Name), c.Column.Default)}, false, nil
	case SetNotNull:
		return []string{fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", q, pgutil.QuoteIdent(c.Column.Name))}, false, nil
	case DropNotNull:
		return []string{fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", q, pgutil.QuoteIdent(c.Column.Name))}, false, nil
	case AttachPartition:
		p := cat.Tables[t.Parent]
		if p == nil {
			return nil, false, fmt.Errorf("partition %s: its parent is not in a captured schema", q)
		}
		return []string{fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s %s", p.Qualified(), q, t.Bound)}, false, nil
	case DropIndex:
		if strings.HasPrefix(c.Object, "constraint ") {
			var name string
			if old := h.known.Tables[c.Table]; old != nil {
				name = old.Indexes[c.Index].Constraint
			}
			return []string{fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", q, pgutil.QuoteIdent(name))}, false, nil
		}
		return []string{"DROP INDEX IF EXISTS " + pgutil.QualifiedName(t.Schema, c.Index)}, false, nil
	case CreateIndex:
		return nil, false, nil // built in the background (build)
	}
	return nil, false, fmt.Errorf("internal error: schema change %s has no statement", c)
}

// columnDef is a column's definition as on the source.
func columnDef(c *Column) string {
	s := pgutil.QuoteIdent(c.Name) + " " + c.Type
	switch {
	case c.Generated != "":
		s += " GENERATED ALWAYS AS (" + c.Generated + ") STORED"
	case c.Identity == "a":
		s += " GENERATED ALWAYS AS IDENTITY"
	case c.Identity == "d":
		s += " GENERATED BY DEFAULT AS IDENTITY"
	case c.Default != "":
		s += " DEFAULT " + c.Default
	}
	if c.NotNull && c.Identity == "" {
		s += " NOT NULL"
	}
	return s
}

// createTableDDL builds a new table on the target as it is on the source:
// its sequences (serial columns), columns, partitioning, constraints and
// indexes. A partition is made PARTITION OF its parent with its bounds.
func createTableDDL(ctx context.Context, src *pgx.Conn, t *Table, cat *Catalog) ([]string, error) {
	var out []string
	rows, err := src.Query(ctx, `SELECT s.oid::regclass::text FROM pg_depend d JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
		WHERE d.refobjid = $1 AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("source: read the sequences of %s: %w", t.Qualified(), err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("source: read the sequences of %s: %w", t.Qualified(), err)
	}
	for _, s := range seqs {
		out = append(out, "CREATE SEQUENCE IF NOT EXISTS "+s)
	}
	if t.Parent != 0 {
		p := cat.Tables[t.Parent]
		if p == nil {
			return nil, fmt.Errorf("partition %s: its parent is not in a captured schema", t.Qualified())
		}
		out = append(out, fmt.Sprintf("CREATE TABLE %s PARTITION OF %s %s", t.Qualified(), p.Qualified(), t.Bound))
	} else {
		var cols []string
		for i := range t.Columns {
			cols = append(cols, columnDef(&t.Columns[i]))
		}
		s := fmt.Sprintf("CREATE TABLE %s (%s)", t.Qualified(), strings.Join(cols, ", "))
		if t.PartKey != "" {
			s += " PARTITION BY " + t.PartKey
		}
		out = append(out, s)
	}
	// Constraints not inherited from a parent (a partition gets those from
	// PARTITION OF); foreign keys need the referenced table on the target,
	// which a table in a captured schema has.
	rows, err = src.Query(ctx, `SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
		WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'f', 'x') AND coninhcount = 0 AND NOT (contype = 'c' AND connoinherit IS NULL)
		ORDER BY contype = 'f', conname`, t.OID)
	if err != nil {
		return nil, fmt.Errorf("source: read the constraints of %s: %w", t.Qualified(), err)
	}
	for rows.Next() {
		var name, def string
		if err := rows.Scan(&name, &def); err != nil {
			rows.Close()
			return nil, fmt.Errorf("source: read the constraints of %s: %w", t.Qualified(), err)
		}
		out = append(out, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", t.Qualified(), pgutil.QuoteIdent(name), def))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("source: read the constraints of %s: %w", t.Qualified(), err)
	}
	for _, name := range sortedKeys(t.Indexes) {
		if ix := t.Indexes[name]; ix.Constraint == "" {
			out = append(out, ix.Def)
		}
	}
	return out, nil
}

// build runs an index build in the background, on its own target
// connection: CREATE INDEX CONCURRENTLY, so apply's writes to the table go
// on while it builds (it waits only for apply's open transaction, which
// commits within its delay bound). PostgreSQL cannot build an index on a
// partitioned table concurrently, nor add a constraint so: those are
// built plainly, and apply waits on that table meanwhile. A failed build
// stops the stream at its next transaction, naming the index.
func (h *Handler) build(c Change, def string, t *Table) {
	h.mu.Lock()
	h.building[buildKey(c)] = true
	h.mu.Unlock()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		err := h.runBuild(h.bctx, c, def, t)
		h.mu.Lock()
		delete(h.building, buildKey(c))
		if err != nil && h.bctx.Err() == nil && h.buildErr == nil {
			h.buildErr = fmt.Errorf("schema change: %s %s, but building it on the target failed: %w: build it there by hand and restart the stream", c.Object, c.Detail, err)
		}
		h.mu.Unlock()
	}()
}

func (h *Handler) runBuild(ctx context.Context, c Change, def string, t *Table) error {
	conn, err := pgutil.Connect(ctx, h.cfg.TargetURL, "target")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	qname := pgutil.QualifiedName(t.Schema, c.Index)
	// A build interrupted by a restart leaves an invalid index behind.
	var invalid bool
	if err := conn.QueryRow(ctx, `SELECT coalesce((SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)), false)`, qname).Scan(&invalid); err != nil {
		return err
	}
	if invalid {
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+qname); err != nil {
			return err
		}
	}
	stmt := def
	switch {
	case strings.HasPrefix(c.Object, "constraint "):
		var cdef string
		err := h.constraintDef(ctx, t, c, &cdef)
		if err != nil {
			return err
		}
		name := pgutil.QuoteIdent(t.Indexes[c.Index].Constraint)
		stmt = fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", t.Qualified(), name, cdef)
		// A UNIQUE or PRIMARY KEY constraint of a plain table: its index
		// is built CONCURRENTLY, then becomes the constraint (USING INDEX
		// holds the table's lock only for the catalog update), so apply's
		// writes are not held up for the build.
		word := ""
		for _, w := range []string{"UNIQUE", "PRIMARY KEY"} {
			if strings.HasPrefix(cdef, w+" (") && !strings.Contains(cdef, "DEFERRABLE") && !strings.Contains(cdef, " INCLUDE ") {
				word = w
			}
		}
		if word != "" && t.Kind == "r" && c.Index == t.Indexes[c.Index].Constraint {
			build := strings.Replace(def, " INDEX ", " INDEX CONCURRENTLY IF NOT EXISTS ", 1)
			h.log.Info("building an index on the target", zap.String("index", qname), zap.String("statement", build))
			if _, err := conn.Exec(ctx, build); err != nil {
				return err
			}
			stmt = fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s USING INDEX %s", t.Qualified(), name, word, pgutil.QuoteIdent(c.Index))
		}
	case t.Kind == "r":
		stmt = strings.Replace(def, " INDEX ", " INDEX CONCURRENTLY IF NOT EXISTS ", 1)
	default:
		stmt = strings.Replace(def, " INDEX ", " INDEX IF NOT EXISTS ", 1)
	}
	h.log.Info("building an index on the target", zap.String("index", qname), zap.String("statement", stmt))
	h.cfg.Metrics.add("building")
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return err
	}
	h.mu.Lock()
	next := h.known
	if kt := next.Tables[c.Table]; kt != nil {
		kt.Indexes[c.Index] = t.Indexes[c.Index]
	}
	raw, _ := json.Marshal(next)
	h.mu.Unlock()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE replicator.schema_catalog SET catalog = $1, updated_at = now()`, raw); err != nil {
			return err
		}
		return recordChange(ctx, tx, ActionApplied, c)
	})
	if err != nil {
		return err
	}
	h.cfg.Metrics.add(ActionApplied)
	h.log.Info("index built on the target", zap.String("index", qname))
	return nil
}

func (h *Handler) constraintDef(ctx context.Context, t *Table, c Change, out *string) error {
	conn, err := pgutil.Connect(ctx, h.cfg.SourceURL, "source")
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1 AND conname = $2`,
		t.OID, t.Indexes[c.Index].Constraint).Scan(out); err != nil {
		return fmt.Errorf("source: read constraint %s: %w", t.Indexes[c.Index].Constraint, err)
	}
	return nil
}

// merge is the catalog the target reflects once changes are applied:
// the source's, except that a table's indexes are the ones built (an
// index still building is added when its build ends) and a table with a
// change still refused keeps the shape the target has.
func merge(known, src *Catalog, applied []Change, refused *Change) *Catalog {
	out := &Catalog{Tables: map[uint32]*Table{}, Objects: map[string]*Object{}, Version: src.Version}
	keep := map[uint32]bool{}
	for k, o := range src.Objects {
		out.Objects[k] = o
	}
	if refused != nil && refused.Key != "" {
		delete(out.Objects, refused.Key)
		if old := known.Objects[refused.Key]; old != nil {
			out.Objects[refused.Key] = old
		}
	} else if refused != nil {
		keep[refused.Table] = true
		if old := known.Tables[refused.Table]; old != nil {
			out.Tables[refused.Table] = old
		}
	}
	dropped := map[string]bool{}
	for _, c := range applied {
		if c.Kind == DropIndex {
			dropped[buildKey(c)] = true
		}
	}
	for oid, t := range src.Tables {
		if keep[oid] {
			continue
		}
		n := *t
		n.Columns = append([]Column(nil), t.Columns...)
		if old := known.Tables[oid]; old != nil {
			n.Indexes = map[string]Index{}
			for name, ix := range old.Indexes {
				if !dropped[fmt.Sprint(oid, "\x00", name)] {
					n.Indexes[name] = ix
				}
			}
		} else {
			n.Indexes = map[string]Index{}
			for name, ix := range t.Indexes {
				n.Indexes[name] = ix
			}
		}
		out.Tables[oid] = &n
	}
	return out
}

// Refresh polls the source's catalog now and applies what it finds,
// returning whether it changed the target (or the source's capture). A
// stream that could not open trigger capture because a table appeared in
// the meantime calls it before trying again.
func (h *Handler) Refresh(ctx context.Context) (bool, error) {
	if err := h.poll(ctx); err != nil {
		return false, err
	}
	if h.refusal != nil && len(h.pending) == 0 {
		return false, h.refusal
	}
	if len(h.pending) == 0 {
		return false, nil
	}
	_, err := h.Sync(ctx)
	return err == nil, err
}
