package schemachange

import (
	"fmt"
	"sort"
	"strings"

	"replicator/pkg/pgutil"
)

// Kind is what a schema change does.
type Kind string

// The kinds of change the diff finds. The additive ones are applied under
// --ddl apply; the others always stop the stream.
const (
	CreateTable     Kind = "create table"
	AddColumn       Kind = "add column"
	SetDefault      Kind = "set default"
	SetNotNull      Kind = "set not null"
	DropNotNull     Kind = "drop not null"
	CreateIndex     Kind = "create index"
	DropIndex       Kind = "drop index"
	AttachPartition Kind = "attach partition"

	DropTable        Kind = "drop table"
	RenameTable      Kind = "rename table"
	DropColumn       Kind = "drop column"
	RenameColumn     Kind = "rename column"
	AlterColumnType  Kind = "alter column type"
	AlterGenerated   Kind = "alter generated column"
	AlterIdentity    Kind = "alter identity"
	DetachPartition  Kind = "detach partition"
	AlterPartition   Kind = "alter partition bounds"
	AlterPartitionBy Kind = "alter partition key"
)

// Additive reports whether the target can take the change in stream order
// without losing or mixing up data.
func (k Kind) Additive() bool {
	switch k {
	case CreateTable, AddColumn, SetDefault, SetNotNull, DropNotNull, CreateIndex, DropIndex, AttachPartition,
		CreateObject, AddEnumValue, ReplaceObject, AlterSequence, AddConstraint, ValidateConstraint, DropConstraint:
		return true
	}
	return false
}

// Change is one difference between the catalog the target reflects (old)
// and the source's (new).
type Change struct {
	Kind   Kind
	Table  uint32 // source oid of the table (the new one's, or the old one's when it is gone)
	Object string // what changed, named for people: table public.users, column public.users.email, index …
	Detail string // what the source shows, e.g. "was dropped on the source", "type integer → bigint"
	Fix    string // what the operator does on the target for a change that stops the stream

	Column *Column // AddColumn, SetDefault, …: the new column
	Index  string  // CreateIndex, DropIndex: the index's name
	Def    string  // CreateIndex: its definition
	// Constraint is ValidateConstraint's constraint name.
	Constraint string

	// Key is the object's (Catalog.Objects) for a change of a type,
	// sequence, function or view; Stmts the target's DDL of an object's
	// or a constraint's change.
	Key   string
	Stmts []string

	matched bool // the target already shows it (made there by hand)
}

// String is the change as the log, replicator.schema_changes and errors
// show it: no credential of a definition in it (shown.go).
func (c Change) String() string { return pgutil.RedactText(c.Object + " " + c.Detail) }

// subject is what the change is about: its object, else its table.
func (c Change) subject() string {
	if c.Key != "" {
		return c.Key
	}
	return fmt.Sprint("table:", c.Table)
}

// reserved are the key words an identifier may not be written bare as
// (the common ones: messages only; DDL always quotes).
var reserved = map[string]bool{"all": true, "analyse": true, "analyze": true, "and": true, "any": true, "array": true, "as": true,
	"asc": true, "both": true, "case": true, "cast": true, "check": true, "collate": true, "column": true, "constraint": true,
	"create": true, "current_date": true, "current_user": true, "default": true, "desc": true, "distinct": true, "do": true,
	"else": true, "end": true, "except": true, "false": true, "fetch": true, "for": true, "foreign": true, "from": true,
	"grant": true, "group": true, "having": true, "in": true, "into": true, "limit": true, "not": true, "null": true,
	"offset": true, "on": true, "only": true, "or": true, "order": true, "primary": true, "references": true, "select": true,
	"table": true, "then": true, "to": true, "true": true, "union": true, "unique": true, "user": true, "using": true,
	"when": true, "where": true, "with": true}

// ident writes an identifier for people: bare when it can be, quoted
// otherwise.
func ident(name string) string {
	bare := name != "" && !reserved[name]
	for i, r := range name {
		if !(r >= 'a' && r <= 'z' || r == '_' || i > 0 && (r >= '0' && r <= '9' || r == '$')) {
			bare = false
		}
	}
	if bare {
		return name
	}
	return pgutil.QuoteIdent(name)
}

func qualified(schema, name string) string { return ident(schema) + "." + ident(name) }

// display is the table's name for people.
func (t *Table) display() string { return qualified(t.Schema, t.Name) }

func colName(t *Table, name string) string {
	return t.display() + "." + ident(name)
}

// Diff lists what changed from old to new, in an order the target can
// take them: tables (parents first), then columns, then partitions
// attached, then indexes; changes that stop the stream are listed too.
func Diff(old, new *Catalog) []Change {
	var out []Change
	add := func(c Change) { out = append(out, c) }
	// Types and sequences first: new columns and tables use them.
	diffObjects(old, new, true, add)
	for _, n := range new.sorted() {
		o := old.Tables[n.OID]
		if o == nil {
			detail := "was created on the source"
			if n.Parent != 0 {
				detail = "was created on the source as a partition " + n.Bound
			}
			add(Change{Kind: CreateTable, Table: n.OID, Object: "table " + n.display(), Detail: detail})
			continue
		}
		if o.Schema != n.Schema || o.Name != n.Name {
			add(Change{Kind: RenameTable, Table: n.OID, Object: "table " + o.display(),
				Detail: "was renamed to " + n.display() + " on the source",
				Fix:    fmt.Sprintf("rename it on the target the same way (ALTER TABLE %s RENAME TO %s, or SET SCHEMA)", o.display(), ident(n.Name))})
			continue // its columns are compared once the names agree
		}
		if o.PartKey != n.PartKey {
			add(Change{Kind: AlterPartitionBy, Table: n.OID, Object: "table " + n.display(),
				Detail: fmt.Sprintf("changed its partition key from %q to %q on the source", o.PartKey, n.PartKey),
				Fix:    "recreate the table on the target as on the source"})
		}
		diffColumns(o, n, add)
		switch {
		case o.Parent == n.Parent && o.Bound != n.Bound && n.Parent != 0:
			add(Change{Kind: AlterPartition, Table: n.OID, Object: "partition " + n.display(),
				Detail: fmt.Sprintf("changed its bounds from %s to %s on the source", o.Bound, n.Bound),
				Fix:    fmt.Sprintf("detach it on the target and attach it again %s", n.Bound)})
		case o.Parent != 0 && n.Parent != o.Parent:
			add(Change{Kind: DetachPartition, Table: n.OID, Object: "partition " + n.display(),
				Detail: "was detached from its partitioned table on the source",
				Fix:    fmt.Sprintf("detach it on the target (ALTER TABLE %s DETACH PARTITION %s)", parentName(old, o), n.display())})
		case o.Parent == 0 && n.Parent != 0:
			add(Change{Kind: AttachPartition, Table: n.OID, Object: "table " + n.display(),
				Detail: "was attached as a partition " + n.Bound + " on the source"})
		}
	}
	for _, o := range old.sorted() {
		if new.Tables[o.OID] == nil {
			add(Change{Kind: DropTable, Table: o.OID, Object: "table " + o.display(), Detail: "was dropped on the source; the target still has it",
				Fix: fmt.Sprintf("drop it on the target (DROP TABLE %s) once you no longer need its rows", o.display())})
		}
	}
	// Functions and views on the tables as they now are, then the
	// constraints (a CHECK may call a function), then indexes: a new
	// index may be on a column added above.
	diffObjects(old, new, false, add)
	for _, n := range new.sorted() {
		if o := old.Tables[n.OID]; o != nil && o.Schema == n.Schema && o.Name == n.Name {
			diffConstraints(o, n, add)
		}
	}
	for _, n := range new.sorted() {
		o := old.Tables[n.OID]
		if o == nil || o.Schema != n.Schema || o.Name != n.Name {
			continue // a new table comes with its indexes
		}
		for _, name := range sortedKeys(n.Indexes) {
			ni := n.Indexes[name]
			oi, had := o.Indexes[name]
			if had && oi.Def == ni.Def {
				continue
			}
			if had {
				add(Change{Kind: DropIndex, Table: n.OID, Object: "index " + qualified(n.Schema, name), Index: name,
					Detail: "was replaced on the source", Def: oi.Def})
			}
			if ni.Constraint != "" && !had {
				// An index made by ADD CONSTRAINT … UNIQUE / PRIMARY KEY is
				// the constraint's: build it as the constraint.
				add(Change{Kind: CreateIndex, Table: n.OID, Object: "constraint " + ident(ni.Constraint) + " of " + n.display(),
					Index: name, Def: ni.Def, Detail: "was added on the source"})
				continue
			}
			add(Change{Kind: CreateIndex, Table: n.OID, Object: "index " + qualified(n.Schema, name), Index: name, Def: ni.Def,
				Detail: "was created on the source"})
		}
		for _, name := range sortedKeys(o.Indexes) {
			if _, ok := n.Indexes[name]; ok {
				continue
			}
			oi := o.Indexes[name]
			if oi.Constraint != "" {
				add(Change{Kind: DropIndex, Table: n.OID, Object: "constraint " + ident(oi.Constraint) + " of " + n.display(),
					Index: name, Detail: "was dropped on the source", Def: oi.Def})
				continue
			}
			add(Change{Kind: DropIndex, Table: n.OID, Object: "index " + qualified(n.Schema, name), Index: name,
				Detail: "was dropped on the source", Def: oi.Def})
		}
	}
	return out
}

func diffColumns(o, n *Table, add func(Change)) {
	for i := range n.Columns {
		nc := &n.Columns[i]
		oc := o.column(nc.Num)
		obj := "column " + colName(n, nc.Name)
		if oc == nil {
			detail := "was added on the source (" + nc.Type
			if nc.Default != "" {
				detail += " DEFAULT " + nc.Default
			}
			if nc.NotNull {
				detail += " NOT NULL"
			}
			add(Change{Kind: AddColumn, Table: n.OID, Object: obj, Detail: detail + ")", Column: nc})
			continue
		}
		if oc.Name != nc.Name {
			add(Change{Kind: RenameColumn, Table: n.OID, Object: "column " + colName(n, oc.Name),
				Detail: "was renamed to " + ident(nc.Name) + " on the source",
				Fix:    fmt.Sprintf("rename it on the target (ALTER TABLE %s RENAME COLUMN %s TO %s)", n.display(), ident(oc.Name), ident(nc.Name))})
			continue
		}
		if oc.Type != nc.Type {
			add(Change{Kind: AlterColumnType, Table: n.OID, Object: obj,
				Detail: fmt.Sprintf("changed type from %s to %s on the source", oc.Type, nc.Type),
				Fix:    fmt.Sprintf("change it on the target (ALTER TABLE %s ALTER COLUMN %s TYPE %s)", n.display(), ident(nc.Name), nc.Type)})
			continue
		}
		if oc.Generated != nc.Generated {
			add(Change{Kind: AlterGenerated, Table: n.OID, Object: obj,
				Detail: fmt.Sprintf("changed its generation expression from %q to %q on the source", oc.Generated, nc.Generated),
				Fix:    "make the same change on the target"})
			continue
		}
		if oc.Identity != nc.Identity {
			add(Change{Kind: AlterIdentity, Table: n.OID, Object: obj,
				Detail: "changed its identity on the source", Fix: "make the same change on the target (ALTER TABLE … ALTER COLUMN … ADD/DROP IDENTITY)"})
			continue
		}
		if oc.Default != nc.Default {
			d := "dropped its default"
			if nc.Default != "" {
				d = "has the default " + nc.Default
			}
			add(Change{Kind: SetDefault, Table: n.OID, Object: obj, Detail: d + " on the source", Column: nc})
		}
		if oc.NotNull != nc.NotNull {
			if nc.NotNull {
				add(Change{Kind: SetNotNull, Table: n.OID, Object: obj, Detail: "was made NOT NULL on the source", Column: nc})
			} else {
				add(Change{Kind: DropNotNull, Table: n.OID, Object: obj, Detail: "was made nullable on the source", Column: nc})
			}
		}
	}
	for _, oc := range o.Columns {
		if n.column(oc.Num) == nil {
			add(Change{Kind: DropColumn, Table: n.OID, Object: "column " + colName(n, oc.Name),
				Detail: "was dropped on the source; the target still has it",
				Fix:    fmt.Sprintf("drop it on the target (ALTER TABLE %s DROP COLUMN %s)", n.display(), ident(oc.Name))})
		}
	}
}

func parentName(c *Catalog, t *Table) string {
	if p := c.Tables[t.Parent]; p != nil {
		return p.display()
	}
	return "its parent"
}

func sortedKeys(m map[string]Index) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// RefusedError stops the stream on a schema change it does not apply: one
// message naming the object, the change seen on the source and the fix.
type RefusedError struct {
	Change Change
	Mode   Mode
}

func (e *RefusedError) Error() string {
	c := e.Change
	fix := c.Fix
	if c.Kind.Additive() && fix == "" {
		fix = "make the same change on the target"
	}
	s := fmt.Sprintf("schema change: %s %s: %s and restart the stream", c.Object, c.Detail, fix)
	if e.Mode == ModeStop && c.Kind.Additive() {
		s += ", or restart it with --ddl apply to have it applied"
	} else if !c.Kind.Additive() && c.Key != "" {
		// A type, function, view or sequence holds no row: the stream
		// stops once the poll that saw it is passed, not at the DDL.
		s += " (--ddl apply never applies this " + string(c.Kind) + ")"
	} else if !c.Kind.Additive() {
		s += " (nothing after this change was applied; --ddl apply never applies a " + string(c.Kind) + ")"
	}
	return strings.TrimSpace(pgutil.RedactText(s))
}
