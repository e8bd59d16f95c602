package verify

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"replicator/pkg/position"
	"replicator/pkg/state"
)

// liveDatabases makes a source and target with the same table and a
// replicator.state row on the target, as a running stream keeps it.
func liveDatabases(t *testing.T) (src, dst string) {
	t.Helper()
	src, dst = pg.NewDatabase(t), pg.NewDatabase(t)
	ddl := `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 2000) i; ANALYZE;`
	pg.Exec(t, src, ddl)
	pg.Exec(t, dst, ddl)
	ctx := context.Background()
	tc := pg.Connect(t, dst)
	if err := state.Begin(ctx, tc, &state.State{Capture: state.CaptureLogical, SnapshotStatus: state.SnapshotDone}); err != nil {
		t.Fatal(err)
	}
	if err := state.RecordApplied(ctx, tc, mustLSN(t, sourceLSN(t, src)), time.Now()); err != nil {
		t.Fatal(err)
	}
	// The application writes on the source; the stream has not applied it.
	pg.Exec(t, src, `UPDATE items SET v = 'new' WHERE id IN (10, 1500); INSERT INTO items VALUES (5000, 'fresh'); DELETE FROM items WHERE id = 7`)
	return src, dst
}

func sourceLSN(t *testing.T, db string) string {
	t.Helper()
	var lsn string
	if err := pg.Connect(t, db).QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// applyWhen plays the stream: once ready is closed it applies the
// source's changes to the target and records the source position in the
// same transaction.
func applyWhen(t *testing.T, src, dst string, ready <-chan struct{}) chan error {
	srcConn, dstConn := pg.Connect(t, src), pg.Connect(t, dst)
	done := make(chan error, 1)
	go func() {
		ctx := context.Background()
		select {
		case <-ready:
		case <-time.After(time.Minute):
			done <- errors.New("verify never reached the point where the stream's changes were to arrive")
			return
		}
		var lsn string
		if err := srcConn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			done <- err
			return
		}
		done <- pgx.BeginFunc(ctx, dstConn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE items SET v = 'new' WHERE id IN (10, 1500); INSERT INTO items VALUES (5000, 'fresh'); DELETE FROM items WHERE id = 7`); err != nil {
				return err
			}
			return state.RecordApplied(ctx, tx, mustLSN(t, lsn), time.Now())
		})
	}()
	return done
}

// waitingForLSN is closed once a session of verify has read the source's
// WAL position (the query stays in pg_stat_activity): from then on it
// waits for the target to apply it.
func waitingForLSN(t *testing.T, src string) <-chan struct{} {
	conn := pg.Connect(t, src)
	ready := make(chan struct{})
	go func() {
		defer close(ready)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) {
			var seen bool
			err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%pg_last_wal_replay_lsn()%')`).Scan(&seen)
			if err != nil || seen {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return ready
}

// loggedOnce returns a logger into core and a channel closed when msg is
// first logged.
func loggedOnce(core zapcore.Core, msg string) (*zap.Logger, <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	return zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == msg {
			once.Do(func() { close(ch) })
		}
		return nil
	})), ch
}

// Verify waits until the target has applied the source's position, so rows
// in flight are not differences.
func TestWaitsForTheStreamToApply(t *testing.T) {
	src, dst := liveDatabases(t)
	done := applyWhen(t, src, dst, waitingForLSN(t, src))
	cfg := testConfig(src, dst)
	cfg.WaitTimeout = time.Minute
	cfg.Rechecks = -1 // the wait alone must be enough
	rep := runVerify(t, cfg)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if rep.Different() {
		t.Fatalf("rows in flight reported as differences: %q", diffLines(rep))
	}
	// Not "target had applied … after <timeout>": the wait itself ended it.
	if !strings.HasPrefix(rep.Consistent, "compared after the target applied source position") {
		t.Errorf("report does not say the target applied the source's position before the comparison: %q", rep.Consistent)
	}
	if rep.SourceRows != 2000 || rep.TargetRows != 2000 {
		t.Errorf("rows %d/%d, want 2000 on each side", rep.SourceRows, rep.TargetRows)
	}
}

// Without waiting, differences are re-checked after a delay and only those
// that persist are reported: the stream's rows vanish, a real one stays.
func TestRecheckReportsOnlyPersistingDifferences(t *testing.T) {
	src, dst := liveDatabases(t)
	pg.Exec(t, dst, `UPDATE items SET v = 'drifted' WHERE id = 321`) // not the stream's doing
	// The stream's changes arrive after the first comparison, during the
	// pause before the re-check.
	core, logs := observer.New(zap.DebugLevel)
	log, paused := loggedOnce(core, "differences found while a stream runs: re-checking them after a pause")
	done := applyWhen(t, src, dst, paused)
	cfg := testConfig(src, dst)
	cfg.WaitTimeout = -1
	cfg.RecheckDelay = 1500 * time.Millisecond
	rep, err := Run(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(diffLines(rep), "\n"); got != "public.items | different | id=321 | v" {
		t.Fatalf("differences after re-check:\n%s\nwant only id=321", got)
	}
	// The first pass did see the rows in flight (else this test proves
	// nothing about the re-check).
	rechecked := logs.FilterMessage("re-checked differences").All()
	if len(rechecked) == 0 || rechecked[0].ContextMap()["before"].(int64) < 5 {
		t.Fatalf("the first comparison did not see the rows in flight: %v", rechecked)
	}
}

// With the migration's slot not in use, no stream is running: verify does
// not wait for a position nothing will apply, says so, and reports the
// source's unapplied changes as the differences they are.
func TestNoStreamRunningComparesAsItStands(t *testing.T) {
	src, dst := liveDatabases(t)
	ctx := context.Background()
	pg.Exec(t, src, `SELECT pg_create_logical_replication_slot('verify_idle_slot', 'pgoutput')`)
	pg.Exec(t, dst, `UPDATE replicator.state SET slot_name = 'verify_idle_slot'`)
	cfg := testConfig(src, dst)
	cfg.WaitTimeout = 2 * time.Second // a waiting verify would say it timed out instead
	rep, err := Run(ctx, cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rep.Consistent, "no stream is running (replication slot verify_idle_slot") {
		t.Errorf("report's stream line = %q, want it to say no stream runs", rep.Consistent)
	}
	if got := strings.Join(diffLines(rep), "\n"); !strings.Contains(got, "id=5000") || !strings.Contains(got, "id=7") {
		t.Errorf("differences = %s, want the source's unapplied insert and delete", got)
	}
}

func mustLSN(t *testing.T, s string) position.Position {
	t.Helper()
	p, err := position.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
