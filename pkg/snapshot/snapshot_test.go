package snapshot

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/state"
)

// awkwardSchema has every kind of object and value the copy must carry
// unchanged.
const awkwardSchema = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE SCHEMA "Odd Schema";
CREATE TYPE "Odd Schema".mood AS ENUM ('sad', 'ok', 'happy, "really"');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TABLE "Odd Schema"."Mixed Case Table" (
	"Id" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	"Some Col" text,
	m "Odd Schema".mood,
	d posint,
	p pair,
	arr text[],
	iarr int[],
	j jsonb,
	h hstore,
	c citext,
	n numeric,
	f float8,
	r real,
	ts timestamp,
	tstz timestamptz,
	iv interval,
	ip inet,
	u uuid,
	tv tsvector,
	b bytea,
	big text,
	g int GENERATED ALWAYS AS (length("Some Col")) STORED
);
INSERT INTO "Odd Schema"."Mixed Case Table" ("Some Col", m, d, p, arr, iarr, j, h, c, n, f, r, ts, tstz, iv, ip, u, tv, b, big) VALUES
 (E'a,b\nline2\ttab\\back', 'happy, "really"', 1, ROW(1, 'x,y "z"'), ARRAY['a,b', NULL, 'c"d', '', 'NULL'], ARRAY[1, NULL, 3],
  '{"k": [1, null, "x"], "u": "\u00e9"}', 'a=>1, "b c"=>NULL', 'MiXeD', 'NaN', 'Infinity', '-Infinity', 'infinity', '-infinity',
  '1 year 2 mons -3 days 04:05:06.789', '10.0.0.1/8', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', to_tsvector('english', 'the quick brown fox'),
  '\x00ff5c27'::bytea, repeat('toasted ', 100000)),
 ('minus zero', 'sad', 2, ROW(NULL, NULL), '{}', '{}', 'null', '', 'x', '-0.000', '-0', '-0', '-infinity', 'infinity',
  '-1 days', '::1', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '', '\x'::bytea, ''),
 (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1e308, 1.17549435e-38, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 ('floats', 'ok', 3, ROW(0, ''), ARRAY[[' a', 'b '], ['{', '}']], ARRAY[[1, 2], [3, 4]], '[]', 'k=>v', '', 1.000000000000000000001,
  0.1, 0.1, '2000-02-29 23:59:59.999999', '1999-12-31 23:59:59.5+13', '-178000000 years', '2001:db8::/32', gen_random_uuid(),
  'a:1A fat:2B', decode(repeat('ab', 5000), 'hex'), repeat(md5('x'), 5000));

-- Many rows over many blocks, so the test's 64 kB chunks split it.
CREATE TABLE events (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT '2024-01-01', payload text);
INSERT INTO events (payload) SELECT repeat(md5(i::text), 3) FROM generate_series(1, 20000) i;

-- Range partitions: copied once, through the leaves.
CREATE TABLE meas (id int, at date NOT NULL, v int, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE meas_2024 PARTITION OF meas FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE meas_2025 PARTITION OF meas FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO meas SELECT i, DATE '2024-01-01' + (i % 700), i FROM generate_series(1, 3000) i;

-- Legacy inheritance: each table's own rows once.
CREATE TABLE animal (id int PRIMARY KEY, name text);
CREATE TABLE dog (good boolean, PRIMARY KEY (id)) INHERITS (animal);
INSERT INTO animal VALUES (1, 'generic');
INSERT INTO dog VALUES (2, 'rex', true);

-- A trigger and foreign keys: the audit rows are copied, not made again.
CREATE TABLE customers (id int PRIMARY KEY, email citext UNIQUE);
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric(12,2));
CREATE TABLE audit (id serial PRIMARY KEY, order_id int, note text);
CREATE FUNCTION audit_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (order_id, note) VALUES (NEW.id, 'created'); RETURN NEW; END $$;
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION audit_order();
INSERT INTO customers SELECT i, 'User' || i || '@Example.com' FROM generate_series(1, 100) i;
INSERT INTO orders SELECT i, 1 + i % 100, i * 1.5 FROM generate_series(1, 500) i;
CREATE INDEX orders_total ON orders (total);

CREATE TABLE prices (id int PRIMARY KEY, amount money, bits bit varying(10), pt point, period tstzrange, xs xml);
INSERT INTO prices VALUES (1, '1234.56', B'1011', '(1.5,-2)', '[2024-01-01,infinity)', '<a b="c">d &amp; e</a>'), (2, '-0.01', NULL, NULL, 'empty', NULL);

CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v text);
INSERT INTO cache VALUES ('a', '1'), ('b', '2');
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
CREATE MATERIALIZED VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1;
CREATE MATERIALIZED VIEW top_customers AS SELECT * FROM order_totals WHERE total > 1000;
CREATE SEQUENCE counter START 100;
SELECT nextval('counter'), nextval('counter');
CREATE SEQUENCE unused;
CREATE TABLE "Odd Schema"."empty table" ("a b" int PRIMARY KEY);
`

// Every table and sequence of the awkward schema arrives identical, the
// state row says where the stream starts, and the counters count.
func TestSnapshotAwkwardSchema(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, awkwardSchema)
	// An extension that already exists on the target is not an error.
	pg.Exec(t, dst, "CREATE EXTENSION hstore")
	want := tableSums(t, src)

	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	res, err := Run(context.Background(), cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	compareSums(t, want, tableSums(t, dst))

	// Target triggers did not fire for copied rows; post-data is there.
	if n := queryString(t, dst, "SELECT count(*)::text FROM audit"); n != "500" {
		t.Errorf("audit has %s rows on the target, want the source's 500", n)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_constraint WHERE contype = 'f'`); n != "1" {
		t.Errorf("target has %s foreign keys, want 1", n)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_trigger WHERE tgname = 'orders_audit'`); n != "1" {
		t.Errorf("trigger orders_audit missing on the target")
	}
	for _, mv := range []string{"order_totals", "top_customers"} {
		q := "SELECT count(*) || '/' || md5(string_agg(t::text, ',' ORDER BY t::text)) FROM " + mv + " t"
		if s, d := queryString(t, src, q), queryString(t, dst, q); s != d {
			t.Errorf("materialized view %s: source %s, target %s", mv, s, d)
		}
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_indexes WHERE indexname = 'orders_total'`); n != "1" {
		t.Errorf("index orders_total missing on the target")
	}
	// The identity column keeps counting from the source's value.
	pg.Exec(t, dst, `INSERT INTO "Odd Schema"."Mixed Case Table" ("Some Col") VALUES ('next')`)
	if id := queryString(t, dst, `SELECT max("Id")::text FROM "Odd Schema"."Mixed Case Table"`); id != "5" {
		t.Errorf("next identity value on the target = %s, want 5", id)
	}

	// Planner statistics are there for the application's first queries.
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_stats WHERE schemaname = 'public' AND tablename = 'events'`); n == "0" {
		t.Error("no planner statistics for events on the target")
	}

	st, err := state.Load(context.Background(), pg.Connect(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	if st.SnapshotStatus != state.SnapshotDone || st.Capture != state.CaptureLogical || st.SlotName != cfg.SlotName ||
		st.Publication != state.DefaultPublication || st.ConsistentLSN == "" || st.ConsistentLSN != res.ConsistentLSN {
		t.Errorf("state = %+v, result = %+v", st, res)
	}
	if slot := queryString(t, src, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput'`, cfg.SlotName); slot != "1" {
		t.Errorf("slot %s not on the source", cfg.SlotName)
	}
	if rows := counterValue(t, reg, "replicator_snapshot_rows_total", `"public"."events"`); rows != 20000 {
		t.Errorf("replicator_snapshot_rows_total{table=events} = %v, want 20000", rows)
	}
	if chunks := counterValue(t, reg, "replicator_snapshot_chunks_done_total", ""); chunks < 10 {
		t.Errorf("chunks done = %v: the big table was not split", chunks)
	}
	var wantRows int64
	for k, sum := range want {
		if !strings.HasPrefix(k, "S ") {
			var n int64
			fmt.Sscanf(sum, "%d/", &n)
			wantRows += n
		}
	}
	if res.Rows != wantRows || counterSum(t, reg, "replicator_snapshot_rows_total") != float64(wantRows) {
		t.Errorf("result rows = %d, rows counted %v, want the source's %d", res.Rows, counterSum(t, reg, "replicator_snapshot_rows_total"), wantRows)
	}
	// `replicator status` reads the progress the snapshot left on the target.
	prog := queryString(t, dst, `SELECT format('%s %s/%s %s/%s %s', phase, tables_done, tables_total, chunks_done, chunks_total, rows)
		FROM replicator.snapshot_progress`)
	if want := fmt.Sprintf("done %[1]d/%[1]d %.0[2]f/%.0[2]f %[3]d", res.Tables, counterValue(t, reg, "replicator_snapshot_chunks_done_total", ""), res.Rows); prog != want {
		t.Errorf("progress row = %q, want %q", prog, want)
	}

	// A second run refuses: the snapshot is done.
	if _, err := Run(context.Background(), cfg, testLogger(t)); err == nil {
		t.Error("a second snapshot of a done target succeeded")
	}
}

// counterValue reads a counter from the registry; table selects a label.
func counterValue(t *testing.T, reg *prometheus.Registry, name, table string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if table == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no counter %s{table=%q}", name, table)
	return 0
}

// counterSum adds up every series of counter name.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// The counters are registered once per registry: a second registration
// is an error, not a silent reuse, and nil metrics count nothing.
func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the snapshot metrics twice on one registry was not an error")
	}
	var m *Metrics
	m.copied("t", 1, 1)
	m.chunkDone()
}

// Workers that lock each table when they reach it (a source with more
// tables than its lock table holds for every worker) copy the same.
func TestSnapshotLockingTablesOneByOne(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, awkwardSchema)
	want := tableSums(t, src)
	cfg.lockPerTable, cfg.OneSnapshot = true, true
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	compareSums(t, want, tableSums(t, dst))
}
