package snapshot

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// Large objects. pg_dump --schema-only leaves them out, the table copy
// does not see them (they live in pg_largeobject, a catalog), and neither
// capture carries later changes to them (logical decoding skips catalogs;
// no trigger fires on lo_write). So the snapshot copies them itself,
// through the snapshot (the same instant as the tables whose rows refer
// to them by oid), each with its own oid, in chunks of loChunk bytes: no
// object is held whole in memory, whatever its size. Changes made to them
// afterwards are not streamed: verify compares them (count and checksum)
// and audit states the limit.

const (
	loChunk    = 1 << 20  // bytes read and written per call
	loPage     = 1000     // oids listed per query
	loTxnBytes = 64 << 20 // target transaction size before a commit
)

// copyLargeObjects copies every large object that src (a session inside
// the snapshot) sees into dst, replacing any of the same oid there (a
// previous run's). It returns the objects and bytes copied.
func copyLargeObjects(ctx context.Context, src, dst *pgx.Conn) (objects int, bytes int64, err error) {
	var tx pgx.Tx
	defer func() {
		if tx != nil {
			tx.Rollback(context.Background())
		}
	}()
	txBytes := int64(0)
	var after uint32
	for {
		rows, err := src.Query(ctx, `SELECT oid FROM pg_largeobject_metadata WHERE oid > $1 ORDER BY oid LIMIT $2`, after, loPage)
		if err != nil {
			return objects, bytes, fmt.Errorf("list the source's large objects: %w", err)
		}
		oids, err := pgx.CollectRows(rows, pgx.RowTo[uint32])
		if err != nil {
			return objects, bytes, fmt.Errorf("list the source's large objects (the source user must own them, or lo_compat_privileges be on): %w", err)
		}
		if len(oids) == 0 {
			break
		}
		for _, oid := range oids {
			if tx == nil {
				if tx, err = dst.Begin(ctx); err != nil {
					return objects, bytes, fmt.Errorf("target: begin: %w", err)
				}
			}
			n, err := copyLargeObject(ctx, src, tx, oid)
			if err != nil {
				return objects, bytes, err
			}
			objects++
			bytes += n
			txBytes += n
			if txBytes >= loTxnBytes || objects%loPage == 0 {
				if err := tx.Commit(ctx); err != nil {
					return objects, bytes, fmt.Errorf("target: commit large objects: %w", err)
				}
				tx, txBytes = nil, 0
			}
		}
		after = oids[len(oids)-1]
	}
	if tx != nil {
		if err := tx.Commit(ctx); err != nil {
			return objects, bytes, fmt.Errorf("target: commit large objects: %w", err)
		}
		tx = nil
	}
	return objects, bytes, nil
}

func copyLargeObject(ctx context.Context, src *pgx.Conn, tx pgx.Tx, oid uint32) (int64, error) {
	if _, err := tx.Exec(ctx, `SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = $1`, oid); err != nil {
		return 0, fmt.Errorf("target: replace large object %d: %w", oid, err)
	}
	if _, err := tx.Exec(ctx, `SELECT lo_create($1)`, oid); err != nil {
		return 0, fmt.Errorf("target: create large object %d: %w", oid, err)
	}
	var off int64
	for {
		var chunk []byte
		if err := src.QueryRow(ctx, `SELECT lo_get($1, $2, $3)`, oid, off, loChunk).Scan(&chunk); err != nil {
			return off, fmt.Errorf("read large object %d on the source at byte %d (the source user must own it, or lo_compat_privileges be on): %w", oid, off, err)
		}
		if len(chunk) > 0 {
			if _, err := tx.Exec(ctx, `SELECT lo_put($1, $2, $3)`, oid, off, chunk); err != nil {
				return off, fmt.Errorf("target: write large object %d at byte %d: %w", oid, off, err)
			}
		}
		off += int64(len(chunk))
		if len(chunk) < loChunk {
			return off, nil
		}
	}
}

// copyLargeObjects is the snapshot's phase: after the tables, inside the
// same snapshot.
func (r *run) copyLargeObjects(ctx context.Context) error { return r.copyLargeObjectsFrom(ctx, r.ctl) }

// copyLargeObjectsNow is the chunked copy's phase, after the chunks: no
// snapshot is held, each listing and each 1 MiB read is a statement of its
// own, so that no source transaction outlives a read. Their later changes
// are not streamed either way (verify compares them).
func (r *run) copyLargeObjectsNow(ctx context.Context) error {
	return r.copyLargeObjectsFrom(ctx, r.src)
}

func (r *run) copyLargeObjectsFrom(ctx context.Context, src *pgx.Conn) error {
	start := time.Now()
	n, b, err := copyLargeObjects(ctx, src, r.dst)
	if err != nil {
		return err
	}
	if n > 0 {
		r.log.Info("large objects copied (later changes to them are not streamed: verify compares them)",
			zap.Int("objects", n), zap.Int64("bytes", b), zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	}
	return nil
}
