package snapshot

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// TestChunkedCopyUniqueValueMovedBetweenChunks: a unique value moves from
// a row of the first chunk to a row of the last between the two chunks'
// snapshots, so the chunks together hold it twice. The table's unique
// index build then fails on the target; the run copies that table again
// as one unit under one snapshot, says so, and ends with the table as on
// the source and its unique index built.
func TestChunkedCopyUniqueValueMovedBetweenChunks(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE users (id int PRIMARY KEY, email int NOT NULL UNIQUE, pad text);
		INSERT INTO users SELECT g, g, repeat('x', 100) FROM generate_series(1, 8000) g; ANALYZE`)
	cfg.ChunkBytes, cfg.Jobs = 16<<10, 1
	core, logs := observer.New(zap.InfoLevel)
	bg := context.Background()
	runDone := make(chan error, 1)
	go func() {
		_, err := Run(bg, cfg, zap.New(core))
		runDone <- err
	}()
	// Hold the last chunk's ledger row, so that no worker claims it (they
	// skip locked rows) until the value has moved.
	watch := pg.Connect(t, dst)
	hold, err := watch.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(bg)
	var last, total int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if hold.QueryRow(bg, `SELECT chunk, (SELECT count(*) FROM replicator.chunks) FROM replicator.chunks
			WHERE table_name = '"public"."users"' AND snapshot IS NULL ORDER BY chunk DESC LIMIT 1 FOR UPDATE NOWAIT`).Scan(&last, &total) == nil {
			break
		}
		hold.Rollback(bg)
		if time.Now().After(deadline) {
			t.Fatal("the run planned no chunks of users within 30 s")
		}
		if hold, err = watch.Begin(bg); err != nil {
			t.Fatal(err)
		}
	}
	if last < 3 {
		t.Fatalf("users is planned in %d chunks, the test needs several", last+1)
	}
	probe := pg.Connect(t, dst)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var done int
		if err := probe.QueryRow(bg, `SELECT count(snapshot) FROM replicator.chunks WHERE table_name = '"public"."users"'`).Scan(&done); err != nil {
			t.Fatal(err)
		}
		if done == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d chunks of users done after 60 s", done, last+1)
		}
	}
	// Row 1 (first chunk, copied) gives its email to row 8000 (last
	// chunk, not copied yet).
	pg.Exec(t, src, `BEGIN; UPDATE users SET email = -1 WHERE id = 1; UPDATE users SET email = 1 WHERE id = 8000; COMMIT`)
	hold.Rollback(bg)
	if err := <-runDone; err != nil {
		t.Fatalf("the run failed: %v", err)
	}
	if n := logs.FilterMessageSnippet("copying the table again as one unit").Len(); n != 1 {
		t.Errorf("%d warnings that users is copied again as one unit, want 1", n)
	}
	compareSums(t, tableSums(t, src), tableSums(t, dst))
	if got := queryString(t, dst, `SELECT count(*)::text FROM pg_index WHERE indrelid = 'users'::regclass AND indisunique AND indisvalid`); got != "2" {
		t.Errorf("users has %s valid unique indexes on the target, want 2 (primary key and email)", got)
	}
	if got := queryString(t, dst, `SELECT count(*)::text || ' ' || bool_and(key_column IS NULL)::text FROM replicator.chunks WHERE table_name = '"public"."users"'`); !strings.HasPrefix(got, "1 true") {
		t.Errorf("users' chunks in the ledger: %s, want 1 whole-table unit", got)
	}
}
