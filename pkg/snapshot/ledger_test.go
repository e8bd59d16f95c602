package snapshot

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/testenv"
)

// ledgerDDL of the tests: a keyed table with TOASTed values (many small
// chunks), a table keyed by a unique NOT NULL int (no primary key) and a
// keyless table, one unit.
const ledgerTestDDL = `
CREATE TABLE docs (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0, body text);
ALTER TABLE docs ALTER body SET STORAGE EXTERNAL;
CREATE TABLE coded (code int NOT NULL UNIQUE, label text);
CREATE TABLE loose (a int, b text);
CREATE TABLE tagged (tag text PRIMARY KEY, seq int NOT NULL UNIQUE);
CREATE TABLE parts (id bigint PRIMARY KEY, v int NOT NULL DEFAULT 0) PARTITION BY RANGE (id);
CREATE TABLE parts_lo PARTITION OF parts FOR VALUES FROM (MINVALUE) TO (1000);
CREATE TABLE parts_hi PARTITION OF parts FOR VALUES FROM (1000) TO (MAXVALUE);
CREATE TABLE events (id int NOT NULL, day int NOT NULL, v int NOT NULL DEFAULT 0, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (5);
CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (5) TO (10);`

const ledgerTestRows = `
INSERT INTO docs SELECT g, 0, CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 200) ELSE 'd' || g END FROM generate_series(1, 3000) g;
INSERT INTO coded SELECT g * 7, 'c' || g FROM generate_series(1, 500) g;
INSERT INTO loose SELECT g % 10, 'l' || g FROM generate_series(1, 300) g;
INSERT INTO tagged SELECT 't' || g, g FROM generate_series(1, 2000) g;
INSERT INTO parts SELECT g, 0 FROM generate_series(1, 2000) g;
INSERT INTO events SELECT g, g % 10, 0 FROM generate_series(1, 1000) g;`

// ledgerPair makes a source with the test tables and a target with the
// same tables, empty, and returns the config and the source's tables.
func ledgerPair(t *testing.T) (src, dst string, cfg Config, tables []*table) {
	t.Helper()
	src, dst, cfg = pair(t)
	pg.Exec(t, src, ledgerTestDDL+ledgerTestRows+"ANALYZE;")
	pg.Exec(t, dst, ledgerTestDDL)
	cfg.ChunkBytes = 16 << 10
	cfg.Jobs = 2
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var err error
	if tables, err = listTables(context.Background(), pg.Connect(t, src)); err != nil {
		t.Fatal(err)
	}
	return src, dst, cfg, tables
}

func ledgerCounts(t *testing.T, dst string) (total, done int) {
	t.Helper()
	if err := pg.Connect(t, dst).QueryRow(context.Background(), `SELECT count(*), count(snapshot) FROM replicator.chunks`).Scan(&total, &done); err != nil {
		t.Fatal(err)
	}
	return total, done
}

// TestLedgerPlansKeysAndUnits checks the plan: the primary-keyed table in
// many key ranges, the unique-keyed one by its unique column, the keyless
// one and the one with a text primary key as one unit each.
func TestLedgerPlansKeysAndUnits(t *testing.T) {
	_, dst, cfg, tables := ledgerPair(t)
	if err := copyLedger(context.Background(), &cfg, tables, false, &reporter{}, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	rows, err := pg.Connect(t, dst).Query(context.Background(), `SELECT table_name, count(*)::text || ' ' || coalesce(min(key_column), '-') FROM replicator.chunks GROUP BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		got[k] = v
	}
	if got[`"public"."loose"`] != "1 -" {
		t.Errorf("keyless table planned as %q, want one unit", got[`"public"."loose"`])
	}
	if got[`"public"."tagged"`] != "1 -" {
		t.Errorf("table with a text primary key planned as %q, want one unit (not ranges of its other unique key)", got[`"public"."tagged"`])
	}
	if !strings.HasSuffix(got[`"public"."coded"`], " code") {
		t.Errorf("unique-keyed table planned as %q, want ranges of code", got[`"public"."coded"`])
	}
	var n int
	fmt.Sscan(got[`"public"."docs"`], &n)
	if n < 5 || !strings.HasSuffix(got[`"public"."docs"`], " id") {
		t.Errorf("TOASTed table planned as %q, want several ranges of id", got[`"public"."docs"`])
	}
}

// TestLedgerResumesAfterInterruption interrupts a copy (its connections
// cut mid-chunk, as kill -9 leaves them) once a few chunks are done, at
// several moments, then reruns it: the rerun says what it kept, and the
// target ends identical to the source.
func TestLedgerResumesAfterInterruption(t *testing.T) {
	for _, after := range []int{1, 4, 9} {
		t.Run(fmt.Sprintf("after %d chunks", after), func(t *testing.T) {
			src, dst, cfg, tables := ledgerPair(t)
			cfg.Jobs = 1
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				defer cancel()
				conn, err := pgxConnect(cfg.TargetURL)
				if err != nil {
					return
				}
				defer conn.Close(context.Background())
				for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
					var done int
					if conn.QueryRow(context.Background(), `SELECT count(snapshot) FROM replicator.chunks`).Scan(&done) == nil && done >= after {
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			err := copyLedger(ctx, &cfg, tables, false, &reporter{}, testLogger(t))
			if err == nil {
				t.Fatal("the copy was not interrupted: make the chunks smaller")
			}
			total, kept := ledgerCounts(t, dst)
			if kept == 0 || kept == total {
				t.Fatalf("interrupted with %d of %d chunks done; want some but not all", kept, total)
			}
			core, logs := observer.New(zapcore.InfoLevel)
			if err := copyLedger(context.Background(), &cfg, tables, false, &reporter{}, zap.New(core)); err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("resuming: %s of %s chunks already copied", groupDigits(kept), groupDigits(total))
			if logs.FilterMessage(want).Len() != 1 {
				t.Errorf("the rerun did not log %q; logged: %v", want, logs.All())
			}
			compareSums(t, tableSums(t, src), withoutLedger(tableSums(t, dst)))
		})
	}
}

// withoutLedger drops the ledger, which only the target has.
func withoutLedger(sums map[string]string) map[string]string {
	delete(sums, "r replicator.chunks")
	return sums
}

// TestLedgerTwoWorkersShareOneCopy runs two copies, as two processes
// joining one target would, at once: each chunk is copied by exactly one
// of them and the target is identical.
func TestLedgerTwoWorkersShareOneCopy(t *testing.T) {
	src, dst, cfg, tables := ledgerPair(t)
	cfg.Jobs = 2
	var wg sync.WaitGroup
	errs := make([]error, 2)
	reps := []*reporter{{}, {}}
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cfg
			errs[i] = copyLedger(context.Background(), &c, tables, false, reps[i], testLogger(t))
		}()
	}
	wg.Wait()
	// Each returns only once every chunk is done, by either.
	for i, err := range errs {
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	total, done := ledgerCounts(t, dst)
	if done != total {
		t.Fatalf("%d of %d chunks done", done, total)
	}
	// (One that started late counts the other's done chunks as kept in
	// chunks; committed is what each committed itself.)
	if n := reps[0].committed.Load() + reps[1].committed.Load(); n != int64(total) {
		t.Errorf("the two copies committed %d chunks between them; the plan has %d", n, total)
	}
	compareSums(t, tableSums(t, src), withoutLedger(tableSums(t, dst)))
}

// TestLedgerChunksHoldExactlyTheirSnapshot copies while the application
// writes: each writer transaction increments a row's counter (half of
// them inside a SAVEPOINT) or moves a row to a new key in another chunk.
// Each row on the target must then be exactly the row as of the recorded
// snapshot of the chunk its key falls in, as PostgreSQL's own
// pg_visible_in_snapshot judges the writer's transactions: no row lost,
// none doubled, and a moved row in exactly the chunks whose snapshots
// hold it there.
func TestLedgerChunksHoldExactlyTheirSnapshot(t *testing.T) {
	src, dst, cfg, tables := ledgerPair(t)
	ctx, stop := context.WithCancel(context.Background())
	type write struct {
		xid    int64
		id, to int64 // to != 0: the row moved from id to to
	}
	var writes []write
	writerDone := make(chan error, 1)
	go func() {
		conn, err := pgxConnect(cfg.SourceURL)
		if err != nil {
			writerDone <- err
			return
		}
		defer conn.Close(context.Background())
		moved := int64(0)
		for i := int64(0); ctx.Err() == nil; i++ {
			w, err := func() (w write, err error) {
				bg := context.Background()
				tx, err := conn.Begin(bg)
				if err != nil {
					return w, err
				}
				defer tx.Rollback(bg)
				if err := tx.QueryRow(bg, `SELECT pg_current_xact_id()::text::bigint`).Scan(&w.xid); err != nil {
					return w, err
				}
				if i%3 == 2 && moved < 100 {
					// Rows 2901-3000 are never updated; each moves once, far
					// above the planned keys (into the open last chunk).
					w.id, w.to = 2901+moved, 1_000_000+moved
					moved++
					_, err = tx.Exec(bg, `UPDATE docs SET id = $2 WHERE id = $1`, w.id, w.to)
				} else {
					w.id = 1 + (i*37)%2900
					if i%2 == 0 {
						if _, err := tx.Exec(bg, `SAVEPOINT s`); err != nil {
							return w, err
						}
					}
					_, err = tx.Exec(bg, `UPDATE docs SET n = n + 1 WHERE id = $1`, w.id)
				}
				if err != nil {
					return w, err
				}
				return w, tx.Commit(bg)
			}()
			if err != nil {
				writerDone <- err
				return
			}
			writes = append(writes, w)
		}
		writerDone <- nil
	}()
	copyErr := copyLedger(context.Background(), &cfg, tables, false, &reporter{}, testLogger(t))
	stop()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	if copyErr != nil {
		t.Fatal(copyErr)
	}
	if len(writes) < 10 {
		t.Fatalf("only %d writer transactions during the copy: too few to tell", len(writes))
	}

	bg := context.Background()
	srcConn, dstConn := pg.Connect(t, src), pg.Connect(t, dst)
	type chunkRange struct {
		lo, hi *int64
		snap   string
	}
	var chunks []chunkRange
	var snaps []string
	rows, err := dstConn.Query(bg, `SELECT lo, hi, snapshot FROM replicator.chunks WHERE table_name = '"public"."docs"' ORDER BY chunk`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c chunkRange
		if err := rows.Scan(&c.lo, &c.hi, &c.snap); err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, c)
		snaps = append(snaps, c.snap)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	snapOf := func(k int64) string {
		for _, c := range chunks {
			if (c.lo == nil || k >= *c.lo) && (c.hi == nil || k < *c.hi) {
				return c.snap
			}
		}
		t.Fatalf("key %d is in no chunk", k)
		return ""
	}
	xids := make([]int64, len(writes))
	for i, w := range writes {
		xids[i] = w.xid
	}
	seen := map[string]map[int64]bool{}
	vrows, err := srcConn.Query(bg, `SELECT s, x, pg_visible_in_snapshot(x::text::xid8, s::pg_snapshot)
		FROM unnest($1::text[]) s, unnest($2::bigint[]) x`, snaps, xids)
	if err != nil {
		t.Fatal(err)
	}
	for vrows.Next() {
		var s string
		var x int64
		var v bool
		if err := vrows.Scan(&s, &x, &v); err != nil {
			t.Fatal(err)
		}
		if seen[s] == nil {
			seen[s] = map[int64]bool{}
		}
		seen[s][x] = v
	}
	if vrows.Err() != nil {
		t.Fatal(vrows.Err())
	}

	expect := map[int64]int{}
	for id := int64(1); id <= 3000; id++ {
		expect[id] = 0
	}
	for _, w := range writes {
		switch {
		case w.to == 0 && seen[snapOf(w.id)][w.xid]:
			expect[w.id]++
		case w.to != 0:
			if seen[snapOf(w.id)][w.xid] {
				delete(expect, w.id) // its chunk was copied after the move
			}
			if seen[snapOf(w.to)][w.xid] {
				expect[w.to] = 0 // the new key's chunk was copied after it
			}
		}
	}
	got := map[int64]int{}
	trows, err := dstConn.Query(bg, `SELECT id, n FROM docs`)
	if err != nil {
		t.Fatal(err)
	}
	for trows.Next() {
		var id int64
		var n int
		if err := trows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		got[id] = n
	}
	for k, n := range expect {
		if g, ok := got[k]; !ok {
			t.Errorf("row %d missing from its chunk (snapshot %s)", k, snapOf(k))
		} else if g != n {
			t.Errorf("row %d holds n=%d, want %d under its chunk's snapshot %s", k, g, n, snapOf(k))
		}
	}
	for k := range got {
		if _, ok := expect[k]; !ok {
			t.Errorf("row %d is on the target but its chunk's snapshot %s does not hold it", k, snapOf(k))
		}
	}
	t.Logf("%d writer transactions during a copy of %d chunks of docs", len(writes), len(chunks))
}

// TestLedgerResumesAfterSourceRestart kills the source server (kill -9 of
// every backend; here the target shares that server, so it crashes too and
// runs crash recovery) in the middle of the copy: the copy fails naming
// the chunk, and a rerun copies only what is left, identical to the source.
func TestLedgerResumesAfterSourceRestart(t *testing.T) {
	src, dst, cfg, tables := ledgerPair(t)
	cfg.Jobs = 1
	restarted := make(chan error, 1)
	go func() {
		conn, err := pgxConnect(cfg.TargetURL)
		if err != nil {
			restarted <- err
			return
		}
		defer conn.Close(context.Background())
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			var done int
			if conn.QueryRow(context.Background(), `SELECT count(snapshot) FROM replicator.chunks`).Scan(&done) == nil && done >= 3 {
				break
			}
		}
		restarted <- pg.Restart(testenv.Crash)
	}()
	err := copyLedger(context.Background(), &cfg, tables, false, &reporter{}, testLogger(t))
	if rerr := <-restarted; rerr != nil {
		t.Fatal(rerr)
	}
	if err == nil {
		t.Fatal("the copy went on through a source restart")
	}
	if !strings.Contains(err.Error(), "chunk") {
		t.Errorf("the error does not name the chunk: %v", err)
	}
	total, kept := ledgerCounts(t, dst)
	if kept == 0 || kept == total {
		t.Fatalf("%d of %d chunks done after the restart; want some but not all", kept, total)
	}
	if err := copyLedger(context.Background(), &cfg, tables, false, &reporter{}, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	compareSums(t, tableSums(t, src), withoutLedger(tableSums(t, dst)))
}
