package trigger_test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"replicator/pkg/trigger"
)

// awkwardDDL is the schema of the end-to-end test, run on both sides.
const awkwardDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy, really', 'it''s "fine"');
CREATE TABLE awk (
	id  int PRIMARY KEY,
	m   mood,
	arr text[],
	j   jsonb,
	n   numeric,
	f   float8,
	b   bytea,
	big text,
	ts  timestamptz,
	iv  interval,
	g   int GENERATED ALWAYS AS (id * 2) STORED
);
CREATE TABLE nopk (a int, b text);
CREATE TABLE trunc_me (id int PRIMARY KEY, v text);
CREATE TABLE parted (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);
CREATE TABLE "Mixed Case" ("Id" int PRIMARY KEY, "select" text);
`

var compared = []string{"awk", "nopk", "trunc_me", "parted", `"Mixed Case"`}

// Awkward values, as SQL expressions.
var (
	arrs  = []string{`ARRAY['a,b', NULL, 'c"d', '', 'NULL']`, `'{}'::text[]`, `NULL`, `ARRAY['{x}', 'back\slash']`}
	jsons = []string{`'{"a": [1, 2.50, null], "s": "x\"y"}'`, `'[]'`, `'{"n": 1.0}'`, `'{"n": 1.00}'`, `NULL`, `'"\u00e9"'`}
	nums  = []string{`'NaN'`, `1.50`, `1.5`, `-0.000`, `12345678901234567890.123456789`, `NULL`}
	flts  = []string{`'Infinity'`, `'-Infinity'`, `'-0'`, `0`, `'NaN'`, `1.1e-300`, `0.1`, `NULL`}
	byts  = []string{`'\x00ff2c'::bytea`, `''::bytea`, `NULL`, `'\x5c27'::bytea`}
	moods = []string{`'sad'`, `'ok'`, `'happy, really'`, `'it''s "fine"'`, `NULL`}
	ivs   = []string{`'1 day 25:00:00'`, `'-1 mon'`, `'24 hours'`, `'1 day'`, `NULL`}
	bigs  = []string{`(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 3000))`, `'small'`, `NULL`}
)

func pick(r *rand.Rand, xs []string) string { return xs[r.Intn(len(xs))] }

// writer runs random small transactions as the application until stop.
type writer struct {
	s       *source
	nextID  *atomic.Int64
	errs    chan error
	commits atomic.Int64
}

// waitCommits waits until the writers committed n more transactions.
func (w *writer) waitCommits(t *testing.T, n int64) {
	t.Helper()
	want := w.commits.Load() + n
	deadline := time.Now().Add(30 * time.Second)
	for w.commits.Load() < want {
		select {
		case err := <-w.errs:
			t.Fatalf("application write failed: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the writers committed %d of %d more transactions in 30s", w.commits.Load()-want+n, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *writer) run(ctx context.Context, seed int64, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	r := rand.New(rand.NewSource(seed))
	conn, err := pgx.Connect(ctx, w.s.url)
	if err != nil {
		w.errs <- err
		return
	}
	defer conn.Close(ctx)
	for {
		select {
		case <-stop:
			return
		default:
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for i := 0; i < 1+r.Intn(4); i++ {
				if _, err := tx.Exec(ctx, w.statement(r)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil && !isRetryable(err) {
			w.errs <- err
			return
		}
		if err == nil {
			w.commits.Add(1)
		}
	}
}

func (w *writer) statement(r *rand.Rand) string {
	id := 1 + r.Int63n(w.nextID.Load())
	switch r.Intn(14) {
	case 0, 1:
		return fmt.Sprintf(`INSERT INTO awk (id, m, arr, j, n, f, b, big, ts, iv) VALUES (%d, %s, %s, %s, %s, %s, %s, %s, now(), %s)`,
			w.nextID.Add(1), pick(r, moods), pick(r, arrs), pick(r, jsons), pick(r, nums), pick(r, flts), pick(r, byts), pick(r, bigs), pick(r, ivs))
	case 2, 3:
		return fmt.Sprintf(`UPDATE awk SET arr = %s, j = %s, n = %s, f = %s, iv = %s WHERE id = %d`,
			pick(r, arrs), pick(r, jsons), pick(r, nums), pick(r, flts), pick(r, ivs), id)
	case 4:
		// leaves the big TOASTed value alone
		return fmt.Sprintf(`UPDATE awk SET m = %s, b = %s WHERE id = %d`, pick(r, moods), pick(r, byts), id)
	case 5:
		return fmt.Sprintf(`UPDATE awk SET big = %s WHERE id = %d`, pick(r, bigs), id)
	case 6:
		return fmt.Sprintf(`DELETE FROM awk WHERE id = %d`, id)
	case 7:
		return fmt.Sprintf(`INSERT INTO nopk VALUES (%d, %s)`, r.Intn(3), pick(r, []string{`'x'`, `'y'`, `NULL`}))
	case 8:
		return fmt.Sprintf(`DELETE FROM nopk WHERE ctid = (SELECT ctid FROM nopk WHERE a = %d LIMIT 1)`, r.Intn(3))
	case 9:
		return fmt.Sprintf(`UPDATE nopk SET b = %s WHERE ctid = (SELECT ctid FROM nopk WHERE a = %d LIMIT 1)`, pick(r, []string{`'x'`, `'z'`, `NULL`}), r.Intn(3))
	case 10:
		return fmt.Sprintf(`INSERT INTO parted VALUES (%d, %d, 'v%d') ON CONFLICT DO NOTHING`, id, r.Intn(200), r.Intn(9))
	case 11:
		// moves rows between partitions
		return fmt.Sprintf(`UPDATE parted SET k = (k + 100) %% 200, v = v || '.' WHERE id = %d`, id)
	case 12:
		return fmt.Sprintf(`INSERT INTO "Mixed Case" VALUES (%d, 'it''s %d') ON CONFLICT ("Id") DO UPDATE SET "select" = EXCLUDED."select" || '!'`, r.Intn(50), r.Intn(9))
	default:
		if r.Intn(20) == 0 {
			return `TRUNCATE trunc_me`
		}
		return fmt.Sprintf(`INSERT INTO trunc_me VALUES (%d, 'x') ON CONFLICT (id) DO UPDATE SET v = trunc_me.v || 'y'`, r.Intn(100))
	}
}

// TestCaptureMatchesSource is the end-to-end check of the handover and
// the batches: the application writes all along (during install, the
// capture point, the copy and the batches) as a role without superuser or
// REPLICATION on a wal_level=replica server; the copy read through the
// exported snapshot plus every batch applied in order by a plain-SQL
// applier must equal the source's final state, table by table.
func TestCaptureMatchesSource(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, awkwardDDL)
	s.exec(t, `INSERT INTO awk (id, m, arr, j, n, f, b, big, ts, iv)
		SELECT g, 'ok', ARRAY['a,b', NULL], '{"k": 1.0}', 'NaN', '-0', '\x00'::bytea,
			(SELECT string_agg(md5(g::text || i), '') FROM generate_series(1, 3000) i), now(), '1 day'
		FROM generate_series(1, 100) g;
		INSERT INTO nopk SELECT 1, 'dup' FROM generate_series(1, 5);
		INSERT INTO parted SELECT g, g % 200, 'p' FROM generate_series(1, 100) g`)
	targetDB := src.NewDatabase(t)
	src.Exec(t, targetDB, awkwardDDL)
	target := src.Connect(t, targetDB)

	var nextID atomic.Int64
	nextID.Store(100)
	w := &writer{s: s, nextID: &nextID, errs: make(chan error, 8)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go w.run(ctx, int64(i+1), stop, &wg)
	}
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopWriters()

	tables := install(t, s)
	w.waitCommits(t, 20) // writers commit after the install, before the capture point
	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	w.waitCommits(t, 20) // writers commit after the snapshot, before the copy reads
	copySnapshot(t, s, cp.SnapshotName, target, tables)
	if err := cp.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if cp.State().SnapshotXmin == "" || cp.State().Capture != "trigger" {
		t.Fatalf("capture point state %+v", cp.State())
	}

	reg := prometheus.NewRegistry()
	m, err := trigger.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	tickCtx, stopTicker := context.WithCancel(ctx)
	tickErr := make(chan error, 1)
	go func() { tickErr <- capt.RunTicker(tickCtx) }()

	sn := &seen{txnBatch: map[uint64]int64{}}
	var applied int64
	var maxRows float64
	consume := func(until time.Time, upTo int64) {
		for (upTo == 0 && time.Now().Before(until)) || (upTo > 0 && applied < upTo) {
			b, err := capt.NextBatch(ctx, applied)
			if err != nil {
				t.Fatal(err)
			}
			applyBatch(t, capt, b, target, sn)
			applied = b.ID
			if applied%5 == 0 {
				if err := capt.UpdateMetrics(ctx, applied, true); err != nil {
					t.Fatal(err)
				}
				maxRows = max(maxRows, gauge(t, reg, "replicator_trigger_changelog_rows"))
			}
			if _, err := capt.Purge(ctx, applied); err != nil {
				t.Fatal(err)
			}
		}
	}
	consume(time.Now().Add(1500*time.Millisecond), 0)

	// One transaction far larger than a cursor page, while others write.
	s.exec(t, `INSERT INTO awk (id, m, arr, n, big) SELECT 100000 + g, 'sad', ARRAY[g::text, NULL], g / 7.0, 'b' || g FROM generate_series(1, 3000) g;
		UPDATE awk SET f = '-Infinity' WHERE id > 100000 AND id % 3 = 0;
		DELETE FROM awk WHERE id > 100000 AND id % 5 = 0`)
	consume(time.Now().Add(1500*time.Millisecond), 0)

	stopWriters()
	select {
	case err := <-w.errs:
		t.Fatalf("application write failed (capture must never break the application): %v", err)
	default:
	}
	last, err := capt.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	consume(time.Time{}, last)
	stopTicker()
	if err := <-tickErr; err != context.Canceled {
		t.Fatalf("ticker: %v", err)
	}

	srcConn := s.connect(t)
	compareTables(t, srcConn, target, compared)
	if sn.changes < 3000 || len(sn.txnBatch) < 50 {
		t.Errorf("only %d changes in %d transactions were applied: the test did not exercise capture", sn.changes, len(sn.txnBatch))
	}
	var left int64
	if err := srcConn.QueryRow(ctx, `SELECT count(*) FROM replicator.changelog`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d changelog rows left after purging every applied batch", left)
	}
	if maxRows <= 0 {
		t.Errorf("changelog rows gauge never rose above 0 while changes were pending")
	}
	if g := gauge(t, reg, "replicator_trigger_changelog_rows"); g != 0 {
		t.Errorf("changelog rows gauge is %v after the final purge, want 0", g)
	}
	if g := gauge(t, reg, "replicator_trigger_capture_lag_seconds"); g < 0 || g > 60 {
		t.Errorf("capture lag gauge is %v", g)
	}
	t.Logf("%d changes in %d transactions over %d batches", sn.changes, len(sn.txnBatch), applied)
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
