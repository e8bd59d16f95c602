package apply

import (
	"fmt"
	"strings"

	"replicator/pkg/wal"
)

// The SQL of each statement depends only on the relation, the operation
// and which columns take part (and, for full-row matches, which are NULL),
// so there are few distinct texts and pgx prepares each once per
// connection. Every value is sent as text and cast on the server with the
// target column's own type ($1::text::numeric(10,2)): the source's text
// output is the target's input, whatever OIDs enums or composites have on
// either side, and a comparison of a cast constant still uses the index.

func cast(n int, c *targetColumn) string { return fmt.Sprintf("$%d::text::%s", n, c.typ) }

// insertSQL inserts any number of rows: one text[] parameter per column,
// unnested in parallel, so one prepared statement serves runs of any
// length.
func (p *plan) insertSQL(cols []int) string {
	key := maskKey('I', cols, nil)
	if s, ok := p.stmts[key]; ok {
		return s
	}
	var names, sel, params, alias []string
	for n, i := range cols {
		names = append(names, p.qcols[i])
		sel = append(sel, fmt.Sprintf("u.c%d::%s", n, p.cols[i].typ))
		params = append(params, fmt.Sprintf("$%d::text[]", n+1))
		alias = append(alias, fmt.Sprintf("c%d", n))
	}
	if len(cols) == 0 {
		// A table with no column the source sends (none at all, or only
		// generated ones): its rows carry nothing but their number, the
		// one parameter, and the target computes what it generates.
		s := fmt.Sprintf("INSERT INTO %s SELECT FROM generate_series(1, $1::bigint)", p.table.name)
		p.stmts[key] = s
		return s
	}
	override := ""
	if p.table.hasIdentity {
		override = " OVERRIDING SYSTEM VALUE"
	}
	s := fmt.Sprintf("INSERT INTO %s (%s)%s SELECT %s FROM unnest(%s) AS u(%s)", p.table.name,
		strings.Join(names, ", "), override, strings.Join(sel, ", "), strings.Join(params, ", "), strings.Join(alias, ", "))
	p.stmts[key] = s
	return s
}

// whereSQL locates the row. With a key (primary key or identity index)
// the key columns are compared. Under REPLICA IDENTITY FULL every column
// is compared (IS NULL for NULLs, so a NULL column still matches), and
// since identical duplicate rows may exist, exactly one of them is chosen
// by its ctid (with tableoid on a partitioned target, where ctids repeat
// across partitions).
func (p *plan) whereSQL(ident []wal.Value, idCols []int, next int) (string, []int) {
	var conds []string
	var used []int
	for _, i := range idCols {
		c := p.cols[i]
		switch {
		case ident[i].Kind == wal.ValueNull:
			conds = append(conds, p.qcols[i]+" IS NULL")
		case c.textEq:
			conds = append(conds, fmt.Sprintf("%s::text = $%d::text", p.qcols[i], next))
			used = append(used, i)
			next++
		default:
			conds = append(conds, fmt.Sprintf("%s = %s", p.qcols[i], cast(next, c)))
			used = append(used, i)
			next++
		}
	}
	where := strings.Join(conds, " AND ")
	if where == "" {
		// REPLICA IDENTITY FULL of a row with no column the target
		// writes: all such rows are alike, any one of them is the row.
		where = "true"
	}
	if p.rel.Identity != wal.IdentityFull {
		return where, used
	}
	if p.table.partitioned {
		return fmt.Sprintf("(tableoid, ctid) = (SELECT tableoid, ctid FROM %s WHERE %s LIMIT 1)", p.table.name, where), used
	}
	return fmt.Sprintf("ctid = (SELECT ctid FROM %s WHERE %s LIMIT 1)", p.table.name, where), used
}

// updateSQL sets the columns in set and locates the row by idCols; the
// guard columns (see guardColumns) must hold their new values already.
func (p *plan) updateSQL(set, guard []int, ident []wal.Value, idCols []int) (string, []int) {
	key := maskKey('U', set, nullMask(ident, idCols)) + maskKey('g', guard, nil)
	var assign []string
	for n, i := range set {
		assign = append(assign, fmt.Sprintf("%s = %s", p.qcols[i], cast(n+1, p.cols[i])))
	}
	where, used := p.whereSQL(ident, idCols, len(set)+1)
	if s, ok := p.stmts[key]; ok {
		return s, used
	}
	where += p.guardSQL(guard, len(set)+len(used)+1)
	s := fmt.Sprintf("UPDATE %s SET %s WHERE %s", p.table.name, strings.Join(assign, ", "), where)
	if len(set) == 0 {
		// Nothing the target may set: check the row is there as the
		// source has it, and leave it.
		s = fmt.Sprintf("SELECT 1 FROM %s WHERE %s", p.table.name, where)
	}
	p.stmts[key] = s
	return s, used
}

// guardColumns are the GENERATED ALWAYS identity columns of an update's
// new row that are not the key being matched. The target refuses to SET
// them to anything but DEFAULT (SQLSTATE 428C9), so they are never set;
// this is exact, because the source too can change such a column only by
// UPDATE ... SET col = DEFAULT, and the statement instead requires the
// target's row to hold the new value already (WHERE col = new). An update
// that did change it then matches no row and stops the stream naming the
// column and the fix (identityChanged), rather than dropping the new value
// silently. Holding the target's columns BY DEFAULT while streaming was
// the alternative, but it changes the target's schema and needs the same
// on the source for the fallback window's reverse stream.
func (p *plan) guardColumns(vals []wal.Value) []int {
	var g []int
	for i := range vals {
		if i >= len(p.cols) || p.cols[i] == nil || !p.cols[i].always || vals[i].Kind != wal.ValueText {
			continue
		}
		if p.rel.Columns[i].Key && p.rel.Identity != wal.IdentityFull {
			continue // matched as the key already
		}
		g = append(g, i)
	}
	return g
}

func (p *plan) guardSQL(guard []int, next int) string {
	var b strings.Builder
	for n, i := range guard {
		fmt.Fprintf(&b, " AND %s = %s", p.qcols[i], cast(next+n, p.cols[i]))
	}
	return b.String()
}

// guardNames names the guard columns, for errors.
func (p *plan) guardNames(guard []int) string {
	var names []string
	for _, i := range guard {
		names = append(names, p.qcols[i])
	}
	return strings.Join(names, ", ")
}

// identityChanged is the cause of an update with guard columns that
// matched no row: the row is missing, or the source gave an identity
// column a new value.
func identityChanged(table, cols string) error {
	return fmt.Errorf("%w; or the source changed its GENERATED ALWAYS identity column %s (UPDATE ... SET ... = DEFAULT), "+
		"which no UPDATE can set on the target: then run ALTER TABLE %s ALTER COLUMN ... SET GENERATED BY DEFAULT on the target "+
		"for %s, restart the stream, and set it back to ALWAYS after cutover", ErrRowMissing, cols, table, cols)
}

func (p *plan) deleteSQL(ident []wal.Value, idCols []int) (string, []int) {
	key := maskKey('D', idCols, nullMask(ident, idCols))
	where, used := p.whereSQL(ident, idCols, 1)
	if s, ok := p.stmts[key]; ok {
		return s, used
	}
	s := fmt.Sprintf("DELETE FROM %s WHERE %s", p.table.name, where)
	p.stmts[key] = s
	return s, used
}

// identityColumns are the columns that locate a row: the key columns, or
// every column under REPLICA IDENTITY FULL (skipping columns the target
// generates, and unchanged TOAST values, which FULL never sends in the old
// row anyway).
func (p *plan) identityColumns(ident []wal.Value) []int {
	var cols []int
	for i, c := range p.rel.Columns {
		if i >= len(ident) || p.cols[i] == nil || ident[i].Kind == wal.ValueUnchanged {
			continue
		}
		if c.Key || p.rel.Identity == wal.IdentityFull {
			cols = append(cols, i)
		}
	}
	return cols
}

func nullMask(img []wal.Value, cols []int) []bool {
	m := make([]bool, len(cols))
	for n, i := range cols {
		m[n] = img[i].Kind == wal.ValueNull
	}
	return m
}

func maskKey(op byte, cols []int, nulls []bool) string {
	var b strings.Builder
	b.WriteByte(op)
	for _, c := range cols {
		fmt.Fprintf(&b, ",%d", c)
	}
	b.WriteByte('|')
	for _, n := range nulls {
		if n {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

func truncateSQL(tables []string, c *wal.Change) string {
	s := "TRUNCATE " + strings.Join(tables, ", ")
	if c.RestartIdentity {
		s += " RESTART IDENTITY"
	}
	if c.Cascade {
		s += " CASCADE"
	}
	return s
}
