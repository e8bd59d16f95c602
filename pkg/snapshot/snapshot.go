package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// ErrAlreadyDone is returned by Run when the target's snapshot is already
// complete: there is nothing to copy, the stream takes over from here.
var ErrAlreadyDone = errors.New("the target's snapshot is already done")

// ErrBusy is returned when another snapshot runs against the same target.
var ErrBusy = errors.New("another replicator snapshot is running against this target")

// IsDone reports whether the target's snapshot is complete; false with no
// error when no snapshot was ever started there.
func IsDone(ctx context.Context, target state.DB) (bool, error) {
	st, err := state.Load(ctx, target)
	if errors.Is(err, state.ErrNoMigration) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return st.SnapshotStatus == state.SnapshotDone, nil
}

// lockKey is the advisory lock (on the target) held for a whole run.
const lockKey = 0x7265706c69636174 // "replicat"

// Run copies schema and data from the source to the target under one
// consistent snapshot and records where the change stream must start. See
// the package documentation for the steps.
func Run(ctx context.Context, cfg Config, log *zap.Logger) (_ *Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	start := time.Now()
	rep := &reporter{p: cfg.Progress, m: cfg.Metrics}
	rep.phase("preflight")

	src, err := connect(ctx, cfg.SourceURL, "source", nil)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.Background())
	dst, err := connect(ctx, cfg.TargetURL, "target", nil)
	if err != nil {
		return nil, err
	}
	defer dst.Close(context.Background())

	// One run per target at a time: a second one would take the first's
	// unfinished state for an interrupted run and drop its tables. The
	// lock dies with this session, so a killed run does not hold it.
	var locked bool
	if err := dst.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(lockKey)).Scan(&locked); err != nil {
		return nil, fmt.Errorf("take the snapshot lock on the target: %w", err)
	}
	if !locked {
		return nil, fmt.Errorf("%w: wait for it to finish, or stop it", ErrBusy)
	}

	prev, err := state.Load(ctx, dst)
	if errors.Is(err, state.ErrNoMigration) {
		prev, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.SnapshotStatus == state.SnapshotDone {
		return nil, fmt.Errorf("%w (finished %s, stream from %s): run `replicator stream`; to copy again, run `replicator cleanup` and point --target at an empty database",
			ErrAlreadyDone, prev.UpdatedAt.UTC().Format(time.RFC3339), prev.ConsistentLSN)
	}

	pf, err := runPreflight(ctx, &cfg, src, dst, prev)
	if err != nil {
		return nil, err
	}
	capture, err := newCapture(pf.capture, &cfg, log)
	if err != nil {
		return nil, err
	}
	log.Info(pf.reason)
	log.Info("preflight passed", zap.String("capture", pf.capture), zap.Int("source_major", pf.sourceMajor),
		zap.String("pg_dump", pf.tools.pgDump), zap.Int("jobs", cfg.Jobs))

	var largeObjects int64
	if err := src.QueryRow(ctx, `SELECT count(*) FROM pg_largeobject_metadata`).Scan(&largeObjects); err == nil && largeObjects > 0 {
		log.Warn("the source holds large objects (pg_largeobject), which are neither copied nor streamed: move them with pg_dump --large-objects or store them in bytea columns",
			zap.Int64("large_objects", largeObjects))
	}

	res := &Result{Capture: pf.capture}
	if pf.restart != nil {
		res.StartedOver = true
		log.Warn("an earlier snapshot of this target was interrupted; starting over cleanly: dropping its slot and the tables it created, then copying everything again under a new snapshot (resuming would mix two snapshots)",
			zap.Time("interrupted_run_started", pf.restart.StartedAt))
		var old Capture
		switch {
		case pf.restart.Capture == state.CaptureLogical && pf.restart.SlotName != "":
			old = &logicalCapture{sourceURL: cfg.SourceURL, slot: pf.restart.SlotName, log: log}
		case pf.restart.Capture == state.CaptureTrigger:
			old = &triggerCapture{sourceURL: cfg.SourceURL, cfg: cfg.Trigger, log: log}
		}
		if old != nil {
			if err := old.Reset(ctx); err != nil {
				return nil, err
			}
		}
		if err := cleanTarget(ctx, dst, log); err != nil {
			return nil, err
		}
	}
	for _, r := range pf.noIdentity {
		if _, err := src.Exec(ctx, "ALTER TABLE "+r.String()+" REPLICA IDENTITY FULL"); err != nil {
			return nil, fmt.Errorf("set REPLICA IDENTITY FULL on source table %s: %w", r, err)
		}
		log.Warn("set REPLICA IDENTITY FULL on a source table without a primary key (its updates and deletes now log whole old rows)", zap.Stringer("table", r))
	}

	// The target is marked as ours before the slot exists, so that a crash
	// between the two is recognized next time and the slot dropped.
	begin := state.State{Capture: pf.capture, SnapshotStatus: state.SnapshotCopying}
	if pf.capture == CaptureLogical {
		begin.SlotName, begin.Publication = cfg.SlotName, cfg.Publication
	}
	if err := state.Begin(ctx, dst, &begin); err != nil {
		return nil, err
	}
	// From here a failure is kept for `replicator status` (best effort: the
	// target may be what failed).
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if dst.IsClosed() {
				return
			}
			state.RecordError(rctx, dst, pgutil.RedactText("snapshot: "+err.Error()))
		}
	}()
	// Runs before the deferred record above, so status shows the hint too.
	defer func() { err = withRerunHint(err) }()

	rep.phase("schema")
	stopRecording := recordProgress(ctx, cfg.TargetURL, rep, 2*time.Second, log)
	defer stopRecording()
	point, err := capture.Start(ctx)
	if err != nil {
		return nil, err
	}
	defer capture.Release(context.Background())
	defer capture.Close() // trigger capture's ticker runs until the run ends
	res.SlotName, res.Publication, res.ConsistentLSN = point.State.SlotName, point.State.Publication, point.State.ConsistentLSN
	res.SnapshotXmin = point.State.SnapshotXmin
	st := point.State
	st.SnapshotStatus = state.SnapshotCopying
	if err := state.Begin(ctx, dst, &st); err != nil {
		return nil, err
	}

	// Everything the source is read for from here on goes through the
	// exported snapshot: the catalog, the schema dump, the rows.
	ctl, err := openSnapshotConn(ctx, cfg.SourceURL, point.SnapshotName)
	if err != nil {
		return nil, err
	}
	defer ctl.Close(context.Background())
	tables, err := listTables(ctx, ctl)
	if err != nil {
		return nil, err
	}
	if err := lockTables(ctx, ctl, tables, false); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "replicator-schema-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dump, err := dumpSchema(ctx, pf.tools, cfg.SourceURL, point.SnapshotName, tmp)
	if err != nil {
		return nil, err
	}
	// Locks every worker would hold up front, against the source's shared
	// lock table (max_locks_per_transaction × connections, shared by all
	// sessions): use at most half of it.
	var lockSlots int64
	if err := ctl.QueryRow(ctx, `SELECT current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`).Scan(&lockSlots); err != nil {
		return nil, fmt.Errorf("read the source's lock table size: %w", err)
	}
	lockAll := int64(cfg.Jobs+1)*int64(len(tables)) <= lockSlots/2 && !cfg.lockPerTable
	if !lockAll {
		log.Info("too many tables for every worker to lock them all up front; workers lock each table when they first copy it",
			zap.Int("tables", len(tables)), zap.Int64("lock_slots", lockSlots))
	}
	workers, err := openWorkers(ctx, &cfg, cfg.Jobs, point.SnapshotName, tables, pf.targetLZ4, lockAll)
	if err != nil {
		return nil, err
	}
	defer closeWorkers(workers)
	// Every reader has imported the snapshot: the exporting session may go.
	if err := capture.Release(ctx); err != nil {
		log.Debug("closing the replication session", zap.Error(err))
	}

	if err := dump.restore(ctx, dst, cfg.TargetURL, "pre-data", 1, 0); err != nil {
		return nil, err
	}
	log.Info("schema created on the target (tables, types, functions; indexes and constraints come after the data)")

	chunks, copies := planChunks(tables, cfg.ChunkBytes, pf.sourceMajor >= 14)
	plan := make([]TablePlan, len(copies))
	for i, c := range copies {
		plan[i] = TablePlan{Name: c.name, EstBytes: c.Bytes, EstRows: c.EstRows, Chunks: int(c.remaining.Load()),
			Unlogged: c.Unlogged, Partition: c.Partition}
		if c.Unlogged && pf.capture == CaptureLogical {
			log.Warn("copying an unlogged table: its later changes are not in the change stream (PostgreSQL does not decode unlogged tables)",
				zap.String("table", c.name))
		}
	}
	// Nothing is logged between the "copy" and "indexes" phases but
	// errors, so that a terminal's progress bars draw undisturbed.
	log.Info("copying data", zap.Int("tables", len(tables)), zap.Int("chunks", len(chunks)), zap.Int("jobs", len(workers)))
	rep.plan(plan)
	rep.phase("copy")
	copyStart := time.Now()
	if err := copyAll(ctx, workers, chunks, rep, log); err != nil {
		return nil, err
	}
	closeWorkers(workers)
	workers = nil
	// What is left to read of the source is read now, and the snapshot
	// ends, so that the source's tables are unlocked before the index
	// builds. Sequences are not transactional: their values now are at
	// least those of the snapshot, never less, as the stream needs.
	seqs, err := readSequences(ctx, ctl)
	if err != nil {
		return nil, err
	}
	matviews, err := listMatviews(ctx, ctl)
	if err != nil {
		return nil, err
	}
	if _, err := ctl.Exec(ctx, "COMMIT"); err != nil {
		return nil, fmt.Errorf("end the snapshot transaction on the source: %w", err)
	}
	rep.phase("indexes")
	log.Info("data copied", zap.Int64("rows", rep.rows.Load()), zap.Int64("bytes", rep.bytes.Load()),
		zap.Duration("took", time.Since(copyStart).Round(time.Millisecond)))

	idxStart := time.Now()
	if err := dump.restore(ctx, dst, cfg.TargetURL, "post-data", cfg.Jobs, max(64, cfg.IndexMemoryMB/cfg.Jobs)); err != nil {
		return nil, err
	}
	log.Info("indexes, constraints and triggers built", zap.Duration("took", time.Since(idxStart).Round(time.Millisecond)))
	if n, err := refreshMatviews(ctx, matviews, dst); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("materialized views filled on the target", zap.Int("count", n))
	}

	rep.phase("sequences")
	if err := setSequences(ctx, dst, seqs); err != nil {
		return nil, err
	}
	rep.phase("analyze")
	anStart := time.Now()
	if err := analyzeTables(ctx, cfg.TargetURL, tables, cfg.Jobs); err != nil {
		return nil, err
	}
	log.Info("planner statistics gathered on the target", zap.Duration("took", time.Since(anStart).Round(time.Millisecond)))

	if err := state.SetSnapshotStatus(ctx, dst, state.SnapshotDone); err != nil {
		return nil, err
	}
	rep.phase("done")
	res.Tables, res.Rows, res.Bytes, res.Sequences = len(tables), rep.rows.Load(), rep.bytes.Load(), len(seqs)
	res.Duration = time.Since(start)
	log.Info("snapshot done", zap.Int("tables", res.Tables), zap.Int64("rows", res.Rows), zap.Int64("bytes", res.Bytes),
		zap.Int("sequences", res.Sequences), zap.String("consistent_lsn", res.ConsistentLSN),
		zap.Duration("took", res.Duration.Round(time.Millisecond)))
	return res, nil
}
