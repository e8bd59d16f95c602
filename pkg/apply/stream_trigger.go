package apply

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/schemachange"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// attemptTrigger is one session of the stream under trigger capture: the
// changelog's batches, each one source "transaction" positioned by its
// batch id, go through the same applier as logical capture. The applier
// never splits a transaction across target transactions, so a target
// commit holds whole batches only, recording the last one's batch id
// (state.RecordApplied); after a crash the stream resumes after it.
func attemptTrigger(ctx context.Context, cfg StreamConfig, target *pgx.Conn, st *state.State, m *Metrics, log *zap.Logger,
	started *bool, schema *schemachange.Handler) error {
	var src *trigger.Source
	for try := 0; ; try++ {
		var err error
		src, err = trigger.OpenSource(ctx, cfg.SourceURL, trigger.SourceConfig{Capture: cfg.Trigger, Applied: st.Applied.ID(),
			TxnMemory: cfg.Capture.TxnMemory, SpillDir: cfg.Capture.SpillDir}, log, cfg.TriggerMetrics)
		if err == nil {
			break
		}
		// A table created on the source since the schema was brought
		// over has no capture yet, and opening refuses it: bring it over
		// (which installs its capture) and open again.
		if try >= 3 {
			return &StageError{"capture", err}
		}
		changed, serr := schema.Refresh(ctx)
		var re *schemachange.RefusedError
		if errors.As(serr, &re) {
			return &StageError{"capture", serr} // the change that made the source refuse to open
		}
		if serr != nil || !changed {
			if serr != nil {
				log.Warn("could not bring the source's schema changes over", zap.Error(serr))
			}
			return &StageError{"capture", err}
		}
	}
	defer src.Close()
	ap, err := NewApplier(ctx, target, cfg.Apply, st.Applied, st.AppliedCommitTime, m, log)
	if err != nil {
		return &StageError{"apply", err}
	}
	ap.SetSchemaGate(schema)
	*started = true
	log.Info("streaming trigger capture batches", zap.Int64("after_batch", st.Applied.ID()))

	err = applyAndWatch(ctx, ap, src, m, log, withSequences(cfg, log, func(ctx context.Context) { watchTriggerLag(ctx, src, ap, m, log) }))
	return explainRefusedRow(ctx, schema, err, log)
}

// watchTriggerLag keeps replicator_apply_lag_seconds current: now minus
// the tick time of the oldest batch being applied (every transaction of a
// batch committed before its tick), 0 once nothing waits. The changelog
// size and the capture lag are the trigger package's own gauges.
func watchTriggerLag(ctx context.Context, src *trigger.Source, ap *Applier, m *Metrics, log *zap.Logger) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		if first, busy := ap.Busy(); busy {
			m.ApplyLagSeconds.Set(max(0, time.Since(first).Seconds()))
		} else if !src.Pending() {
			m.ApplyLagSeconds.Set(0)
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			log.Info("stream progress", zap.Int64("applied_batch", ap.Applied().ID()))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
