package snapshot

import (
	"sync"
	"sync/atomic"
)

// reporter fans copy progress out to the caller's Progress and to the
// Prometheus counters, and keeps the totals for the Result.
type reporter struct {
	p      Progress
	m      *Metrics // nil: none
	rows   atomic.Int64
	bytes  atomic.Int64
	chunks atomic.Int64
	// committed counts the chunks this process committed (chunks also
	// counts those an earlier or other process had).
	committed atomic.Int64

	// What the target's progress row shows (record.go).
	phaseName                           atomic.Value // string
	tablesTotal, tablesDone, chunkTotal atomic.Int64
	estBytes                            atomic.Int64
	// doneTables: two workers committing a table's last chunks at once
	// may both find it complete; it is counted once.
	doneTables sync.Map
}

func (r *reporter) phase(name string) {
	r.phaseName.Store(name)
	if r.p != nil {
		r.p.Phase(name)
	}
}

func (r *reporter) plan(tables []TablePlan) {
	r.tablesTotal.Store(int64(len(tables)))
	for _, t := range tables {
		r.chunkTotal.Add(int64(t.Chunks))
		r.estBytes.Add(t.EstBytes)
	}
	if r.p != nil {
		r.p.Plan(tables)
	}
}

func (r *reporter) copied(table string, rows, bytes int64) {
	r.rows.Add(rows)
	r.bytes.Add(bytes)
	r.m.copied(table, rows, bytes)
	if r.p != nil {
		r.p.Copied(table, rows, bytes)
	}
}

func (r *reporter) chunkDone(table string) {
	r.chunks.Add(1)
	r.committed.Add(1)
	r.m.chunkDone()
	if r.p != nil {
		r.p.ChunkDone(table)
	}
}

// chunkKept counts a chunk an interrupted run committed: done, but not by
// this process (the metrics count only what this process copies).
func (r *reporter) chunkKept(table string) {
	r.chunks.Add(1)
	if r.p != nil {
		r.p.ChunkDone(table)
	}
}

func (r *reporter) tableDone(table string) {
	if _, dup := r.doneTables.LoadOrStore(table, true); dup {
		return
	}
	r.tablesDone.Add(1)
	if r.p != nil {
		r.p.TableDone(table)
	}
}
