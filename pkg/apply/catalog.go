package apply

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/wal"
)

// targetColumn is a column of a target table, from its catalog.
type targetColumn struct {
	typ       string // format_type, e.g. numeric(10,2) or "My Schema"."mood"
	generated bool   // attgenerated: never written
	identity  bool   // attidentity: INSERT needs OVERRIDING SYSTEM VALUE
	always    bool   // GENERATED ALWAYS AS IDENTITY: UPDATE may not set it
	textEq    bool   // no usable "=" operator: compare the text forms
}

// targetTable is what apply needs of a target table.
type targetTable struct {
	name        string // quoted schema.table
	partitioned bool   // relkind 'p': ctid is not unique across partitions
	cols        map[string]*targetColumn
	hasIdentity bool
	// uniqueSets are the column sets (sorted, joined by NUL) of the
	// target's unique indexes; unsafeOrder is set when the table has a
	// unique index on expressions or with a predicate, an exclusion
	// constraint or a trigger that fires even in replica mode. Changes to
	// such a table are applied strictly in source order.
	uniqueSets  []string
	unsafeOrder bool
}

// Types without a btree equality that matches on value; under REPLICA
// IDENTITY FULL their columns are matched by text form.
var noEquality = map[string]bool{"json": true, "xml": true, "point": true, "line": true, "lseg": true,
	"box": true, "path": true, "polygon": true, "circle": true}

// loadTable reads a target table's columns. A missing table is an error
// that names it.
func loadTable(ctx context.Context, conn *pgx.Conn, schema, name string) (*targetTable, error) {
	// LEFT JOIN: a table with no column at all is a table, with one row
	// of NULLs here.
	rows, err := conn.Query(ctx, `SELECT c.relkind::text, coalesce(a.attname, ''), coalesce(format_type(a.atttypid, a.atttypmod), ''),
			coalesce(a.attgenerated <> '', false), coalesce(a.attidentity <> '', false), coalesce(a.attidentity = 'a', false)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("read the target's columns of %s.%s: %w", schema, name, err)
	}
	defer rows.Close()
	t := &targetTable{name: pgutil.QualifiedName(schema, name), cols: map[string]*targetColumn{}}
	found := false
	for rows.Next() {
		var kind, col string
		c := &targetColumn{}
		if err := rows.Scan(&kind, &col, &c.typ, &c.generated, &c.identity, &c.always); err != nil {
			return nil, fmt.Errorf("read the target's columns of %s.%s: %w", schema, name, err)
		}
		found = true
		t.partitioned = kind == "p"
		if col == "" {
			continue // no column at all
		}
		base := strings.TrimSuffix(strings.TrimPrefix(c.typ, "pg_catalog."), "[]")
		c.textEq = noEquality[base]
		t.hasIdentity = t.hasIdentity || c.identity
		t.cols[col] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the target's columns of %s.%s: %w", schema, name, err)
	}
	if !found {
		return nil, fmt.Errorf("table %s does not exist on the target: create it there (replicator snapshot copies the schema) and restart the stream", t.name)
	}
	irows, err := conn.Query(ctx, `SELECT i.indexprs IS NOT NULL OR i.indpred IS NOT NULL OR i.indisexclusion,
			coalesce((SELECT string_agg(a.attname, E'\x01' ORDER BY a.attname) FROM pg_attribute a
				WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) AND a.attnum > 0), '')
		FROM pg_index i WHERE i.indrelid = $1::regclass AND (i.indisunique OR i.indisexclusion)
		UNION ALL
		SELECT true, '' FROM pg_trigger g WHERE g.tgrelid = $1::regclass AND g.tgenabled = 'A'`, t.name)
	if err != nil {
		return nil, fmt.Errorf("read the target's indexes of %s: %w", t.name, err)
	}
	defer irows.Close()
	for irows.Next() {
		var unsafe bool
		var set string
		if err := irows.Scan(&unsafe, &set); err != nil {
			return nil, fmt.Errorf("read the target's indexes of %s: %w", t.name, err)
		}
		t.unsafeOrder = t.unsafeOrder || unsafe
		t.uniqueSets = append(t.uniqueSets, set)
	}
	if err := irows.Err(); err != nil {
		return nil, fmt.Errorf("read the target's indexes of %s: %w", t.name, err)
	}
	return t, nil
}

// plan binds one source relation description to its target table.
type plan struct {
	rel   *wal.Relation
	table *targetTable
	cols  []*targetColumn // indexed like rel.Columns; nil for a generated target column
	qcols []string        // quoted column names
	stmts map[string]string
	// keyCols are the replica identity's columns; netted says changes may
	// be reduced to their net effect per key (see net.go).
	keyCols []int
	netted  bool
}

func newPlan(rel *wal.Relation, t *targetTable) (*plan, error) {
	p := &plan{rel: rel, table: t, cols: make([]*targetColumn, len(rel.Columns)),
		qcols: make([]string, len(rel.Columns)), stmts: map[string]string{}}
	for i, c := range rel.Columns {
		tc, ok := t.cols[c.Name]
		if !ok {
			return nil, fmt.Errorf("column %s of table %s does not exist on the target: add it there (ALTER TABLE ... ADD COLUMN) and restart the stream",
				pgutil.QuoteIdent(c.Name), t.name)
		}
		if !tc.generated {
			p.cols[i] = tc
		}
		p.qcols[i] = pgutil.QuoteIdent(c.Name)
		if c.Key {
			p.keyCols = append(p.keyCols, i)
		}
	}
	p.netted = p.canNet()
	return p, nil
}

// catalog caches plans per source relation description and target tables
// per name. A new Relation message is a new *wal.Relation, so it gets a new
// plan and a fresh look at the target's table.
type catalog struct {
	plans  map[*wal.Relation]*plan
	tables map[string]*targetTable
}

func newCatalog() *catalog {
	return &catalog{plans: map[*wal.Relation]*plan{}, tables: map[string]*targetTable{}}
}

func (c *catalog) plan(ctx context.Context, conn *pgx.Conn, rel *wal.Relation) (*plan, error) {
	if p, ok := c.plans[rel]; ok {
		return p, nil
	}
	key := rel.Namespace + "\x00" + rel.Name
	// Each new description of the relation re-reads the target's table,
	// so columns added on both sides are picked up.
	t, err := loadTable(ctx, conn, rel.Namespace, rel.Name)
	if err != nil {
		return nil, err
	}
	c.tables[key] = t
	p, err := newPlan(rel, t)
	if err != nil {
		return nil, err
	}
	if len(c.plans) > 10000 {
		clear(c.plans)
	}
	c.plans[rel] = p
	return p, nil
}

// canNet decides whether a table's changes commute across rows, so that
// within a target transaction they may be reduced to one net change per
// key and applied set-wise: the source identifies rows by a key (not the
// full row), the key is written by neither side's generator, and the
// target has no unique index other than on exactly the key columns (so no
// two different keys can conflict at any intermediate point), no
// exclusion constraint and no trigger that fires in replica mode.
// Foreign keys do not matter: session_replication_role = replica skips
// their checks.
func (p *plan) canNet() bool {
	if p.rel.Identity != wal.IdentityDefault && p.rel.Identity != wal.IdentityIndex {
		return false
	}
	if len(p.keyCols) == 0 || p.table.unsafeOrder {
		return false
	}
	var names []string
	for _, i := range p.keyCols {
		if p.cols[i] == nil {
			return false
		}
		names = append(names, p.rel.Columns[i].Name)
	}
	slices.Sort(names)
	key := strings.Join(names, "\x01")
	for _, set := range p.table.uniqueSets {
		if set != key {
			return false
		}
	}
	return true
}
