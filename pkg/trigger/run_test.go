package trigger_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// Run wired as `stream` wires it: the position goes into the target's
// replicator.state with state.RecordAppliedBatch in the batch's own
// transaction; after the loop is stopped and started again from that
// position, the target ends equal to the source and the changelog empty.
func TestRunWithTargetState(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, awkwardDDL)
	targetDB := src.NewDatabase(t)
	src.Exec(t, targetDB, awkwardDDL)
	target := src.Connect(t, targetDB)
	tables := install(t, s)

	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st := cp.State()
	st.SnapshotStatus = state.SnapshotCopying
	if err := state.Begin(ctx, target, &st); err != nil {
		t.Fatal(err)
	}
	copySnapshot(t, s, cp.SnapshotName, target, tables)
	cp.Release(ctx)

	var nextID atomic.Int64
	nextID.Store(1)
	w := &writer{s: s, nextID: &nextID, errs: make(chan error, 4)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go w.run(ctx, 7, stop, &wg)
	go w.run(ctx, 8, stop, &wg)

	sn := &seen{txnBatch: map[uint64]int64{}}
	var lastTick atomic.Int64
	lastTick.Store(-1)
	apply := func(target *pgx.Conn, stopRun context.CancelFunc) trigger.ApplyFunc {
		return func(ctx context.Context, b *trigger.Batch, cur *trigger.Cursor) error {
			// What this attempt saw counts only once it is committed.
			attempt := &seen{txnBatch: map[uint64]int64{}}
			for k, v := range sn.txnBatch {
				attempt.txnBatch[k] = v
			}
			err := pgx.BeginFunc(ctx, target, func(tx pgx.Tx) error {
				if err := applyCursor(ctx, b, cur, tx, attempt); err != nil {
					return err
				}
				return state.RecordAppliedBatch(ctx, tx, b.ID, b.Time)
			})
			if err == nil {
				sn.txnBatch, sn.changes = attempt.txnBatch, sn.changes+attempt.changes
				if b.ID == lastTick.Load() {
					stopRun()
				}
			}
			return err
		}
	}
	// Each run is a new process: its own target connection (a stop in the
	// middle of a query closes it).
	runOnce := func(d time.Duration) {
		target, err := pgx.Connect(ctx, src.URL(targetDB))
		if err != nil {
			t.Fatal(err)
		}
		defer target.Close(ctx)
		st, err := state.Load(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer capt.Close()
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if err := capt.Run(rctx, st.AppliedBatch, apply(target, cancel)); !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("run from batch %d: %v", st.AppliedBatch, err)
		}
	}
	runOnce(time.Second) // stopped while the application writes
	runOnce(time.Second) // resumed from the target's position
	close(stop)
	wg.Wait()
	select {
	case err := <-w.errs:
		t.Fatalf("application write failed: %v", err)
	default:
	}
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	last, err := capt.Tick(ctx)
	capt.Close()
	if err != nil {
		t.Fatal(err)
	}
	lastTick.Store(last)
	runOnce(time.Minute)

	target = src.Connect(t, targetDB)
	final, err := state.Load(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	if final.AppliedBatch < last || final.AppliedCommitTime.IsZero() {
		t.Fatalf("target state: applied batch %d (want ≥ %d), commit time %s", final.AppliedBatch, last, final.AppliedCommitTime)
	}
	srcConn := s.connect(t)
	compareTables(t, srcConn, target, compared)
	// The run was stopped right after its last apply; the next start
	// purges what that apply committed first.
	capt, err = trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	if _, err := capt.Purge(ctx, final.AppliedBatch); err != nil {
		t.Fatal(err)
	}
	var left int64
	srcConn.QueryRow(ctx, `SELECT count(*) FROM replicator.changelog`).Scan(&left)
	if left != 0 || sn.changes < 500 {
		t.Errorf("%d changelog rows left; %d changes applied", left, sn.changes)
	}
}
