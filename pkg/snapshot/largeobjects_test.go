package snapshot

import (
	"context"
	"testing"
)

// Large objects arrive with their oids and contents, including one far
// larger than a copy chunk, and a rerun replaces them rather than failing.
func TestSnapshotCopiesLargeObjects(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE docs (id int PRIMARY KEY, body oid);
		INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat('doc ' || g, g), 'UTF8')) FROM generate_series(1, 22) g;
		INSERT INTO docs VALUES (100, lo_from_bytea(0, (SELECT string_agg(decode(md5(g::text), 'hex'), '') FROM generate_series(1, 200000) g)));
		SELECT lo_create(0)`)
	const digest = `SELECT count(*)::text || ' ' || coalesce(md5(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid)), '')
		FROM pg_largeobject_metadata`
	want := queryString(t, src, digest)
	for run := 0; run < 2; run++ {
		if run == 1 {
			// A run interrupted after the large objects were copied.
			pg.Exec(t, dst, `UPDATE replicator.state SET snapshot_status = 'copying'`)
		}
		if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if got := queryString(t, dst, digest); got != want {
			t.Fatalf("run %d: target large objects %s, source %s", run, got, want)
		}
	}
	compareSums(t, tableSums(t, src), tableSums(t, dst))
}
