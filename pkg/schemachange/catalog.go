package schemachange

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// Catalog is a snapshot of the captured schemas' tables: what the poller
// reads from the source, and what the target is known to reflect (kept on
// the target, store.go). Tables are keyed by their source oid and columns
// carry their source attnum, so a rename is told from a drop and an add.
type Catalog struct {
	Tables map[uint32]*Table `json:"tables"`
	// Objects are the types, sequences, functions and views (objects.go).
	Objects map[string]*Object `json:"objects,omitempty"`
	// Version is objectsVersion when Objects and the tables' Constraints
	// were read; 0 in a catalog stored before they were followed.
	Version int `json:"version,omitempty"`
}

// Table is one ordinary or partitioned table.
type Table struct {
	OID     uint32   `json:"oid"`
	Schema  string   `json:"schema"`
	Name    string   `json:"name"`
	Kind    string   `json:"kind"`              // r or p
	Parent  uint32   `json:"parent,omitempty"`  // partitioned parent, 0 when not a partition
	Bound   string   `json:"bound,omitempty"`   // FOR VALUES … of a partition
	PartKey string   `json:"partkey,omitempty"` // PARTITION BY key of a partitioned table
	Columns []Column `json:"columns"`
	// Indexes by name: their definition (pg_get_indexdef) and the
	// constraint they back, if any. Indexes a partition inherits from its
	// parent's are left out: the parent's index makes them.
	Indexes map[string]Index `json:"indexes"`
	// Constraints are its CHECK and FOREIGN KEY constraints by name.
	Constraints map[string]Constraint `json:"constraints,omitempty"`
}

// Column is one column of a table.
type Column struct {
	Num       int16  `json:"num"`
	Name      string `json:"name"`
	Type      string `json:"type"`
	NotNull   bool   `json:"notnull,omitempty"`
	Default   string `json:"default,omitempty"`
	Generated string `json:"generated,omitempty"` // the expression of a generated column
	Identity  string `json:"identity,omitempty"`  // a (ALWAYS) or d (BY DEFAULT)
	// Volatile: filling the column for existing rows gave each row its
	// own value (a volatile default such as random() or nextval(), or an
	// identity), so the target must take the source's values. Missing is
	// otherwise the value they all took (a default such as now() is
	// evaluated once, on the source, when the column is added): the
	// target's rows must take that one, not their own now().
	Volatile bool    `json:"volatile,omitempty"`
	Missing  *string `json:"missing,omitempty"`
}

// Index is one index of a table.
type Index struct {
	Def        string `json:"def"`
	Constraint string `json:"constraint,omitempty"`
}

// Qualified is the quoted schema.name.
func (t *Table) Qualified() string { return pgutil.QualifiedName(t.Schema, t.Name) }

func (t *Table) column(num int16) *Column {
	for i := range t.Columns {
		if t.Columns[i].Num == num {
			return &t.Columns[i]
		}
	}
	return nil
}

func (t *Table) columnNamed(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// byName finds a table by schema and name.
func (c *Catalog) byName(schema, name string) *Table {
	for _, t := range c.Tables {
		if t.Schema == schema && t.Name == name {
			return t
		}
	}
	return nil
}

// sortedOIDs lists the tables in a stable order: parents before their
// partitions, then by name.
func (c *Catalog) sorted() []*Table {
	out := make([]*Table, 0, len(c.Tables))
	for _, t := range c.Tables {
		out = append(out, t)
	}
	depth := func(t *Table) int {
		d := 0
		for p := t; p.Parent != 0 && d < 32; d++ {
			if p = c.Tables[p.Parent]; p == nil {
				break
			}
		}
		return d
	}
	sort.Slice(out, func(i, j int) bool {
		di, dj := depth(out[i]), depth(out[j])
		if di != dj {
			return di < dj
		}
		return out[i].Qualified() < out[j].Qualified()
	})
	return out
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ReadCatalog reads the captured schemas' tables (the application's: every
// user schema but replicator's own, no extension members, no temporary
// tables) through q, one snapshot when q is a REPEATABLE READ transaction.
func ReadCatalog(ctx context.Context, q querier) (*Catalog, error) {
	c := &Catalog{Tables: map[uint32]*Table{}}
	rows, err := q.Query(ctx, `SELECT c.oid, n.nspname, c.relname, c.relkind::text,
			coalesce((SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid AND c.relispartition), 0),
			coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
			CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND `+pgcatalog.UserRelation)
	if err != nil {
		return nil, fmt.Errorf("read the tables of the catalog: %w", err)
	}
	for rows.Next() {
		t := &Table{Indexes: map[string]Index{}}
		if err := rows.Scan(&t.OID, &t.Schema, &t.Name, &t.Kind, &t.Parent, &t.Bound, &t.PartKey); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the tables of the catalog: %w", err)
		}
		c.Tables[t.OID] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the tables of the catalog: %w", err)
	}
	// The value existing rows took when a column was added with a default
	// is attmissingval when PostgreSQL stored one (a default that is not
	// volatile); a volatile default rewrote the table instead, each row
	// with its own value. (pg_depend cannot say: it records no dependency
	// on built-in functions such as random().) A partitioned table keeps
	// the value in its partitions.
	rows, err = q.Query(ctx, `SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
			CASE WHEN a.attgenerated = '' THEN coalesce(pg_get_expr(d.adbin, d.adrelid), '') ELSE '' END,
			CASE WHEN a.attgenerated <> '' THEN coalesce(pg_get_expr(d.adbin, d.adrelid), '') ELSE '' END,
			a.attidentity::text,
			CASE WHEN c.relkind = 'p' THEN NOT EXISTS (SELECT 1 FROM pg_inherits i JOIN pg_attribute pa ON pa.attrelid = i.inhrelid AND pa.attname = a.attname
					WHERE i.inhparent = a.attrelid AND NOT pa.atthasmissing)
				ELSE a.atthasmissing END,
			CASE WHEN c.relkind = 'p' THEN (SELECT (pa.attmissingval::text::text[])[1] FROM pg_inherits i JOIN pg_attribute pa ON pa.attrelid = i.inhrelid AND pa.attname = a.attname
					WHERE i.inhparent = a.attrelid AND pa.atthasmissing LIMIT 1)
				WHEN a.atthasmissing THEN (a.attmissingval::text::text[])[1] END
		FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
		WHERE c.relkind IN ('r', 'p') AND `+pgcatalog.UserRelation+` AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attrelid, a.attnum`)
	if err != nil {
		return nil, fmt.Errorf("read the columns of the catalog: %w", err)
	}
	for rows.Next() {
		var rel uint32
		var col Column
		var hasMissing bool
		if err := rows.Scan(&rel, &col.Num, &col.Name, &col.Type, &col.NotNull, &col.Default, &col.Generated, &col.Identity,
			&hasMissing, &col.Missing); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the columns of the catalog: %w", err)
		}
		col.Volatile = col.Identity != "" || col.Default != "" && !hasMissing
		if t := c.Tables[rel]; t != nil {
			t.Columns = append(t.Columns, col)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the columns of the catalog: %w", err)
	}
	// Indexes still being built (CREATE INDEX CONCURRENTLY not finished,
	// or failed) are not listed: they appear once valid.
	rows, err = q.Query(ctx, `SELECT i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid), coalesce(con.conname, '')
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')
		WHERE c.relkind IN ('r', 'p') AND `+pgcatalog.UserRelation+` AND i.indisvalid
			AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)`)
	if err != nil {
		return nil, fmt.Errorf("read the indexes of the catalog: %w", err)
	}
	for rows.Next() {
		var rel uint32
		var name string
		var ix Index
		if err := rows.Scan(&rel, &name, &ix.Def, &ix.Constraint); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the indexes of the catalog: %w", err)
		}
		if t := c.Tables[rel]; t != nil {
			t.Indexes[name] = ix
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the indexes of the catalog: %w", err)
	}
	if err := readObjects(ctx, q, c); err != nil {
		return nil, err
	}
	return c, nil
}

// Align returns the target's catalog tgt keyed like the source's src: a
// target table takes the oid of the source table of the same name, its
// columns the attnum of the source column of the same name. What has no
// namesake on the source gets an identifier of its own that no source
// object has, so the diff calls it dropped. This is the baseline when the
// target holds no stored catalog yet (the first stream after a snapshot):
// the target then is the copy, and any schema change made since shows.
func Align(tgt, src *Catalog) *Catalog {
	out := &Catalog{Tables: map[uint32]*Table{}}
	fake := uint32(0xffffffff)
	oldToNew := map[uint32]uint32{}
	for _, t := range tgt.Tables {
		n := *t
		if s := src.byName(t.Schema, t.Name); s != nil {
			n.OID = s.OID
		} else {
			n.OID = fake
			fake--
		}
		oldToNew[t.OID] = n.OID
		n.Columns = nil
		var fakeNum int16 = -1
		for _, c := range t.Columns {
			s := src.byName(t.Schema, t.Name)
			if sc := (*Column)(nil); s != nil {
				if sc = s.columnNamed(c.Name); sc != nil {
					c.Num = sc.Num
				} else {
					c.Num = fakeNum
					fakeNum--
				}
			}
			n.Columns = append(n.Columns, c)
		}
		out.Tables[n.OID] = &n
	}
	for _, t := range out.Tables {
		if t.Parent != 0 {
			t.Parent = oldToNew[t.Parent]
		}
	}
	alignObjects(tgt, src, out)
	return out
}
