package trigger

import (
	"context"
	"fmt"
	"replicator/pkg/wal"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Op is what a change does: the kinds logical capture uses, so a trigger
// change converts to a wal.Change without a mapping.
type Op = wal.Kind

// Operations.
const (
	Insert   = wal.Insert
	Update   = wal.Update
	Delete   = wal.Delete
	Truncate = wal.Truncate
)

// Value kinds, the same letters as pkg/wal uses.
const (
	ValueNull      byte = 'n'
	ValueText      byte = 't'
	ValueUnchanged byte = 'u' // not part of this change: the target keeps its value
)

// Value is one column of a change in the source's text output format.
// Text is nil unless Kind is ValueText.
type Value struct {
	Kind byte
	Text []byte
}

// Change is one captured row change (or TRUNCATE of one table).
//
// Key and New are indexed like Table.Columns. Key holds the row's key
// before the change (for Update and Delete; the new row's key for Insert):
// key columns are ValueText or ValueNull, the others ValueUnchanged. New
// holds the row for Insert, and for Update the new values of the columns
// that changed, every other column ValueUnchanged. Delete and Truncate
// have no New; Truncate has no Key.
type Change struct {
	ID    int64  // changelog id: capture order
	TxID  uint64 // source transaction (xid8)
	Op    Op
	Table *Table
	// Partition is the qualified name of the partition of Table the row
	// was written to ("" when Table is not partitioned, or the partition
	// no longer exists): the chunked copy's filter judges a change by the
	// partition's chunks, since the copy reads partitions one by one.
	Partition string
	Key       []Value
	New       []Value
	TxnEnd    bool // the last change of its source transaction in this batch
}

// KeyString describes the key for error messages, e.g. (id)=(42).
func (c *Change) KeyString() string {
	if c.Table == nil || c.Key == nil {
		return ""
	}
	names, vals := "", ""
	for i, col := range c.Table.Columns {
		if !col.Key {
			continue
		}
		if names != "" {
			names += ", "
			vals += ", "
		}
		names += col.Name
		switch c.Key[i].Kind {
		case ValueNull:
			vals += "NULL"
		default:
			v := string(c.Key[i].Text)
			if len(v) > 64 {
				v = v[:64] + "…"
			}
			vals += v
		}
	}
	return "(" + names + ")=(" + vals + ")"
}

// batchSQL reads one batch in apply order.
//
// Which rows: those whose transaction is visible in tick N's snapshot and
// not in tick N-1's, i.e. that committed between the two ticks. A
// transaction still running at tick N is in its xip list, so it is never
// split: all its rows move together to the first tick after its commit,
// however low its txid ("late committer"). Rows of aborted transactions
// are never visible to the reader. The txid range only narrows the index
// scan: a txid below tick N-1's xmin is visible there, one at or above
// tick N's xmax is not visible in tick N.
//
// Order: transactions by their last changelog id, and each transaction's
// changes by id. This is a commit order for every pair of transactions
// that touch the same row: the later writer of a row waits for the
// earlier one's row lock (or only sees the row once it is committed), so
// its change to that row, and with it its last id, comes after every
// change of the earlier one (ids come from a CACHE 1 sequence, so they
// follow time across sessions). Transactions that touch no common row
// commute. The same holds across batches: the earlier writer committed
// before the later one, so it is in the same batch or an earlier one.
//
// Changes superseded by a TRUNCATE are left out: a change of table X with
// a committed TRUNCATE of X at a higher id (in this batch or a later one:
// TRUNCATE waits for every writer of X, and X's later writers wait for it,
// so id order is apply order on one table) has no effect on the final
// state. This is what makes a TRUNCATE during the copy safe: TRUNCATE is
// not MVCC-safe, so a copy that reads X after a TRUNCATE committed (later
// than the copy's snapshot) sees X empty, and the changes of X between
// the snapshot and the TRUNCATE would find their rows missing. Only a
// TRUNCATE of the relation the changes are recorded under counts (the
// root of a partitioned table, not one partition truncated alone).
//
// part is the relation the row was written to, which is rel itself when
// the table is not a partition (an earlier install left it NULL then).
const batchSQL = `
SELECT id, txid::text, rel, coalesce(nullif(part, rel), 0), op, key::text, vals::text, id = max(id) OVER (PARTITION BY txid) AS txn_end,
	max(id) OVER (PARTITION BY txid) AS last_id
FROM replicator.changelog c
WHERE txid >= pg_snapshot_xmin($1::pg_snapshot) AND txid < pg_snapshot_xmax($2::pg_snapshot)
  AND pg_visible_in_snapshot(txid, $2::pg_snapshot) AND NOT pg_visible_in_snapshot(txid, $1::pg_snapshot)
  AND NOT EXISTS (SELECT 1 FROM replicator.truncates t WHERE t.rel = c.rel AND t.id > c.id)
ORDER BY last_id, id`

// Cursor reads one batch's changes in apply order with bounded memory: a
// server-side cursor fetched cfg.PageRows rows at a time, in a read-only
// transaction on a connection of its own, held until Close. Use it as
//
//	cur, err := capture.Open(ctx, batch)
//	defer cur.Close(ctx)
//	for cur.Next(ctx) { ch := cur.Change(); … }
//	if err := cur.Err(); err != nil { … }
//
// A batch can be read again (after a failed apply) by opening it again:
// its rows stay until Purge is told the batch is applied.
type Cursor struct {
	c     *Capture
	batch *Batch
	conn  *pgxpool.Conn // nil once closed
	tx    pgx.Tx
	page  []rawChange
	pos   int
	done  bool
	cur   Change
	err   error
	n     int64
	// keys and vals are the current change's parsed key and values.
	keys, vals []pair
}

type rawChange struct {
	id     int64
	txid   string
	rel    uint32
	part   uint32 // the partition written to, 0 when rel itself
	op     byte
	key    *string
	vals   *string
	txnEnd bool
}

// Open declares the cursor of batch b.
func (c *Capture) Open(ctx context.Context, b *Batch) (*Cursor, error) {
	conn, err := c.acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, fmt.Errorf("read batch %d: begin on the source: %w", b.ID, err)
	}
	// The batch is sorted by transaction (batchSQL); a backlog of many
	// thousand changes sorts in memory rather than on disk with this, for
	// this one read-only session only.
	if _, err := tx.Exec(ctx, "SET LOCAL work_mem = '64MB'"); err != nil {
		tx.Rollback(ctx)
		conn.Release()
		return nil, fmt.Errorf("read batch %d: %w", b.ID, err)
	}
	if _, err := tx.Exec(ctx, "DECLARE replicator_batch NO SCROLL CURSOR FOR "+batchSQL, b.Prev, b.Cur); err != nil {
		tx.Rollback(ctx)
		conn.Release()
		return nil, fmt.Errorf("read batch %d (ticks %s .. %s): %w", b.ID, b.Prev, b.Cur, err)
	}
	return &Cursor{c: c, batch: b, conn: conn, tx: tx}, nil
}

// Next advances to the next change; false at the end of the batch or on
// error (see Err).
func (r *Cursor) Next(ctx context.Context) bool {
	if r.err != nil {
		return false
	}
	if r.pos >= len(r.page) {
		if r.done {
			return false
		}
		if err := r.fetch(ctx); err != nil {
			r.err = fmt.Errorf("read batch %d after %d changes: %w", r.batch.ID, r.n, err)
			return false
		}
		if len(r.page) == 0 {
			return false
		}
	}
	raw := &r.page[r.pos]
	r.pos++
	if err := r.decode(ctx, raw); err != nil {
		r.err = fmt.Errorf("read batch %d changelog id %d: %w", r.batch.ID, raw.id, err)
		return false
	}
	r.n++
	return true
}

func (r *Cursor) fetch(ctx context.Context) error {
	rows, err := r.tx.Query(ctx, "FETCH "+strconv.Itoa(r.c.cfg.PageRows)+" FROM replicator_batch")
	if err != nil {
		return err
	}
	r.page, r.pos = r.page[:0], 0
	for rows.Next() {
		var x rawChange
		var op string
		var lastID int64
		if err := rows.Scan(&x.id, &x.txid, &x.rel, &x.part, &op, &x.key, &x.vals, &x.txnEnd, &lastID); err != nil {
			rows.Close()
			return err
		}
		x.op = op[0]
		r.page = append(r.page, x)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(r.page) < r.c.cfg.PageRows {
		r.done = true
	}
	return nil
}

func (r *Cursor) decode(ctx context.Context, raw *rawChange) error {
	txid, err := strconv.ParseUint(raw.txid, 10, 64)
	if err != nil {
		return fmt.Errorf("txid %q: %w", raw.txid, err)
	}
	t, err := r.c.table(ctx, r.tx, raw.rel)
	if err != nil {
		return err
	}
	ch := &r.cur
	*ch = Change{ID: raw.id, TxID: txid, Op: Op(raw.op), Table: t, TxnEnd: raw.txnEnd}
	if raw.part != 0 {
		if ch.Partition, err = r.c.partitionName(ctx, r.tx, raw.part); err != nil {
			return err
		}
	}
	if ch.Op == Truncate {
		return nil
	}
	if ch.Op != Insert && ch.Op != Update && ch.Op != Delete {
		return fmt.Errorf("unknown operation %q for %s", raw.op, t)
	}
	if r.keys, err = r.parse(raw.key, r.keys[:0], ch.Op != Insert); err != nil {
		return fmt.Errorf("%s of %s: key: %w", ch.Op, t, err)
	}
	if r.vals, err = r.parse(raw.vals, r.vals[:0], ch.Op != Delete); err != nil {
		return fmt.Errorf("%s of %s: values: %w", ch.Op, t, err)
	}
	if t, err = r.c.reshape(ctx, r.tx, t, ch.Op == Insert, r.keys, r.vals); err != nil {
		return err
	}
	if ch.Op != Insert && !t.hasKey(r.keys) {
		// A description with a key column the change's table no longer
		// had (dropped or renamed since): described again.
		if t, err = r.c.reshapeIf(ctx, r.tx, t, false, false, r.keys, r.vals); err != nil {
			return err
		}
	}
	ch.Table = t
	switch ch.Op {
	case Insert:
		// An insert records its row only: the key is part of it.
		ch.New = t.image(r.vals)
		ch.Key = make([]Value, len(ch.New))
		for i, col := range t.Columns {
			if ch.Key[i].Kind = ValueUnchanged; col.Key {
				ch.Key[i] = ch.New[i]
			}
		}
	case Update, Delete:
		// The recorded key is the key columns, or the whole old row (no
		// key, or a key column renamed since install): only the key
		// columns are kept, and each must be there.
		ch.Key = t.image(r.keys)
		for i, col := range t.Columns {
			switch {
			case !col.Key:
				ch.Key[i] = Value{Kind: ValueUnchanged}
			case ch.Key[i].Kind == ValueUnchanged:
				return fmt.Errorf("%s of %s: the recorded old key has no column %q, which is part of the table's key now: "+
					"the key was changed on the source since trigger capture was installed; install it again and take a new snapshot", ch.Op, t, col.Name)
			}
		}
		if ch.Op == Update {
			ch.New = t.image(r.vals)
		}
	}
	return nil
}

// parse reads a recorded hstore (nil: none) into out; want says one must
// be there.
func (r *Cursor) parse(s *string, out []pair, want bool) ([]pair, error) {
	if s == nil {
		if want {
			return nil, fmt.Errorf("no values recorded")
		}
		return out, nil
	}
	return parseHstore(*s, out)
}

// image is the row image of ps indexed like t's columns (which name every
// pair but generated ones): columns not in ps are ValueUnchanged.
func (t *Table) image(ps []pair) []Value {
	out := make([]Value, len(t.Columns))
	for i := range out {
		out[i].Kind = ValueUnchanged
	}
	for _, p := range ps {
		if i, ok := t.colIndex[p.name]; ok {
			out[i] = p.val
		}
	}
	return out
}

// Change is the current change. It and its values are valid until the
// next call of Next; copy what must be kept.
func (r *Cursor) Change() *Change { return &r.cur }

// Count is the number of changes read so far.
func (r *Cursor) Count() int64 { return r.n }

// Err is the error that ended Next early, or nil.
func (r *Cursor) Err() error { return r.err }

// Close ends the read transaction and returns the connection. It may be
// repeated.
func (r *Cursor) Close(ctx context.Context) error {
	if r.conn == nil {
		return nil
	}
	err := r.tx.Rollback(ctx)
	r.conn.Release()
	r.conn = nil
	return err
}
