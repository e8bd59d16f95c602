package apply

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"replicator/pkg/position"
	"replicator/pkg/wal"
)

// Net effect. Within one target transaction, the changes to a table whose
// rows are identified by a key and which has no other unique index (see
// plan.canNet) commute across keys: the final state depends only on the
// order of the changes to each key. Session_replication_role = replica
// keeps triggers and foreign-key checks out, so changes to different
// tables commute too. Those changes are therefore reduced to one net
// change per key (insert+updates = one insert, updates = one update with
// the last value of each column, anything+delete = one delete or nothing)
// and applied set-wise: per table one DELETE ... USING unnest, one UPDATE
// ... FROM unnest per column set and one INSERT ... SELECT unnest, far
// fewer statements than rows. Everything else (tables without a key,
// REPLICA IDENTITY FULL, key changes, TRUNCATE) is applied in source order
// and first flushes the net changes gathered so far, so the source order
// holds between those segments.

// maxSetRows bounds the rows of one set-wise statement.
const maxSetRows = 5000

type netRow struct {
	key         []wal.Value // the key, from the first change to this key
	existed     bool        // the row existed before this segment
	deleteOld   bool        // the row that existed must be deleted
	alive       bool        // the row exists after the changes
	insert      bool        // it is (re)inserted whole, with vals
	vals        []wal.Value // the row after the changes (update: unchanged TOAST where never set)
	first, last position.Position
	xid         uint32
}

type netTable struct {
	p     *plan
	rows  map[string]*netRow
	order []*netRow
}

// netChange folds c into the net changes; false means c must be applied
// in order (the caller flushes the net changes first).
func (a *Applier) netChange(t *wal.Txn, p *plan, c *wal.Change) bool {
	if !p.netted || a.precise {
		return false
	}
	var key []wal.Value
	switch c.Kind {
	case wal.Insert:
		key = p.keyOf(c.New)
	case wal.Update:
		key = p.keyOf(c.New)
		if c.Old != nil && !sameKey(key, p.keyOf(c.Old)) {
			return false // the key itself changed
		}
	case wal.Delete:
		key = p.keyOf(c.Old)
	default:
		return false
	}
	if key == nil {
		return false
	}
	nt := a.nets[p.table.name]
	if nt != nil && nt.p != p {
		return false // the relation was described anew: flush, then start over
	}
	ks := keyString(key)
	var r *netRow
	if nt != nil {
		r = nt.rows[ks]
	}
	switch {
	case r == nil:
		r = &netRow{key: key, first: c.Pos, xid: t.XID}
		switch c.Kind {
		case wal.Insert:
			r.alive, r.insert, r.vals = true, true, c.New
		case wal.Update:
			r.existed, r.alive, r.vals = true, true, c.New
		case wal.Delete:
			r.existed, r.deleteOld = true, true
		}
		if nt == nil {
			nt = &netTable{p: p, rows: map[string]*netRow{}}
			a.nets[p.table.name] = nt
			a.netOrder = append(a.netOrder, nt)
		}
		nt.rows[ks] = r
		nt.order = append(nt.order, r)
		a.netRows++
	case c.Kind == wal.Insert && !r.alive:
		r.alive, r.insert, r.vals = true, true, c.New
	case c.Kind == wal.Update && r.alive:
		merged := make([]wal.Value, len(c.New))
		copy(merged, c.New)
		for i := range merged {
			if merged[i].Kind == wal.ValueUnchanged && i < len(r.vals) {
				merged[i] = r.vals[i]
			}
		}
		r.vals = merged
	case c.Kind == wal.Delete && r.alive:
		r.alive, r.insert, r.vals = false, false, nil
		r.deleteOld = r.existed
	default:
		// Insert over a live row, change of a deleted one: cannot happen
		// on a consistent source; applied in order, the target says why.
		return false
	}
	r.last = c.Pos
	for _, v := range c.New {
		a.batchBytes += int64(len(v.Text))
	}
	return true
}

func (p *plan) keyOf(img []wal.Value) []wal.Value {
	if img == nil {
		return nil
	}
	key := make([]wal.Value, len(p.keyCols))
	for n, i := range p.keyCols {
		if i >= len(img) || img[i].Kind != wal.ValueText {
			return nil
		}
		key[n] = img[i]
	}
	return key
}

func sameKey(a, b []wal.Value) bool {
	if a == nil || b == nil || len(a) != len(b) {
		return false
	}
	for i := range a {
		if string(a[i].Text) != string(b[i].Text) {
			return false
		}
	}
	return true
}

func keyString(key []wal.Value) string {
	var b strings.Builder
	for _, v := range key {
		b.WriteString(strconv.Itoa(len(v.Text)))
		b.WriteByte(':')
		b.Write(v.Text)
	}
	return b.String()
}

// flushNet queues the set-wise statements for the net changes gathered so
// far: per table, deletes, then updates, then inserts (a key deleted and
// inserted again is deleted first).
func (a *Applier) flushNet() {
	for _, nt := range a.netOrder {
		a.queueNetDeletes(nt)
		a.queueNetUpdates(nt)
		a.queueNetInserts(nt)
	}
	clear(a.nets)
	a.netOrder, a.netRows = a.netOrder[:0], 0
}

// flushNetTable queues the net changes of one table only.
func (a *Applier) flushNetTable(t *targetTable) {
	nt := a.nets[t.name]
	if nt == nil {
		return
	}
	a.queueNetDeletes(nt)
	a.queueNetUpdates(nt)
	a.queueNetInserts(nt)
	a.netRows -= len(nt.order)
	delete(a.nets, t.name)
	a.netOrder = slices.DeleteFunc(a.netOrder, func(x *netTable) bool { return x == nt })
}

func (a *Applier) queueNetDeletes(nt *netTable) {
	var rows []*netRow
	for _, r := range nt.order {
		if r.deleteOld {
			rows = append(rows, r)
		}
	}
	p := nt.p
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), maxSetRows)]
		rows = rows[len(chunk):]
		args := make([]any, len(p.keyCols))
		for n := range p.keyCols {
			col := make([]*string, len(chunk))
			for j, r := range chunk {
				col[j] = text(r.key[n])
			}
			args[n] = col
		}
		a.queue(p.setDeleteSQL(), args, a.setMeta(p, "delete", chunk), 0)
	}
}

func (a *Applier) queueNetUpdates(nt *netTable) {
	p := nt.p
	groups := map[string][]*netRow{}
	var order []string
	sets, guards := map[string][]int{}, map[string][]int{}
	for _, r := range nt.order {
		if !r.alive || r.insert {
			continue
		}
		set := p.updateColumns(r.vals, true)
		guard := p.guardColumns(r.vals)
		if len(set) == 0 && len(guard) == 0 {
			continue
		}
		k := maskKey('S', set, nil) + maskKey('g', guard, nil)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
			sets[k] = set
			guards[k] = guard
		}
		groups[k] = append(groups[k], r)
	}
	for _, k := range order {
		rows, set, guard := groups[k], sets[k], guards[k]
		for len(rows) > 0 {
			chunk := rows[:min(len(rows), maxSetRows)]
			rows = rows[len(chunk):]
			args := make([]any, 0, len(set)+len(p.keyCols)+len(guard))
			for _, i := range set {
				col := make([]*string, len(chunk))
				for j, r := range chunk {
					col[j] = text(r.vals[i])
				}
				args = append(args, col)
			}
			for n := range p.keyCols {
				col := make([]*string, len(chunk))
				for j, r := range chunk {
					col[j] = text(r.key[n])
				}
				args = append(args, col)
			}
			for _, i := range guard {
				col := make([]*string, len(chunk))
				for j, r := range chunk {
					col[j] = text(r.vals[i])
				}
				args = append(args, col)
			}
			m := a.setMeta(p, "update", chunk)
			m.guard = p.guardNames(guard)
			a.queue(p.setUpdateSQL(set, guard), args, m, 0)
		}
	}
}

func (a *Applier) queueNetInserts(nt *netTable) {
	p := nt.p
	var cols []int
	for i := range p.cols {
		if p.cols[i] != nil {
			cols = append(cols, i)
		}
	}
	var rows []*netRow
	for _, r := range nt.order {
		if r.alive && r.insert {
			rows = append(rows, r)
		}
	}
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), maxSetRows)]
		rows = rows[len(chunk):]
		args := make([]any, len(cols))
		for n, i := range cols {
			col := make([]*string, len(chunk))
			for j, r := range chunk {
				if i < len(r.vals) {
					col[j] = text(r.vals[i])
				}
			}
			args[n] = col
		}
		a.queue(p.insertSQL(cols), args, a.setMeta(p, "insert", chunk), 0)
	}
}

func (a *Applier) setMeta(p *plan, op string, rows []*netRow) stmtMeta {
	first, last := rows[0].first, rows[0].last
	for _, r := range rows {
		if r.first.Less(first) {
			first = r.first
		}
		if last.Less(r.last) {
			last = r.last
		}
	}
	key := fmt.Sprintf("(one of %d rows)", len(rows))
	if len(rows) == 1 {
		var names, vals []string
		for n, i := range p.keyCols {
			names = append(names, p.rel.Columns[i].Name)
			vals = append(vals, string(rows[0].key[n].Text))
		}
		key = "(" + strings.Join(names, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
	}
	return stmtMeta{table: p.table.name, op: op, key: key,
		first: first, last: last, xid: rows[0].xid, expected: int64(len(rows)), setWise: true}
}

// updateColumns are the columns an UPDATE sets: sent (not unchanged
// TOAST), written by the target (not generated), and not a GENERATED
// ALWAYS identity column, which cannot be set (guardColumns); only an
// ALWAYS key that the source changed is set, and the target says why not.
func (p *plan) updateColumns(vals []wal.Value, keyUnchanged bool) []int {
	var set []int
	for i := range vals {
		if i >= len(p.cols) || p.cols[i] == nil || vals[i].Kind == wal.ValueUnchanged {
			continue
		}
		if p.cols[i].always && (keyUnchanged || !p.rel.Columns[i].Key || p.rel.Identity == wal.IdentityFull) {
			continue // see guardColumns
		}
		set = append(set, i)
	}
	return set
}

func (p *plan) keyMatch(alias string, from int) string {
	var conds []string
	for n, i := range p.keyCols {
		conds = append(conds, fmt.Sprintf("t.%s = %s.k%d::%s", p.qcols[i], alias, n+from, p.cols[i].typ))
	}
	return strings.Join(conds, " AND ")
}

func (p *plan) setDeleteSQL() string {
	if s, ok := p.stmts["SD"]; ok {
		return s
	}
	var params, alias []string
	for n := range p.keyCols {
		params = append(params, fmt.Sprintf("$%d::text[]", n+1))
		alias = append(alias, fmt.Sprintf("k%d", n))
	}
	s := fmt.Sprintf("DELETE FROM %s AS t USING unnest(%s) AS u(%s) WHERE %s", p.table.name,
		strings.Join(params, ", "), strings.Join(alias, ", "), p.keyMatch("u", 0))
	p.stmts["SD"] = s
	return s
}

func (p *plan) setUpdateSQL(set, guard []int) string {
	key := maskKey('S', set, nil) + maskKey('g', guard, nil)
	if s, ok := p.stmts[key]; ok {
		return s
	}
	var assign, params, alias, conds []string
	for n, i := range set {
		assign = append(assign, fmt.Sprintf("%s = u.c%d::%s", p.qcols[i], n, p.cols[i].typ))
		params = append(params, fmt.Sprintf("$%d::text[]", n+1))
		alias = append(alias, fmt.Sprintf("c%d", n))
	}
	for n := range p.keyCols {
		params = append(params, fmt.Sprintf("$%d::text[]", len(set)+n+1))
		alias = append(alias, fmt.Sprintf("k%d", n))
	}
	for n, i := range guard {
		params = append(params, fmt.Sprintf("$%d::text[]", len(set)+len(p.keyCols)+n+1))
		alias = append(alias, fmt.Sprintf("g%d", n))
		conds = append(conds, fmt.Sprintf(" AND t.%s = u.g%d::%s", p.qcols[i], n, p.cols[i].typ))
	}
	where := p.keyMatch("u", 0) + strings.Join(conds, "")
	s := fmt.Sprintf("UPDATE %s AS t SET %s FROM unnest(%s) AS u(%s) WHERE %s", p.table.name,
		strings.Join(assign, ", "), strings.Join(params, ", "), strings.Join(alias, ", "), where)
	if len(set) == 0 {
		// Nothing the target may set: count the rows that are there as
		// the source has them (see guardColumns).
		s = fmt.Sprintf("SELECT 1 FROM %s AS t, unnest(%s) AS u(%s) WHERE %s", p.table.name,
			strings.Join(params, ", "), strings.Join(alias, ", "), where)
	}
	p.stmts[key] = s
	return s
}
