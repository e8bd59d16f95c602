package apply

// The chunk-visibility filter: when the copy is made of many chunks, each
// read in its own short source transaction, every chunk records the
// pg_current_snapshot() of that transaction. A change to a row of a chunk
// is then skipped if and only if its source transaction was visible to
// that chunk's snapshot (the chunk's rows already hold it), and applied
// otherwise (the chunk's rows predate it).
//
// Why that is exact, case by case:
//
//   - Visibility is decided by transaction, never by time. A snapshot
//     xmin:xmax:xip sees exactly the transactions that committed before it
//     was taken: those below xmin, and those below xmax that are not in
//     xip. A transaction the stream delivers has committed, so "visible"
//     means "its effects are in the chunk's copy" and "not visible" means
//     "they are not": no row state is seen twice or never.
//   - Subtransactions: pgoutput's BEGIN carries the top-level xid, and
//     trigger capture records pg_current_xact_id(), which inside a
//     SAVEPOINT is also the top-level xid. pg_current_snapshot() lists
//     top-level xids only (subtransactions are folded into their parent),
//     so the test is made on the unit that commits atomically.
//   - A row whose key moves from chunk A to chunk B is two decisions: the
//     old key is judged by A's snapshot, the new one by B's. See
//     ChunkFilter.Decide.
//   - A TRUNCATE covers every chunk of its table: it is applied only when
//     invisible to every chunk's snapshot of that table; a truncate visible
//     to some chunks and not to others cannot be carried and is reported.
//   - Tables without a usable key are one unit: one snapshot for the
//     whole table.
//
// 32-bit xids: pgoutput's BEGIN carries a 32-bit xid; pg_snapshot holds
// 64-bit (epoch-extended) ones. FullXID widens a 32-bit xid against a
// 64-bit one known to be within 2^31 of it, which wraparound protection
// guarantees for any two live xids.

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/wal"
)

// XidSnapshot is a parsed pg_snapshot: xmin:xmax:xip,... (xid8 values).
type XidSnapshot struct {
	Xmin, Xmax uint64
	Xip        []uint64 // sorted
}

// ParseXidSnapshot reads pg_snapshot's text form, e.g. "748:752:748,750".
func ParseXidSnapshot(s string) (XidSnapshot, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return XidSnapshot{}, fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	var snap XidSnapshot
	var err error
	if snap.Xmin, err = strconv.ParseUint(parts[0], 10, 64); err != nil {
		return XidSnapshot{}, fmt.Errorf("snapshot %q: xmin: %w", s, err)
	}
	if snap.Xmax, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return XidSnapshot{}, fmt.Errorf("snapshot %q: xmax: %w", s, err)
	}
	if snap.Xmin > snap.Xmax {
		return XidSnapshot{}, fmt.Errorf("snapshot %q: xmin is above xmax", s)
	}
	if parts[2] != "" {
		for _, f := range strings.Split(parts[2], ",") {
			x, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				return XidSnapshot{}, fmt.Errorf("snapshot %q: xip: %w", s, err)
			}
			if x < snap.Xmin || x >= snap.Xmax {
				return XidSnapshot{}, fmt.Errorf("snapshot %q: xip %d is outside xmin..xmax", s, x)
			}
			snap.Xip = append(snap.Xip, x)
		}
		slices.Sort(snap.Xip)
	}
	return snap, nil
}

func (s XidSnapshot) String() string {
	xip := make([]string, len(s.Xip))
	for i, x := range s.Xip {
		xip[i] = strconv.FormatUint(x, 10)
	}
	return fmt.Sprintf("%d:%d:%s", s.Xmin, s.Xmax, strings.Join(xip, ","))
}

// Visible reports whether the committed transaction xid (top-level, xid8)
// is visible to the snapshot, as pg_visible_in_snapshot does.
func (s XidSnapshot) Visible(xid uint64) bool {
	if xid < s.Xmin {
		return true
	}
	if xid >= s.Xmax {
		return false
	}
	_, found := slices.BinarySearch(s.Xip, xid)
	return !found
}

// FullXID widens a 32-bit xid (pgoutput's BEGIN) to the xid8 it stands
// for, given any xid8 ref within 2^31 of it (a chunk snapshot's xmax).
func FullXID(xid uint32, ref uint64) uint64 {
	return uint64(int64(ref) + int64(int32(xid-uint32(ref))))
}

// KeyRange is one chunk of a table: keys lo <= k < hi of its integer
// chunking key, or the whole table when Whole is set. Hi of the last chunk
// is unbounded (HiOpen), so rows inserted above the planned maximum still
// belong to a chunk.
type KeyRange struct {
	Lo, Hi   int64
	LoOpen   bool // no lower bound (first chunk)
	HiOpen   bool // no upper bound (last chunk)
	Whole    bool
	Snapshot XidSnapshot
}

func (r KeyRange) contains(k int64) bool {
	return r.Whole || ((r.LoOpen || k >= r.Lo) && (r.HiOpen || k < r.Hi))
}

// ChunkFilter holds every copied chunk's snapshot by table (schema-
// qualified, quoted as SQL would). It is built once, when the stream
// starts after a chunked copy, and is read-only afterwards.
type ChunkFilter struct {
	tables map[string][]KeyRange // sorted by Lo, covering every key
	keys   map[string]string     // the chunking key column of each table not copied whole
}

// NewChunkFilter checks that each table's ranges are either one Whole unit
// or cover every int64 key exactly once, in order.
func NewChunkFilter(tables map[string][]KeyRange) (*ChunkFilter, error) {
	for name, rs := range tables {
		if len(rs) == 0 {
			return nil, fmt.Errorf("chunk filter: table %s has no chunks", name)
		}
		if rs[0].Whole {
			if len(rs) != 1 {
				return nil, fmt.Errorf("chunk filter: table %s is copied whole but has %d chunks", name, len(rs))
			}
			continue
		}
		if !rs[0].LoOpen || !rs[len(rs)-1].HiOpen {
			return nil, fmt.Errorf("chunk filter: the chunks of table %s do not cover every key", name)
		}
		for i := 1; i < len(rs); i++ {
			if rs[i-1].HiOpen || rs[i].LoOpen || rs[i].Whole || rs[i-1].Hi != rs[i].Lo {
				return nil, fmt.Errorf("chunk filter: the chunks of table %s leave a gap or overlap at chunk %d", name, i)
			}
		}
	}
	return &ChunkFilter{tables: tables}, nil
}

// chunk finds the range holding key k of table (nil when the table was
// not copied in chunks: every change to it is applied).
func (f *ChunkFilter) chunk(table string, k int64) *KeyRange {
	rs := f.tables[table]
	if len(rs) == 0 {
		return nil
	}
	i, _ := slices.BinarySearchFunc(rs, k, func(r KeyRange, k int64) int {
		switch {
		case r.contains(k):
			return 0
		case !r.HiOpen && r.Hi <= k:
			return -1
		default:
			return 1
		}
	})
	if i < len(rs) && rs[i].contains(k) {
		return &rs[i]
	}
	return nil
}

// Seen reports whether the chunk holding key k of table already holds the
// effects of transaction xid (xid8): the change must then be skipped.
func (f *ChunkFilter) Seen(table string, k int64, xid uint64) bool {
	if r := f.chunk(table, k); r != nil {
		return r.Snapshot.Visible(xid)
	}
	return false
}

// Decision says what to do with one row change after a chunked copy.
type Decision uint8

const (
	// Apply the change as it is.
	Apply Decision = iota
	// Skip it: the copy already holds its effect.
	Skip
	// DeleteOld: only the old key's row must go (an update moved the row
	// into a chunk copied after it; the new row is there already).
	DeleteOld
	// InsertNew: only the new row must be written (an update moved the row
	// out of a chunk copied after it into one copied before it). The
	// change must carry every column: an unchanged-TOAST value cannot be
	// inserted, and the applier must stop with the table and key.
	InsertNew
)

// Decide judges an update whose key may have moved from oldKey to newKey
// (equal for any other change): each end is judged by its own chunk.
//
//   - seen by both chunks: the copy holds the new row and not the old one: skip;
//   - seen by neither: the copy holds the old row only: apply the update;
//   - seen only by the new key's chunk: it holds the new row, and the old
//     key's chunk, copied before, still holds the old one: delete it;
//   - seen only by the old key's chunk: neither holds the row: insert it.
func (f *ChunkFilter) Decide(table string, oldKey, newKey int64, xid uint64) Decision {
	oldSeen, newSeen := f.Seen(table, oldKey, xid), f.Seen(table, newKey, xid)
	switch {
	case oldSeen && newSeen:
		return Skip
	case !oldSeen && !newSeen:
		return Apply
	case newSeen:
		return DeleteOld
	default:
		return InsertNew
	}
}

// Truncate reports whether a TRUNCATE of table in transaction xid must be
// applied (true), skipped (false), or cannot be carried (error): visible
// to some of its chunks' snapshots and not to others, the copy holds the
// table half before and half after it.
func (f *ChunkFilter) Truncate(table string, xid uint64) (bool, error) {
	rs := f.tables[table]
	if len(rs) == 0 {
		return true, nil
	}
	seen := 0
	for _, r := range rs {
		if r.Snapshot.Visible(xid) {
			seen++
		}
	}
	switch seen {
	case 0:
		return true, nil
	case len(rs):
		return false, nil
	}
	return false, fmt.Errorf("table %s was truncated by source transaction %d while it was being copied (%d of its %d chunks were copied after): copy it again: run `replicator cleanup`, then `replicator snapshot`",
		table, xid, seen, len(rs))
}

// LoadChunkFilter reads the chunk ledger (replicator.chunks) that a
// chunked copy left on the target; nil with no error when there is none.
// Every chunk must be done: the stream starts only after the copy.
func LoadChunkFilter(ctx context.Context, conn *pgx.Conn) (*ChunkFilter, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('replicator.chunks') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("target: look for the chunk ledger: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := conn.Query(ctx, `SELECT table_name, chunk, key_column, lo, hi, snapshot FROM replicator.chunks ORDER BY table_name, chunk`)
	if err != nil {
		return nil, fmt.Errorf("target: read the chunk ledger: %w", err)
	}
	defer rows.Close()
	tables, keys := map[string][]KeyRange{}, map[string]string{}
	for rows.Next() {
		var name string
		var n int
		var key, snap *string
		var lo, hi *int64
		if err := rows.Scan(&name, &n, &key, &lo, &hi, &snap); err != nil {
			return nil, fmt.Errorf("target: read the chunk ledger: %w", err)
		}
		if snap == nil {
			return nil, fmt.Errorf("chunk %d of %s is not copied yet: finish the copy (`replicator snapshot`) before streaming", n, name)
		}
		r := KeyRange{Whole: key == nil, LoOpen: lo == nil, HiOpen: hi == nil}
		if lo != nil {
			r.Lo = *lo
		}
		if hi != nil {
			r.Hi = *hi
		}
		if r.Snapshot, err = ParseXidSnapshot(*snap); err != nil {
			return nil, fmt.Errorf("chunk %d of %s: %w", n, name, err)
		}
		if key != nil {
			keys[name] = *key
		}
		tables[name] = append(tables[name], r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("target: read the chunk ledger: %w", err)
	}
	f, err := NewChunkFilter(tables)
	if err != nil {
		return nil, err
	}
	f.keys = keys
	return f, nil
}

// xidOf is the change's top-level xid8: the per-change one of trigger
// capture, or the Txn's widened against one of the table's snapshots.
func (f *ChunkFilter) xidOf(t *wal.Txn, c *wal.Change, rs []KeyRange) uint64 {
	if c.XID != 0 {
		return c.XID
	}
	return FullXID(t.XID, rs[0].Snapshot.Xmax)
}

// filter decides what of change c of transaction t the target still
// needs: c itself (keep, c returned as is), nothing (keep false), or a
// narrower change built from it (a TRUNCATE of fewer tables, the DELETE or
// the INSERT half of an update that moved a row between chunks).
func (f *ChunkFilter) filter(t *wal.Txn, c *wal.Change) (*wal.Change, bool, error) {
	if c.Kind == wal.Truncate {
		var keep []*wal.Relation
		for _, r := range c.Truncated {
			name := pgutil.QualifiedName(r.Namespace, r.Name)
			rs := f.tables[name]
			if len(rs) == 0 {
				keep = append(keep, r)
				continue
			}
			apply, err := f.Truncate(name, f.xidOf(t, c, rs))
			if err != nil {
				return nil, false, err
			}
			if apply {
				keep = append(keep, r)
			}
		}
		if len(keep) == 0 {
			return nil, false, nil
		}
		n := *c
		n.Truncated = keep
		return &n, true, nil
	}
	name := pgutil.QualifiedName(c.Rel.Namespace, c.Rel.Name)
	if c.Partition != "" {
		// Recorded under its partitioned root (trigger capture): the copy
		// read the partition, so its chunks decide. A partition has the
		// root's column names, so the key is found in c.Rel by name.
		name = c.Partition
	}
	rs := f.tables[name]
	if len(rs) == 0 {
		return c, true, nil
	}
	xid := f.xidOf(t, c, rs)
	if rs[0].Whole {
		return c, !rs[0].Snapshot.Visible(xid), nil
	}
	fail := func(err error) (*wal.Change, bool, error) {
		return nil, false, &ApplyError{Table: name, Op: c.Kind.String(), Key: c.KeyString(), Where: c.Pos.String(), XID: t.XID, Err: err}
	}
	col := slices.IndexFunc(c.Rel.Columns, func(col wal.Column) bool { return col.Name == f.keys[name] })
	if col < 0 {
		return fail(fmt.Errorf("the table's chunking key column %s is no longer on the source", f.keys[name]))
	}
	key := func(img []wal.Value) (int64, error) {
		if col >= len(img) || img[col].Kind != wal.ValueText {
			return 0, fmt.Errorf("the change does not carry the chunking key column %s", f.keys[name])
		}
		return strconv.ParseInt(string(img[col].Text), 10, 64)
	}
	switch c.Kind {
	case wal.Insert, wal.Delete:
		img := c.New
		if c.Kind == wal.Delete {
			img = c.Identity()
		}
		k, err := key(img)
		if err != nil {
			return fail(err)
		}
		return c, !f.Seen(name, k, xid), nil
	}
	newK, err := key(c.New)
	if err != nil {
		return fail(err)
	}
	oldK := newK
	if c.Old != nil {
		if oldK, err = key(c.Old); err != nil {
			return fail(err)
		}
	}
	switch f.Decide(name, oldK, newK, xid) {
	case Skip:
		return nil, false, nil
	case DeleteOld:
		return &wal.Change{Kind: wal.Delete, Rel: c.Rel, Old: c.Old, Pos: c.Pos, XID: c.XID}, true, nil
	case InsertNew:
		for i, v := range c.New {
			if v.Kind == wal.ValueUnchanged {
				return fail(fmt.Errorf("the row moved from key %d to %d between the copy of their chunks, and the source did not send its unchanged column %s, so it cannot be written: copy table %s again (`replicator cleanup`, then `replicator snapshot`)",
					oldK, newK, c.Rel.Columns[i].Name, name))
			}
		}
		return &wal.Change{Kind: wal.Insert, Rel: c.Rel, New: c.New, Pos: c.Pos, XID: c.XID}, true, nil
	}
	return c, true, nil
}
