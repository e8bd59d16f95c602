package trigger_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/internal/testenv"
	"replicator/pkg/trigger"
)

// readBatch returns "op:table:key" descriptions of a batch's changes, with
// the transaction of each.
func readBatch(t *testing.T, capt *trigger.Capture, applied int64) (*trigger.Batch, []string, []uint64) {
	t.Helper()
	ctx := context.Background()
	b, err := capt.NextBatch(ctx, applied)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := capt.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	var descs []string
	var txids []uint64
	for cur.Next(ctx) {
		ch := cur.Change()
		d := fmt.Sprintf("%s:%s:%s", ch.Op, ch.Table.Name, ch.KeyString())
		for i, v := range ch.New {
			if v.Kind == trigger.ValueText {
				d += fmt.Sprintf(" %s=%s", ch.Table.Columns[i].Name, v.Text)
			}
		}
		if ch.TxnEnd {
			d += " |"
		}
		descs = append(descs, d)
		txids = append(txids, ch.TxID)
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	return b, descs, txids
}

func startCapture(t *testing.T, s *source) *trigger.Capture {
	t.Helper()
	ctx := context.Background()
	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cp.Release(ctx)
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(capt.Close)
	return capt
}

// A transaction that took its txid early but commits after a tick, while
// a later transaction committed before that tick, lands in the batch of
// the first tick after its commit, whole; and a transaction spanning
// several ticks is never split.
func TestLateCommitterAndWholeTransactions(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	install(t, s)
	capt := startCapture(t, s)

	late := s.connect(t)
	early := s.connect(t)
	late.Exec(ctx, "BEGIN")
	var lateXid, earlyXid uint64
	if err := late.QueryRow(ctx, `INSERT INTO items VALUES (1, 'late') RETURNING pg_current_xact_id()::text::bigint`).Scan(&lateXid); err != nil {
		t.Fatal(err)
	}
	if err := early.QueryRow(ctx, `INSERT INTO items VALUES (2, 'early') RETURNING pg_current_xact_id()::text::bigint`).Scan(&earlyXid); err != nil {
		t.Fatal(err)
	}
	if lateXid >= earlyXid {
		t.Fatalf("test setup: late txid %d is not below early txid %d", lateXid, earlyXid)
	}
	tick1, err := capt.Tick(ctx) // late is still running here
	if err != nil {
		t.Fatal(err)
	}
	late.Exec(ctx, `INSERT INTO items VALUES (3, 'late too')`)
	tick2, err := capt.Tick(ctx) // still running: batch 2 is empty
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	tick3, err := capt.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tick1 != 1 || tick2 != 2 || tick3 != 3 {
		t.Fatalf("ticks %d, %d, %d; want 1, 2, 3", tick1, tick2, tick3)
	}
	b1, d1, _ := readBatch(t, capt, 0)
	_, d2, _ := readBatch(t, capt, 1)
	b3, d3, x3 := readBatch(t, capt, 2)
	want1 := []string{"insert:items:(id)=(2) id=2 v=early |"}
	want3 := []string{"insert:items:(id)=(1) id=1 v=late", "insert:items:(id)=(3) id=3 v=late too |"}
	if fmt.Sprint(d1) != fmt.Sprint(want1) || len(d2) != 0 || fmt.Sprint(d3) != fmt.Sprint(want3) {
		t.Fatalf("batches:\n1: %q\n2: %q\n3: %q\nwant 1: %q, 2 empty, 3: %q", d1, d2, d3, want1, want3)
	}
	if x3[0] != lateXid || x3[1] != lateXid {
		t.Errorf("batch 3 transactions %v, want %d", x3, lateXid)
	}
	if b1.ID != 1 || b3.ID != 3 || !b3.Time.After(b1.Time) {
		t.Errorf("batch ids/times: %d %s, %d %s", b1.ID, b1.Time, b3.ID, b3.Time)
	}
}

// Two transactions interleave on the same rows; the batch must order them
// so that applying it in order gives the source's final state. T1 writes
// row a first, T2 writes b and commits, then T1 overwrites b: T2 comes
// first although T1 wrote first.
func TestOrderFollowsRowLocks(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE kv (k text PRIMARY KEY, v text); INSERT INTO kv VALUES ('a', '0'), ('b', '0')`)
	install(t, s)
	capt := startCapture(t, s)
	t1, t2 := s.connect(t), s.connect(t)
	t1.Exec(ctx, "BEGIN")
	t1.Exec(ctx, `UPDATE kv SET v = 't1' WHERE k = 'a'`)
	t2.Exec(ctx, "BEGIN")
	t2.Exec(ctx, `UPDATE kv SET v = 't2' WHERE k = 'b'`)
	if _, err := t2.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	t1.Exec(ctx, `UPDATE kv SET v = 't1' WHERE k = 'b'`)
	if _, err := t1.Exec(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, d, _ := readBatch(t, capt, 0)
	want := []string{"update:kv:(k)=(b) v=t2 |", "update:kv:(k)=(a) v=t1", "update:kv:(k)=(b) v=t1 |"}
	if fmt.Sprint(d) != fmt.Sprint(want) {
		t.Fatalf("batch:\n%q\nwant\n%q", d, want)
	}
}

// An UPDATE records only what changed: a big TOASTed value left alone is
// not copied into the changelog, an UPDATE that changes nothing is not
// recorded, and values whose "=" hides a different text (numeric scale,
// -0, jsonb numbers, interval units) count as changed.
func TestUpdateRecordsChangedColumnsOnly(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE doc (id int PRIMARY KEY, title text, body text, n numeric, f float8, j jsonb, iv interval,
			g int GENERATED ALWAYS AS (id + 1) STORED);
		INSERT INTO doc VALUES (1, 't', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 20000) i), 1.0, 0, '{"x": 1.0}', '1 day')`)
	install(t, s)
	capt := startCapture(t, s)
	conn := s.connect(t)
	for _, q := range []string{
		`UPDATE doc SET title = 'new' WHERE id = 1`,
		`UPDATE doc SET title = 'new' WHERE id = 1`, // no change: not recorded
		`UPDATE doc SET n = 1.00, f = '-0', j = '{"x": 1.00}', iv = '24 hours' WHERE id = 1`,
		`UPDATE doc SET body = body || 'x', title = NULL WHERE id = 1`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, d, _ := readBatch(t, capt, 0)
	if len(d) != 3 {
		t.Fatalf("got %d changes, want 3: %q", len(d), d)
	}
	if d[0] != "update:doc:(id)=(1) title=new |" {
		t.Errorf("first update recorded as %q", d[0])
	}
	if d[1] != `update:doc:(id)=(1) n=1.00 f=-0 j={"x": 1.00} iv=24:00:00 |` {
		t.Errorf("second update recorded as %q", d[1])
	}
	if !strings.HasPrefix(d[2], "update:doc:(id)=(1) body=") || len(d[2]) < 640000 {
		t.Errorf("third update did not carry the new body: %.80q", d[2])
	}
	// In the changelog itself: the first update holds no body.
	var keys string
	if err := conn.QueryRow(ctx, `SELECT array_to_string(replicator.akeys(vals), ',') FROM replicator.changelog WHERE op = 'U' ORDER BY id LIMIT 1`).Scan(&keys); err != nil {
		t.Fatal(err)
	}
	if keys != "title" {
		t.Errorf("changelog of an update of title holds %q", keys)
	}
	// Values keep their text under the application's own session settings.
	if _, err := conn.Exec(ctx, `SET DateStyle = 'SQL, DMY'; SET extra_float_digits = -3; SET bytea_output = 'escape'; SET TimeZone = 'Asia/Kolkata'`); err != nil {
		t.Fatal(err)
	}
	s.exec(t, `CREATE TABLE settings (id int PRIMARY KEY, d date, f float8, b bytea, ts timestamptz)`)
	install(t, s)
	if _, err := conn.Exec(ctx, `INSERT INTO settings VALUES (1, '2024-03-01', 0.1, '\x00ff', '2024-03-01 12:00:00+00')`); err != nil {
		t.Fatal(err)
	}
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, d, _ = readBatch(t, capt, 1)
	want := `insert:settings:(id)=(1) id=1 d=2024-03-01 f=0.1 b=\x00ff ts=2024-03-01 12:00:00+00 |`
	if len(d) != 1 || d[0] != want {
		t.Errorf("insert under odd session settings recorded as %q, want %q", d, want)
	}
}

// Each output setting alone, set to a value that changes its type's
// text, is pinned while the change is recorded and left as the session
// had it afterwards; the values taken as usual (ISO with another field
// order, extra_float_digits 2 or 3, zones of offset zero, what JDBC
// sets) record the same text; a session whose apply flag was set and
// then reset (off, or empty after a SET LOCAL) is captured as any other.
func TestEachSettingAlonePinned(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE settings (id int PRIMARY KEY, d date, iv interval, b bytea, f float8, ts timestamptz)`)
	install(t, s)
	capt := startCapture(t, s)
	conn := s.connect(t)
	row := `d=2024-03-01 iv=1 day 02:00:00 b=\x00ff f=0.1 ts=2024-03-01 12:00:00+00`
	for i, set := range []string{
		`SET DateStyle = 'SQL, DMY'`,
		`SET IntervalStyle = 'sql_standard'`,
		`SET bytea_output = 'escape'`,
		`SET extra_float_digits = -3`,
		`SET TimeZone = 'Asia/Kolkata'`,
		// Values that give the same text as the pinned ones: recorded
		// the same, byte for byte, without pinning.
		`SET DateStyle = 'ISO, DMY'`,
		`SET DateStyle = 'ISO, YMD'`,
		`SET extra_float_digits = 3`,
		`SET extra_float_digits = 2`,
		`SET TimeZone = 'Etc/GMT'`,
		`SET TimeZone = 'Zulu'`,
		`SET DateStyle = ISO; SET extra_float_digits = 3; SET TimeZone = 'GMT'`,
		`SET ` + trigger.ApplyingSetting + ` = off`,
		`BEGIN; SET LOCAL ` + trigger.ApplyingSetting + ` = on; COMMIT`,
	} {
		if _, err := conn.Exec(ctx, `RESET ALL; SET TimeZone = 'UTC'; `+set); err != nil {
			t.Fatal(err)
		}
		var before, after string
		show := `SELECT current_setting('DateStyle') || '|' || current_setting('IntervalStyle') || '|' || current_setting('bytea_output') || '|' ||
			current_setting('extra_float_digits') || '|' || current_setting('TimeZone') || '|' || coalesce(current_setting('` + trigger.ApplyingSetting + `', true), '(unset)')`
		if err := conn.QueryRow(ctx, show).Scan(&before); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, fmt.Sprintf(`INSERT INTO settings VALUES (%d, '2024-03-01', '1 day 2 hours', '\x00ff', 0.1, '2024-03-01 12:00:00+00')`, i+1)); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, show).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("%s: the session's settings were %s before its write and %s after", set, before, after)
		}
		last, err := capt.Tick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, d, _ := readBatch(t, capt, last-1)
		want := fmt.Sprintf("insert:settings:(id)=(%d) id=%d %s |", i+1, i+1, row)
		if len(d) != 1 || d[0] != want {
			t.Errorf("%s: recorded %q, want %q", set, d, want)
		}
	}
}

// Install is idempotent, works with table-owner rights only, and
// Uninstall removes triggers, functions and the changelog.
func TestInstallUninstall(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE SCHEMA app; CREATE TABLE app.a (id int PRIMARY KEY); CREATE TABLE app.nokey (x int, y text);
		CREATE TABLE app.p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
		CREATE TABLE app.p1 PARTITION OF app.p FOR VALUES IN (1)`)
	conn := s.connect(t)
	for i := 0; i < 2; i++ {
		tables, err := trigger.Install(ctx, conn, testConfig(), zap.NewNop())
		if err != nil {
			t.Fatalf("install #%d: %v", i+1, err)
		}
		var names []string
		for _, tb := range tables {
			names = append(names, fmt.Sprintf("%s/%c", tb, tb.Identity))
		}
		if got := strings.Join(names, " "); got != `"app"."a"/d "app"."nokey"/f "app"."p"/d "app"."p1"/d` {
			t.Fatalf("install #%d captured %s", i+1, got)
		}
	}
	if err := trigger.CheckInstalled(ctx, conn); err != nil {
		t.Fatal(err)
	}
	var trig int
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_capture%'`).Scan(&trig)
	if trig != 16 { // a, nokey, p: three row + truncate; p1: three cloned row + truncate
		t.Errorf("%d capture triggers after two installs, want 16", trig)
	}
	// A column change is no reason to refuse: capture records each row as
	// it is at the time of the write.
	s.exec(t, `ALTER TABLE app.a ADD COLUMN extra text; ALTER TABLE app.nokey RENAME COLUMN y TO z; ALTER TABLE app.p ADD COLUMN v int`)
	if err := trigger.CheckInstalled(ctx, conn); err != nil {
		t.Fatalf("CheckInstalled after column changes: %v", err)
	}
	// What capture would miss is refused, naming the table: a table
	// created since, a disabled trigger, a changed key.
	s.exec(t, `CREATE TABLE app.later (id int); ALTER TABLE app.nokey DISABLE TRIGGER replicator_capture_update;
		ALTER TABLE app.p DROP CONSTRAINT p_pkey; ALTER TABLE app.p ADD PRIMARY KEY (id, k, v)`)
	err := trigger.CheckInstalled(ctx, conn)
	for _, want := range []string{`"app"."later"`, `"app"."nokey" (trigger replicator_capture_update is not enabled ALWAYS)`,
		`"app"."p" (its key changed since install: the trigger records key (id, k))`, "install trigger capture again"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckInstalled after DDL: %v, want it to name %s", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), `"app"."a"`) {
		t.Errorf("CheckInstalled refuses a table whose only change is a new column: %v", err)
	}
	// InstallTables on the one new table, then Install for the rest.
	var later uint32
	conn.QueryRow(ctx, `SELECT 'app.later'::regclass::oid`).Scan(&later)
	tables, err := trigger.InstallTables(ctx, conn, testConfig(), zap.NewNop(), later)
	if err != nil || len(tables) != 1 || tables[0].Name != "later" {
		t.Fatalf("InstallTables(app.later) = %v, %v", tables, err)
	}
	if _, err := trigger.InstallTables(ctx, conn, testConfig(), zap.NewNop(), 1); err == nil || !strings.Contains(err.Error(), "table oid 1") {
		t.Errorf("InstallTables of a non-table: %v", err)
	}
	if err := trigger.CheckInstalled(ctx, conn); err == nil || strings.Contains(err.Error(), "later") {
		t.Errorf("CheckInstalled after InstallTables(app.later): %v, want only the others", err)
	}
	if _, err := trigger.Install(ctx, conn, testConfig(), zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	if err := trigger.CheckInstalled(ctx, conn); err != nil {
		t.Fatalf("CheckInstalled after a new install: %v", err)
	}
	if err := trigger.Uninstall(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := trigger.Uninstall(ctx, conn); err != nil {
		t.Fatalf("second uninstall: %v", err)
	}
	var left int
	conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_capture%') +
		(SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator')`).Scan(&left)
	if left != 0 {
		t.Errorf("%d capture objects left after uninstall", left)
	}
	// The application still writes.
	s.exec(t, `INSERT INTO app.a VALUES (1); TRUNCATE app.nokey; INSERT INTO app.p VALUES (1, 1, 1)`)
}

// A role that neither owns the tables nor holds TRIGGER is told which
// tables and what to do; one that cannot create the schema too.
func TestCheckPrivileges(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE mine (id int PRIMARY KEY)`)
	if err := trigger.CheckPrivileges(ctx, s.connect(t)); err != nil {
		t.Fatalf("owner: %v", err)
	}
	other := newSource(t, src) // another role, without rights on s's database
	src.Exec(t, s.db, fmt.Sprintf("REVOKE CREATE ON DATABASE %s FROM PUBLIC; GRANT CONNECT ON DATABASE %s TO %s", s.db, s.db, other.role))
	conn, err := pgx.Connect(ctx, src.URLAs(other.role, appPassword, s.db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	err = trigger.CheckPrivileges(ctx, conn)
	if err == nil || !strings.Contains(err.Error(), `"public"."mine"`) || !strings.Contains(err.Error(), "GRANT CREATE ON DATABASE") {
		t.Fatalf("non-owner: %v", err)
	}
	if strings.Contains(err.Error(), appPassword) {
		t.Fatal("error holds the password")
	}
	if _, err := trigger.Install(ctx, conn, testConfig(), zap.NewNop()); err == nil {
		t.Fatal("install as a role without rights succeeded")
	}
	src.Exec(t, s.db, fmt.Sprintf("GRANT TRIGGER ON mine TO %s; GRANT CREATE ON DATABASE %s TO %s", other.role, s.db, other.role))
	if err := trigger.CheckPrivileges(ctx, conn); err != nil {
		t.Fatalf("with TRIGGER and CREATE granted: %v", err)
	}
}

// Choose picks trigger capture on a Heroku-like source and logical
// capture on a normal one.
func TestChoose(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name    string
		url     func(t *testing.T) string
		mode    string
		because string
	}{
		{"app role on wal_level=replica", func(t *testing.T) string { return newSource(t, src).url }, "trigger", "may not create replication slots"},
		{"superuser on wal_level=replica", func(t *testing.T) string { return src.URL(src.NewDatabase(t)) }, "trigger", "wal_level=replica"},
		{"app role on wal_level=logical", func(t *testing.T) string { return newSource(t, logical).url }, "trigger", "may not create replication slots"},
		{"superuser on wal_level=logical", func(t *testing.T) string { return logical.URL(logical.NewDatabase(t)) }, "logical", "may create a slot"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := pgx.Connect(ctx, c.url(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			mode, reason, err := trigger.Choose(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			if mode != c.mode || !strings.Contains(reason, c.because) || strings.Contains(reason, "\n") {
				t.Fatalf("Choose = %s, %q; want %s because %q", mode, reason, c.mode, c.because)
			}
		})
	}
	// A REPLICATION role on wal_level=logical may use logical capture.
	s := newSource(t, logical)
	logical.Exec(t, "postgres", "ALTER ROLE "+s.role+" REPLICATION")
	conn := s.connect(t)
	if mode, reason, _ := trigger.Choose(ctx, conn); mode != "logical" {
		t.Fatalf("REPLICATION role on wal_level=logical: %s (%s)", mode, reason)
	}
}

// TRUNCATE is not MVCC-safe: a copy that reads a table after a TRUNCATE
// committed (later than the copy's snapshot) sees it empty, and the
// changes between the snapshot and the TRUNCATE find no row. Those
// changes are superseded by the TRUNCATE and left out of the batch; the
// target ends equal to the source.
func TestTruncateDuringCopy(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE x (id int PRIMARY KEY, v text); INSERT INTO x SELECT g, 'old' FROM generate_series(1, 3) g`)
	tables := install(t, s)
	targetDB := src.NewDatabase(t)
	src.Exec(t, targetDB, `CREATE TABLE x (id int PRIMARY KEY, v text)`)
	target := src.Connect(t, targetDB)

	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Release(ctx)
	s.exec(t, `UPDATE x SET v = 'changed' WHERE id = 1`)
	s.exec(t, `DELETE FROM x WHERE id = 2`)
	s.exec(t, `TRUNCATE x`)
	s.exec(t, `INSERT INTO x VALUES (9, 'after')`)
	copySnapshot(t, s, cp.SnapshotName, target, tables)
	var copied int
	target.QueryRow(ctx, `SELECT count(*) FROM x`).Scan(&copied)
	if copied != 0 {
		t.Logf("the copy saw %d rows (TRUNCATE did not hide them)", copied)
	}
	cp.Release(ctx)

	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := capt.NextBatch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	applyBatch(t, capt, b, target, &seen{txnBatch: map[uint64]int64{}})
	compareTables(t, s.connect(t), target, []string{"x"})
}

// After a crash before the target committed, a new capture re-reads the
// same batch identically; once a batch is purged it cannot be read again,
// and the error says so. A restarted source is reconnected on the next
// call.
func TestRereadPurgeAndReconnect(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	install(t, s)
	capt := startCapture(t, s)
	s.exec(t, `INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 120) g; UPDATE items SET v = 'w' WHERE id % 7 = 0; DELETE FROM items WHERE id % 11 = 0`)
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	_, first, _ := readBatch(t, capt, 0)
	capt.Close() // the process dies before the target committed

	again, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	_, second, _ := readBatch(t, again, 0)
	if len(first) != 120+17+10 || fmt.Sprint(first) != fmt.Sprint(second) {
		t.Fatalf("re-read differs or is incomplete: %d vs %d changes", len(first), len(second))
	}
	if n, err := again.Purge(ctx, 1); err != nil || n != int64(len(first)) {
		t.Fatalf("purge of batch 1 deleted %d rows (%v), want %d", n, err, len(first))
	}
	if _, err := again.NextBatch(ctx, 0); err == nil || !strings.Contains(err.Error(), "take a new snapshot") {
		t.Fatalf("reading a purged batch: %v", err)
	}

	if err := src.Restart(testenv.Fast); err != nil {
		t.Fatal(err)
	}
	s.exec(t, `INSERT INTO items VALUES (1000, 'after restart')`)
	var tick int64
	for attempt := 0; attempt < 2; attempt++ { // the first call may meet the dead connection
		if tick, err = again.Tick(ctx); err == nil {
			break
		}
	}
	if err != nil || tick != 2 {
		t.Fatalf("tick after restart: %d, %v", tick, err)
	}
	var d []string
	for attempt := 0; attempt < 3; attempt++ {
		b, err := again.NextBatch(ctx, 1)
		if err != nil {
			continue
		}
		cur, err := again.Open(ctx, b)
		if err != nil {
			continue
		}
		d = nil
		for cur.Next(ctx) {
			d = append(d, cur.Change().KeyString())
		}
		err = cur.Err()
		cur.Close(ctx)
		if err == nil {
			break
		}
	}
	if fmt.Sprint(d) != "[(id)=(1000)]" {
		t.Fatalf("batch 2 after restart: %q", d)
	}
}

// A table wider than jsonb_build_object's 100 arguments, without a key.
func TestWideTable(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	var cols, vals []string
	for i := 1; i <= 120; i++ {
		cols = append(cols, fmt.Sprintf("c%d int", i))
		vals = append(vals, fmt.Sprint(i))
	}
	s.exec(t, fmt.Sprintf("CREATE TABLE wide (%s)", strings.Join(cols, ", ")))
	install(t, s)
	capt := startCapture(t, s)
	s.exec(t, fmt.Sprintf("INSERT INTO wide VALUES (%s); UPDATE wide SET c120 = -1; DELETE FROM wide", strings.Join(vals, ", ")))
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := capt.NextBatch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	cur, err := capt.Open(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close(ctx)
	var got []string
	for cur.Next(ctx) {
		ch := cur.Change()
		n, k := 0, 0
		for i := range ch.Table.Columns {
			if ch.New != nil && ch.New[i].Kind == trigger.ValueText {
				n++
			}
			if ch.Key != nil && ch.Key[i].Kind == trigger.ValueText {
				k++
			}
		}
		got = append(got, fmt.Sprintf("%s new=%d key=%d", ch.Op, n, k))
		if ch.Op == trigger.Delete && string(ch.Key[119].Text) != "-1" {
			t.Errorf("delete key c120 = %q", ch.Key[119].Text)
		}
	}
	if err := cur.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "[insert new=120 key=120 update new=1 key=120 delete new=0 key=120]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}
