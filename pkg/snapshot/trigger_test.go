package snapshot

import (
	"context"
	"testing"
)

// An interrupted trigger-capture snapshot is started over: its triggers,
// functions and changelog are removed and installed again, tick 0 is the
// new copy's snapshot, and the copy is complete. Tables without a primary
// key need no flag under trigger capture.
func TestTriggerSnapshotStartsOverAfterInterruption(t *testing.T) {
	src, dst, cfg := pair(t)
	cfg.Capture, cfg.OneSnapshot = CaptureTrigger, true
	pg.Exec(t, src, `CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE nopk (a int, b text);
		INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 500) i;
		INSERT INTO nopk SELECT i % 10, 'dup' FROM generate_series(1, 100) i`)
	res, err := Run(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.Capture != CaptureTrigger || res.SnapshotXmin == "" {
		t.Fatalf("result capture %q snapshot %q, want trigger with tick 0", res.Capture, res.SnapshotXmin)
	}
	// Simulate a run killed during the copy, with changes recorded since.
	pg.Exec(t, dst, `UPDATE replicator.state SET snapshot_status = 'copying'`)
	pg.Exec(t, src, `INSERT INTO t VALUES (501, 'late'); DELETE FROM nopk WHERE ctid = (SELECT ctid FROM nopk LIMIT 1)`)
	if n := queryString(t, src, `SELECT count(*)::text FROM replicator.changelog`); n == "0" {
		t.Fatal("the triggers recorded nothing")
	}
	res, err = Run(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !res.StartedOver {
		t.Error("the second run did not start over")
	}
	compareSums(t, tableSums(t, src), tableSums(t, dst))
	// The earlier run's changelog went with the reinstall; tick 0 is the
	// new copy's snapshot, as the target records it.
	if n := queryString(t, src, `SELECT count(*)::text FROM replicator.changelog`); n != "0" {
		t.Errorf("changelog holds %s rows of the interrupted run", n)
	}
	if got, want := queryString(t, src, `SELECT snap::text FROM replicator.ticks WHERE id = 0`),
		queryString(t, dst, `SELECT snapshot_xmin FROM replicator.state`); got != want {
		t.Errorf("tick 0 is %s on the source, the target recorded %s", got, want)
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_trigger WHERE tgname IN ('replicator_capture_insert', 'replicator_capture_update', 'replicator_capture_delete')`); n != "6" {
		t.Errorf("%s row capture triggers on the source, want 6 (three per table)", n)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_trigger WHERE tgname LIKE 'replicator_capture%'`); n != "0" {
		t.Errorf("the schema restore created %s capture triggers on the target", n)
	}
}
