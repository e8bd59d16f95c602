package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Every table of the fixture with its columns by name, for the independent
// checksum.
var fixtureTables = map[string]string{
	`"Sales Dept"."Order Items"`: `"Id", "Mood", addr, amount, attrs, b, big, doc, email, f4, f8, ip, iv, qty, tags, total, ts, tstz, tv, u`,
	`public.kv`:                  `k, v`,
	`public.events`:              `payload, seq, tenant`,
	`public.measurements`:        `at, id, v`,
	`public.log_lines`:           `line, n`,
	`public.reordered`:           `a, b, c`,
	`public.tokens`:              `n, t`,
	`public.sessions`:            `data, id`,
}

func TestIdenticalDatabasesWithAwkwardTypes(t *testing.T) {
	src, dst := twoDatabases(t)
	for table, cols := range fixtureTables {
		if a, b := independentChecksum(t, src, table, cols), independentChecksum(t, dst, table, cols); a != b {
			t.Fatalf("fixture is not identical on both sides for %s: %s vs %s", table, a, b)
		}
	}
	// The target's server defaults change how values print; verify's own
	// session settings must make that irrelevant.
	pg.Exec(t, "postgres", fmt.Sprintf(`ALTER DATABASE %q SET TimeZone = 'Asia/Kolkata';
		ALTER DATABASE %[1]q SET DateStyle = 'German, DMY'; ALTER DATABASE %[1]q SET IntervalStyle = 'sql_standard';
		ALTER DATABASE %[1]q SET extra_float_digits = -2; ALTER DATABASE %[1]q SET bytea_output = 'escape'`, dst))
	reg := prometheus.NewRegistry()
	rep, err := Run(context.Background(), withMetrics(t, testConfig(src, dst), reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Different() {
		t.Fatalf("identical databases reported different: %q", diffLines(rep))
	}
	// Partitions are compared once each; the partitioned parent holds no rows.
	want := map[string]int64{
		`"Sales Dept"."Order Items"`: 3000, "public.kv": 3000, "public.events": 1500,
		"public.measurements_2024": 0, "public.measurements_2025": 0, "public.log_lines": 2102, "public.reordered": 700,
		"public.tokens": 2500, "public.sessions": 2500,
	}
	got := map[string]int64{}
	modes := map[string]bool{}
	for _, tr := range rep.Tables {
		got[tr.Table] = tr.SourceRows
		modes[tr.Mode] = true
		if tr.SourceRows != tr.TargetRows || !tr.Identical {
			t.Errorf("%s: %+v", tr.Table, tr)
		}
	}
	if got["public.measurements_2024"]+got["public.measurements_2025"] != 2000 {
		t.Errorf("partitions hold %d rows, want 2000", got["public.measurements_2024"]+got["public.measurements_2025"])
	}
	delete(want, "public.measurements_2024")
	delete(want, "public.measurements_2025")
	for table, n := range want {
		if got[table] != n {
			t.Errorf("%s: %d rows compared, want %d", table, got[table], n)
		}
	}
	if _, ok := got["public.measurements"]; ok {
		t.Errorf("the partitioned parent was compared besides its partitions")
	}
	for _, m := range []string{"key ranges", "hash buckets", "multiset"} {
		if !modes[m] {
			t.Errorf("mode %q not exercised; modes: %v", m, modes)
		}
	}
	if n := metricValue(t, reg, "replicator_verify_rows_total", "source"); n != float64(rep.SourceRows) {
		t.Errorf("replicator_verify_rows_total{side=source} = %v, want %d", n, rep.SourceRows)
	}
	if len(rep.Sequences) != 1 || rep.Sequences[0].Behind {
		t.Errorf("sequences: %+v", rep.Sequences)
	}

	// A partitioned table's name selects its partitions.
	cfg := testConfig(src, dst)
	cfg.Tables = []string{"measurements"}
	rep = runVerify(t, cfg)
	if rep.TablesChecked != 2 || rep.SourceRows != 2000 || rep.Different() {
		t.Errorf("--tables measurements: %d tables, %d rows, different %v", rep.TablesChecked, rep.SourceRows, rep.Different())
	}
}

func TestNamesExactlyTheChangedRows(t *testing.T) {
	src, dst := twoDatabases(t)
	pg.Exec(t, dst, `
		UPDATE "Sales Dept"."Order Items" SET qty = qty + 1 WHERE "Id" = 17;
		UPDATE "Sales Dept"."Order Items" SET big = overlay(big PLACING 'X' FROM 70000 FOR 1) WHERE "Id" = 1500;
		DELETE FROM "Sales Dept"."Order Items" WHERE "Id" = 2500;
		INSERT INTO "Sales Dept"."Order Items" ("Id", qty) VALUES (99999, 1);
		UPDATE public.kv SET v = 'changed' WHERE k = 'Äpfel2';
		UPDATE public.events SET payload = '' WHERE tenant = 3 AND seq = 9;
		UPDATE public.measurements SET v = 'NaN' WHERE id = 1234;
		DELETE FROM public.log_lines WHERE ctid = (SELECT ctid FROM public.log_lines WHERE line = 'dup 7' LIMIT 1);
		UPDATE public.reordered SET c = NULL WHERE a = 650;
		DELETE FROM public.tokens WHERE t = 'Ωmega2';
		UPDATE public.sessions SET data = '{"i": 0}' WHERE id = md5('s77')::uuid;
		SELECT setval('public.order_seq', 4000);
	`)
	// Row 1500's value (128000 bytes, more than a page) can only be stored
	// out of line in the TOAST table, which must hold data.
	conn := pg.Connect(t, dst)
	var toasted bool
	if err := conn.QueryRow(context.Background(), `SELECT length(big) = 128000 AND pg_relation_size(reltoastrelid) > 128000
		FROM "Sales Dept"."Order Items", pg_class WHERE "Id" = 1500 AND pg_class.oid = '"Sales Dept"."Order Items"'::regclass`).Scan(&toasted); err != nil || !toasted {
		t.Fatalf("row 1500's big value is not a large TOASTed value (%v)", err)
	}
	reg := prometheus.NewRegistry()
	rep, err := Run(context.Background(), withMetrics(t, testConfig(src, dst), reg), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := diffLines(rep)
	want := []string{
		`"Sales Dept"."Order Items" | different | "Id"=1500 | big`,
		`"Sales Dept"."Order Items" | different | "Id"=17 | qty`,
		`"Sales Dept"."Order Items" | extra on target | "Id"=99999`,
		`"Sales Dept"."Order Items" | missing on target | "Id"=2500`,
		`public.events | different | (tenant, seq)=(3, 9) | payload`,
		`public.kv | different | k=Äpfel2 | v`,
		`public.log_lines | missing on target | ("dup 7",7)`,
		`public.measurements_2024 | different | (id, at)=(1234, 2024-07-05) | v`,
		`public.reordered | different | a=650 | c`,
		`public.sessions | different | id=66769d54-8fe9-3e05-d9eb-475ac940425d | data`,
		`public.tokens | missing on target | t=Ωmega2`,
		`sequence public.order_seq behind`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("differences:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !rep.Different() || rep.TablesDifferent != 8 {
		t.Errorf("tables different = %d, want 8", rep.TablesDifferent)
	}
	for _, tr := range rep.Tables {
		if tr.Table == "public.log_lines" && (len(tr.Rows) != 1 || tr.Rows[0].Count != 1) {
			t.Errorf("log_lines: %+v, want one copy of (\"dup 7\",7) missing", tr.Rows)
		}
	}
	if n := metricValue(t, reg, "replicator_verify_chunks_mismatched_total", ""); n < 7 {
		t.Errorf("replicator_verify_chunks_mismatched_total = %v, want at least one per changed table", n)
	}
}

// A table or a column on one side only is a difference, and the remaining
// columns are still compared.
func TestSchemaDifferences(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE a (id int PRIMARY KEY, x text, gone text); INSERT INTO a SELECT i, 'x' || i, 'g' FROM generate_series(1, 10) i;
		CREATE TABLE only_src (id int PRIMARY KEY)`)
	pg.Exec(t, dst, `CREATE TABLE a (id int PRIMARY KEY, x text, added int); INSERT INTO a SELECT i, 'x' || i, 1 FROM generate_series(1, 10) i;
		CREATE TABLE only_dst (id int)`)
	rep := runVerify(t, testConfig(src, dst))
	want := "public.a | column added exists only on the target\npublic.a | column gone is missing on the target\n" +
		"public.only_dst | table exists only on the target\npublic.only_src | table is missing on the target"
	if got := strings.Join(diffLines(rep), "\n"); got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// --tables narrows the comparison.
	cfg := testConfig(src, dst)
	cfg.Tables = []string{"public.only_src"}
	rep = runVerify(t, cfg)
	if rep.TablesChecked != 1 {
		t.Errorf("--tables public.only_src checked %d tables", rep.TablesChecked)
	}
	cfg.Tables = []string{"nosuch*"}
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "no table matches --tables nosuch*") {
		t.Errorf("unmatched --tables: %v", err)
	}
}

// metricValue reads a counter from the registry (with label side=side when
// side is set).
// withMetrics has cfg count into reg.
func withMetrics(t *testing.T, cfg Config, reg *prometheus.Registry) Config {
	t.Helper()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	return cfg
}

func metricValue(t *testing.T, reg *prometheus.Registry, name, side string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var fam *dto.MetricFamily
	for _, f := range fams {
		if f.GetName() == name {
			fam = f
		}
	}
	if fam == nil {
		t.Fatalf("metric %s not registered", name)
	}
	for _, m := range fam.GetMetric() {
		if side == "" {
			return m.GetCounter().GetValue()
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == "side" && l.GetValue() == side {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A sequence counting down is behind when it is greater than the source's,
// and not behind when cutover moved it further down.
func TestDescendingSequences(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	for _, db := range []string{src, dst} {
		pg.Exec(t, db, `CREATE SEQUENCE down INCREMENT BY -1; CREATE SEQUENCE down_ahead INCREMENT BY -1`)
	}
	pg.Exec(t, src, `SELECT setval('down', -100); SELECT setval('down_ahead', -100)`)
	pg.Exec(t, dst, `SELECT setval('down', -50); SELECT setval('down_ahead', -1100)`)
	rep, err := Run(context.Background(), testConfig(src, dst), nil)
	if err != nil {
		t.Fatal(err)
	}
	behind := map[string]bool{}
	for _, s := range rep.Sequences {
		behind[s.Sequence] = s.Behind
	}
	if !behind["public.down"] || behind["public.down_ahead"] {
		t.Fatalf("behind = %v, want public.down behind and public.down_ahead not", behind)
	}
}

// Verify compares what the snapshot copies: the app's tables and
// sequences (pgcatalog), not an extension's own, which CREATE EXTENSION
// makes on each side, nor the replicator's schema.
func TestComparesTheAppsTablesOnly(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	for _, db := range []string{src, dst} {
		pg.Exec(t, db, `CREATE EXTENSION hstore; CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1), (2);
			CREATE TABLE ext_tab (id int); ALTER EXTENSION hstore ADD TABLE ext_tab;
			CREATE SEQUENCE ext_seq; ALTER EXTENSION hstore ADD SEQUENCE ext_seq;
			CREATE SCHEMA replicator; CREATE TABLE replicator.own (id int)`)
	}
	pg.Exec(t, src, `INSERT INTO ext_tab VALUES (1); INSERT INTO replicator.own VALUES (1); SELECT setval('ext_seq', 100)`)
	rep := runVerify(t, testConfig(src, dst))
	if rep.Different() || rep.TablesChecked != 1 || len(rep.Sequences) != 0 {
		t.Errorf("compared %d tables and %d sequences, differences %q; want only public.items, identical",
			rep.TablesChecked, len(rep.Sequences), diffLines(rep))
	}
}
