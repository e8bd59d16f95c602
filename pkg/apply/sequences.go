package apply

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgcatalog"
	"replicator/pkg/pgutil"
)

// Sequences while streaming. Neither capture carries sequences (pgoutput
// has no message for them; a trigger does not fire on nextval), so the
// snapshot sets them once and cutover moves them past the source at the
// end. In between the target's sequences would fall ever further behind,
// and a `replicator verify` run for confidence during the sync window
// would report them. The stream therefore reads the source's sequences
// every StreamConfig.SequenceInterval and moves the target's forward to
// them, never backwards: a target sequence that is ahead (cutover's
// margin, a value taken on the target) stays where it is. Cutover still
// moves them at the end, under the write freeze, with its margin: this
// only keeps the distance small.

// SyncSequences moves every target sequence that is behind its source
// sequence to the source's value, in one statement, and returns how many
// it moved. Source sequences never used (is_called false) and sequences
// missing on the target are left alone (verify and cutover name those).
// It may be repeated.
func SyncSequences(ctx context.Context, source, target *pgx.Conn) (int, error) {
	// One query, not one per sequence: this runs every few seconds
	// against the production source. last_value is NULL for a sequence
	// never called.
	rows, err := source.Query(ctx, `SELECT n.nspname::text, c.relname::text, s.last_value
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_sequences s ON s.schemaname = n.nspname AND s.sequencename = c.relname
		WHERE c.relkind = 'S' AND s.last_value IS NOT NULL AND `+pgcatalog.UserRelation)
	if err != nil {
		return 0, fmt.Errorf("read the source's sequences: %w", err)
	}
	var schemas, names []string
	var values []int64
	for rows.Next() {
		var schema, name string
		var v int64
		if err := rows.Scan(&schema, &name, &v); err != nil {
			rows.Close()
			return 0, fmt.Errorf("read the source's sequences: %w", err)
		}
		schemas, names, values = append(schemas, schema), append(names, name), append(values, v)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read the source's sequences: %w", err)
	}
	if len(names) == 0 {
		return 0, nil
	}
	// What the target has handed out so far is last_value, or start -
	// increment for a sequence never called (pg_sequences shows NULL).
	// Nothing takes values on the target while the stream runs (the
	// application writes to the source), so comparing and setting in one
	// statement is enough.
	var moved int
	err = target.QueryRow(ctx, `SELECT count(setval(format('%I.%I', s.schemaname, s.sequencename)::regclass, u.v, true))
		FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(sch, nam, v)
		JOIN pg_sequences s ON s.schemaname = u.sch AND s.sequencename = u.nam
		WHERE CASE WHEN s.increment_by < 0 THEN coalesce(s.last_value, s.start_value - s.increment_by) > u.v
		           ELSE coalesce(s.last_value, s.start_value - s.increment_by) < u.v END`,
		schemas, names, values).Scan(&moved)
	if err != nil {
		return 0, fmt.Errorf("target: move sequences forward to the source's values: %w", err)
	}
	return moved, nil
}

// withSequences runs keepSequences beside watch, for as long as watch
// runs, and waits for both.
func withSequences(cfg StreamConfig, log *zap.Logger, watch func(context.Context)) func(context.Context) {
	if cfg.SequenceInterval < 0 {
		return watch
	}
	return func(ctx context.Context) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			keepSequences(ctx, cfg, log)
		}()
		watch(ctx)
		<-done
	}
}

// keepSequences calls SyncSequences every cfg.SequenceInterval on
// connections of its own until ctx ends. A failure is logged and tried
// again at the next interval: the stream's data does not depend on it.
func keepSequences(ctx context.Context, cfg StreamConfig, log *zap.Logger) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("sequence sync stopped by a panic (a bug: please report it); cutover still moves the sequences",
				zap.String("panic", pgutil.RedactText(fmt.Sprint(r))))
		}
	}()
	var src, tgt *pgx.Conn
	closeAll := func() {
		for _, c := range []*pgx.Conn{src, tgt} {
			if c != nil {
				c.Close(context.Background())
			}
		}
		src, tgt = nil, nil
	}
	defer closeAll()
	tick := time.NewTicker(cfg.SequenceInterval)
	defer tick.Stop()
	failing := false
	for {
		err := func() error {
			var err error
			if src == nil {
				if src, err = pgutil.Connect(ctx, cfg.SourceURL, "source"); err != nil {
					return err
				}
			}
			if tgt == nil {
				if tgt, err = pgutil.Connect(ctx, cfg.TargetURL, "target"); err != nil {
					return err
				}
			}
			qctx, cancel := context.WithTimeout(ctx, cfg.SequenceInterval+30*time.Second)
			defer cancel()
			n, err := SyncSequences(qctx, src, tgt)
			if err == nil && n > 0 {
				log.Debug("target sequences moved forward to the source's values", zap.Int("sequences", n))
			}
			return err
		}()
		if err != nil && ctx.Err() == nil {
			closeAll()
			if !failing {
				log.Warn("could not bring the target's sequences up to the source's; retrying (cutover still moves them)", zap.Error(err))
			}
			failing = true
		} else if err == nil {
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
