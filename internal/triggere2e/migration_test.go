package triggere2e

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
)

// The application's schema, created by its own role: quoted mixed-case
// names, an enum, arrays with NULLs, jsonb, numeric NaN, float
// ±Infinity, bytea, big TOASTed text, generated and identity columns, a
// table without a primary key holding identical rows, a range-partitioned
// table, and a table that gets truncated.
const appSchema = `
CREATE SCHEMA "App Data";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE "App Data"."Mixed Case" (
	"Id"        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	"Weird Col" text,
	m           mood,
	tags        text[],
	nums        int[],
	doc         jsonb,
	n           numeric,
	f           float8,
	b           bytea,
	big         text,
	qty         int NOT NULL DEFAULT 1,
	price       numeric(10,2) NOT NULL DEFAULT 1,
	total       numeric GENERATED ALWAYS AS (qty * price) STORED
);
CREATE TABLE nopk (a int, b text);
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE scratch (id int PRIMARY KEY, v text);

INSERT INTO "App Data"."Mixed Case" ("Weird Col", m, tags, nums, doc, n, f, b, qty, price)
SELECT 'row ' || i, (ARRAY['sad','ok','happy'])[1 + i % 3]::mood, ARRAY['a' || i, NULL, 'x y'], ARRAY[i, NULL, -i],
	jsonb_build_object('i', i, 'nested', jsonb_build_array(i, 'two', NULL)),
	CASE WHEN i % 7 = 0 THEN 'NaN'::numeric ELSE i / 3.0 END,
	CASE i % 5 WHEN 0 THEN 'Infinity'::float8 WHEN 1 THEN '-Infinity'::float8 ELSE i * 1.5e-3 END,
	decode(md5(i::text), 'hex'), i % 10, i % 100
FROM generate_series(1, 2000) i;
-- Big values, stored out of line and not compressible.
UPDATE "App Data"."Mixed Case" SET big = (SELECT string_agg(md5(j::text || "Id"::text), '') FROM generate_series(1, 8000) j) WHERE "Id" <= 5;
INSERT INTO nopk SELECT i % 50, 'dup ' || (i % 50) FROM generate_series(1, 400) i;
INSERT INTO events SELECT i, DATE '2025-01-01' + (i % 700), jsonb_build_object('e', i) FROM generate_series(1, 1000) i;
INSERT INTO scratch SELECT i, 'v' || i FROM generate_series(1, 100) i;
`

// workload writes to every table as the application would, in small
// transactions, until stop is closed, counting the committed ones in
// commits. Errors go to t.
//
// TRUNCATE runs only once truncate is set: the snapshot refuses to start
// when a TRUNCATE waits for a table's lock (it tells the user to run again),
// which a test cannot tell from a failure.
func workload(t *testing.T, url string, truncate *atomic.Bool, commits *atomic.Int64, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Errorf("workload: %v", err)
		return
	}
	defer conn.Close(ctx)
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			stmts := []string{
				fmt.Sprintf(`INSERT INTO "App Data"."Mixed Case" ("Weird Col", m, tags, nums, doc, n, f, b, qty, price)
					VALUES ('new %d', 'happy', ARRAY[NULL, 'q''%d'], ARRAY[NULL]::int[], '{"k": [1, null, "x"]}', 'NaN', '-Infinity', '\x00ff%02x', %d, 2.5)`, i, i, i%256, i%9),
				fmt.Sprintf(`UPDATE "App Data"."Mixed Case" SET "Weird Col" = 'upd %d', nums = ARRAY[%d, NULL], f = 'Infinity' WHERE "Id" = %d`, i, i, 6+rnd.Intn(1990)),
				// The big value stays as it is; another column changes.
				fmt.Sprintf(`UPDATE "App Data"."Mixed Case" SET qty = qty + 1, doc = doc || '{"touched": %d}' WHERE "Id" = %d`, i, 1+rnd.Intn(5)),
				fmt.Sprintf(`DELETE FROM "App Data"."Mixed Case" WHERE "Id" = %d`, 6+rnd.Intn(1990)),
				// Identical rows: add two, change one of a pair, delete one.
				fmt.Sprintf(`INSERT INTO nopk VALUES (%d, 'dup'), (%d, 'dup')`, i%20, i%20),
				fmt.Sprintf(`UPDATE nopk SET b = b || '+' WHERE ctid = (SELECT ctid FROM nopk WHERE a = %d LIMIT 1)`, rnd.Intn(50)),
				fmt.Sprintf(`DELETE FROM nopk WHERE ctid = (SELECT ctid FROM nopk WHERE a = %d LIMIT 1)`, rnd.Intn(50)),
				fmt.Sprintf(`INSERT INTO events VALUES (%d, DATE '2025-03-01' + %d, '{"w": %d}')`, 100000+i, i%600, i),
				// Moves a row to the other partition (its key changes).
				fmt.Sprintf(`UPDATE events SET at = at + 365, payload = payload || '{"moved": true}' WHERE id = %d AND at < '2026-01-01'`, 1+rnd.Intn(1000)),
				fmt.Sprintf(`DELETE FROM events WHERE id = %d`, 1+rnd.Intn(1000)),
				fmt.Sprintf(`INSERT INTO scratch VALUES (%d, 'w') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v || 'x'`, 1000+i%300),
			}
			if i%40 == 39 && truncate.Load() {
				stmts = append(stmts, `TRUNCATE scratch`, fmt.Sprintf(`INSERT INTO scratch SELECT g, 'after truncate %d' FROM generate_series(1, 20) g`, i))
			}
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("%w\nSQL: %s", err, s)
				}
			}
			return nil
		})
		if err != nil && conn.IsClosed() || pgutil.IsConnectionLost(err) {
			// The server restarted (the test does that): reconnect. The
			// interrupted transaction may or may not have committed; the
			// comparison at the end takes whatever the source holds.
			conn.Close(ctx)
			for {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if conn, err = pgx.Connect(ctx, url); err == nil {
					break
				}
			}
			continue
		}
		if err != nil {
			t.Errorf("workload: %v", err)
			return
		}
		commits.Add(1)
		time.Sleep(5 * time.Millisecond) // the pace of the application, not a wait for anything
	}
}

// TestTriggerMigration migrates a Heroku-like source with `--capture
// auto` (which must choose trigger capture) while the application
// writes, streams with a kill -9 and restart in the middle, and checks
// that source and target end identical; then cleanup leaves nothing of
// trigger capture on the source.
func TestTriggerMigration(t *testing.T) {
	srcDB, srcURL := appSource(t, heroku)
	dstDB := heroku.NewDatabase(t)
	dstURL := heroku.URL(dstDB)
	app := connect(t, srcURL)
	exec1(t, app, appSchema)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var truncate atomic.Bool
	var commits atomic.Int64
	go workload(t, srcURL, &truncate, &commits, stop, &wg)
	// appWrites waits until the application has committed n more
	// transactions.
	appWrites := func(n int64, when string) {
		t.Helper()
		at := commits.Load()
		waitFor(t, 30*time.Second, fmt.Sprintf("the application to commit %d transactions %s", n, when), func() bool { return commits.Load() >= at+n })
	}
	stopped := false
	stopWorkload := func() {
		if !stopped {
			stopped = true
			close(stop)
			wg.Wait()
		}
	}
	defer stopWorkload()

	out := runOK(t, "snapshot", "--source", srcURL, "--target", dstURL, "--capture", "auto", "--jobs", "2", "--metrics-addr", "")
	if !strings.Contains(out, "capture: trigger, because user") {
		t.Errorf("snapshot did not log why it chose trigger capture:\n%s", out)
	}
	if !strings.Contains(out, "has no primary key: trigger capture keys its rows by all their columns") || !strings.Contains(out, "nopk") {
		t.Errorf("snapshot did not log how the table without a primary key is keyed:\n%s", out)
	}
	if strings.Contains(out, appPassword) {
		t.Errorf("snapshot output holds the source password")
	}
	truncate.Store(true)
	dst := connect(t, dstURL)
	if got := queryString(t, dst, `SELECT capture || '/' || snapshot_status FROM replicator.state`); got != "trigger/done" {
		t.Fatalf("target state capture/status = %s, want trigger/done", got)
	}
	// The copy left the source's bookkeeping and capture triggers behind
	// (the target's own, the chunk ledger and what it built, may stay).
	if got := queryString(t, dst, `SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'replicator' AND c.relname NOT IN ('state', 'snapshot_progress', 'chunks', 'postdata', 'pending_fks') AND c.relkind IN ('r', 'p'))
		+ (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_capture%')`); got != "0" {
		t.Errorf("target holds %s changelog tables or capture triggers", got)
	}

	metrics := freePort(t)
	streamArgs := []string{"stream", "--source", srcURL, "--target", dstURL, "--txn-memory-mb", "1"}
	s1 := start(t, append(streamArgs, "--metrics-addr", metrics)...)
	// Once it has applied a batch, the metrics it serves must say so.
	var applied int64
	waitFor(t, 20*time.Second, "the first stream to apply a batch", func() bool {
		applied = queryInt(t, dst, `SELECT applied_batch FROM replicator.state`)
		return applied > 0
	})
	var m testenv.Metrics
	waitFor(t, 20*time.Second, fmt.Sprintf("the metrics to show batch %d applied", applied), func() bool {
		m, _ = testenv.ScrapeMetrics(metrics)
		b, _ := m.Value("replicator_trigger_last_applied_batch")
		return b >= float64(applied)
	})
	if n, _ := m.Value("replicator_applied_transactions_total"); n < 1 {
		t.Errorf("replicator_applied_transactions_total = %v after batch %d was applied, want at least 1", n, applied)
	}
	for _, g := range []struct {
		name string
		max  float64
	}{
		{"replicator_trigger_changelog_rows", 1e7},
		{"replicator_trigger_capture_lag_seconds", 300},
		{"replicator_apply_lag_seconds", 300},
	} {
		if v, ok := m.Value(g.name); !ok || v < 0 || v > g.max {
			t.Errorf("metric %s = %v (exported: %v), want between 0 and %v", g.name, v, ok, g.max)
		}
	}
	if err := s1.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s1.cmd.Wait()
	killedAt := queryString(t, dst, `SELECT applied_batch::text FROM replicator.state`)
	appWrites(50, "while no stream runs")

	s2 := start(t, append(streamArgs, "--metrics-addr", "")...)
	waitFor(t, 30*time.Second, "the restarted stream to apply a batch after "+killedAt, func() bool {
		return queryString(t, dst, `SELECT (applied_batch > $1::bigint)::text FROM replicator.state`, killedAt) == "true"
	})
	// Source and target (one cluster here) restart under the stream: it
	// reconnects and resumes from the target's recorded batch.
	if err := heroku.Restart(testenv.Fast); err != nil {
		t.Fatal(err)
	}
	app, dst = connect(t, srcURL), connect(t, dstURL)
	restartedAt := queryInt(t, dst, `SELECT applied_batch FROM replicator.state`)
	appWrites(50, "after the server restart")
	waitFor(t, 30*time.Second, "the stream to apply a batch after the server restart", func() bool {
		return queryInt(t, dst, `SELECT applied_batch FROM replicator.state`) > restartedAt
	})
	stopWorkload()
	// A last TRUNCATE and rows after it, once nothing else writes.
	exec1(t, app, `BEGIN; TRUNCATE scratch; INSERT INTO scratch VALUES (1, 'final'); COMMIT`)

	want := sums(t, app)
	t.Logf("source tables: %v", want)
	var diff string
	waitFor(t, 40*time.Second, "the target to match the source", func() bool {
		diff = diffSums(want, sums(t, dst))
		return diff == ""
	})
	if diff != "" {
		t.Fatalf("target differs from source:\n%s\nstream output:\n%s", diff, s2.out)
	}
	if got := queryString(t, dst, `SELECT (applied_batch > $1::bigint)::text FROM replicator.state`, killedAt); got != "true" {
		t.Errorf("the restarted stream recorded no batch after %s, where the killed one stopped", killedAt)
	}
	if err := s2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := s2.cmd.Wait(); err != nil {
		t.Errorf("stream stopped with %v after SIGTERM:\n%s", err, s2.out)
	}
	if !strings.Contains(s2.out.String(), "stream interrupted; reconnecting") {
		t.Errorf("the stream did not report the server restart:\n%s", s2.out)
	}
	if !strings.Contains(s2.out.String(), "streaming trigger capture batches") {
		t.Errorf("the stream did not follow trigger capture from the target's state:\n%s", s2.out)
	}
	if strings.Contains(s2.out.String(), appPassword) {
		t.Error("stream output holds the source password")
	}
	// The purge keeps the changelog small: what is left is at most what
	// arrived after the last applied batch (nothing, once idle).
	if n := queryString(t, app, `SELECT count(*)::text FROM replicator.changelog`); n != "0" {
		t.Errorf("changelog holds %s rows after the stream caught up and the application stopped", n)
	}

	runOK(t, "cleanup", "--source", srcURL, "--target", dstURL, "--yes")
	sup := connect(t, heroku.URL(srcDB))
	left := queryString(t, sup, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator%')
		+ (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'replicator')
		+ (SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator')`)
	if left != "0" {
		t.Errorf("cleanup left %s triggers, functions or schemas of trigger capture on the source", left)
	}
	// The application's data is untouched by cleanup.
	if d := diffSums(want, sums(t, app)); d != "" {
		t.Errorf("cleanup changed the source's data:\n%s", d)
	}
}

// TestAutoChoosesLogicalOnNormalSource: with a superuser on a
// wal_level=logical source, `--capture auto` picks logical capture, and
// the target's state says so.
func TestAutoChoosesLogicalOnNormalSource(t *testing.T) {
	srcDB := normal.NewDatabase(t)
	dstDB := normal.NewDatabase(t)
	src := connect(t, normal.URL(srcDB))
	exec1(t, src, `CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i`)
	out := runOK(t, "snapshot", "--source", normal.URL(srcDB), "--target", normal.URL(dstDB), "--capture", "auto", "--metrics-addr", "")
	if !strings.Contains(out, "capture: logical, because") {
		t.Errorf("snapshot did not log why it chose logical capture:\n%s", out)
	}
	dst := connect(t, normal.URL(dstDB))
	if got := queryString(t, dst, `SELECT capture FROM replicator.state`); got != "logical" {
		t.Errorf("auto chose %q capture on a normal source, want logical", got)
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'replicator'`); n != "0" {
		t.Error("logical capture installed trigger capture on the source")
	}
	runOK(t, "cleanup", "--source", normal.URL(srcDB), "--target", normal.URL(dstDB), "--yes")
}

func waitFor(t *testing.T, limit time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			t.Errorf("timed out after %s waiting for %s", limit, what)
			return
		}
		time.Sleep(300 * time.Millisecond)
	}
}
