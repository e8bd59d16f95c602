package apply

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"replicator/pkg/state"
)

// awkwardDDL has the types and shapes that break naive apply code.
const awkwardDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SCHEMA "App Data";
CREATE TABLE "App Data"."Mixed Case" (
	"Id" bigint PRIMARY KEY,
	"Mood" mood,
	tags text[],
	doc jsonb,
	plain json,
	amount numeric,
	ratio float8,
	blob bytea,
	big text,
	ts timestamptz,
	total numeric GENERATED ALWAYS AS (amount * 2) STORED
);
CREATE TABLE ident (
	id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	note text
);
CREATE TABLE dup (a int, b text, c jsonb, d json, e float8[]);
ALTER TABLE dup REPLICA IDENTITY FULL;
CREATE TABLE events (id int, at date NOT NULL, what text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
`

const awkwardSetup = `
INSERT INTO "App Data"."Mixed Case" ("Id", "Mood", tags, doc, plain, amount, ratio, blob, big, ts)
SELECT g, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3], ARRAY['a', NULL, 'c "q"'], jsonb_build_object('k', g, 'nested', jsonb_build_array(1, null)),
	'{"x": 1}', CASE WHEN g % 5 = 0 THEN 'NaN'::numeric ELSE g * 1.5 END,
	CASE g % 3 WHEN 0 THEN 'Infinity'::float8 WHEN 1 THEN '-Infinity'::float8 ELSE g / 7.0 END,
	decode(md5(g::text), 'hex'), CASE WHEN g = 1 THEN repeat(md5('big'), 20000) ELSE 'small' END, '2024-02-29 12:00:00+00'
FROM generate_series(1, 50) g;
INSERT INTO ident (note) SELECT 'n' || g FROM generate_series(1, 10) g;
INSERT INTO dup VALUES (1, 'same', '{"a": 1}', '{"j":  [1, null]}', '{NaN,-Infinity,NULL}'),
	(1, 'same', '{"a": 1}', '{"j":  [1, null]}', '{NaN,-Infinity,NULL}'),
	(1, 'same', '{"a": 1}', '{"j":  [1, null]}', '{NaN,-Infinity,NULL}'), (2, NULL, NULL, NULL, NULL);
INSERT INTO events VALUES (1, '2024-05-01', 'one'), (2, '2024-06-01', 'two');
INSERT INTO parent SELECT generate_series(1, 5);
INSERT INTO child SELECT g, g FROM generate_series(1, 5) g;
INSERT INTO counters SELECT g, 0 FROM generate_series(1, 20) g;
`

// TestStreamAwkwardTypes writes on the source while the stream runs and
// checks every table is identical afterwards, plus the specific cases
// (unchanged TOAST, identical duplicates, TRUNCATE, partition moves).
func TestStreamAwkwardTypes(t *testing.T) {
	p := snapshotPair(t, awkwardDDL, awkwardSetup)
	// Changes made between the snapshot and the stream's start.
	srcPG.Exec(t, p.src, `INSERT INTO counters VALUES (100, 1); UPDATE counters SET n = n + 1 WHERE id <= 10`)
	r := p.start(t, p.config(t))

	// While running, the slot must never confirm more than the target holds.
	var flushViolations atomic.Int64
	var flushChecks atomic.Int64
	watchCtx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		watchFlush(watchCtx, t, p, &flushChecks, &flushViolations)
	}()

	src := srcPG.Connect(t, p.src)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := src.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("source: %s: %v", sql, err)
		}
	}
	// Random writes over the main table and counters.
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		id := 1 + rng.Intn(80)
		switch rng.Intn(4) {
		case 0:
			exec(`INSERT INTO "App Data"."Mixed Case" ("Id", "Mood", tags, doc, amount, ratio, blob, big)
				VALUES ($1, 'happy', ARRAY[NULL, 'x'], '{"new": true}', 'NaN', '-Infinity', '\x00ff', 'b')
				ON CONFLICT ("Id") DO UPDATE SET "Mood" = 'ok', tags = NULL`, id)
		case 1:
			exec(`UPDATE "App Data"."Mixed Case" SET amount = amount + 1, doc = doc || '{"u": 1}' WHERE "Id" = $1`, id)
		case 2:
			if id != 1 {
				exec(`DELETE FROM "App Data"."Mixed Case" WHERE "Id" = $1`, id)
			}
		case 3:
			tx, err := src.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`, 1+id%20)
			tx.Exec(ctx, `UPDATE counters SET n = n + 1 WHERE id = $1`, 1+(id+7)%20)
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Unchanged TOAST: the big value is not sent, and must survive.
	exec(`UPDATE "App Data"."Mixed Case" SET "Mood" = 'sad' WHERE "Id" = 1`)
	// Identity columns (GENERATED ALWAYS) get the source's values.
	exec(`INSERT INTO ident (note) VALUES ('after'), ('more'); DELETE FROM ident WHERE id = 3; UPDATE ident SET note = 'changed' WHERE id = 4`)
	// Identical duplicates under REPLICA IDENTITY FULL: one delete removes one row.
	exec(`DELETE FROM dup WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1)`)
	exec(`UPDATE dup SET c = '{"b": 2}' WHERE ctid = (SELECT ctid FROM dup WHERE a = 1 LIMIT 1)`)
	exec(`UPDATE dup SET b = 'was null' WHERE a = 2`)
	// A row moved between partitions; a new partition row.
	exec(`UPDATE events SET at = '2025-03-01' WHERE id = 1`)
	exec(`INSERT INTO events VALUES (3, '2025-07-01', 'three')`)
	// TRUNCATE ... CASCADE through a foreign key, and RESTART IDENTITY.
	exec(`TRUNCATE parent CASCADE`)
	exec(`INSERT INTO parent VALUES (9); INSERT INTO child VALUES (9, 9)`)
	exec(`TRUNCATE ident RESTART IDENTITY`)
	exec(`INSERT INTO ident (note) VALUES ('restarted')`)

	p.waitCaughtUp(t, 60*time.Second, r)
	stopWatch()
	wg.Wait()
	// One more sample now that the stream is caught up and still running.
	var confirmed string
	if err := src.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", p.slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if c, _ := pglogrepl.ParseLSN(confirmed); c > p.appliedLSN(t) {
		flushViolations.Add(1)
	}
	flushChecks.Add(1)
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
	p.assertIdentical(t)

	dst := targetCluster(t).Connect(t, p.dst)
	var bigLen, dups int
	if err := dst.QueryRow(ctx, `SELECT length(big) FROM "App Data"."Mixed Case" WHERE "Id" = 1`).Scan(&bigLen); err != nil {
		t.Fatal(err)
	}
	if bigLen != 32*20000 {
		t.Errorf("the TOASTed value after an update of another column is %d bytes, want %d", bigLen, 32*20000)
	}
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM dup WHERE a = 1`).Scan(&dups); err != nil {
		t.Fatal(err)
	}
	if dups != 2 {
		t.Errorf("duplicates left on the target: %d, want 2", dups)
	}
	var identID int
	if err := dst.QueryRow(ctx, `SELECT id FROM ident WHERE note = 'restarted'`).Scan(&identID); err != nil || identID != 1 {
		t.Errorf("identity after TRUNCATE RESTART IDENTITY: id %d (%v), want 1", identID, err)
	}
	t.Logf("confirmed flush position sampled %d times", flushChecks.Load())
	if n := flushViolations.Load(); n > 0 {
		t.Errorf("the slot confirmed more than the target had committed %d times", n)
	}
}

// watchFlush samples the slot's confirmed_flush_lsn and the target's
// applied_lsn (read after it, so the target's can only be newer) and
// counts the times the source was told more than the target holds. It
// reconnects when a server restarts.
func watchFlush(ctx context.Context, t *testing.T, p *pair, checks, violations *atomic.Int64) {
	for ctx.Err() == nil {
		sampleFlush(ctx, t, p, checks, violations)
		time.Sleep(100 * time.Millisecond)
	}
}

func sampleFlush(ctx context.Context, t *testing.T, p *pair, checks, violations *atomic.Int64) {
	src, err := pgx.Connect(ctx, p.srcURL)
	if err != nil {
		return
	}
	defer src.Close(context.Background())
	dst, err := pgx.Connect(ctx, p.dstURL)
	if err != nil {
		return
	}
	defer dst.Close(context.Background())
	for ctx.Err() == nil {
		var confirmed, appliedText *string
		if err := src.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", p.slot).Scan(&confirmed); err != nil {
			return
		}
		if err := dst.QueryRow(ctx, "SELECT applied_lsn::text FROM replicator.state").Scan(&appliedText); err != nil {
			return
		}
		if confirmed != nil && appliedText != nil {
			c, _ := pglogrepl.ParseLSN(*confirmed)
			applied, _ := pglogrepl.ParseLSN(*appliedText)
			checks.Add(1)
			if c > applied {
				violations.Add(1)
				t.Logf("slot confirmed %s but the target holds %s", c, applied)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStreamRefusesWithoutSnapshot: no state, or an unfinished snapshot,
// is a clear error and not a stream onto a partial copy.
func TestStreamRefusesWithoutSnapshot(t *testing.T) {
	dst := targetCluster(t)
	src := srcPG.NewDatabase(t)
	db := dst.NewDatabase(t)
	cfg := StreamConfig{SourceURL: srcPG.URL(src), TargetURL: dst.URL(db)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Stream(ctx, cfg, zapNop())
	if !errors.Is(err, state.ErrNoMigration) {
		t.Fatalf("stream without state: %v, want %v", err, state.ErrNoMigration)
	}
	conn := dst.Connect(t, db)
	if err := state.Begin(ctx, conn, &state.State{Capture: state.CaptureLogical, SlotName: "x", Publication: "x",
		ConsistentLSN: "0/1000000", SnapshotStatus: state.SnapshotCopying}); err != nil {
		t.Fatal(err)
	}
	err = Stream(ctx, cfg, zapNop())
	if !errors.Is(err, ErrSnapshotNotDone) {
		t.Fatalf("stream with an unfinished snapshot: %v, want %v", err, ErrSnapshotNotDone)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Fatal("error shows the password")
	}
}

// TestStreamStopsOnRefusedChange: a row the target lacks stops the stream
// with the table, the key, the LSN and the cause, recorded in the state.
func TestStreamStopsOnRefusedChange(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE items (id int PRIMARY KEY, v text)`, `INSERT INTO items SELECT g, 'v' FROM generate_series(1, 10) g`)
	targetCluster(t).Exec(t, p.dst, `DELETE FROM items WHERE id = 7`)
	r := p.start(t, p.config(t))
	srcPG.Exec(t, p.src, `INSERT INTO items VALUES (11, 'fine'); UPDATE items SET v = 'x' WHERE id = 7`)
	var err error
	select {
	case <-r.done:
		err = r.err
	case <-time.After(60 * time.Second):
		t.Fatal("the stream did not stop on a change the target cannot apply")
	}
	var ae *ApplyError
	if !errors.As(err, &ae) || !errors.Is(err, ErrRowMissing) {
		t.Fatalf("error %v, want an ApplyError for a missing row", err)
	}
	for _, want := range []string{"items", "(id)=(7)", "update", "LSN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	st, lerr := state.Load(context.Background(), targetCluster(t).Connect(t, p.dst))
	if lerr != nil || !strings.Contains(st.LastError, "(id)=(7)") {
		t.Errorf("state's last error %q (%v) does not hold the failure", st.LastError, lerr)
	}
	// The transaction that failed was not partly applied.
	var n int
	targetCluster(t).Connect(t, p.dst).QueryRow(context.Background(), "SELECT count(*) FROM items WHERE id = 11").Scan(&n)
	if n != 0 {
		t.Errorf("the failed source transaction's other change was applied")
	}
	_ = fmt.Sprint()
}

// TestStreamLargeTransaction applies one source transaction far larger
// than the memory bound (it is spilled to disk), and leaves no spill file.
func TestStreamLargeTransaction(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE wide (id int PRIMARY KEY, pad text, n int);
		CREATE TABLE side (id int PRIMARY KEY)`, `INSERT INTO wide SELECT g, repeat('p', 100), 0 FROM generate_series(1, 20000) g`)
	cfg := p.config(t)
	cfg.Capture.TxnMemory = 64 << 10 // the transaction below is ~10 MB of changes
	cfg.Capture.QueueMemory = 128 << 10
	spill := cfg.Capture.SpillDir
	r := p.start(t, cfg)
	srcPG.Exec(t, p.src, `BEGIN;
		UPDATE wide SET n = n + 1, pad = repeat('q', 150);
		INSERT INTO wide SELECT g, 'new', 1 FROM generate_series(20001, 30000) g;
		DELETE FROM wide WHERE id % 10 = 0;
		INSERT INTO side VALUES (1);
		COMMIT;
		INSERT INTO side VALUES (2);`)
	// A spill file appears while the transaction is being received.
	sawSpill := false
	deadline := time.Now().Add(60 * time.Second)
	want := p.sourceLSN(t)
	for p.appliedLSN(t) < want && time.Now().Before(deadline) {
		if files, _ := filepath.Glob(filepath.Join(spill, "*", "*.spill")); len(files) > 0 {
			sawSpill = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.waitCaughtUp(t, 60*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
	p.assertIdentical(t)
	if !sawSpill {
		t.Error("no spill file was seen while a transaction of ~10 MB streamed with a 64 KiB bound")
	}
	if files, _ := filepath.Glob(filepath.Join(spill, "*", "*")); len(files) > 0 {
		t.Errorf("spill files left behind: %v", files)
	}
}

// TestStreamNetEffect puts many changes to the same keys in one source
// transaction (so in one target transaction), where they are reduced to
// their net effect: insert then update then delete, delete then insert
// again, updates that leave a TOASTed value unchanged, a key that changes
// (applied in order) between folded changes, and a unique index besides
// the key (such a table is applied in order).
func TestStreamNetEffect(t *testing.T) {
	p := snapshotPair(t, `
		CREATE TABLE k (id int PRIMARY KEY, a text, big text, n int);
		CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE);
		CREATE TABLE two (x int, y text, v int, PRIMARY KEY (x, y))`, `
		INSERT INTO k SELECT g, 'a', CASE WHEN g = 1 THEN repeat(md5('t'), 10000) END, 0 FROM generate_series(1, 20) g;
		INSERT INTO u VALUES (1, 'a@x'), (2, 'b@x');
		INSERT INTO two VALUES (1, 'one', 0), (2, 'two', 0)`)
	r := p.start(t, p.config(t))
	srcPG.Exec(t, p.src, `BEGIN;
		INSERT INTO k VALUES (100, 'new', NULL, 1);
		UPDATE k SET a = 'upd' WHERE id = 100;
		DELETE FROM k WHERE id = 100;
		DELETE FROM k WHERE id = 2;
		INSERT INTO k VALUES (2, 'again', 'x', 2);
		UPDATE k SET n = n + 1 WHERE id = 2;
		UPDATE k SET n = 5 WHERE id = 1;
		UPDATE k SET a = 'toast kept' WHERE id = 1;
		INSERT INTO k VALUES (500, 'big', (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 2000) g), 0);
		UPDATE k SET n = 1 WHERE id = 500;
		UPDATE k SET big = (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 3000) g) WHERE id = 5;
		UPDATE k SET n = 2 WHERE id = 5;
		UPDATE k SET id = 300 WHERE id = 3;
		UPDATE k SET a = 'after key change' WHERE id = 300;
		INSERT INTO k VALUES (3, 'reused key', NULL, 3);
		UPDATE k SET n = n + 10;
		DELETE FROM k WHERE id = 4;
		UPDATE u SET email = 'tmp@x' WHERE id = 1;
		UPDATE u SET email = 'a@x' WHERE id = 2;
		UPDATE u SET email = 'b@x' WHERE id = 1;
		UPDATE two SET v = 7 WHERE x = 1;
		UPDATE two SET y = 'TWO' WHERE x = 2;
		INSERT INTO two VALUES (2, 'two', 9);
		COMMIT;
		BEGIN;
		UPDATE k SET n = 99 WHERE id = 1;
		INSERT INTO k VALUES (4, 'back', NULL, 4);
		COMMIT`)
	p.waitCaughtUp(t, 60*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
	p.assertIdentical(t)
}

// TestStreamPartitionRoot: with publish_via_partition_root the changes
// arrive for the partitioned root, and apply through the target's root
// (rows routed, and moved between partitions, by the target).
func TestStreamPartitionRoot(t *testing.T) {
	p := snapshotPair(t, `
		CREATE TABLE m (id int, at date NOT NULL, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE m_1 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
		CREATE TABLE m_2 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE f (a int, b text) PARTITION BY LIST (a);
		CREATE TABLE f_1 PARTITION OF f FOR VALUES IN (1);
		CREATE TABLE f_2 PARTITION OF f FOR VALUES IN (2);
		ALTER TABLE f REPLICA IDENTITY FULL; ALTER TABLE f_1 REPLICA IDENTITY FULL; ALTER TABLE f_2 REPLICA IDENTITY FULL;`,
		`INSERT INTO m VALUES (1, '2024-03-01', 'a'), (2, '2024-04-01', 'b');
		INSERT INTO f VALUES (1, 'x'), (1, 'x'), (2, 'y')`)
	srcPG.Exec(t, p.src, `ALTER PUBLICATION replicator SET (publish_via_partition_root = true)`)
	r := p.start(t, p.config(t))
	srcPG.Exec(t, p.src, `INSERT INTO m VALUES (3, '2025-02-01', 'c');
		UPDATE m SET at = '2025-05-05' WHERE id = 1;
		UPDATE m SET v = 'bb' WHERE id = 2;
		DELETE FROM f WHERE ctid = (SELECT ctid FROM f_1 LIMIT 1) AND tableoid = 'f_1'::regclass;
		UPDATE f SET a = 1 WHERE a = 2;`)
	p.waitCaughtUp(t, 60*time.Second, r)
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
	p.assertIdentical(t)
}

// TestStreamIdleConfirms: while this database is idle and others on the
// source write, the slot's confirmed position still moves forward, so the
// source does not retain WAL because of the stream.
func TestStreamIdleConfirms(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE q (id int PRIMARY KEY)`, ``)
	r := p.start(t, p.config(t))
	other := srcPG.NewDatabase(t)
	srcPG.Exec(t, other, `CREATE TABLE busy AS SELECT g FROM generate_series(1, 100000) g`)
	want := p.sourceLSN(t)
	c := srcPG.Connect(t, p.src)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var s *string
		if err := c.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", p.slot).Scan(&s); err != nil {
			t.Fatal(err)
		}
		if s != nil {
			if l, _ := pglogrepl.ParseLSN(*s); l >= want {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot's confirmed position stayed at %v while the source moved to %s", deref(s), want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// What was confirmed is recorded on the target first.
	if applied := p.appliedLSN(t); applied < want {
		t.Errorf("the target records %s, less than the confirmed %s", applied, want)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

// TestStreamStopsOnDuplicateKey: an insert the target refuses (the row is
// already there) is found inside a set-wise insert and named.
func TestStreamStopsOnDuplicateKey(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE items (id int PRIMARY KEY, v text)`, ``)
	targetCluster(t).Exec(t, p.dst, `INSERT INTO items VALUES (50, 'drift')`)
	r := p.start(t, p.config(t))
	srcPG.Exec(t, p.src, `INSERT INTO items SELECT g, 'v' FROM generate_series(1, 100) g`)
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the stream did not stop on a duplicate key")
	}
	for _, want := range []string{"insert", "items", "(id)=(50)", "duplicate key", "LSN"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not name %q", r.err, want)
		}
	}
	var n int
	targetCluster(t).Connect(t, p.dst).QueryRow(context.Background(), "SELECT count(*) FROM items").Scan(&n)
	if n != 1 {
		t.Errorf("%d rows on the target after the refused transaction, want the 1 that was there", n)
	}
}
