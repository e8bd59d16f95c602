package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/position"
	"replicator/pkg/state"
	"replicator/pkg/wal"
)

// maxRunRows bounds one multi-row INSERT.
const maxRunRows = 1000

// change turns one source change into queued target statements.
func (a *Applier) change(ctx context.Context, t *wal.Txn, c *wal.Change) error {
	// A FOR ALL TABLES publication also decodes the tool's own tables on
	// the source (schema replicator: the fallback window's reverse-stream
	// state, pkg/cutover reverse.go). They are never the app's data, and
	// the target has its own of the same names.
	if c.Kind != wal.Truncate && c.Rel != nil && c.Rel.Namespace == state.Schema {
		return nil
	}
	if c.Kind == wal.Truncate {
		a.flushNet()
		a.closeRun()
		var names []string
		for _, r := range c.Truncated {
			p, err := a.cat.plan(ctx, a.conn, r)
			if err != nil {
				return &ApplyError{Table: r.String(), Op: "truncate", Where: c.Pos.String(), XID: t.XID, Err: err}
			}
			names = append(names, p.table.name)
			a.count(r.String(), "truncate", 1)
		}
		a.queue(truncateSQL(names, c), nil, stmtMeta{table: fmt.Sprint(names), op: "truncate",
			first: c.Pos, last: c.Pos, xid: t.XID, expected: -1}, 0)
		return nil
	}
	p, err := a.cat.plan(ctx, a.conn, c.Rel)
	if err != nil {
		return &ApplyError{Table: c.Rel.String(), Op: c.Kind.String(), Key: c.KeyString(), Where: c.Pos.String(), XID: t.XID, Err: err}
	}
	fail := func(err error) error {
		return &ApplyError{Table: p.table.name, Op: c.Kind.String(), Key: c.KeyString(), Where: c.Pos.String(), XID: t.XID, Err: err}
	}
	a.count(c.Rel.String(), c.Kind.String(), 1)
	if p.netted && a.run != nil && a.run.p.table == p.table {
		a.closeRun() // the table's earlier ordered inserts go first
	}
	if a.netChange(t, p, c) {
		return nil
	}
	// Applied in source order: the table's net changes gathered so far go
	// first. Other tables' changes commute with this one (no triggers, no
	// foreign-key checks in replica mode), so they may stay gathered.
	a.flushNetTable(p.table)
	switch c.Kind {
	case wal.Insert:
		var cols []int
		for i := range c.New {
			if i >= len(p.cols) || p.cols[i] == nil {
				continue
			}
			if c.New[i].Kind == wal.ValueUnchanged {
				return fail(errors.New("an inserted row has an unchanged-TOAST column"))
			}
			cols = append(cols, i)
		}
		if a.run == nil || a.run.p != p || !slices.Equal(a.run.cols, cols) || a.run.rows >= maxRunRows || a.precise {
			a.closeRun()
			a.run = &insertRun{p: p, cols: cols, vals: make([][]*string, len(cols)), first: c.Pos, xid: t.XID,
				firstKey: c.KeyString()}
		}
		for n, i := range cols {
			a.run.vals[n] = append(a.run.vals[n], text(c.New[i]))
			a.batchBytes += int64(len(c.New[i].Text)) + 16
		}
		a.run.rows++
		a.run.last = c.Pos
		return nil
	case wal.Update, wal.Delete:
		a.closeRun()
		ident := c.Identity()
		if c.Kind == wal.Delete && c.Old == nil {
			return fail(errors.New("the source sent no old key: the table has REPLICA IDENTITY NOTHING"))
		}
		idCols := p.identityColumns(ident)
		if len(idCols) == 0 && p.rel.Identity != wal.IdentityFull {
			return fail(errors.New("the source table has no replica identity: set a primary key or REPLICA IDENTITY FULL on it"))
		}
		var sql string
		var used, guard []int
		var args []any
		if c.Kind == wal.Update {
			// Unchanged TOAST values were not sent: leaving them out of SET
			// keeps the target's copy of the big value.
			set := p.updateColumns(c.New, c.Old == nil)
			guard = p.guardColumns(c.New)
			if len(set) == 0 && len(guard) == 0 {
				// Only an identity key that cannot change and unchanged
				// TOAST: the row stays as it is.
				return nil
			}
			for _, i := range set {
				args = append(args, text(c.New[i]))
			}
			sql, used = p.updateSQL(set, guard, ident, idCols)
		} else {
			sql, used = p.deleteSQL(ident, idCols)
		}
		for _, i := range used {
			args = append(args, text(ident[i]))
		}
		for _, i := range guard {
			args = append(args, text(c.New[i]))
		}
		var size int64
		for _, v := range args {
			if s, ok := v.(*string); ok && s != nil {
				size += int64(len(*s))
			}
		}
		a.queue(sql, args, stmtMeta{table: p.table.name, op: c.Kind.String(), key: c.KeyString(),
			first: c.Pos, last: c.Pos, xid: t.XID, expected: 1, guard: p.guardNames(guard)}, size)
		return nil
	}
	return fail(fmt.Errorf("unknown change kind %q", byte(c.Kind)))
}

func text(v wal.Value) *string {
	if v.Kind != wal.ValueText {
		return nil
	}
	s := string(v.Text)
	return &s
}

func (a *Applier) count(table, op string, n int) {
	a.counts[countKey{table, op}] += n
}

// closeRun queues the insert run in progress, if any.
func (a *Applier) closeRun() {
	r := a.run
	if r == nil {
		return
	}
	a.run = nil
	args := make([]any, len(r.vals))
	for i, v := range r.vals {
		args[i] = v
	}
	rows := int64(r.rows)
	if len(r.cols) == 0 {
		args = []any{rows} // no column to carry: the row count is the data
	}
	key := r.firstKey
	if rows > 1 {
		key = fmt.Sprintf("(one of %d rows)", rows)
	}
	a.queue(r.p.insertSQL(r.cols), args, stmtMeta{table: r.p.table.name, op: "insert", key: key,
		first: r.first, last: r.last, xid: r.xid, expected: rows}, 0)
}

func (a *Applier) queue(sql string, args []any, m stmtMeta, size int64) {
	a.batch.Queue(sql, args...)
	a.meta = append(a.meta, m)
	a.batchBytes += size + int64(len(sql))
}

// flush sends the queued statements in one pipelined round trip and checks
// each result.
func (a *Applier) flush(ctx context.Context) error {
	a.flushNet()
	a.closeRun()
	if a.batch == nil || len(a.meta) == 0 {
		return nil
	}
	br := a.tx.SendBatch(ctx, a.batch)
	var first error
	for j, m := range a.meta {
		tag, err := br.Exec()
		if err != nil {
			first = a.stmtError(a.failedMeta(j, err), err)
			break
		}
		if m.expected >= 0 && tag.RowsAffected() != m.expected {
			cause := ErrRowMissing
			if m.guard != "" {
				cause = identityChanged(m.table, m.guard)
			}
			if tag.RowsAffected() > m.expected {
				cause = fmt.Errorf("%d rows matched where %d were expected", tag.RowsAffected(), m.expected)
			}
			first = a.applyError(m, cause)
			break
		}
	}
	if err := br.Close(); err != nil && first == nil {
		first = fmt.Errorf("target: %w", err)
	}
	a.batch, a.meta, a.batchBytes = &pgx.Batch{}, a.meta[:0], 0
	return first
}

// failedMeta is the statement an error of the j-th result belongs to.
// pgx prepares every new statement text of a pipelined batch before it
// sends any of them, and a statement the target refuses at parse or
// analysis time (an UPDATE setting a GENERATED ALWAYS column, a missing
// column) fails there: that error comes back as the first result, whatever
// statement it belongs to. Naming the batch's first statement would blame
// another table; the prepare error carries the text, which leads to the
// first statement queued with it.
func (a *Applier) failedMeta(j int, err error) stmtMeta {
	var pe pgx.ErrPreprocessingBatch
	if !errors.As(err, &pe) {
		return a.meta[j]
	}
	for i, q := range a.batch.QueuedQueries {
		if q.SQL == pe.SQL() && i < len(a.meta) {
			return a.meta[i]
		}
	}
	return a.meta[j]
}

// stmtError wraps a statement's error with where it happened; errors of
// the connection stay recognisable as such (IsRetryable).
func (a *Applier) stmtError(m stmtMeta, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("target: apply %s on %s at %s: %w", m.op, m.table, position.Range(m.first, m.last), err)
	}
	return a.applyError(m, err)
}

// applyError is a refused statement's error, naming its source positions.
func (a *Applier) applyError(m stmtMeta, err error) *ApplyError {
	return &ApplyError{Table: m.table, Op: m.op, Key: m.key, Where: position.Range(m.first, m.last), XID: m.xid, Err: err, setWise: m.setWise}
}
