package pgcatalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
)

// bookkeepingSchema is state.Schema, the replicator's own schema on either
// side (a test keeps the two equal; pkg/state is not imported so that it
// may use this package).
const bookkeepingSchema = "replicator"

// UserSchema is the SQL condition, over pg_namespace n, that holds for the
// application's schemas. Every pg_* name is reserved to the system
// (CREATE SCHEMA refuses it), which covers pg_catalog, pg_toast and the
// temporary schemas pg_temp_N and pg_toast_temp_N. A regular expression,
// not LIKE 'pg\_%': its meaning does not depend on
// standard_conforming_strings.
const UserSchema = `(n.nspname !~ '^pg_' AND n.nspname NOT IN ('information_schema', '` + bookkeepingSchema + `'))`

// NotExtensionMember returns the SQL condition that the object oidExpr of
// system catalog catalog (e.g. "pg_class", "c.oid") is not a member of an
// extension: CREATE EXTENSION makes those on the target. Both arguments
// are SQL written by the caller, never data.
func NotExtensionMember(catalog, oidExpr string) string {
	return `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '` + catalog + `'::regclass AND d.objid = ` +
		oidExpr + ` AND d.deptype = 'e')`
}

// UserRelation is the SQL condition, over pg_class c joined to
// pg_namespace n (n.oid = c.relnamespace), that holds for the
// application's own relations of any kind: in a user schema, not
// temporary, not a member of an extension. Callers add the relkind.
// (NotExtensionMember("pg_class", "c.oid") spelled out, to keep it a
// constant; a test holds the two equal.)
const UserRelation = `(` + UserSchema + ` AND c.relpersistence <> 't'
	AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'))`

// ReplicaKey is the SQL condition, over pg_class c, that UPDATE and DELETE
// of the table can be published (logical replication needs the old row's
// key) and keyed (trigger capture): REPLICA IDENTITY FULL, DEFAULT with a
// primary key, or USING INDEX with that index still there (dropping it
// leaves relreplident 'i' and the table as keyless as NOTHING).
const ReplicaKey = `(c.relreplident = 'f'
	OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
	OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))`

// Kind is a relation kind, with pg_class.relkind's letter.
type Kind byte

// The kinds of relation this package speaks of.
const (
	Ordinary    Kind = 'r' // a table with rows of its own (a leaf partition too)
	Partitioned Kind = 'p' // a partitioned table: rows only in its partitions
	View        Kind = 'v'
	Matview     Kind = 'm'
	Foreign     Kind = 'f'
	Sequence    Kind = 'S'
)

// relkind is the kind as an SQL literal. Only the kinds above have one:
// Where builds SQL from it.
func (k Kind) relkind() string {
	switch k {
	case Ordinary, Partitioned, View, Matview, Foreign, Sequence:
		return "'" + string(rune(k)) + "'"
	}
	panic(fmt.Sprintf("pgcatalog: unknown relation kind %q", rune(k)))
}

// Select says which tables of partition trees are listed (see the package
// documentation). The zero value is AllTables.
type Select int

const (
	// AllTables is every user table: ordinary, partitioned, and the
	// partitions at every level.
	AllTables Select = iota
	// RowTables is the tables that hold rows (relkind r): ordinary tables
	// and leaf partitions; partitioned parents are left out.
	RowTables
	// RootTables is ordinary tables and the roots of partition trees;
	// partitions are left out.
	RootTables
)

// Options selects a part of the user relations.
type Options struct {
	// Tables is which tables of partition trees. Default AllTables.
	Tables Select
	// Also adds user relations of these other kinds (View, Matview,
	// Foreign, Sequence), under the same rules. Empty: tables only.
	Also []Kind
}

// Where returns the SQL condition, over pg_class c joined to pg_namespace
// n (n.oid = c.relnamespace), that holds for exactly the relations o
// selects. Tables runs the same condition.
func Where(o Options) string {
	var kind string
	switch o.Tables {
	case AllTables:
		kind = `c.relkind IN ('r', 'p')`
	case RowTables:
		kind = `c.relkind = 'r'`
	case RootTables:
		kind = `(c.relkind IN ('r', 'p') AND NOT c.relispartition)`
	default:
		panic(fmt.Sprintf("pgcatalog: unknown table selection %d", o.Tables))
	}
	if len(o.Also) > 0 {
		var also []string
		for _, k := range o.Also {
			also = append(also, k.relkind())
		}
		kind = `(` + kind + ` OR c.relkind IN (` + strings.Join(also, ", ") + `))`
	}
	return kind + ` AND ` + UserRelation
}

// Table is one user table (or a relation of a kind Options.Also asked
// for) as the catalog describes it now.
type Table struct {
	OID    uint32
	Schema string
	Name   string
	Kind   Kind
	// Partition is true for a partition of a partitioned table
	// (relispartition), at any level; an inheritance child is not one.
	Partition bool
	// Root is the oid of the partitioned table at the top of the
	// partition's tree; OID itself when not a partition. The root may be
	// outside the list (a partition is judged on its own).
	Root     uint32
	Unlogged bool
	// EstRows is the planner's estimate (reltuples): -1 on PostgreSQL 14
	// and later when never analysed or vacuumed, 0 before.
	EstRows int64
	// Owned is true when the connected role has the owner's rights
	// (pg_has_role(relowner, 'USAGE')): it may ALTER the table and create
	// triggers on it.
	Owned bool
	// HasPrimaryKey is true when the table has a primary key.
	HasPrimaryKey bool
	// ReplicaIdentity is pg_class.relreplident: 'd' default (the primary
	// key), 'n' nothing, 'f' full, 'i' an index.
	ReplicaIdentity byte
	// HasIdentityIndex is true when an index is marked as the replica
	// identity (indisreplident).
	HasIdentityIndex bool
	// HasReplicaKey is ReplicaKey: UPDATE and DELETE can be published and
	// keyed.
	HasReplicaKey bool
}

// String is the schema-qualified name, quoted as SQL needs it.
func (t *Table) String() string { return pgutil.QualifiedName(t.Schema, t.Name) }

// Querier is a connection, pool or transaction to read the catalog with.
// Inside a transaction the list is that of its snapshot.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// tablesSQL lists the relations of a Where condition (%s) with each
// partition's root. pg_partition_root is PostgreSQL 12 and later, the
// snapshot reads sources from 10 on: the root is found by walking
// pg_inherits down from the roots instead.
const tablesSQL = `
WITH RECURSIVE tree(oid, root) AS (
	SELECT r.oid, r.oid FROM pg_class r WHERE r.relkind = 'p' AND NOT r.relispartition
	UNION ALL
	SELECT i.inhrelid, tree.root FROM tree JOIN pg_inherits i ON i.inhparent = tree.oid
	JOIN pg_class p ON p.oid = i.inhrelid WHERE p.relispartition
)
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relispartition, coalesce(tree.root, c.oid),
	c.relpersistence = 'u', c.reltuples::int8, pg_has_role(c.relowner, 'USAGE'),
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
	c.relreplident::text,
	EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident),
	` + ReplicaKey + `
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN tree ON tree.oid = c.oid AND c.relispartition
WHERE %s
ORDER BY n.nspname, c.relname`

// Tables lists the user relations o selects, ordered by schema and name.
// No relation: an empty list and no error.
func Tables(ctx context.Context, q Querier, o Options) ([]Table, error) {
	rows, err := q.Query(ctx, fmt.Sprintf(tablesSQL, Where(o)))
	if err != nil {
		return nil, fmt.Errorf("list the tables: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Table, error) {
		var t Table
		var kind, ident string
		err := r.Scan(&t.OID, &t.Schema, &t.Name, &kind, &t.Partition, &t.Root, &t.Unlogged, &t.EstRows, &t.Owned,
			&t.HasPrimaryKey, &ident, &t.HasIdentityIndex, &t.HasReplicaKey)
		if err == nil {
			t.Kind, t.ReplicaIdentity = Kind(kind[0]), ident[0]
		}
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the tables: %w", err)
	}
	return out, nil
}
