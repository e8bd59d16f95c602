package verify

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

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
	if err := state.RecordAppliedLSN(ctx, tc, sourceLSN(t, src), time.Now()); err != nil {
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

// applyLater plays the stream: after delay it applies the source's changes
// to the target and records the source position in the same transaction.
func applyLater(t *testing.T, src, dst string, delay time.Duration) chan error {
	done := make(chan error, 1)
	lsn := ""
	go func() {
		time.Sleep(delay)
		ctx := context.Background()
		conn := pg.Connect(t, dst)
		lsn = sourceLSN(t, src)
		tx, err := conn.Begin(ctx)
		if err != nil {
			done <- err
			return
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `UPDATE items SET v = 'new' WHERE id IN (10, 1500); INSERT INTO items VALUES (5000, 'fresh'); DELETE FROM items WHERE id = 7`); err != nil {
			done <- err
			return
		}
		if err := state.RecordAppliedLSN(ctx, tx, lsn, time.Now()); err != nil {
			done <- err
			return
		}
		done <- tx.Commit(ctx)
	}()
	return done
}

// Verify waits until the target has applied the source's position, so rows
// in flight are not differences.
func TestWaitsForTheStreamToApply(t *testing.T) {
	src, dst := liveDatabases(t)
	done := applyLater(t, src, dst, 1500*time.Millisecond)
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
	if !strings.Contains(rep.Consistent, "applied") {
		t.Errorf("report does not say how the stream was accounted for: %q", rep.Consistent)
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
	done := applyLater(t, src, dst, 800*time.Millisecond)
	core, logs := observer.New(zap.InfoLevel)
	cfg := testConfig(src, dst)
	cfg.WaitTimeout = -1
	cfg.RecheckDelay = 1500 * time.Millisecond
	rep, err := Run(context.Background(), cfg, zap.New(core))
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
