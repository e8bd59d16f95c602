package trigger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
)

// ErrNoTick is returned (wrapped) when the tick a batch starts from is not
// on the source: the changelog was reinstalled or belongs to another
// migration.
var ErrNoTick = errors.New("tick not found on the source")

// Capture reads batches from the changelog on the source, runs the ticker
// and purges what the target has committed. Ticker, reader and purge take
// their connections from one small pool (conn.go) and may run
// concurrently.
type Capture struct {
	pool  *pgxpool.Pool
	where *pgx.ConnConfig // for describing connection errors; never logged
	cfg   Config
	log   *zap.Logger

	m *Metrics // nil: none

	mu         sync.Mutex
	tables     map[uint32]*Table
	partitions map[uint32]string // partition oid → qualified name ("" when gone)
	lastCount  time.Time
	lastTicked time.Time
}

// New connects to the source (sourceURL is never logged) and checks that
// capture is installed (CheckInstalled); tables an earlier version
// captured are upgraded to the current layout first (Upgrade). m receives
// the capture metrics (nil: none).
func New(ctx context.Context, sourceURL string, cfg Config, log *zap.Logger, m *Metrics) (*Capture, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pool, where, err := openPool(ctx, sourceURL)
	if err != nil {
		return nil, err
	}
	c := &Capture{pool: pool, where: where, cfg: cfg, log: log, m: m, tables: map[uint32]*Table{}, partitions: map[uint32]string{}}
	conn, err := c.acquire(ctx)
	if err != nil {
		pool.Close()
		return nil, err
	}
	err = CheckInstalled(ctx, conn.Conn())
	if errors.Is(err, ErrEarlierInstall) {
		// Capture is complete, in an earlier version's layout: the new
		// one is installed in place of it (per table, without a window)
		// rather than the stream refused, as no command other than a new
		// copy would install it.
		if _, err = Upgrade(ctx, conn.Conn(), cfg, log); err == nil {
			err = CheckInstalled(ctx, conn.Conn())
		}
	}
	conn.Release()
	if err != nil {
		pool.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connections. Open cursors must be closed first: Close
// waits for every connection taken from the pool to be given back.
func (c *Capture) Close() { c.pool.Close() }

// Tick records pg_current_snapshot() as the next tick and returns its id.
// A tick closes a batch: batch N holds the transactions visible in tick
// N's snapshot and not in tick N-1's. It may be called at any time (on
// demand, e.g. before cutover) alongside RunTicker.
func (c *Capture) Tick(ctx context.Context) (int64, error) {
	var id int64
	conn, err := c.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		// The lock serializes tickers, so ids are consecutive and each
		// snapshot is taken after the previous tick committed.
		if _, err := tx.Exec(ctx, `LOCK TABLE replicator.ticks IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `INSERT INTO replicator.ticks (id, snap, at)
			SELECT max(id) + 1, pg_current_snapshot(), clock_timestamp() FROM replicator.ticks
			HAVING count(*) > 0 RETURNING id`).Scan(&id)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("record a tick on the source: %w: no capture point was taken (tick 0 is missing)", ErrNoTick)
	}
	if err != nil {
		return 0, fmt.Errorf("record a tick on the source: %w", err)
	}
	c.mu.Lock()
	c.lastTicked = time.Now()
	c.mu.Unlock()
	return id, nil
}

// RunTicker ticks every cfg.TickInterval until ctx ends, and returns
// ctx.Err() then, or the first error.
func (c *Capture) RunTicker(ctx context.Context) error {
	t := time.NewTicker(c.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if _, err := c.Tick(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// Batch is the set of changes of the transactions that committed between
// two ticks: visible in tick ID's snapshot and not in tick ID-1's. ID is
// the position to record on the target once the batch is committed there
// (state.RecordApplied of position.Batch(ID)), and Time the commit time
// to record with it.
type Batch struct {
	ID   int64
	Prev string // tick ID-1's snapshot
	Cur  string // tick ID's snapshot
	// Time is when tick ID was taken (source clock): every transaction of
	// the batch committed before it. Trigger capture cannot see the commit
	// time of each transaction, so this is the commit time of the batch.
	Time time.Time
}

// NextBatch returns the batch after applied (the last batch the target
// committed; 0 right after the copy), waiting for its tick until ctx ends.
// It returns ErrNoTick when tick applied is not on the source.
func (c *Capture) NextBatch(ctx context.Context, applied int64) (*Batch, error) {
	poll := min(c.cfg.TickInterval/4, 100*time.Millisecond)
	for {
		b := &Batch{ID: applied + 1}
		var cur *string
		var at *time.Time
		conn, err := c.acquire(ctx)
		if err != nil {
			return nil, err
		}
		err = conn.QueryRow(ctx, `SELECT p.snap::text, c.snap::text, c.at FROM replicator.ticks p
			LEFT JOIN replicator.ticks c ON c.id = p.id + 1 WHERE p.id = $1`, applied).Scan(&b.Prev, &cur, &at)
		conn.Release()
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("read batch %d: %w: tick %d; the changelog on the source was reset since the copy: take a new snapshot", b.ID, ErrNoTick, applied)
		}
		if err != nil {
			return nil, fmt.Errorf("read batch %d from the source's ticks: %w", b.ID, err)
		}
		if cur != nil {
			b.Cur, b.Time = *cur, *at
			return b, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// table returns the current description of the captured table with oid
// id, reading it from the source's catalog when it is not known yet.
func (c *Capture) table(ctx context.Context, q queryer, id uint32) (*Table, error) {
	c.mu.Lock()
	t := c.tables[id]
	c.mu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := describe(ctx, q, id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.tables[id] = t
	c.mu.Unlock()
	return t, nil
}

// partitionName names partition id for the chunk filter, cached: a
// partition's oid is never reused while its changes are in the changelog
// (they name it). A partition dropped since is "": the stream stops at the
// drop (pkg/schemachange) once what came before it is applied.
func (c *Capture) partitionName(ctx context.Context, q queryer, id uint32) (string, error) {
	c.mu.Lock()
	name, ok := c.partitions[id]
	c.mu.Unlock()
	if ok {
		return name, nil
	}
	var ns, rel *string
	if err := q.QueryRow(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1`, id).Scan(&ns, &rel); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("name partition oid %d: %w", id, err)
	}
	if ns != nil && rel != nil {
		name = pgutil.QualifiedName(*ns, *rel)
	}
	c.mu.Lock()
	c.partitions[id] = name
	c.mu.Unlock()
	return name, nil
}

type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}
