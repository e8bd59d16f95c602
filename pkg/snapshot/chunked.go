package snapshot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/state"
)

// chunkedPhases is Run without Config.OneSnapshot: the copy goes through the
// chunk ledger (ledger.go), each chunk under a short snapshot of its own,
// and an interrupted run is resumed where the ledger says it stopped, as
// long as its capture point is still on the source.
func (r *run) chunkedPhases() []func(context.Context) error {
	return []func(context.Context) error{
		r.connect, r.lockTarget, r.loadPrevious, r.preflight, r.resumeOrStartOver, r.setReplicaIdentity,
		r.markTargetFresh, r.startCaptureFresh, r.readSchema, r.createSchemaFresh, r.copyChunks, r.copyLargeObjectsNow,
		r.readSequencesNow, r.buildPostData, r.setSequences, r.setDatabaseSettings, r.analyzeRest, r.markDone,
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
	planned, err := ledgerPlanned(ctx, r.dst)
	if err != nil {
		return err
	}
	keep, why := planned > 0 && prev.Capture == r.pf.capture, "the interrupted run had not planned its chunks"
	if keep {
		if keep, why, err = r.capturePointKept(ctx, prev); err != nil {
			return err
		}
	}
	if !keep {
		r.log.Warn("cannot resume the interrupted snapshot: " + why)
		if _, err := r.dst.Exec(ctx, `DROP TABLE IF EXISTS replicator.chunks, replicator.postdata`); err != nil {
			return fmt.Errorf("drop the interrupted run's chunk ledger on the target: %w", err)
		}
		return r.startOver(ctx)
	}
	r.resuming = true
	r.res.Resumed = true
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
	if err := r.dumpSchema(ctx); err != nil {
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

func (r *run) copyChunks(ctx context.Context) (err error) {
	if err := createPostdataLedger(ctx, r.dst); err != nil {
		return err
	}
	r.pd, err = splitPostData(ctx, r.dump, r.src, r.dst, r.cfg.TargetURL, r.tables, max(64, r.cfg.IndexMemoryMB/r.cfg.Jobs))
	if err != nil {
		return err
	}
	if err := chooseFormats(ctx, r.src, r.dst, r.tables, r.cfg.CopyFormat, r.log); err != nil {
		return err
	}
	r.copyStart = time.Now()
	return copyLedgerWait(ctx, r.cfg, r.tables, r.pf.targetLZ4, r.rep, r.log, true, r.pd)
}

// buildPostData builds what no worker built during the copy: the tables
// whose last chunk an earlier run or a joining process committed, then
// what needs every table's data (foreign keys, triggers, …), then fills
// the materialized views.
func (r *run) buildPostData(ctx context.Context) error {
	r.rep.phase("indexes")
	r.log.Info("data copied", zap.Int64("rows", r.rep.rows.Load()), zap.Int64("bytes", r.rep.bytes.Load()),
		zap.Duration("took", time.Since(r.copyStart).Round(time.Millisecond)))
	start := time.Now()
	for {
		recopied, err := r.buildTables(ctx)
		if err != nil {
			return err
		}
		if !recopied {
			break
		}
		// A table replanned as one unit (recopyWhole) is copied again,
		// and built by the worker that commits it.
		if err := copyLedgerWait(ctx, r.cfg, r.tables, r.pf.targetLZ4, r.rep, r.log, true, r.pd); err != nil {
			return err
		}
	}
	if _, err := r.pd.build(ctx, "", true); err != nil {
		return err
	}
	if len(r.pd.notValid) > 0 {
		names := make([]string, len(r.pd.notValid))
		for i, k := range r.pd.notValid {
			names[i] = k.String()
		}
		r.log.Warn("foreign keys created NOT VALID: each chunk was read under its own snapshot, so their rows are checked once the stream has caught up (the stream validates them, and status, verify and cutover name them until then); they are enforced for every new write",
			zap.Strings("foreign_keys", names))
	}
	r.log.Info("foreign keys, triggers and the rest of the schema built", zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	if n, err := refreshMatviews(ctx, r.matviews, r.dst); err != nil {
		return err
	} else if n > 0 {
		r.log.Info("materialized views filled on the target", zap.Int("count", n))
	}
	return nil
}

// buildTables builds the indexes of every table not built yet, with Jobs
// builders; recopied says a table was replanned as one unit instead
// (recopyWhole), to be copied again.
func (r *run) buildTables(ctx context.Context) (recopied bool, err error) {
	next := make(chan string)
	var mu sync.Mutex
	var failed []error
	var failedTables []string
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(next)
		for _, t := range r.tables {
			select {
			case next <- t.qualified():
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	for range min(r.cfg.Jobs, max(len(r.tables), 1)) {
		g.Go(func() error {
			for t := range next {
				if _, err := r.pd.build(gctx, t, true); err != nil {
					mu.Lock()
					failed, failedTables = append(failed, err), append(failedTables, t)
					mu.Unlock()
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return false, err
	}
	for i, err := range failed {
		again, err := recopyWhole(ctx, r.dst, failedTables[i], err, r.log)
		if err != nil {
			return false, err
		}
		recopied = recopied || again
	}
	return recopied, nil
}

// analyzeRest gathers planner statistics for the tables no worker
// analyzed after building their indexes.
func (r *run) analyzeRest(ctx context.Context) error {
	var left []*table
	for _, t := range r.tables {
		if _, ok := r.pd.analyzed.Load(t.qualified()); !ok {
			left = append(left, t)
		}
	}
	r.rep.phase("analyze")
	start := time.Now()
	if err := analyzeTables(ctx, r.cfg.TargetURL, left, r.cfg.Jobs); err != nil {
		return err
	}
	r.log.Info("planner statistics gathered on the target", zap.Int("tables", len(left)), zap.Duration("took", time.Since(start).Round(time.Millisecond)))
	return nil
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

// ErrNothingToJoin is returned by Join when the target holds no chunked
// copy's plan.
var ErrNothingToJoin = errors.New("no chunked copy to join on this target")

// Join adds cfg.Jobs workers, in this process, to the chunked copy that a
// Run (without Config.OneSnapshot) drives against cfg.TargetURL: on the same host
// or another, any number of times. The target's ledger is the
// coordinator: workers claim chunks with FOR UPDATE SKIP LOCKED. Join
// returns once no chunk is left to claim; the Run finishes the rest (the
// indexes, the sequences, "done"). A joiner killed mid-chunk loses only
// that chunk's uncommitted rows, which another worker copies again.
func Join(ctx context.Context, cfg Config, log *zap.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if log == nil {
		log = zap.NewNop()
	}
	dst, err := connect(ctx, cfg.TargetURL, "target", nil)
	if err != nil {
		return err
	}
	defer dst.Close(context.Background())
	planned, err := ledgerPlanned(ctx, dst)
	if err != nil {
		return err
	}
	if planned == 0 {
		return fmt.Errorf("%w: start the copy with `replicator snapshot` (or `replicator run`) against this target, then join once it copies", ErrNothingToJoin)
	}
	src, err := connect(ctx, cfg.SourceURL, "source", nil)
	if err != nil {
		return err
	}
	tables, err := listTables(ctx, src)
	if err == nil {
		err = chooseFormats(ctx, src, dst, tables, cfg.CopyFormat, log)
	}
	src.Close(context.Background())
	if err != nil {
		return err
	}
	// The joiner leaves default_toast_compression as the target has it:
	// lz4 only speeds the writes up, and reads are the same either way.
	rep := &reporter{p: cfg.Progress, m: cfg.Metrics}
	return copyLedgerWait(ctx, &cfg, tables, false, rep, log, false, nil)
}

// ledgerPlanned counts the chunks in the target's ledger; 0 when there is
// no ledger.
func ledgerPlanned(ctx context.Context, dst *pgx.Conn) (int, error) {
	var exists bool
	if err := dst.QueryRow(ctx, `SELECT to_regclass('replicator.chunks') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var n int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM replicator.chunks`).Scan(&n); err != nil {
		return 0, fmt.Errorf("read the chunk ledger on the target: %w", err)
	}
	return n, nil
}
