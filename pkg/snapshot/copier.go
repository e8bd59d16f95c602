package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgutil"
)

// blockSize is PostgreSQL's default page size; the planner only uses it to
// size chunks, so a server built with another one still copies correctly.
const blockSize = 8192

// pipeBuffer is how much COPY text a worker gathers before handing it to
// the target: large enough that the goroutine hand-off is not paid per
// row, small enough that jobs × pipeBuffer stays a few megabytes.
const pipeBuffer = 256 << 10

// chunk is one unit of copy work: a block range of one table. A zero hi
// means "to the end of the table", so rows in blocks added after the plan
// was made are never missed (the snapshot decides which rows are visible,
// not the block range).
type chunk struct {
	t      *tableCopy
	lo, hi int64 // block numbers; lo == hi == 0 with whole set: no ctid bounds
	whole  bool
}

// tableCopy is one table being copied and its chunks still to finish.
type tableCopy struct {
	*table
	name      string
	remaining atomic.Int64
}

// planChunks splits each table into block ranges holding about chunkBytes
// of data each, TOAST included (a table of large documents has few heap
// blocks but much to copy). Tables smaller than one chunk, and every table
// when the source cannot do TID range scans (before PostgreSQL 14, where
// each range would read the whole table), are copied whole.
func planChunks(tables []*table, chunkBytes int64, tidRangeScans bool) ([]chunk, []*tableCopy) {
	var perTable [][]chunk
	var copies []*tableCopy
	for _, t := range tables {
		tc := &tableCopy{table: t, name: t.qualified()}
		copies = append(copies, tc)
		pages := (t.HeapBytes + blockSize - 1) / blockSize
		n := (t.Bytes + chunkBytes - 1) / chunkBytes
		if !tidRangeScans || n <= 1 || pages <= 1 {
			perTable = append(perTable, []chunk{{t: tc, whole: true}})
			tc.remaining.Store(1)
			continue
		}
		per := (pages + n - 1) / min(n, pages)
		var cs []chunk
		for lo := int64(0); lo < pages; lo += per {
			c := chunk{t: tc, lo: lo, hi: lo + per}
			if c.hi >= pages {
				c.hi = 0 // open-ended last chunk
			}
			cs = append(cs, c)
		}
		perTable = append(perTable, cs)
		tc.remaining.Store(int64(len(cs)))
	}
	// Round robin over the tables, largest first: workers write into
	// different tables where they can rather than queue on one table's
	// extension lock, and the largest tables' last chunks come last.
	var chunks []chunk
	for round := 0; ; round++ {
		added := false
		for _, cs := range perTable {
			if round < len(cs) {
				chunks = append(chunks, cs[round])
				added = true
			}
		}
		if !added {
			return chunks, copies
		}
	}
}

func (c chunk) sourceSQL() string {
	where := ""
	if !c.whole {
		where = fmt.Sprintf(" WHERE ctid >= '(%d,0)'::tid", c.lo)
		if c.hi != 0 {
			where += fmt.Sprintf(" AND ctid < '(%d,0)'::tid", c.hi)
		}
	}
	// ONLY: an inheritance parent's COPY must not include its children,
	// which are copied as tables of their own.
	return fmt.Sprintf("COPY (SELECT %s FROM ONLY %s%s) TO STDOUT%s", c.t.columnList(), c.t.name, where, c.t.copyOptions())
}

func (c chunk) targetSQL() string {
	if len(c.t.Columns) == 0 {
		return "COPY " + c.t.name + " FROM STDIN"
	}
	return fmt.Sprintf("COPY %s (%s) FROM STDIN%s", c.t.name, c.t.columnList(), c.t.copyOptions())
}

func (c chunk) String() string {
	if c.whole {
		return c.t.name
	}
	if c.hi == 0 {
		return fmt.Sprintf("%s blocks %d-end", c.t.name, c.lo)
	}
	return fmt.Sprintf("%s blocks %d-%d", c.t.name, c.lo, c.hi)
}

// worker is one source session reading through the exported snapshot and
// one target session with triggers and foreign keys switched off.
type worker struct {
	src, dst *pgx.Conn
	// locked holds the tables this worker has locked when it locks them
	// one by one (nil when it locked every table up front).
	locked map[*tableCopy]bool
}

// openWorkers opens n workers, each inside a REPEATABLE READ READ ONLY
// transaction that has imported snapshotName and locked the tables. They are all opened before
// the capture's exporting session is released: a snapshot can only be
// imported while that session lives.
//
// With lockAll, each worker locks every table up front, so that a TRUNCATE
// arriving during the copy simply waits. Without it (when jobs × tables
// locks would not fit the source's lock table) each worker locks a table
// with NOWAIT when it first copies from it, and a TRUNCATE queued before
// that fails the run with a message instead.
func openWorkers(ctx context.Context, cfg *Config, n int, snapshotName string, tables []*table, lz4, lockAll bool) ([]*worker, error) {
	// session_replication_role = replica: target triggers and foreign-key
	// checks must not fire for copied rows. Commits need not wait for the
	// disk: the snapshot is only marked done by a synchronous commit after
	// all of them. Large values are compressed with lz4 where the target
	// has it, several times faster than the default pglz; columns with a
	// compression of their own keep it, and reads are the same either way.
	params := map[string]string{"session_replication_role": "replica", "synchronous_commit": "off"}
	if lz4 {
		params["default_toast_compression"] = "lz4"
	}
	workers := make([]*worker, n)
	g, gctx := errgroup.WithContext(ctx)
	for i := range workers {
		g.Go(func() error {
			src, err := openSnapshotConn(gctx, cfg.SourceURL, snapshotName)
			if err != nil {
				return err
			}
			var locked map[*tableCopy]bool
			if lockAll {
				if err := lockTables(gctx, src, tables, true); err != nil {
					src.Close(ctx)
					return err
				}
			} else {
				locked = map[*tableCopy]bool{}
			}
			dst, err := connect(gctx, cfg.TargetURL, "target", params)
			if err != nil {
				src.Close(ctx)
				return err
			}
			workers[i] = &worker{src: src, dst: dst, locked: locked}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		closeWorkers(workers)
		return nil, err
	}
	return workers, nil
}

// openSnapshotConn opens a source connection whose transaction reads
// through the exported snapshot.
func openSnapshotConn(ctx context.Context, sourceURL, snapshotName string) (*pgx.Conn, error) {
	conn, err := connect(ctx, sourceURL, "source", nil)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		conn.Close(ctx)
		return nil, fmt.Errorf("begin the snapshot transaction on the source: %w", err)
	}
	if snapshotName != "" {
		if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT "+pgutil.QuoteLiteral(snapshotName)); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("import snapshot %s on the source: %w", snapshotName, err)
		}
	}
	return conn, nil
}

func closeWorkers(ws []*worker) {
	for _, w := range ws {
		if w == nil {
			continue
		}
		if w.src != nil {
			w.src.Close(context.Background())
		}
		if w.dst != nil {
			w.dst.Close(context.Background())
		}
	}
}

// copyAll runs every chunk on the workers, each worker taking the next
// chunk when it finishes one. The first error cancels the rest.
func copyAll(ctx context.Context, workers []*worker, chunks []chunk, rep *reporter, log *zap.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan chunk)
	g.Go(func() error {
		defer close(next)
		for _, c := range chunks {
			select {
			case next <- c:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for _, w := range workers {
		g.Go(func() error {
			for c := range next {
				if err := w.copyChunk(gctx, c, rep); err != nil {
					return err
				}
				rep.chunkDone(c.t.name)
				if c.t.remaining.Add(-1) == 0 {
					rep.tableDone(c.t.name)
					log.Debug("table copied", zap.String("table", c.t.name))
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// copyChunk streams one chunk: the source's COPY TO writes into a pipe
// whose other end feeds the target's COPY FROM. Only pipeBuffer bytes are
// held at a time. The chunk commits on the target as one statement, so a
// failure or a kill leaves either all of its rows or none.
func (w *worker) copyChunk(ctx context.Context, c chunk, rep *reporter) error {
	if w.locked != nil && !w.locked[c.t] {
		if err := lockTables(ctx, w.src, []*table{c.t.table}, true); err != nil {
			return err
		}
		w.locked[c.t] = true
	}
	pr, pw := io.Pipe()
	counted := newCountingWriter(pw, c.t.table, rep)
	buf := bufio.NewWriterSize(counted, pipeBuffer)
	srcDone := make(chan error, 1)
	go func() {
		_, err := w.src.PgConn().CopyTo(ctx, buf, c.sourceSQL())
		if err == nil {
			err = buf.Flush()
		}
		if err != nil {
			err = fmt.Errorf("read %s from the source: %w", c, err)
		}
		pw.CloseWithError(err) // nil: the target sees the end of the data
		srcDone <- err
	}()
	_, dstErr := w.dst.PgConn().CopyFrom(ctx, pr, c.targetSQL())
	if dstErr != nil {
		pr.CloseWithError(dstErr) // unblocks the source side
	}
	if srcErr := <-srcDone; srcErr != nil {
		return srcErr
	}
	if dstErr != nil {
		return fmt.Errorf("write %s to the target: %w", c, withWhere(dstErr))
	}
	return nil
}

// countingWriter counts COPY data on its way to the target. In text
// format every row ends in a newline and newlines inside values are
// escaped, so newlines are rows; in binary format (binary set) the
// stream's tuples are counted as they pass.
type countingWriter struct {
	w      io.Writer
	table  string
	rep    *reporter
	binary *binaryRows
	// rows and bytes, when set, also count this one chunk (the ledger
	// records them).
	rows, bytes *int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	var rows int64
	if cw.binary != nil {
		var cerr error
		if rows, cerr = cw.binary.feed(p[:n]); cerr != nil && err == nil {
			err = fmt.Errorf("count the rows of %s: %w", cw.table, cerr)
		}
	} else {
		rows = int64(bytes.Count(p[:n], []byte{'\n'}))
	}
	cw.rep.copied(cw.table, rows, int64(n))
	if cw.rows != nil {
		*cw.rows += rows
		*cw.bytes += int64(n)
	}
	return n, err
}

// newCountingWriter counts t's COPY data, in t's format, into w.
func newCountingWriter(w io.Writer, t *table, rep *reporter) *countingWriter {
	cw := &countingWriter{w: w, table: t.qualified(), rep: rep}
	if t.Binary {
		cw.binary = &binaryRows{}
	}
	return cw
}

// withWhere adds to a server error the context the server gave it, which
// for COPY names the row and the column refused ("COPY t, line 7,
// column label"); pgconn's message leaves it out.
func withWhere(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Where != "" {
		return fmt.Errorf("%w (at %s)", err, pgErr.Where)
	}
	return err
}
