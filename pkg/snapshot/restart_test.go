package snapshot

import (
	"context"
	"testing"
)

// A run interrupted at its very last step (everything on the target but
// the "done" mark: indexes, foreign keys, views, functions, types, other
// schemas) is started over: the leftovers are dropped, the slot is made
// again, and the target ends identical with no duplicate.
func TestRestartAfterInterruptedRunStartsOver(t *testing.T) {
	src, dst, cfg := pair(t)
	cfg.OneSnapshot = true
	pg.Exec(t, src, awkwardSchema)
	want := tableSums(t, src)
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	firstLSN := queryString(t, dst, `SELECT consistent_lsn::text FROM replicator.state`)
	// What a kill -9 just before the last step leaves behind.
	pg.Exec(t, dst, `UPDATE replicator.state SET snapshot_status = 'copying'`)
	// Changes after the first run's slot: only the new run's copy has them.
	pg.Exec(t, src, `INSERT INTO events (payload) VALUES ('after the first run')`)
	want = tableSums(t, src)

	res, err := Run(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !res.StartedOver {
		t.Error("the result does not say the run started over")
	}
	compareSums(t, want, tableSums(t, dst))
	if lsn := queryString(t, dst, `SELECT consistent_lsn::text FROM replicator.state`); lsn == firstLSN || lsn != res.ConsistentLSN {
		t.Errorf("consistent_lsn = %s after the rerun (first run %s, result %s): want the new slot's", lsn, firstLSN, res.ConsistentLSN)
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.SlotName); n != "1" {
		t.Errorf("%s slots named %s on the source, want 1", n, cfg.SlotName)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_constraint WHERE contype = 'f'`); n != "1" {
		t.Errorf("target has %s foreign keys after the rerun, want 1", n)
	}
}
