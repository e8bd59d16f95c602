package snapshot

import (
	"context"
	"time"

	"go.uber.org/zap"
)

// progressDDL is the snapshot's progress on the target, one row, for
// `replicator status` (pkg/status): a person running status from another
// shell, or a script, sees the copy advance without the daemon's terminal.
const progressDDL = `CREATE TABLE IF NOT EXISTS replicator.snapshot_progress (
	id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	phase        text NOT NULL,
	tables_total bigint NOT NULL DEFAULT 0,
	tables_done  bigint NOT NULL DEFAULT 0,
	chunks_total bigint NOT NULL DEFAULT 0,
	chunks_done  bigint NOT NULL DEFAULT 0,
	rows         bigint NOT NULL DEFAULT 0,
	bytes        bigint NOT NULL DEFAULT 0,
	est_bytes    bigint NOT NULL DEFAULT 0,
	updated_at   timestamptz NOT NULL DEFAULT now())`

// recordProgress writes the reporter's counts into the target's progress
// row every interval, on a connection of its own, until the returned stop
// is called (which writes once more). Progress is informative: a failed
// write is logged and the copy goes on.
func recordProgress(ctx context.Context, targetURL string, rep *reporter, interval time.Duration, log *zap.Logger) (stop func()) {
	conn, err := connect(ctx, targetURL, "target", nil)
	if err == nil {
		_, err = conn.Exec(ctx, progressDDL)
	}
	if err != nil {
		log.Warn("snapshot progress will not be visible to `replicator status`", zap.Error(err))
		if conn != nil {
			conn.Close(context.Background())
		}
		return func() {}
	}
	write := func(ctx context.Context) {
		phase, _ := rep.phaseName.Load().(string)
		_, err := conn.Exec(ctx, `INSERT INTO replicator.snapshot_progress AS p (id, phase, tables_total, tables_done,
			chunks_total, chunks_done, rows, bytes, est_bytes) VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (id) DO UPDATE SET phase = EXCLUDED.phase, tables_total = EXCLUDED.tables_total,
			tables_done = EXCLUDED.tables_done, chunks_total = EXCLUDED.chunks_total, chunks_done = EXCLUDED.chunks_done,
			rows = EXCLUDED.rows, bytes = EXCLUDED.bytes, est_bytes = EXCLUDED.est_bytes, updated_at = now()`,
			phase, rep.tablesTotal.Load(), rep.tablesDone.Load(), rep.chunkTotal.Load(), rep.chunks.Load(),
			rep.rows.Load(), rep.bytes.Load(), rep.estBytes.Load())
		if err != nil && ctx.Err() == nil {
			log.Debug("write snapshot progress", zap.Error(err))
		}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				write(ctx)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		write(fctx)
		conn.Close(fctx)
	}
}
