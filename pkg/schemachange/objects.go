package schemachange

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// Objects other than tables that the stream follows: the types rows
// need (an enum's labels, a domain's checks, composite and range types),
// the views and functions the application reads through, and the
// sequences cutover moves forward (it moves only the ones the target
// has). Each is keyed by its source catalog and oid ("type:16390",
// "rel:16401", "proc:16412"), so a rename is told from a drop and an add.

// ObjKind is what kind of object an Object is.
type ObjKind string

// The object kinds followed.
const (
	ObjEnum      ObjKind = "type"
	ObjDomain    ObjKind = "domain"
	ObjComposite ObjKind = "composite type"
	ObjRange     ObjKind = "range type"
	ObjSequence  ObjKind = "sequence"
	ObjFunction  ObjKind = "function"
	ObjProcedure ObjKind = "procedure"
	ObjView      ObjKind = "view"
	ObjMatview   ObjKind = "materialized view"
)

// Object is one type, sequence, function or view of a captured schema.
type Object struct {
	Kind   ObjKind `json:"kind"`
	Schema string  `json:"schema"`
	// Name is a function's name with its argument types: f(integer, text).
	Name string `json:"name"`
	// Def is what is compared: an enum's labels, a domain's or a
	// composite type's CREATE statement, a view's query, a function's
	// CREATE OR REPLACE, a sequence's options.
	Def    string   `json:"def"`
	Labels []string `json:"labels,omitempty"` // an enum's, in order
}

// Constraint is a CHECK or FOREIGN KEY constraint of a table (UNIQUE,
// PRIMARY KEY and EXCLUDE come with their index, Table.Indexes).
type Constraint struct {
	Def   string `json:"def"` // pg_get_constraintdef without NOT VALID
	Valid bool   `json:"valid,omitempty"`
}

// toolSchema holds the cutover's fence function (pkg/cutover), which
// the tool makes on a fenced database itself: never the application's,
// never carried to the other side.
const toolSchema = "replicator_fence"

// objectsVersion is Catalog.Version once objects and constraints are
// followed; a catalog stored by an earlier version has 0, and its
// objects are taken from the target (open).
const objectsVersion = 2

func (o *Object) display() string {
	if o.Kind == ObjFunction || o.Kind == ObjProcedure {
		return ident(o.Schema) + "." + o.Name
	}
	return qualified(o.Schema, o.Name)
}

// qualifiedName is the object's name for SQL.
func (o *Object) qualifiedName() string {
	if o.Kind == ObjFunction || o.Kind == ObjProcedure {
		return pgutil.QuoteIdent(o.Schema) + "." + o.Name
	}
	return pgutil.QualifiedName(o.Schema, o.Name)
}

// createSQL makes the object on the target as it is on the source.
func (o *Object) createSQL() string {
	q := o.qualifiedName()
	switch o.Kind {
	case ObjEnum:
		return fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", q, strings.Join(quoteAll(o.Labels), ", "))
	case ObjSequence:
		return fmt.Sprintf("CREATE SEQUENCE IF NOT EXISTS %s %s", q, o.Def)
	case ObjView:
		return fmt.Sprintf("CREATE OR REPLACE VIEW %s AS %s", q, o.Def)
	case ObjMatview:
		return fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s AS %s", q, strings.TrimSuffix(strings.TrimSpace(o.Def), ";"))
	}
	return o.Def // domains, composite and range types, functions: their own CREATE
}

func (o *Object) dropSQL() string {
	return fmt.Sprintf("DROP %s %s", sqlWord(o.Kind), o.display())
}

// readObjects adds the captured schemas' objects and the tables'
// constraints to c.
func readObjects(ctx context.Context, q querier, c *Catalog) error {
	c.Objects, c.Version = map[string]*Object{}, objectsVersion
	read := func(what, sql string, scan func(scan func(...any) error) error) error {
		rows, err := q.Query(ctx, sql)
		if err != nil {
			return fmt.Errorf("read the %s of the catalog: %w", what, err)
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows.Scan); err != nil {
				return fmt.Errorf("read the %s of the catalog: %w", what, err)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read the %s of the catalog: %w", what, err)
		}
		return nil
	}
	err := read("types", `SELECT t.oid, n.nspname, t.typname, t.typtype::text,
			coalesce((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '{}'),
			CASE t.typtype
			WHEN 'd' THEN format('CREATE DOMAIN %I.%I AS %s', n.nspname, t.typname, format_type(t.typbasetype, t.typtypmod))
				|| coalesce(' DEFAULT ' || t.typdefault, '') || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END
				|| coalesce((SELECT string_agg(format(' CONSTRAINT %I %s', k.conname, pg_get_constraintdef(k.oid)), '' ORDER BY k.conname)
					FROM pg_constraint k WHERE k.contypid = t.oid), '')
			WHEN 'c' THEN format('CREATE TYPE %I.%I AS (%s)', n.nspname, t.typname,
				(SELECT string_agg(format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)), ', ' ORDER BY a.attnum)
					FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
			WHEN 'r' THEN format('CREATE TYPE %I.%I AS RANGE (SUBTYPE = %s)', n.nspname, t.typname,
				(SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid))
			ELSE '' END
		FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
		WHERE t.typtype IN ('e', 'd', 'c', 'r') AND `+pgcatalog.UserSchema+` AND n.nspname <> '`+toolSchema+`' AND `+pgcatalog.NotExtensionMember("pg_type", "t.oid")+`
			AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = t.typrelid AND r.relkind = 'c'))`,
		func(scan func(...any) error) error {
			var oid uint32
			var kind string
			o := &Object{}
			if err := scan(&oid, &o.Schema, &o.Name, &kind, &o.Labels, &o.Def); err != nil {
				return err
			}
			switch kind {
			case "e":
				o.Kind, o.Def = ObjEnum, strings.Join(quoteAll(o.Labels), ", ")
			case "d":
				o.Kind, o.Labels = ObjDomain, nil
			case "c":
				o.Kind, o.Labels = ObjComposite, nil
			default:
				o.Kind, o.Labels = ObjRange, nil
			}
			c.Objects[fmt.Sprint("type:", oid)] = o
			return nil
		})
	if err != nil {
		return err
	}
	// Sequences made for an identity column come with their column.
	err = read("views and sequences", `SELECT c.oid, n.nspname, c.relname, c.relkind::text,
			CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid)
			ELSE (SELECT format('AS %s INCREMENT BY %s MINVALUE %s MAXVALUE %s START WITH %s CACHE %s %s', format_type(s.seqtypid, NULL),
				s.seqincrement, s.seqmin, s.seqmax, s.seqstart, s.seqcache, CASE WHEN s.seqcycle THEN 'CYCLE' ELSE 'NO CYCLE' END)
				FROM pg_sequence s WHERE s.seqrelid = c.oid) END
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('v', 'm', 'S') AND `+pgcatalog.UserRelation+` AND n.nspname <> '`+toolSchema+`'
			AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')`,
		func(scan func(...any) error) error {
			var oid uint32
			var kind string
			o := &Object{}
			if err := scan(&oid, &o.Schema, &o.Name, &kind, &o.Def); err != nil {
				return err
			}
			o.Kind = map[string]ObjKind{"v": ObjView, "m": ObjMatview, "S": ObjSequence}[kind]
			c.Objects[fmt.Sprint("rel:", oid)] = o
			return nil
		})
	if err != nil {
		return err
	}
	err = read("functions", `SELECT p.oid, n.nspname, format('%I(%s)', p.proname, pg_get_function_identity_arguments(p.oid)), p.prokind::text,
			pg_get_functiondef(p.oid)
		FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE p.prokind IN ('f', 'p') AND `+pgcatalog.UserSchema+` AND n.nspname <> '`+toolSchema+`' AND `+pgcatalog.NotExtensionMember("pg_proc", "p.oid"),
		func(scan func(...any) error) error {
			var oid uint32
			var kind string
			o := &Object{Kind: ObjFunction}
			if err := scan(&oid, &o.Schema, &o.Name, &kind, &o.Def); err != nil {
				return err
			}
			if kind == "p" {
				o.Kind = ObjProcedure
			}
			c.Objects[fmt.Sprint("proc:", oid)] = o
			return nil
		})
	if err != nil {
		return err
	}
	// Constraints a partition inherits come from its parent's.
	return read("constraints", `SELECT k.conrelid, k.conname, pg_get_constraintdef(k.oid), k.convalidated
		FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE k.contype IN ('c', 'f') AND k.coninhcount = 0 AND k.conparentid = 0
			AND c.relkind IN ('r', 'p') AND `+pgcatalog.UserRelation,
		func(scan func(...any) error) error {
			var rel uint32
			var name string
			var k Constraint
			if err := scan(&rel, &name, &k.Def, &k.Valid); err != nil {
				return err
			}
			k.Def = strings.TrimSuffix(k.Def, " NOT VALID")
			if t := c.Tables[rel]; t != nil {
				if t.Constraints == nil {
					t.Constraints = map[string]Constraint{}
				}
				t.Constraints[name] = k
			}
			return nil
		})
}

// alignObjects keys the target's objects out like the source's src: an
// object takes the key of the source's of the same kind and name, else
// one of its own that no source object has (the diff calls it dropped).
func alignObjects(tgt, src *Catalog, out *Catalog) {
	out.Version = tgt.Version
	out.Objects = map[string]*Object{}
	byName := map[string]string{}
	for k, o := range src.Objects {
		byName[string(o.Kind)+"\x00"+o.Schema+"\x00"+o.Name] = k
	}
	for k, o := range tgt.Objects {
		if sk, ok := byName[string(o.Kind)+"\x00"+o.Schema+"\x00"+o.Name]; ok {
			out.Objects[sk] = o
		} else {
			out.Objects["target:"+k] = o
		}
	}
}

// objectOrder sorts objects so that what others need comes first: types
// (enums, domains, then composite and range types), then sequences (a
// new column's default uses them), functions, views, materialized
// views; then by oid, the order they were made in.
func sortedObjects(m map[string]*Object) []string {
	rank := map[ObjKind]int{ObjEnum: 0, ObjDomain: 1, ObjComposite: 2, ObjRange: 2, ObjSequence: 3, ObjFunction: 4, ObjProcedure: 4, ObjView: 5, ObjMatview: 6}
	// The oid ends the key ("kind:…:oid"): parsed once per object, not
	// in every comparison.
	type entry struct {
		key  string
		rank int
		oid  uint64
	}
	entries := make([]entry, 0, len(m))
	for k, o := range m {
		var n uint64
		fmt.Sscanf(k[strings.LastIndexByte(k, ':')+1:], "%d", &n)
		entries = append(entries, entry{k, rank[o.Kind], n})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].rank != entries[j].rank {
			return entries[i].rank < entries[j].rank
		}
		return entries[i].oid < entries[j].oid
	})
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.key
	}
	return keys
}

// Object change kinds. Made on the target: new types, sequences,
// functions, views; enum labels added; a function or view replaced; a
// sequence's options changed. The others stop the stream.
const (
	CreateObject    Kind = "create"
	AddEnumValue    Kind = "add enum value"
	ReplaceObject   Kind = "replace"
	AlterSequence   Kind = "alter sequence"
	AddConstraint   Kind = "add constraint"
	DropConstraint  Kind = "drop constraint"
	DropObject      Kind = "drop"
	RenameObject    Kind = "rename"
	AlterObject     Kind = "alter"
	AlterEnumValues Kind = "alter enum values"
)

// ValidateConstraint is ALTER TABLE … VALIDATE CONSTRAINT on the source of
// a constraint the target has NOT VALID: applied.
const ValidateConstraint Kind = "validate constraint"

// diffObjects lists the changes of objects whose kinds are in kinds,
// from old to new; dropped objects are listed when drops is set.
func diffObjects(old, new *Catalog, early bool, add func(Change)) {
	isEarly := func(k ObjKind) bool {
		return k == ObjEnum || k == ObjDomain || k == ObjComposite || k == ObjRange || k == ObjSequence
	}
	for _, key := range sortedObjects(new.Objects) {
		n := new.Objects[key]
		if isEarly(n.Kind) != early {
			continue
		}
		obj := string(n.Kind) + " " + n.display()
		o := old.Objects[key]
		switch {
		case o == nil:
			add(Change{Kind: CreateObject, Key: key, Object: obj, Detail: "was created on the source", Stmts: []string{n.createSQL()},
				Fix: "create it on the target as the source has it: " + n.copyCommand() + ","})
		case o.Schema != n.Schema || o.Name != n.Name:
			add(Change{Kind: RenameObject, Key: key, Object: string(o.Kind) + " " + o.display(),
				Detail: "was renamed to " + n.display() + " on the source",
				Fix:    fmt.Sprintf("rename it on the target the same way (ALTER %s %s RENAME TO …, or SET SCHEMA)", sqlWord(o.Kind), o.display())})
		case o.Def == n.Def:
		case n.Kind == ObjEnum:
			add(enumChange(key, obj, o, n))
		case n.Kind == ObjFunction || n.Kind == ObjProcedure || n.Kind == ObjView:
			add(Change{Kind: ReplaceObject, Key: key, Object: obj, Detail: "was replaced on the source", Stmts: []string{n.createSQL()},
				Fix: "replace it on the target as the source has it: " + n.copyCommand() + ","})
		case n.Kind == ObjSequence:
			add(Change{Kind: AlterSequence, Key: key, Object: obj, Detail: "was altered on the source (" + n.Def + ")",
				Stmts: []string{fmt.Sprintf("ALTER SEQUENCE %s %s", n.qualifiedName(), n.Def)}})
		default:
			add(Change{Kind: AlterObject, Key: key, Object: obj, Detail: "was changed on the source; it now reads: " + pgutil.RedactText(n.Def),
				Fix: fmt.Sprintf("drop it on the target and create it as the source has it (%s), or make the same ALTER there", n.showSQL(n.createSQL()))})
		}
	}
	if early {
		return
	}
	for _, key := range sortedObjects(old.Objects) {
		if new.Objects[key] == nil {
			o := old.Objects[key]
			add(Change{Kind: DropObject, Key: key, Object: string(o.Kind) + " " + o.display(),
				Detail: "was dropped on the source; the target still has it",
				Fix:    fmt.Sprintf("drop it on the target (%s)", o.dropSQL())})
		}
	}
}

func sqlWord(k ObjKind) string {
	switch k {
	case ObjEnum, ObjComposite, ObjRange:
		return "TYPE"
	}
	return strings.ToUpper(string(k))
}

// enumChange is the change of an enum's labels: labels added anywhere
// are made on the target in the source's order (ALTER TYPE … ADD VALUE
// … BEFORE/AFTER), before any row that carries them; a label renamed or
// gone cannot be taken in order and stops the stream.
func enumChange(key, obj string, o, n *Object) Change {
	had := map[string]bool{}
	for _, l := range o.Labels {
		had[l] = true
	}
	kept := 0
	for _, l := range n.Labels {
		if had[l] {
			kept++
		}
	}
	var added []string
	var stmts []string
	for i, l := range n.Labels {
		if had[l] {
			continue
		}
		added = append(added, l)
		pos := ""
		switch {
		case i > 0:
			pos = " AFTER " + pgutil.QuoteLiteral(n.Labels[i-1])
		case len(n.Labels) > 1:
			pos = " BEFORE " + pgutil.QuoteLiteral(n.Labels[1])
		}
		stmts = append(stmts, fmt.Sprintf("ALTER TYPE %s ADD VALUE IF NOT EXISTS %s%s", n.qualifiedName(), pgutil.QuoteLiteral(l), pos))
	}
	// Every old label still there, in the same order: only additions.
	inOrder := kept == len(o.Labels)
	j := 0
	for _, l := range n.Labels {
		if had[l] {
			if l != o.Labels[j] {
				inOrder = false
			}
			j++
		}
	}
	if !inOrder {
		return Change{Kind: AlterEnumValues, Key: key, Object: obj,
			Detail: "had labels renamed or reordered on the source; it now has " + strings.Join(quoteAll(n.Labels), ", "),
			Fix:    fmt.Sprintf("make the same change on the target (ALTER TYPE %s RENAME VALUE …)", n.display())}
	}
	return Change{Kind: AddEnumValue, Key: key, Object: obj, Detail: "has the new label(s) " + strings.Join(quoteAll(added), ", ") + " on the source", Stmts: stmts}
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = pgutil.QuoteLiteral(s)
	}
	return out
}

// diffConstraints lists the CHECK and FOREIGN KEY constraints added,
// dropped or replaced on a table both catalogs have. One added is made
// NOT VALID, then validated when the source's is: the target's rows are
// the source's up to this point in the stream, so the validation finds
// what the source's did.
func diffConstraints(o, n *Table, add func(Change)) {
	names := make([]string, 0, len(n.Constraints))
	for name := range n.Constraints {
		names = append(names, name)
	}
	sort.Strings(names)
	q := n.Qualified()
	for _, name := range names {
		nk := n.Constraints[name]
		ok, had := o.Constraints[name]
		obj := "constraint " + ident(name) + " of " + n.display()
		validate := fmt.Sprintf("ALTER TABLE %s VALIDATE CONSTRAINT %s", q, pgutil.QuoteIdent(name))
		if had && ok.Def == nk.Def {
			// Made NOT VALID, validated later: the target's rows are the
			// source's up to here, so the validation finds what the
			// source's did. It takes SHARE UPDATE EXCLUSIVE (writes go
			// on) while it scans the table.
			if !ok.Valid && nk.Valid {
				add(Change{Kind: ValidateConstraint, Table: n.OID, Object: obj, Detail: "was validated on the source",
					Constraint: name, Stmts: []string{validate}, Fix: "validate it on the target (" + validate + ")"})
			}
			continue
		}
		if had {
			add(Change{Kind: DropConstraint, Table: n.OID, Object: obj, Detail: "was replaced on the source",
				Stmts: []string{fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", q, pgutil.QuoteIdent(name))}})
		}
		stmts := []string{fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s NOT VALID", q, pgutil.QuoteIdent(name), nk.Def)}
		if nk.Valid {
			stmts = append(stmts, validate)
		}
		add(Change{Kind: AddConstraint, Table: n.OID, Object: obj, Detail: "was added on the source (" + nk.Def + ")", Stmts: stmts})
	}
	for name := range o.Constraints {
		if _, ok := n.Constraints[name]; !ok {
			add(Change{Kind: DropConstraint, Table: n.OID, Object: "constraint " + ident(name) + " of " + n.display(), Detail: "was dropped on the source",
				Stmts: []string{fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT IF EXISTS %s", q, pgutil.QuoteIdent(name))}})
		}
	}
}

// ObjectDifference is a type, sequence, function or view that one
// database (the source) has otherwise than another (the target): what
// verify reports beside the tables.
type ObjectDifference struct {
	Change Kind    // CreateObject: missing on the target; DropObject: only there; else a definition that differs
	Kind   ObjKind // what the object is
	Object string  // kind and name, e.g. "function public.total(integer)"
	Name   string  // the name alone, schema-qualified
	Source string  // the source's definition (enum labels, view query, …); "" when it has none
	Target string  // the target's; "" when it has none
	SQL    string  // what makes the target's like the source's (DropObject: drops it), "" when no statement can
	Fix    string  // when SQL is "": what to do on the target
}

// DiffObjects compares the types, sequences, functions and views of the
// captured schemas of src and tgt (each read through its own querier, in
// one snapshot when it is a REPEATABLE READ transaction) and returns
// every difference, in the order their SQL is run, and how many source
// objects were compared. Objects are paired by kind and name.
func DiffObjects(ctx context.Context, src, tgt querier) ([]ObjectDifference, int, error) {
	s, t := &Catalog{Tables: map[uint32]*Table{}}, &Catalog{Tables: map[uint32]*Table{}}
	if err := readObjects(ctx, src, s); err != nil {
		return nil, 0, fmt.Errorf("source: %w", err)
	}
	if err := readObjects(ctx, tgt, t); err != nil {
		return nil, 0, fmt.Errorf("target: %w", err)
	}
	aligned := &Catalog{}
	alignObjects(t, s, aligned)
	var out []ObjectDifference
	add := func(c Change) {
		d := ObjectDifference{Change: c.Kind, Object: c.Object, SQL: strings.Join(c.Stmts, "; "), Fix: c.Fix}
		if o := s.Objects[c.Key]; o != nil {
			d.Kind, d.Name, d.Source = o.Kind, o.display(), o.Def
		}
		if o := aligned.Objects[c.Key]; o != nil {
			d.Kind, d.Name, d.Target = o.Kind, o.display(), o.Def
			if c.Kind == DropObject {
				d.SQL = o.dropSQL()
			}
		}
		// Shown, never run: no definition may carry a credential into
		// the report, and SQL redacted would be wrong to run.
		d.Source, d.Target = pgutil.RedactText(d.Source), pgutil.RedactText(d.Target)
		if o := s.Objects[c.Key]; o != nil && (pgutil.HoldsCredential(d.SQL) || pgutil.HoldsCredential(d.Fix)) {
			d.SQL, d.Fix = "", o.showSQL(d.SQL+d.Fix)
		}
		out = append(out, d)
	}
	diffObjects(aligned, s, true, add)
	diffObjects(aligned, s, false, add)
	return out, len(s.Objects), nil
}
