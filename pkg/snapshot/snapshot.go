package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
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
const lockKey = state.SnapshotLockKey

// Run copies schema and data from the source to the target under one
// consistent snapshot and records where the change stream must start. See
// the package documentation for the steps; each is one phase below.
func Run(ctx context.Context, cfg Config, log *zap.Logger) (_ *Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	r := &run{cfg: &cfg, log: log, start: time.Now(), rep: &reporter{p: cfg.Progress, m: cfg.Metrics}}
	// Cleanups run in this order: what the phases opened (in reverse),
	// then the failure is recorded on the target, then the connections
	// close.
	defer r.closeConnections()
	defer func() {
		if err != nil && ctx.Err() != nil {
			// SIGINT/SIGTERM, not a network failure: say what is left.
			err = r.interrupted()
		}
		if err != nil && r.marked {
			// The hint comes first so that status shows it too.
			err = withRerunHint(err, r.cfg.OneSnapshot)
			r.recordFailure(err)
		}
	}()
	defer r.undo()

	r.rep.phase("preflight")
	phases := []func(context.Context) error{
		r.connect, r.lockTarget, r.loadPrevious, r.preflight, r.startOver, r.setReplicaIdentity, r.markTarget,
		r.startCapture, r.openReaders, r.createSchema, r.copyData, r.copyLargeObjects, r.endSnapshot, r.buildIndexes,
		r.setSequences, r.setDatabaseSettings, r.analyze, r.markDone,
	}
	if !cfg.OneSnapshot {
		phases = r.chunkedPhases()
	}
	for _, phase := range phases {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	return r.res, nil
}

// run is one snapshot run: what its phases open and learn, in the order
// they do.
type run struct {
	cfg   *Config
	log   *zap.Logger
	start time.Time
	rep   *reporter

	src, dst *pgx.Conn
	prev     *state.State // the target's state row before this run; nil when none
	pf       *preflight
	capture  Capture
	res      *Result
	// marked is set once the target's state row says this run is copying:
	// from then on a failure is recorded there.
	marked bool
	// resuming is set when a chunked run continues an interrupted one.
	resuming bool
	// cleanups undo what the phases opened, run in reverse by undo.
	cleanups []func()

	point     *CapturePoint
	ctl       *pgx.Conn // the catalog session, inside the snapshot
	tables    []*table
	dump      *schemaDump
	workers   []*worker
	seqs      []sequence
	matviews  []string
	copyStart time.Time
	pd        *postData // the chunked copy's post-data units
}

// later registers f to run when Run returns, before the connections close.
func (r *run) later(f func()) { r.cleanups = append(r.cleanups, f) }

func (r *run) undo() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func (r *run) closeConnections() {
	if r.dst != nil {
		r.dst.Close(context.Background())
	}
	if r.src != nil {
		r.src.Close(context.Background())
	}
}

// recordFailure keeps the error for `replicator status`, best effort: the
// target may be what failed.
func (r *run) recordFailure(err error) {
	if r.dst == nil || r.dst.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	state.RecordError(ctx, r.dst, pgutil.RedactText("snapshot: "+err.Error()))
}

func (r *run) connect(ctx context.Context) (err error) {
	if r.src, err = connect(ctx, r.cfg.SourceURL, "source", nil); err != nil {
		return err
	}
	r.dst, err = connect(ctx, r.cfg.TargetURL, "target", nil)
	return err
}

// lockTarget allows one run per target at a time: a second one would take
// the first's unfinished state for an interrupted run and drop its tables.
// The lock dies with this session, so a killed run does not hold it.
func (r *run) lockTarget(ctx context.Context) error {
	// A run interrupted a moment ago may still hold it: its session ends
	// once the server notices the closed connection. A few seconds' grace
	// tells that from a run still going.
	for deadline := time.Now().Add(5 * time.Second); ; {
		var locked bool
		if err := r.dst.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(lockKey)).Scan(&locked); err != nil {
			return fmt.Errorf("take the snapshot lock on the target: %w", err)
		}
		if locked {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: wait for it to finish, or stop it", ErrBusy)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// loadPrevious reads what an earlier run left in the target's state row.
func (r *run) loadPrevious(ctx context.Context) error {
	prev, err := state.Load(ctx, r.dst)
	if errors.Is(err, state.ErrNoMigration) {
		return nil
	}
	if err != nil {
		return err
	}
	if prev.SnapshotStatus == state.SnapshotDone {
		return fmt.Errorf("%w (finished %s, stream from %s): run `replicator stream`; to copy again, run `replicator cleanup` and point --target at an empty database",
			ErrAlreadyDone, prev.UpdatedAt.UTC().Format(time.RFC3339), prev.ConsistentLSN)
	}
	r.prev = prev
	return nil
}

func (r *run) preflight(ctx context.Context) (err error) {
	if r.pf, err = runPreflight(ctx, r.cfg, r.src, r.dst, r.prev); err != nil {
		return err
	}
	if r.capture, err = newCapture(r.pf.capture, r.cfg, r.log); err != nil {
		return err
	}
	r.log.Info(r.pf.reason)
	r.log.Info("preflight passed", zap.String("capture", r.pf.capture), zap.Int("source_major", r.pf.sourceMajor),
		zap.String("pg_dump", r.pf.tools.pgDump), zap.Int("jobs", r.cfg.Jobs))
	var largeObjects int64
	if err := r.src.QueryRow(ctx, `SELECT count(*) FROM pg_largeobject_metadata`).Scan(&largeObjects); err == nil && largeObjects > 0 {
		r.log.Warn("the source holds large objects (pg_largeobject): the snapshot copies them, but changes made to them later are not streamed: verify compares them; rewrite changed ones after cutover, or store them in bytea columns",
			zap.Int64("large_objects", largeObjects))
	}
	r.res = &Result{Capture: r.pf.capture}
	return nil
}

// startOver drops what an interrupted earlier run left on both sides (see
// cleanTarget for why it does not resume).
func (r *run) startOver(ctx context.Context) error {
	if r.pf.restart == nil {
		return nil
	}
	r.res.StartedOver = true
	r.log.Warn("an earlier snapshot of this target was interrupted; starting over cleanly: dropping its slot and the tables it created, then copying everything again under a new snapshot (resuming would mix two snapshots)",
		zap.Time("interrupted_run_started", r.pf.restart.StartedAt))
	var old Capture
	switch {
	case r.pf.restart.Capture == state.CaptureLogical && r.pf.restart.SlotName != "":
		old = &logicalCapture{sourceURL: r.cfg.SourceURL, slot: r.pf.restart.SlotName, log: r.log}
	case r.pf.restart.Capture == state.CaptureTrigger:
		old = &triggerCapture{sourceURL: r.cfg.SourceURL, cfg: r.cfg.Trigger, log: r.log}
	}
	if old != nil {
		if err := old.Reset(ctx); err != nil {
			return err
		}
	}
	return cleanTarget(ctx, r.dst, r.log)
}

func (r *run) setReplicaIdentity(ctx context.Context) error {
	for _, t := range r.pf.noIdentity {
		if _, err := r.src.Exec(ctx, "ALTER TABLE "+t.String()+" REPLICA IDENTITY FULL"); err != nil {
			return fmt.Errorf("set REPLICA IDENTITY FULL on source table %s: %w", t, err)
		}
		r.log.Warn("set REPLICA IDENTITY FULL on a source table without a primary key (its updates and deletes now log whole old rows)", zap.Stringer("table", t))
	}
	return nil
}

// markTarget marks the target as ours before the slot exists, so that a
// crash between the two is recognized next time and the slot dropped.
func (r *run) markTarget(ctx context.Context) error {
	begin := state.State{Capture: r.pf.capture, SnapshotStatus: state.SnapshotCopying}
	if r.pf.capture == CaptureLogical {
		begin.SlotName, begin.Publication = r.cfg.SlotName, r.cfg.Publication
	}
	if err := state.Begin(ctx, r.dst, &begin); err != nil {
		return err
	}
	r.marked = true
	// A fresh copy: an earlier run's chunk ledger (whose snapshots the
	// stream would filter by) must not outlive it.
	if _, err := r.dst.Exec(ctx, `DROP TABLE IF EXISTS replicator.chunks, replicator.postdata`); err != nil {
		return fmt.Errorf("drop an earlier run's chunk ledger on the target: %w", err)
	}
	return nil
}

// startCapture creates the capture point and records where the stream
// starts.
func (r *run) startCapture(ctx context.Context) error {
	r.rep.phase("schema")
	r.later(recordProgress(ctx, r.cfg.TargetURL, r.rep, 2*time.Second, r.log))
	point, err := r.capture.Start(ctx)
	if err != nil {
		return err
	}
	r.later(func() { r.capture.Release(context.Background()) })
	r.later(r.capture.Close) // trigger capture's ticker runs until the run ends
	r.point = point
	r.res.SlotName, r.res.Publication, r.res.ConsistentLSN = point.State.SlotName, point.State.Publication, point.State.ConsistentLSN
	r.res.SnapshotXmin = point.State.SnapshotXmin
	st := point.State
	st.SnapshotStatus = state.SnapshotCopying
	return state.Begin(ctx, r.dst, &st)
}

// openReaders opens every session that reads the source through the
// exported snapshot: the catalog, the schema dump, the copy workers. Then
// the exporting session may go.
func (r *run) openReaders(ctx context.Context) (err error) {
	if r.ctl, err = openSnapshotConn(ctx, r.cfg.SourceURL, r.point.SnapshotName); err != nil {
		return err
	}
	ctl := r.ctl
	r.later(func() { ctl.Close(context.Background()) })
	if r.tables, err = listTables(ctx, r.ctl); err != nil {
		return err
	}
	if err := lockTables(ctx, r.ctl, r.tables, false); err != nil {
		return err
	}
	if err := r.dumpSchema(ctx); err != nil {
		return err
	}
	lockAll, err := r.lockUpFront(ctx)
	if err != nil {
		return err
	}
	if r.workers, err = openWorkers(ctx, r.cfg, r.cfg.Jobs, r.point.SnapshotName, r.tables, r.pf.targetLZ4, lockAll); err != nil {
		return err
	}
	r.later(func() { closeWorkers(r.workers) })
	if err := r.capture.Release(ctx); err != nil {
		r.log.Debug("closing the replication session", zap.Error(err))
	}
	return nil
}

// lockUpFront tells whether every worker may lock every table up front:
// those locks share the source's lock table (max_locks_per_transaction ×
// connections, shared by all sessions) with the application, so they may
// use at most half of it.
func (r *run) lockUpFront(ctx context.Context) (bool, error) {
	var lockSlots int64
	if err := r.ctl.QueryRow(ctx, `SELECT current_setting('max_locks_per_transaction')::bigint *
		(current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint)`).Scan(&lockSlots); err != nil {
		return false, fmt.Errorf("read the source's lock table size: %w", err)
	}
	lockAll := int64(r.cfg.Jobs+1)*int64(len(r.tables)) <= lockSlots/2 && !r.cfg.lockPerTable
	if !lockAll {
		r.log.Info("too many tables for every worker to lock them all up front; workers lock each table when they first copy it",
			zap.Int("tables", len(r.tables)), zap.Int64("lock_slots", lockSlots))
	}
	return lockAll, nil
}

func (r *run) createSchema(ctx context.Context) error {
	if err := r.dump.restore(ctx, r.dst, r.cfg.TargetURL, "pre-data", 1, 0); err != nil {
		return err
	}
	r.log.Info("schema created on the target (tables, types, functions; indexes and constraints come after the data)")
	return nil
}

func (r *run) copyData(ctx context.Context) error {
	if err := chooseFormats(ctx, r.ctl, r.dst, r.tables, r.cfg.CopyFormat, r.log); err != nil {
		return err
	}
	chunks, copies := planChunks(r.tables, r.cfg.ChunkBytes, r.pf.sourceMajor >= 14)
	plan := make([]TablePlan, len(copies))
	for i, c := range copies {
		plan[i] = TablePlan{Name: c.name, EstBytes: c.Bytes, EstRows: c.EstRows, Chunks: int(c.remaining.Load()),
			Unlogged: c.Unlogged, Partition: c.Partition}
		if c.Unlogged && r.pf.capture == CaptureLogical {
			r.log.Warn("copying an unlogged table: its later changes are not in the change stream (PostgreSQL does not decode unlogged tables)",
				zap.String("table", c.name))
		}
	}
	// Nothing is logged between the "copy" and "indexes" phases but
	// errors, so that a terminal's progress bars draw undisturbed.
	r.log.Info("copying data", zap.Int("tables", len(r.tables)), zap.Int("chunks", len(chunks)), zap.Int("jobs", len(r.workers)))
	r.rep.plan(plan)
	r.rep.phase("copy")
	r.copyStart = time.Now()
	if err := copyAll(ctx, r.workers, chunks, r.rep, r.log); err != nil {
		return err
	}
	closeWorkers(r.workers)
	r.workers = nil
	return nil
}

// endSnapshot reads what is left to read of the source and ends the
// snapshot, so that the source's tables are unlocked before the index
// builds. Sequences are not transactional: their values now are at least
// those of the snapshot, never less, as the stream needs.
func (r *run) endSnapshot(ctx context.Context) (err error) {
	if r.seqs, err = readSequences(ctx, r.ctl); err != nil {
		return err
	}
	if r.matviews, err = listMatviews(ctx, r.ctl); err != nil {
		return err
	}
	if _, err := r.ctl.Exec(ctx, "COMMIT"); err != nil {
		return fmt.Errorf("end the snapshot transaction on the source: %w", err)
	}
	return nil
}

func (r *run) buildIndexes(ctx context.Context) error {
	r.rep.phase("indexes")
	r.log.Info("data copied", zap.Int64("rows", r.rep.rows.Load()), zap.Int64("bytes", r.rep.bytes.Load()),
		zap.Duration("took", time.Since(r.copyStart).Round(time.Millisecond)))
	idxStart := time.Now()
	if err := r.dump.restore(ctx, r.dst, r.cfg.TargetURL, "post-data", r.cfg.Jobs, max(64, r.cfg.IndexMemoryMB/r.cfg.Jobs)); err != nil {
		return err
	}
	r.log.Info("indexes, constraints and triggers built", zap.Duration("took", time.Since(idxStart).Round(time.Millisecond)))
	if n, err := refreshMatviews(ctx, r.matviews, r.dst); err != nil {
		return err
	} else if n > 0 {
		r.log.Info("materialized views filled on the target", zap.Int("count", n))
	}
	return nil
}

func (r *run) setSequences(ctx context.Context) error {
	r.rep.phase("sequences")
	return setSequences(ctx, r.dst, r.seqs)
}

func (r *run) analyze(ctx context.Context) error {
	r.rep.phase("analyze")
	start := time.Now()
	if err := analyzeTables(ctx, r.cfg.TargetURL, r.tables, r.cfg.Jobs); err != nil {
		return err
	}
	r.log.Info("planner statistics gathered on the target", zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	return nil
}

// markDone is the synchronous commit that makes every chunk's
// (asynchronous) one count: only now may the stream start.
func (r *run) markDone(ctx context.Context) error {
	if err := state.SetSnapshotStatus(ctx, r.dst, state.SnapshotDone); err != nil {
		return err
	}
	r.rep.phase("done")
	res := r.res
	res.Tables, res.Rows, res.Bytes, res.Sequences = len(r.tables), r.rep.rows.Load(), r.rep.bytes.Load(), len(r.seqs)
	res.Duration = time.Since(r.start)
	r.log.Info("snapshot done", zap.Int("tables", res.Tables), zap.Int64("rows", res.Rows), zap.Int64("bytes", res.Bytes),
		zap.Int("sequences", res.Sequences), zap.String("consistent_lsn", res.ConsistentLSN),
		zap.Duration("took", res.Duration.Round(time.Millisecond)))
	return nil
}

// dumpSchema dumps the source's schema through the capture point's
// snapshot into a directory removed when the run ends.
func (r *run) dumpSchema(ctx context.Context) error {
	tmp, err := os.MkdirTemp("", "replicator-schema-")
	if err != nil {
		return err
	}
	r.later(func() { os.RemoveAll(tmp) })
	r.dump, err = dumpSchema(ctx, r.pf.tools, r.cfg.SourceURL, r.point.SnapshotName, tmp)
	return err
}
