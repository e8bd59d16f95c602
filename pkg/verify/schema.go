package verify

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgcatalog"
)

// Schema comparison: the columns, indexes and constraints of every user
// table (pgcatalog.AllTables: partitioned parents and partitions too) that
// exists on both sides. A table on one side only is a difference of the
// data comparison already ("table is missing on the target").
//
// What the tool itself makes differ is left out by construction: schema
// replicator is not a user schema, triggers (the capture triggers on the
// source, the fence's on either side) are not compared, and neither are
// owners, grants or role names, which RDS will differ in. Definitions are
// read with search_path set to pg_catalog alone, so every name in them is
// schema-qualified the same way on both sides.

// Kinds of schema difference.
const (
	SchemaMissing    = "missing on the target"
	SchemaExtra      = "only on the target"
	SchemaType       = "type differs"
	SchemaNotNull    = "NOT NULL differs"
	SchemaDefault    = "default differs"
	SchemaGenerated  = "generated expression differs"
	SchemaIdentity   = "identity differs"
	SchemaCollation  = "collation differs"
	SchemaDefinition = "definition differs"
	SchemaName       = "named differently"
	SchemaInvalid    = "invalid on the target"
)

// SchemaDiff is one difference between the source's and the target's
// definition of a table: what each side has and the fix, the SQL to run on
// the target where one is obvious.
type SchemaDiff struct {
	Table  string `json:"table"`  // schema.name, quoted where SQL needs it
	Object string `json:"object"` // "column email", "index users_email_idx", "constraint users_pkey"
	Kind   string `json:"kind"`   // one of the Schema* kinds
	Source string `json:"source"` // what the source has; "-" for nothing
	Target string `json:"target"` // what the target has; "-" for nothing
	Fix    string `json:"fix"`
}

func (d SchemaDiff) String() string {
	return fmt.Sprintf("%s %s: %s (source: %s; target: %s); fix: %s", d.Table, d.Object, d.Kind, d.Source, d.Target, d.Fix)
}

// schemaTable is one table's definition on one side.
type schemaTable struct {
	schema, name string
	sql          string // schema.name as SQL needs it (quote_ident)
	partition    bool
	root         string // the partition root as SQL needs it; "" when not a partition
	parent       string // the partitioned table it is a partition of, as SQL needs it; "" when none
	bound        string // its partition bound (FOR VALUES ...); "" when not a partition
	partKey      string // a partitioned table's PARTITION BY; "" when not partitioned
	cols         map[string]schemaColumn
	colOrder     []string
	indexes      map[string]schemaIndex
	cons         map[string]schemaConstraint
}

type schemaColumn struct {
	sql       string // the name as SQL needs it (quote_ident)
	typ       string // format_type with typmod
	notNull   bool
	def       string // default expression; "" for none
	generated string // stored generation expression; "" for none
	identity  string // "a" ALWAYS, "d" BY DEFAULT, "" none
	collation string // an explicit COLLATE other than the type's, qualified; "" for none
}

type schemaIndex struct {
	sql   string // schema.name as SQL needs it
	ident string // the name alone, as pg_get_indexdef writes it
	def   string // pg_get_indexdef
	valid bool
}

type schemaConstraint struct {
	sql  string // the name as SQL needs it
	kind string // pg_constraint.contype
	def  string // pg_get_constraintdef
}

const schemaTablesSQL = `
SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relispartition,
       coalesce((SELECT quote_ident(rn.nspname) || '.' || quote_ident(r.relname) FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
                 WHERE c.relispartition AND r.oid = pg_partition_root(c.oid)), ''),
       coalesce((SELECT rn.nspname || '.' || r.relname FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace
                 WHERE c.relispartition AND r.oid = pg_partition_root(c.oid)), ''),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END,
       CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) ELSE '' END,
       coalesce((SELECT quote_ident(pn.nspname) || '.' || quote_ident(p.relname) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE c.relispartition AND i.inhrelid = c.oid), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE %s`

const schemaColumnsSQL = `
SELECT n.nspname, c.relname, a.attname, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, ''),
       coalesce(CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, ''),
       a.attidentity::text,
       coalesce((SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                 JOIN pg_type ty ON ty.oid = a.atttypid WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation), '')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE %s
ORDER BY n.nspname, c.relname, a.attnum`

// Indexes that implement a constraint (primary key, unique, exclusion)
// are compared as that constraint.
const schemaIndexesSQL = `
SELECT n.nspname, c.relname, i.relname, quote_ident(n.nspname) || '.' || quote_ident(i.relname), quote_ident(i.relname), pg_get_indexdef(x.indexrelid), x.indisvalid
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE %s AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x'))`

const schemaConstraintsSQL = `
SELECT n.nspname, c.relname, k.conname, quote_ident(k.conname), k.contype::text, pg_get_constraintdef(k.oid)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE %s AND k.contype IN ('p', 'u', 'f', 'c', 'x')`

// loadSchema reads the definitions of the user tables of one side that
// the patterns select.
func loadSchema(ctx context.Context, s *side, patterns []string) (map[string]*schemaTable, error) {
	out := map[string]*schemaTable{}
	where := pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.AllTables})
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		// One snapshot of the catalog, and every name in a definition
		// schema-qualified.
		if _, err := tx.Exec(ctx, `SET LOCAL search_path = pg_catalog`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(schemaTablesSQL, where))
		if err != nil {
			return err
		}
		for rows.Next() {
			t := &schemaTable{cols: map[string]schemaColumn{}, indexes: map[string]schemaIndex{}, cons: map[string]schemaConstraint{}}
			var root string
			if err := rows.Scan(&t.schema, &t.name, &t.sql, &t.partition, &t.root, &root, &t.partKey, &t.bound, &t.parent); err != nil {
				rows.Close()
				return err
			}
			if matches(patterns, t.schema, t.name, root) {
				out[displayName(t.schema, t.name)] = t
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, fmt.Sprintf(schemaColumnsSQL, where))
		if err != nil {
			return err
		}
		for rows.Next() {
			var schema, name, col string
			var c schemaColumn
			if err := rows.Scan(&schema, &name, &col, &c.sql, &c.typ, &c.notNull, &c.def, &c.generated, &c.identity, &c.collation); err != nil {
				rows.Close()
				return err
			}
			if t := out[displayName(schema, name)]; t != nil {
				t.cols[col] = c
				t.colOrder = append(t.colOrder, col)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, fmt.Sprintf(schemaIndexesSQL, where))
		if err != nil {
			return err
		}
		for rows.Next() {
			var schema, name, idx string
			var i schemaIndex
			if err := rows.Scan(&schema, &name, &idx, &i.sql, &i.ident, &i.def, &i.valid); err != nil {
				rows.Close()
				return err
			}
			if t := out[displayName(schema, name)]; t != nil {
				t.indexes[idx] = i
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, fmt.Sprintf(schemaConstraintsSQL, where))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var schema, name, con string
			var k schemaConstraint
			if err := rows.Scan(&schema, &name, &con, &k.sql, &k.kind, &k.def); err != nil {
				return err
			}
			if t := out[displayName(schema, name)]; t != nil {
				t.cons[con] = k
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("read the table definitions of the %s: %w", s.name, err)
	}
	return out, nil
}

// beforeSchemaRecheck runs before each re-check of schema differences
// (tests change the target there).
var beforeSchemaRecheck = func() {}

// schemaDifferences compares the definitions; while a stream runs, one
// that it may still be carrying (a schema change applied in stream order)
// is re-checked like a differing row, after Config.RecheckDelay and the
// target's catching up, and only the differences found every time are
// kept.
func (c *comparer) schemaDifferences(ctx context.Context, live bool) ([]SchemaDiff, schemaCounts, error) {
	diffs, n, err := compareSchemas(ctx, c.src, c.tgt, c.cfg.Tables)
	for round := 0; err == nil && live && len(diffs) > 0 && round < c.cfg.Rechecks; round++ {
		select {
		case <-ctx.Done():
			return nil, n, ctx.Err()
		case <-time.After(c.cfg.RecheckDelay):
		}
		if c.cfg.WaitTimeout > 0 {
			if _, err := waitApplied(ctx, c.src, c.tgt, c.cfg.WaitTimeout, c.log); err != nil {
				return nil, n, err
			}
		}
		beforeSchemaRecheck()
		var again []SchemaDiff
		if again, n, err = compareSchemas(ctx, c.src, c.tgt, c.cfg.Tables); err != nil {
			break
		}
		now := map[SchemaDiff]bool{}
		for _, d := range again {
			now[d] = true
		}
		var still []SchemaDiff
		for _, d := range diffs {
			if now[d] {
				still = append(still, d)
			}
		}
		c.log.Info("re-checked schema differences", zap.Int("before", len(diffs)), zap.Int("persisting", len(still)))
		diffs = still
	}
	if diffs == nil {
		diffs = []SchemaDiff{} // [] in JSON, not null
	}
	return diffs, n, err
}

// schemaCounts is how many tables, and how many other objects (types,
// sequences, functions, views), a schema comparison compared.
type schemaCounts struct{ tables, objects int }

// compareSchemas returns every difference between the definitions of the
// tables on both sides, ordered by table and object, then those of the
// other objects (schemaobjects.go) when no pattern narrows the comparison,
// and how many of each were compared.
func compareSchemas(ctx context.Context, src, tgt *side, patterns []string) ([]SchemaDiff, schemaCounts, error) {
	var ss, ts map[string]*schemaTable
	var n schemaCounts
	var err error
	if ss, err = loadSchema(ctx, src, patterns); err != nil {
		return nil, n, err
	}
	if ts, err = loadSchema(ctx, tgt, patterns); err != nil {
		return nil, n, err
	}
	windowKeys := map[string]bool{}
	for _, sd := range []*side{src, tgt} {
		if err := fallbackWindowKeys(ctx, sd, windowKeys); err != nil {
			return nil, n, err
		}
	}
	var out []SchemaDiff
	for q, s := range ss {
		t, ok := ts[q]
		if !ok {
			continue // the data comparison reports the table itself
		}
		n.tables++
		for _, d := range diffTable(q, s, t) {
			if windowKeys[strings.ReplaceAll(d.Table, `"`, "")+" "+d.Object] {
				continue
			}
			out = append(out, d)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Table != out[j].Table {
			return out[i].Table < out[j].Table
		}
		return out[i].Object < out[j].Object
	})
	if len(patterns) == 0 {
		objs, count, err := compareObjects(ctx, src, tgt)
		if err != nil {
			return nil, n, err
		}
		out, n.objects = append(out, objs...), count
	}
	return out, n, nil
}

func diffTable(q string, s, t *schemaTable) []SchemaDiff {
	var out []SchemaDiff
	qt := s.sql
	add := func(object, kind, src, tgt, fix string) {
		out = append(out, SchemaDiff{Table: q, Object: object, Kind: kind, Source: orNone(src), Target: orNone(tgt), Fix: fix})
	}
	// A partition takes its columns from its partitioned table: the fix
	// is made there.
	onRoot := func(fix string) string {
		if s.partition && s.root != "" {
			return "a partition takes its columns from its partitioned table: fix " + s.root + " (" + strings.Replace(fix, "ALTER TABLE "+qt, "ALTER TABLE "+s.root, 1) + ")"
		}
		return fix
	}

	if s.partKey != t.partKey {
		add("partitioning", SchemaDefinition, partitioning(s.partKey), partitioning(t.partKey),
			"a table's partitioning cannot be altered: create "+qt+" on the target as on the source, move its rows there and attach its partitions, or copy it again with the snapshot")
	}
	if s.parent != t.parent || s.bound != t.bound {
		var fix string
		switch {
		case t.parent == "":
			fix = fmt.Sprintf("ALTER TABLE %s ATTACH PARTITION %s %s", s.parent, qt, s.bound)
		case s.parent == "":
			fix = fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s", t.parent, qt)
		default:
			fix = fmt.Sprintf("ALTER TABLE %s DETACH PARTITION %s; ALTER TABLE %s ATTACH PARTITION %s %s", t.parent, qt, s.parent, qt, s.bound)
		}
		add("partition bound", SchemaDefinition, partitionOf(s), partitionOf(t), fix)
	}

	for _, name := range s.colOrder {
		sc := s.cols[name]
		qc := sc.sql
		obj := "column " + quoteIfNeeded(name)
		tc, ok := t.cols[name]
		if !ok {
			fix := onRoot("ALTER TABLE " + qt + " ADD COLUMN " + qc + " " + sc.describe())
			if sc.notNull && sc.def == "" && sc.generated == "" && sc.identity == "" {
				// The SQL alone fails on a target with rows.
				fix += "; on a target with rows: add it without NOT NULL, fill it from the source, then SET NOT NULL"
			}
			add(obj, SchemaMissing, sc.describe(), "", fix)
			continue
		}
		if sc.typ != tc.typ {
			add(obj, SchemaType, sc.typ, tc.typ, onRoot(fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s USING %s::%s", qt, qc, sc.typ, qc, sc.typ)))
		}
		if sc.collation != tc.collation && sc.typ == tc.typ {
			coll := sc.collation
			if coll == "" {
				coll = "pg_catalog.\"default\""
			}
			add(obj, SchemaCollation, collationText(sc.collation), collationText(tc.collation),
				onRoot(fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s COLLATE %s", qt, qc, sc.typ, coll)))
		}
		if sc.notNull != tc.notNull {
			fix := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP NOT NULL", qt, qc)
			if sc.notNull {
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET NOT NULL", qt, qc)
			}
			add(obj, SchemaNotNull, nullness(sc.notNull), nullness(tc.notNull), fix)
		}
		if sc.generated != tc.generated {
			// PostgreSQL 15 cannot change a generation expression in
			// place; a stored generated column is computed, so dropping
			// and adding it loses nothing.
			fix := fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s, ADD COLUMN %s %s", qt, qc, qc, sc.describe())
			if sc.generated == "" {
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP EXPRESSION", qt, qc)
			}
			add(obj, SchemaGenerated, generatedText(sc.generated), generatedText(tc.generated), onRoot(fix))
		} else if sc.def != tc.def {
			fix := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP DEFAULT", qt, qc)
			if sc.def != "" {
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET DEFAULT %s", qt, qc, sc.def)
			}
			add(obj, SchemaDefault, defaultText(sc.def), defaultText(tc.def), fix)
		}
		if sc.identity != tc.identity {
			var fix string
			switch {
			case sc.identity == "":
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s DROP IDENTITY", qt, qc)
			case tc.identity == "":
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s ADD GENERATED %s AS IDENTITY, then move its sequence past the column's largest value (cutover's sequences step does)", qt, qc, identityWord(sc.identity))
			default:
				fix = fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s SET GENERATED %s", qt, qc, identityWord(sc.identity))
			}
			add(obj, SchemaIdentity, identityText(sc.identity), identityText(tc.identity), fix)
		}
	}
	for _, name := range t.colOrder {
		if _, ok := s.cols[name]; !ok {
			add("column "+quoteIfNeeded(name), SchemaExtra, "", t.cols[name].describe(),
				onRoot("if the source dropped it: ALTER TABLE "+qt+" DROP COLUMN "+t.cols[name].sql+"; if the source should have it, add it there"))
		}
	}

	// Indexes and constraints: by name first; what is left on each side
	// is paired by definition (the same index or constraint under another
	// name), the rest is missing or extra.
	sIdx, tIdx := map[string]string{}, map[string]string{}
	for n, i := range s.indexes {
		sIdx[n] = stripIndexName(i)
	}
	for n, i := range t.indexes {
		tIdx[n] = stripIndexName(i)
	}
	indexFix := func(def string) string { return strings.Replace(def, " ON ONLY ", " ON ", 1) }
	for _, p := range pairObjects(sIdx, tIdx) {
		si, ti := s.indexes[p.src], t.indexes[p.tgt]
		obj := "index " + quoteIfNeeded(p.src)
		switch {
		case p.tgt == "":
			add(obj, SchemaMissing, si.def, "", indexFix(si.def))
		case p.src == "":
			add("index "+quoteIfNeeded(p.tgt), SchemaExtra, "", ti.def, "if the source dropped it: DROP INDEX "+ti.sql)
		case p.src != p.tgt:
			add(obj, SchemaName, p.src, p.tgt, fmt.Sprintf("ALTER INDEX %s RENAME TO %s", ti.sql, si.ident))
		case sIdx[p.src] != tIdx[p.tgt]:
			add(obj, SchemaDefinition, si.def, ti.def, "DROP INDEX "+ti.sql+"; "+indexFix(si.def))
		case si.valid && !ti.valid:
			add(obj, SchemaInvalid, "valid", "INVALID (a failed CREATE INDEX CONCURRENTLY?)", "REINDEX INDEX CONCURRENTLY "+ti.sql)
		}
	}
	sCon, tCon := map[string]string{}, map[string]string{}
	for n, k := range s.cons {
		sCon[n] = k.kind + " " + k.def
	}
	for n, k := range t.cons {
		tCon[n] = k.kind + " " + k.def
	}
	for _, p := range pairObjects(sCon, tCon) {
		sk, tk := s.cons[p.src], t.cons[p.tgt]
		obj := constraintWord(sk.kind) + " " + quoteIfNeeded(p.src)
		switch {
		case p.tgt == "":
			add(obj, SchemaMissing, sk.def, "", fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", qt, sk.sql, sk.def))
		case p.src == "":
			add(constraintWord(tk.kind)+" "+quoteIfNeeded(p.tgt), SchemaExtra, "", tk.def,
				fmt.Sprintf("if the source dropped it: ALTER TABLE %s DROP CONSTRAINT %s", qt, tk.sql))
		case p.src != p.tgt:
			add(obj, SchemaName, p.src, p.tgt, fmt.Sprintf("ALTER TABLE %s RENAME CONSTRAINT %s TO %s", qt, tk.sql, sk.sql))
		case sCon[p.src] != tCon[p.tgt]:
			fix := fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s, ADD CONSTRAINT %s %s", qt, tk.sql, sk.sql, sk.def)
			if tk.def == sk.def+" NOT VALID" {
				// A chunked copy's foreign key, not validated yet: the
				// stream and cutover validate it once caught up.
				fix = fmt.Sprintf("once the stream has caught up (the stream and cutover do it themselves): ALTER TABLE %s VALIDATE CONSTRAINT %s", qt, tk.sql)
			}
			add(obj, SchemaDefinition, sk.def, tk.def, fix)
		}
	}
	return out
}

// objectPair is an index or constraint as both sides name it; "" for the
// side that has none.
type objectPair struct{ src, tgt string }

// pairObjects pairs objects (name to the key of its definition, without
// the name) by name, then the unpaired ones by key, in name order.
func pairObjects(src, tgt map[string]string) []objectPair {
	var out []objectPair
	var onlySrc, onlyTgt []string
	for n := range src {
		if _, ok := tgt[n]; ok {
			out = append(out, objectPair{n, n})
		} else {
			onlySrc = append(onlySrc, n)
		}
	}
	for n := range tgt {
		if _, ok := src[n]; !ok {
			onlyTgt = append(onlyTgt, n)
		}
	}
	sort.Strings(onlySrc)
	sort.Strings(onlyTgt)
	byDef := map[string][]string{}
	for _, n := range onlyTgt {
		k := tgt[n]
		byDef[k] = append(byDef[k], n)
	}
	paired := map[string]bool{}
	for _, n := range onlySrc {
		k := src[n]
		if c := byDef[k]; len(c) > 0 {
			out = append(out, objectPair{n, c[0]})
			paired[c[0]] = true
			byDef[k] = c[1:]
			continue
		}
		out = append(out, objectPair{n, ""})
	}
	for _, n := range onlyTgt {
		if !paired[n] {
			out = append(out, objectPair{"", n})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].src+out[i].tgt < out[j].src+out[j].tgt })
	return out
}

// stripIndexName removes the index's own name from its definition, so
// that the same index under two names has the same key.
func stripIndexName(i schemaIndex) string {
	return strings.Replace(i.def, " INDEX "+i.ident+" ON ", " INDEX ON ", 1)
}

func (c schemaColumn) describe() string {
	s := c.typ
	if c.collation != "" {
		s += " COLLATE " + c.collation
	}
	switch {
	case c.generated != "":
		s += " GENERATED ALWAYS AS (" + c.generated + ") STORED"
	case c.identity != "":
		s += " GENERATED " + identityWord(c.identity) + " AS IDENTITY"
	case c.def != "":
		s += " DEFAULT " + c.def
	}
	if c.notNull {
		s += " NOT NULL"
	}
	return s
}

func partitioning(key string) string {
	if key == "" {
		return "not partitioned"
	}
	return "PARTITION BY " + key
}

func partitionOf(t *schemaTable) string {
	if t.parent == "" {
		return "not a partition"
	}
	return "partition of " + t.parent + " " + t.bound
}

func collationText(c string) string {
	if c == "" {
		return "the type's default collation"
	}
	return "COLLATE " + c
}

func nullness(notNull bool) string {
	if notNull {
		return "NOT NULL"
	}
	return "nullable"
}

func defaultText(d string) string {
	if d == "" {
		return "no default"
	}
	return "DEFAULT " + d
}

func generatedText(g string) string {
	if g == "" {
		return "not generated"
	}
	return "GENERATED ALWAYS AS (" + g + ") STORED"
}

func identityWord(i string) string {
	if i == "a" {
		return "ALWAYS"
	}
	return "BY DEFAULT"
}

func identityText(i string) string {
	if i == "" {
		return "not an identity column"
	}
	return "GENERATED " + identityWord(i) + " AS IDENTITY"
}

func constraintWord(kind string) string {
	switch kind {
	case "p":
		return "primary key"
	case "u":
		return "unique constraint"
	case "f":
		return "foreign key"
	case "c":
		return "check constraint"
	case "x":
		return "exclusion constraint"
	}
	return "constraint"
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (r *Report) schemaSummary() string {
	objects := fmt.Sprintf("%d types, sequences, functions and views", r.SchemaObjects)
	if r.ObjectsSkipped {
		objects = "types, sequences, functions and views not compared (--tables)"
	}
	return fmt.Sprintf("%d tables compared (columns, indexes, constraints), %s, %d differences", r.SchemaTables, objects, len(r.Schema))
}

// writeSchemaText lists the schema differences, each with its fix.
func (r *Report) writeSchemaText(b *strings.Builder) {
	if len(r.Schema) == 0 {
		return
	}
	b.WriteString("\nSchema differences (run each fix on the target):\n")
	for _, d := range r.Schema {
		fmt.Fprintf(b, "  %s %s: %s\n    source: %s\n    target: %s\n    fix:    %s\n", d.Table, d.Object, d.Kind, d.Source, d.Target, d.Fix)
	}
}

func (r *Report) writeSchemaMarkdown(b *strings.Builder) {
	if len(r.Schema) == 0 {
		return
	}
	b.WriteString("\n### Schema differences\n\n| Table or object | Kind | Difference | Source | Target | Fix (on the target) |\n|---|---|---|---|---|---|\n")
	for _, d := range r.Schema {
		fmt.Fprintf(b, "| `%s` | %s | %s | `%s` | `%s` | `%s` |\n", mdEscape(d.Table), mdEscape(d.Object), d.Kind,
			mdEscape(d.Source), mdEscape(d.Target), mdEscape(d.Fix))
	}
}

// fallbackWindowKeys adds to keys the foreign keys with actions that the
// cutover dropped on the Heroku source for the fallback window (the
// reverse stream carries their cascades' effects as rows; pkg/cutover
// reverse.go), as "schema.table foreign key name": the tool's own recorded
// change, put back by --rollback or --unfence, is not a difference, as the
// fence's triggers are not. The record is on the side that was the target.
func fallbackWindowKeys(ctx context.Context, sd *side, keys map[string]bool) error {
	var exists bool
	if err := sd.pool.QueryRow(ctx, `SELECT to_regclass('replicator.cutover') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("%s: look for the cutover record: %w", sd.name, err)
	}
	if !exists {
		return nil
	}
	rows, err := sd.pool.Query(ctx, `SELECT k->>'table', k->>'name'
		FROM replicator.cutover, jsonb_array_elements(coalesce(detail->'dropped_foreign_keys', '[]')) k WHERE step = 'reverse'`)
	if err != nil {
		return fmt.Errorf("%s: read the cutover record: %w", sd.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var table, name string
		if err := rows.Scan(&table, &name); err != nil {
			return fmt.Errorf("%s: read the cutover record: %w", sd.name, err)
		}
		keys[strings.ReplaceAll(table, `"`, "")+" foreign key "+name] = true
	}
	return rows.Err()
}
