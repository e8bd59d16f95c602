package snapshot

import (
	"context"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/state"
)

// chunkedPhases is Run with Config.Chunked: the copy goes through the
// chunk ledger (ledger.go), each chunk under a short snapshot of its own,
// and an interrupted run is resumed where the ledger says it stopped, as
// long as its capture point is still on the source.
func (r *run) chunkedPhases() []func(context.Context) error {
	return []func(context.Context) error{
		r.connect, r.lockTarget, r.loadPrevious, r.preflight, r.resumeOrStartOver, r.setReplicaIdentity,
		r.markTargetFresh, r.startCaptureFresh, r.readSchema, r.createSchemaFresh, r.copyChunks,
		r.readSequencesNow, r.buildIndexes, r.setSequences, r.analyze, r.markDone,
	}
}

// resumeOrStartOver resumes an interrupted chunked run when the target's
// ledger holds its plan and the source still holds its capture point (the
// slot, or trigger capture's changelog and tick 0: a failover loses a
// slot); otherwise it starts over as Run always does.
func (r *run) resumeOrStartOver(ctx context.Context) error {
	prev := r.pf.restart
	if prev == nil {
		return nil
	}
	var planned int
	if err := r.dst.QueryRow(ctx, `SELECT CASE WHEN to_regclass('replicator.chunks') IS NULL THEN 0
		ELSE (SELECT count(*) FROM replicator.chunks) END`).Scan(&planned); err != nil {
		return fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	keep, why := planned > 0 && prev.Capture == r.pf.capture, "the interrupted run had not planned its chunks"
	if keep {
		var err error
		if keep, why, err = r.capturePointKept(ctx, prev); err != nil {
			return err
		}
	}
	if !keep {
		r.log.Warn("cannot resume the interrupted snapshot: " + why)
		if _, err := r.dst.Exec(ctx, `DROP TABLE IF EXISTS replicator.chunks`); err != nil {
			return fmt.Errorf("drop the interrupted run's chunk ledger on the target: %w", err)
		}
		return r.startOver(ctx)
	}
	r.resuming = true
	r.marked = true
	r.point = &CapturePoint{State: *prev}
	r.res.SlotName, r.res.Publication, r.res.ConsistentLSN, r.res.SnapshotXmin = prev.SlotName, prev.Publication, prev.ConsistentLSN, prev.SnapshotXmin
	r.rep.phase("schema")
	r.later(recordProgress(ctx, r.cfg.TargetURL, r.rep, 2*time.Second, r.log))
	if tc, ok := r.capture.(*triggerCapture); ok {
		tc.startTicker()
		r.later(tc.Close)
	}
	return nil
}

// capturePointKept tells whether the interrupted run's capture point is
// still on the source, and why not.
func (r *run) capturePointKept(ctx context.Context, prev *state.State) (bool, string, error) {
	switch prev.Capture {
	case state.CaptureLogical:
		var exists bool
		if err := r.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, prev.SlotName).Scan(&exists); err != nil {
			return false, "", fmt.Errorf("look up slot %s on the source: %w", prev.SlotName, err)
		}
		return exists, fmt.Sprintf("its slot %s is gone from the source (a failover or restore drops slots)", prev.SlotName), nil
	case state.CaptureTrigger:
		var exists bool
		if err := r.src.QueryRow(ctx, `SELECT to_regclass('replicator.ticks') IS NOT NULL AND EXISTS (SELECT 1 FROM replicator.ticks WHERE id = 0)`).Scan(&exists); err != nil {
			return false, "", fmt.Errorf("look up trigger capture's tick 0 on the source: %w", err)
		}
		return exists, "trigger capture's changelog and tick 0 are gone from the source", nil
	}
	return false, "its capture mode is not known", nil
}

func (r *run) markTargetFresh(ctx context.Context) error {
	if r.resuming {
		return nil
	}
	return r.markTarget(ctx)
}

func (r *run) startCaptureFresh(ctx context.Context) error {
	if r.resuming {
		return nil
	}
	return r.startCapture(ctx)
}

// readSchema lists the tables and dumps the schema: through the exported
// snapshot on a fresh run (then the exporting session goes: chunks need
// no shared snapshot), as the source is now on a resumed one.
func (r *run) readSchema(ctx context.Context) (err error) {
	if r.tables, err = listTables(ctx, r.src); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "replicator-schema-")
	if err != nil {
		return err
	}
	r.later(func() { os.RemoveAll(tmp) })
	if r.dump, err = dumpSchema(ctx, r.pf.tools, r.cfg.SourceURL, r.point.SnapshotName, tmp); err != nil {
		return err
	}
	if !r.resuming {
		if err := r.capture.Release(ctx); err != nil {
			r.log.Debug("closing the replication session", zap.Error(err))
		}
	}
	return nil
}

func (r *run) createSchemaFresh(ctx context.Context) error {
	if r.resuming {
		return nil
	}
	return r.createSchema(ctx)
}

func (r *run) copyChunks(ctx context.Context) error {
	r.rep.phase("copy")
	r.copyStart = time.Now()
	return copyLedger(ctx, r.cfg, r.tables, r.pf.targetLZ4, r.rep, r.log)
}

// readSequencesNow reads the sequences after the copy: values read now are
// at least those any chunk saw, never less, as the stream needs.
func (r *run) readSequencesNow(ctx context.Context) (err error) {
	if r.seqs, err = readSequences(ctx, r.src); err != nil {
		return err
	}
	r.matviews, err = listMatviews(ctx, r.src)
	return err
}
