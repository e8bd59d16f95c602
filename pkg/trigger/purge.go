package trigger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Purge deletes the changelog rows of every batch up to and including
// applied, which the caller guarantees is committed on the target (its
// id is in the target's state), together with the rows the copy already
// covered (visible in tick 0), and the ticks before applied (tick applied
// itself stays: the next batch starts from it). Rows go in transactions of
// at most cfg.PurgeRows, so neither the source's locks nor its WAL see
// one huge delete. It returns how many rows it deleted and refreshes the
// metrics.
func (c *Capture) Purge(ctx context.Context, applied int64) (int64, error) {
	conn, err := c.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var snap string
	err = conn.QueryRow(ctx, `SELECT snap::text FROM replicator.ticks WHERE id = $1`, applied).Scan(&snap)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("purge up to batch %d: %w", applied, ErrNoTick)
	}
	if err != nil {
		return 0, fmt.Errorf("purge up to batch %d: read its tick: %w", applied, err)
	}
	var total int64
	for {
		// Everything visible in tick `applied` belongs to a batch up to
		// it, or to the copy.
		tag, err := conn.Exec(ctx, `DELETE FROM replicator.changelog WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM replicator.changelog
			WHERE txid < pg_snapshot_xmax($1::pg_snapshot) AND pg_visible_in_snapshot(txid, $1::pg_snapshot)
			LIMIT $2))`, snap, c.cfg.PurgeRows)
		if err != nil {
			return total, fmt.Errorf("purge changelog up to batch %d after %d rows: %w", applied, total, err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(c.cfg.PurgeRows) {
			break
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
	// A TRUNCATE supersedes only changes of its own batch or earlier ones
	// (see batchSQL): it goes with them.
	if _, err := conn.Exec(ctx, `DELETE FROM replicator.truncates
		WHERE txid < pg_snapshot_xmax($1::pg_snapshot) AND pg_visible_in_snapshot(txid, $1::pg_snapshot)`, snap); err != nil {
		return total, fmt.Errorf("purge truncates up to batch %d: %w", applied, err)
	}
	if _, err := conn.Exec(ctx, `DELETE FROM replicator.ticks WHERE id < $1`, applied); err != nil {
		return total, fmt.Errorf("purge ticks before %d: %w", applied, err)
	}
	if total > 0 {
		c.log.Debug("purged changelog", zap.Int64("batch", applied), zap.Int64("rows", total))
	}
	return total, c.updateMetrics(ctx, conn.Conn(), applied, total > 0)
}

// UpdateMetrics sets the capture lag (now − the time of tick applied,
// both on the source's clock) and, at most every cfg.MetricsInterval
// unless force, the changelog row count (an exact count: the changelog is
// small once caught up).
func (c *Capture) UpdateMetrics(ctx context.Context, applied int64, force bool) error {
	conn, err := c.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	return c.updateMetrics(ctx, conn.Conn(), applied, force)
}

func (c *Capture) updateMetrics(ctx context.Context, conn *pgx.Conn, applied int64, force bool) error {
	var lag float64
	err := conn.QueryRow(ctx, `SELECT greatest(extract(epoch FROM clock_timestamp() - at), 0)::float8 FROM replicator.ticks WHERE id = $1`, applied).Scan(&lag)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("measure capture lag: %w", err)
	}
	if c.m != nil {
		c.m.CaptureLagSeconds.Set(lag)
	}
	c.mu.Lock()
	due := force || time.Since(c.lastCount) >= c.cfg.MetricsInterval
	if due {
		c.lastCount = time.Now()
	}
	c.mu.Unlock()
	if !due {
		return nil
	}
	var n int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM replicator.changelog`).Scan(&n); err != nil {
		return fmt.Errorf("count the changelog: %w", err)
	}
	if c.m != nil {
		c.m.ChangelogRows.Set(float64(n))
	}
	return nil
}
