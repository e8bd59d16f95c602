package snapshot

// The chunk ledger: replicator.chunks on the target lists every chunk of
// the copy. A chunk is a key range of one table's integer primary key (or
// unique NOT NULL key), or the whole table when it has no such key. Each
// chunk is read in its own short REPEATABLE READ transaction on the
// source and written on the target in one transaction that also records
// the chunk done, with the pg_current_snapshot() its rows were read
// under. So after any interruption the ledger says exactly which chunks'
// rows are on the target (all of them, and their snapshot) and which are
// not (none of their rows): a rerun copies only those, and the stream
// applies to each row exactly the changes its chunk's snapshot did not see
// (apply.ChunkFilter, which reads this table).
//
// The target is also the coordinator: a worker claims a chunk with FOR
// UPDATE SKIP LOCKED inside its writing transaction, so any number of
// workers, in this process or others (`--join`), share one ledger and no
// chunk is copied twice. A worker killed mid-chunk loses its transaction,
// its rows and its claim together.

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgutil"
)

// ledgerDDL creates the ledger. lo and hi bound key_column's values
// (lo <= k < hi; NULL is no bound); key_column NULL is a whole-table unit.
// snapshot is NULL until the chunk is done. Workers claim chunks in ord
// order, the table's rank by size (0 the largest): the largest table's
// data is complete first, so that its index build, the longest, runs
// while the other tables copy rather than alone at the end.
const ledgerDDL = `CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.chunks (
	table_name text NOT NULL,
	chunk int NOT NULL,
	key_column text,
	lo bigint,
	hi bigint,
	snapshot text,
	rows bigint,
	bytes bigint,
	done_at timestamptz,
	ord int NOT NULL DEFAULT 0,
	PRIMARY KEY (table_name, chunk)
);
ALTER TABLE replicator.chunks ADD COLUMN IF NOT EXISTS ord int NOT NULL DEFAULT 0`

// ledgerLockKey is the advisory lock (on the target) held while the
// ledger is planned.
const ledgerLockKey = 0x7265706c63686b73 // "replchks"

// ledgerChunk is one row of the ledger.
type ledgerChunk struct {
	table     string // qualified, quoted
	n         int
	keyColumn string // "" for a whole-table unit
	lo, hi    *int64
}

func (c *ledgerChunk) String() string {
	if c.keyColumn == "" {
		return c.table
	}
	lo, hi := "start", "end"
	if c.lo != nil {
		lo = fmt.Sprint(*c.lo)
	}
	if c.hi != nil {
		hi = fmt.Sprint(*c.hi)
	}
	return fmt.Sprintf("%s %s %s-%s", c.table, c.keyColumn, lo, hi)
}

func (c *ledgerChunk) where() string {
	if c.keyColumn == "" {
		return ""
	}
	var conds []string
	k := pgutil.QuoteIdent(c.keyColumn)
	if c.lo != nil {
		conds = append(conds, fmt.Sprintf("%s >= %d", k, *c.lo))
	}
	if c.hi != nil {
		conds = append(conds, fmt.Sprintf("%s < %d", k, *c.hi))
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// chunkKey names t's chunking key: a one-column primary key, else (when t
// has no primary key) a one-column unique NOT NULL key, of an integer
// type, so that every row maps to one chunk by value whatever the
// collation. A table with a primary key of another shape is one unit: the
// stream sends the old primary key of a moved row, not another key's old
// value. "" when t has no such key: it is one unit.
func chunkKey(ctx context.Context, src querier, t *table) (string, error) {
	var col string
	err := src.QueryRow(ctx, `
		SELECT a.attname FROM pg_index i
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = $1::regclass AND i.indnkeyatts = 1 AND i.indisunique AND i.indisvalid
			AND (i.indisprimary OR NOT EXISTS (SELECT 1 FROM pg_index p WHERE p.indrelid = i.indrelid AND p.indisprimary))
			AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attnotnull
			AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
		ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1`, t.qualified()).Scan(&col)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("find the chunking key of source table %s: %w", t.qualified(), err)
	}
	return col, nil
}

// planLedger fills the ledger when it is empty: each table with a key
// gets ranges of about chunkBytes each over its keys' current span, the
// first and last open-ended so that no key is outside every chunk. It
// returns how many chunks the ledger holds and how many are done, for a
// rerun to say what it kept.
func planLedger(ctx context.Context, src querier, dst *pgx.Conn, tables []*table, chunkBytes int64) (total, done int, err error) {
	tx, err := dst.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("plan the copy on the target: %w", err)
	}
	defer tx.Rollback(ctx)
	// One planner at a time, from creating the ledger to filling it: a
	// joining worker waits for the plan, then reads it.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(ledgerLockKey)); err != nil {
		return 0, 0, fmt.Errorf("lock the chunk ledger on the target: %w", err)
	}
	if _, err := tx.Exec(ctx, ledgerDDL); err != nil {
		return 0, 0, fmt.Errorf("create the chunk ledger replicator.chunks on the target: %w", err)
	}
	if err := tx.QueryRow(ctx, `SELECT count(*), count(snapshot) FROM replicator.chunks`).Scan(&total, &done); err != nil {
		return 0, 0, fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	if total > 0 {
		return total, done, nil
	}
	bySize := slices.Clone(tables)
	slices.SortStableFunc(bySize, func(a, b *table) int { return cmp.Compare(b.Bytes, a.Bytes) })
	for ord, t := range bySize {
		n, err := planTable(ctx, src, tx, t, ord, chunkBytes)
		if err != nil {
			return 0, 0, err
		}
		total += n
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("record the copy plan on the target: %w", err)
	}
	return total, 0, nil
}

// planTable records t's chunks in the ledger within tx, claimed in ord
// order, and returns how many.
func planTable(ctx context.Context, src querier, tx pgx.Tx, t *table, ord int, chunkBytes int64) (int, error) {
	key, err := chunkKey(ctx, src, t)
	if err != nil {
		return 0, err
	}
	ranges := [][2]*int64{{nil, nil}}
	var keyCol *string
	if key != "" {
		keyCol = &key
		if ranges, err = keyRanges(ctx, src, t, key, chunkBytes); err != nil {
			return 0, err
		}
	}
	for i, r := range ranges {
		if _, err := tx.Exec(ctx, `INSERT INTO replicator.chunks (table_name, chunk, key_column, lo, hi, ord) VALUES ($1, $2, $3, $4, $5, $6)`,
			t.qualified(), i, keyCol, r[0], r[1], ord); err != nil {
			return 0, fmt.Errorf("record the chunks of %s on the target: %w", t.qualified(), err)
		}
	}
	return len(ranges), nil
}

// keyRanges splits t's key span into ranges holding about chunkBytes each,
// assuming keys spread evenly (ids from a sequence); a skewed table only
// makes some chunks larger.
func keyRanges(ctx context.Context, src querier, t *table, key string, chunkBytes int64) ([][2]*int64, error) {
	var lo, hi *int64
	k := pgutil.QuoteIdent(key)
	if err := src.QueryRow(ctx, fmt.Sprintf(`SELECT min(%s)::bigint, max(%s)::bigint FROM ONLY %s`, k, k, t.qualified())).Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("read the key span of source table %s: %w", t.qualified(), err)
	}
	n := (t.Bytes + chunkBytes - 1) / chunkBytes
	if lo == nil || n <= 1 || *hi-*lo < 1 {
		return [][2]*int64{{nil, nil}}, nil
	}
	span := uint64(*hi-*lo) + 1
	step := int64(max(span/uint64(n), 1))
	var out [][2]*int64
	var prev *int64
	for b := *lo + step; b <= *hi && int64(len(out)) < n-1; b += step {
		bound := b
		out = append(out, [2]*int64{prev, &bound})
		prev = &bound
	}
	return append(out, [2]*int64{prev, nil}), nil
}

// ledgerWorker copies chunks claimed from the ledger: a plain source
// session (each chunk opens and ends its own transaction) and a target
// session with triggers and foreign keys off.
type ledgerWorker struct {
	src, dst *pgx.Conn
	tables   map[string]*table
	// pd builds a table's indexes once its last chunk is committed; nil
	// in a joining process, which leaves them to the run that drives the
	// copy.
	pd  *postData
	log *zap.Logger
}

func openLedgerWorker(ctx context.Context, cfg *Config, tables map[string]*table, lz4 bool) (*ledgerWorker, error) {
	params := map[string]string{"session_replication_role": "replica", "synchronous_commit": "off"}
	if lz4 {
		params["default_toast_compression"] = "lz4"
	}
	src, err := connect(ctx, cfg.SourceURL, "source", nil)
	if err != nil {
		return nil, err
	}
	dst, err := connect(ctx, cfg.TargetURL, "target", params)
	if err != nil {
		src.Close(ctx)
		return nil, err
	}
	return &ledgerWorker{src: src, dst: dst, tables: tables}, nil
}

func (w *ledgerWorker) close() {
	w.src.Close(context.Background())
	w.dst.Close(context.Background())
}

// next claims one chunk not done and copies it; false when none is left
// to claim (all are done or held by other workers).
func (w *ledgerWorker) next(ctx context.Context, rep *reporter) (bool, error) {
	tx, err := w.dst.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("claim a chunk on the target: %w", err)
	}
	defer tx.Rollback(context.Background())
	c := &ledgerChunk{}
	var key *string
	err = tx.QueryRow(ctx, `SELECT table_name, chunk, key_column, lo, hi FROM replicator.chunks
		WHERE snapshot IS NULL ORDER BY ord, table_name, chunk LIMIT 1 FOR UPDATE SKIP LOCKED`).Scan(&c.table, &c.n, &key, &c.lo, &c.hi)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claim a chunk on the target: %w", err)
	}
	if key != nil {
		c.keyColumn = *key
	}
	t := w.tables[c.table]
	if t == nil {
		return false, fmt.Errorf("chunk %s: the table is in the copy's ledger but no longer on the source: run `replicator cleanup`, then `replicator snapshot`", c)
	}
	snap, rows, bytes, err := w.copy(ctx, c, t, rep)
	if err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `UPDATE replicator.chunks SET snapshot = $3, rows = $4, bytes = $5, done_at = now()
		WHERE table_name = $1 AND chunk = $2`, c.table, c.n, snap, rows, bytes); err != nil {
		return false, fmt.Errorf("record chunk %s done on the target: %w", c, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit chunk %s on the target: %w", c, err)
	}
	rep.chunkDone(c.table)
	var tableDone bool
	if err := w.dst.QueryRow(ctx, `SELECT count(*) = count(snapshot) FROM replicator.chunks WHERE table_name = $1`, c.table).Scan(&tableDone); err != nil {
		return false, fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	if tableDone {
		rep.tableDone(c.table)
		if err := w.buildTable(ctx, c.table); err != nil {
			return false, err
		}
	}
	return true, nil
}

// buildTable builds table's indexes and constraints, then gathers its
// planner statistics, unless another worker is at it or did it already.
func (w *ledgerWorker) buildTable(ctx context.Context, table string) error {
	if w.pd == nil {
		return nil
	}
	built, err := w.pd.build(ctx, table, false)
	if err != nil {
		_, err = recopyWhole(ctx, w.dst, table, err, w.log)
		return err
	}
	if !built {
		return nil
	}
	if _, err := w.dst.Exec(ctx, "ANALYZE "+table); err != nil {
		return fmt.Errorf("analyze %s on the target: %w", table, err)
	}
	w.pd.analyzed.Store(table, true)
	return nil
}

// reportPlan tells the reporter the ledger's plan, per table, with what an
// earlier run already copied counted as done.
func reportPlan(ctx context.Context, dst *pgx.Conn, tables []*table, rep *reporter) error {
	type counts struct {
		chunks, done int
		rows, bytes  int64
	}
	byTable := map[string]*counts{}
	rows, err := dst.Query(ctx, `SELECT table_name, count(*), count(snapshot), coalesce(sum(rows), 0), coalesce(sum(bytes), 0)
		FROM replicator.chunks GROUP BY table_name`)
	if err != nil {
		return fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	for rows.Next() {
		var name string
		c := &counts{}
		if err := rows.Scan(&name, &c.chunks, &c.done, &c.rows, &c.bytes); err != nil {
			return fmt.Errorf("read the chunk ledger on the target: %w", err)
		}
		byTable[name] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	plan := make([]TablePlan, 0, len(tables))
	for _, t := range tables {
		c := byTable[t.qualified()]
		if c == nil {
			c = &counts{}
		}
		plan = append(plan, TablePlan{Name: t.qualified(), EstBytes: t.Bytes, EstRows: t.EstRows, Chunks: c.chunks,
			Unlogged: t.Unlogged, Partition: t.Partition})
	}
	rep.plan(plan)
	for _, t := range tables {
		c := byTable[t.qualified()]
		if c == nil || c.done == 0 {
			continue
		}
		rep.copied(t.qualified(), c.rows, c.bytes)
		for range c.done {
			rep.chunkKept(t.qualified())
		}
		if c.done == c.chunks {
			rep.tableDone(t.qualified())
		}
	}
	return nil
}

// copy reads chunk c in a source transaction of its own, whose snapshot
// it returns, into the target session's open transaction.
func (w *ledgerWorker) copy(ctx context.Context, c *ledgerChunk, t *table, rep *reporter) (snap string, rows, bytes int64, err error) {
	if _, err := w.src.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		return "", 0, 0, fmt.Errorf("begin chunk %s on the source: %w", c, err)
	}
	// Ended whatever happens (once the chunk is read, below, or at the
	// latest here): no source transaction outlives its chunk.
	defer w.src.Exec(context.Background(), "ROLLBACK")
	// A key range is read with a bitmap heap scan rather than an index
	// scan: each heap page is visited once, in physical order, as a ctid
	// range would be (about 10 % less source CPU for a range of a
	// sequence-keyed table in a quick measurement here).
	//
	// And without parallel workers: on a table larger than
	// min_parallel_table_scan_size × 27 or so (pgbench scale 100) the
	// planner reads each chunk with a Parallel Bitmap Heap Scan under a
	// Gather, two more backends per chunk whose rows are passed to the
	// leader through shared memory. The copy is parallel already, one
	// chunk per worker; the Gather only adds that hand-off and the
	// workers' start: it cost the source 2.4 × the CPU of the
	// one-snapshot copy's TID range scans (which are never parallel) at
	// scale 100, user and system time alike.
	if _, err := w.src.Exec(ctx, "SET LOCAL enable_indexscan = off; SET LOCAL max_parallel_workers_per_gather = 0"); err != nil {
		return "", 0, 0, fmt.Errorf("begin chunk %s on the source: %w", c, err)
	}
	// The first statement fixes the transaction's snapshot, which COPY
	// then reads through.
	if err := w.src.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snap); err != nil {
		return "", 0, 0, fmt.Errorf("take chunk %s's snapshot on the source: %w", c, err)
	}
	sp, err := newSpool()
	if err != nil {
		return "", 0, 0, fmt.Errorf("chunk %s: create its spool file: %w", c, err)
	}
	defer sp.Close()
	counted := newCountingWriter(sp, t, rep)
	counted.table, counted.rows, counted.bytes = c.table, &rows, &bytes
	buf := bufio.NewWriterSize(counted, pipeBuffer)
	srcDone := make(chan error, 1)
	go func() {
		_, err := w.src.PgConn().CopyTo(ctx, buf, fmt.Sprintf("COPY (SELECT %s FROM ONLY %s%s) TO STDOUT%s", t.columnList(), c.table, c.where(), t.copyOptions()))
		if err == nil {
			err = buf.Flush()
		}
		// The chunk is read: its source transaction ends now, not when
		// the target has written it.
		w.src.Exec(context.Background(), "ROLLBACK")
		if err != nil {
			err = fmt.Errorf("read chunk %s from the source: %w", c, err)
		}
		sp.CloseWrite(err)
		srcDone <- err
	}()
	target := "COPY " + c.table + " FROM STDIN"
	if len(t.Columns) > 0 {
		target = fmt.Sprintf("COPY %s (%s) FROM STDIN%s", c.table, t.columnList(), t.copyOptions())
	}
	_, dstErr := w.dst.PgConn().CopyFrom(ctx, sp.reader(), target)
	if dstErr != nil {
		sp.Abort(dstErr)
	}
	if srcErr := <-srcDone; srcErr != nil {
		return "", 0, 0, srcErr
	}
	if dstErr != nil {
		return "", 0, 0, fmt.Errorf("write chunk %s to the target: %w", c, withWhere(dstErr))
	}
	return snap, rows, bytes, nil
}

// copyLedger plans the ledger if it is empty and copies every chunk not
// done with jobs workers. A rerun after an interruption runs it just the
// same. With wait it returns once every chunk is done, by whichever
// process; without (a joining process) once none is left to claim.
func copyLedger(ctx context.Context, cfg *Config, tables []*table, lz4 bool, rep *reporter, log *zap.Logger) error {
	return copyLedgerWait(ctx, cfg, tables, lz4, rep, log, true, nil)
}

// copyLedgerWait is copyLedger; with pd, each table's indexes are built
// by the worker that commits its last chunk.
func copyLedgerWait(ctx context.Context, cfg *Config, tables []*table, lz4 bool, rep *reporter, log *zap.Logger, wait bool, pd *postData) error {
	byName := make(map[string]*table, len(tables))
	for _, t := range tables {
		byName[t.qualified()] = t
	}
	plan, err := connect(ctx, cfg.TargetURL, "target", nil)
	if err != nil {
		return err
	}
	defer plan.Close(context.Background())
	src, err := connect(ctx, cfg.SourceURL, "source", nil)
	if err != nil {
		return err
	}
	total, done, err := planLedger(ctx, src, plan, tables, cfg.ChunkBytes)
	src.Close(context.Background())
	if err != nil {
		return err
	}
	// What an interrupted run copied is reported before the copy phase
	// begins, so that rates count only what this process copies.
	if err := reportPlan(ctx, plan, tables, rep); err != nil {
		return err
	}
	rep.phase("copy")
	if done > 0 {
		log.Info(fmt.Sprintf("resuming: %s of %s chunks already copied", groupDigits(done), groupDigits(total)),
			zap.Int("done", done), zap.Int("total", total))
	} else {
		log.Info("copying data in chunks", zap.Int("chunks", total), zap.Int("jobs", cfg.Jobs))
	}
	for {
		if err := claimAll(ctx, cfg, byName, lz4, rep, pd, log); err != nil {
			return err
		}
		// Chunks claimed by other processes may still be running: the copy
		// is complete only when every chunk is done. One whose worker died
		// is claimable again, so claiming starts over until none is left.
		var left int
		if err := plan.QueryRow(ctx, `SELECT count(*) - count(snapshot) FROM replicator.chunks`).Scan(&left); err != nil {
			return fmt.Errorf("read the chunk ledger on the target: %w", err)
		}
		if left == 0 {
			return nil
		}
		if !wait {
			log.Info("no chunk left to claim; the others' workers finish theirs", zap.Int("chunks_in_progress", left))
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// claimAll runs cfg.Jobs workers until none can claim a chunk.
func claimAll(ctx context.Context, cfg *Config, byName map[string]*table, lz4 bool, rep *reporter, pd *postData, log *zap.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	for range cfg.Jobs {
		g.Go(func() error {
			w, err := openLedgerWorker(gctx, cfg, byName, lz4)
			if err != nil {
				return err
			}
			defer w.close()
			w.pd, w.log = pd, log
			for {
				more, err := w.next(gctx, rep)
				if err != nil || !more {
					return err
				}
			}
		})
	}
	return g.Wait()
}

// recopyWhole handles a failed build of table's indexes. When it failed
// on a duplicate value in a unique index and the table was copied in
// several chunks, the duplicate can be the chunks' doing, not the
// source's: a value that moved from a row of one chunk to a row of
// another between their two snapshots is on the target twice until the
// stream has caught up. Then the table's rows are removed from the
// target and its chunks replaced by one whole-table unit, claimed next
// and read under one snapshot (which the source's unique index holds
// to), and the build follows it as for any table: recopied is true.
// Otherwise buildErr is returned as it is.
func recopyWhole(ctx context.Context, dst *pgx.Conn, table string, buildErr error, log *zap.Logger) (recopied bool, err error) {
	var pgErr *pgconn.PgError
	if !errors.As(buildErr, &pgErr) || pgErr.Code != pgerrcode.UniqueViolation {
		return false, buildErr
	}
	tx, err := dst.Begin(ctx)
	if err != nil {
		return false, buildErr
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(ledgerLockKey)); err != nil {
		return false, fmt.Errorf("%w (and locking the chunk ledger to copy it again as one unit failed: %v)", buildErr, err)
	}
	var chunks int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM replicator.chunks WHERE table_name = $1`, table).Scan(&chunks); err != nil || chunks < 2 {
		return false, buildErr
	}
	for _, st := range []struct {
		q    string
		args []any
	}{
		{`TRUNCATE ONLY ` + table, nil},
		{`DELETE FROM replicator.chunks WHERE table_name = $1`, []any{table}},
		{`INSERT INTO replicator.chunks (table_name, chunk, ord) VALUES ($1, 0, -1)`, []any{table}},
	} {
		if _, err := tx.Exec(ctx, st.q, st.args...); err != nil {
			return false, fmt.Errorf("%w (and replanning %s as one unit failed: %v)", buildErr, table, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("%w (and replanning %s as one unit failed: %v)", buildErr, table, err)
	}
	if log != nil {
		log.Warn("a unique index saw a value twice across chunks read at different times: copying the table again as one unit, under one snapshot (one source transaction for the whole table)",
			zap.String("table", table), zap.String("index_error", pgErr.Message), zap.Int("chunks_dropped", chunks))
	}
	return true, nil
}

// groupDigits writes n with thousands separators: 1,024.
func groupDigits(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
