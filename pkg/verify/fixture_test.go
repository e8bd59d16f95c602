package verify

import (
	"context"
	"sort"
	"strings"
	"testing"

	"go.uber.org/zap"

	"replicator/internal/testenv"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

// schemaSQL is the awkward schema of the snapshot issue, created on both
// sides. reorderedSource/Target differ only in column order.
const schemaSQL = `
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE SCHEMA "Sales Dept";
CREATE TYPE "Sales Dept".mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN "Sales Dept".posint AS int CHECK (VALUE > 0);
CREATE TYPE "Sales Dept".addr AS (street text, zip int);
CREATE TABLE "Sales Dept"."Order Items" (
	"Id" bigint PRIMARY KEY,
	"Mood" "Sales Dept".mood,
	qty "Sales Dept".posint,
	addr "Sales Dept".addr,
	tags text[],
	doc jsonb,
	attrs hstore,
	email citext,
	amount numeric,
	f8 float8,
	f4 real,
	ts timestamp,
	tstz timestamptz,
	iv interval,
	ip inet,
	u uuid,
	tv tsvector,
	b bytea,
	big text,
	total numeric GENERATED ALWAYS AS (amount * 2) STORED
);
CREATE TABLE public.kv (k text PRIMARY KEY, v text);
CREATE TABLE public.events (tenant int, seq int, payload text, PRIMARY KEY (tenant, seq));
CREATE TABLE public.measurements (id int, at date, v float8, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.measurements_2024 PARTITION OF public.measurements FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.measurements_2025 PARTITION OF public.measurements FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.log_lines (line text, n int);
CREATE TABLE public.tokens (t text COLLATE "C" PRIMARY KEY, n int);
CREATE TABLE public.sessions (id uuid PRIMARY KEY, data jsonb);
CREATE SEQUENCE public.order_seq;
`

const reorderedSource = `CREATE TABLE public.reordered (a int PRIMARY KEY, b text, c int);`
const reorderedTarget = `CREATE TABLE public.reordered (c int, a int PRIMARY KEY, b text);`

// dataSQL fills the tables deterministically, so both sides hold the same
// rows without the code under test copying them.
const dataSQL = `
INSERT INTO "Sales Dept"."Order Items" ("Id", "Mood", qty, addr, tags, doc, attrs, email, amount, f8, f4, ts, tstz, iv, ip, u, tv, b, big)
SELECT i,
	(ARRAY['sad','ok','happy'])[1 + i % 3]::"Sales Dept".mood,
	1 + i % 50,
	ROW('Street "' || i || '", a,b', 10000 + i)::"Sales Dept".addr,
	CASE WHEN i % 5 = 0 THEN ARRAY['a', NULL, '', 'x y'] WHEN i % 7 = 0 THEN NULL ELSE ARRAY['t' || i] END,
	jsonb_build_object('i', i, 'nested', jsonb_build_object('f', i / 3.0, 'arr', jsonb_build_array(1, 'two', NULL))),
	hstore(ARRAY['k' || i, 'z'], ARRAY['v', NULL]),
	'User' || i || '@Example.COM',
	CASE WHEN i % 97 = 0 THEN 'NaN'::numeric ELSE i * 1.25 END,
	CASE i % 11 WHEN 0 THEN 'Infinity'::float8 WHEN 1 THEN '-Infinity'::float8 WHEN 2 THEN '-0'::float8 ELSE i / 7.0 END,
	(i / 3.0)::real,
	CASE WHEN i % 13 = 0 THEN 'infinity'::timestamp WHEN i % 17 = 0 THEN '-infinity'::timestamp ELSE '2024-01-01'::timestamp + i * interval '37 minutes' END,
	'2024-03-31 01:30:00+02'::timestamptz + i * interval '1 hour',
	make_interval(months => i % 14, days => i % 40, secs => i / 9.0),
	('10.0.' || (i % 256) || '.' || (i % 200) || '/24')::inet,
	md5('u' || i)::uuid,
	to_tsvector('simple', 'the quick brown fox ' || i),
	decode(md5(i::text), 'hex'),
	CASE WHEN i % 500 = 0 THEN (SELECT string_agg(md5(i::text || j::text), '') FROM generate_series(1, 4000) j) ELSE 'small ' || i END
FROM generate_series(1, 3000) i;
INSERT INTO public.kv SELECT (ARRAY['Zebra', 'apple', 'Äpfel', 'éclair', 'a b', '_x'])[1 + i % 6] || i, CASE WHEN i % 4 = 0 THEN NULL WHEN i % 4 = 1 THEN '' ELSE 'v' || i END
FROM generate_series(1, 3000) i;
INSERT INTO public.events SELECT t, s, CASE WHEN s % 3 = 0 THEN NULL ELSE 'p' || s END FROM generate_series(1, 5) t, generate_series(1, 300) s;
INSERT INTO public.measurements SELECT i, date '2024-06-01' + (i % 400), i * 0.5 FROM generate_series(1, 2000) i;
INSERT INTO public.log_lines SELECT 'line ' || i, i FROM generate_series(1, 1500) i;
INSERT INTO public.log_lines SELECT 'dup ' || i, i FROM generate_series(1, 300) i;
INSERT INTO public.log_lines SELECT 'dup ' || i, i FROM generate_series(1, 300) i;
INSERT INTO public.log_lines VALUES (NULL, 0), ('', 0);
INSERT INTO public.reordered (a, b, c) SELECT i, 'b' || i, i * 2 FROM generate_series(1, 700) i;
INSERT INTO public.tokens SELECT (ARRAY['Zeta', 'alpha', 'Ωmega', 'b c'])[1 + i % 4] || i, i FROM generate_series(1, 2500) i;
INSERT INTO public.sessions SELECT md5('s' || i)::uuid, jsonb_build_object('i', i) FROM generate_series(1, 2500) i;
SELECT setval('public.order_seq', 4242);
ANALYZE;
`

// twoDatabases creates a source and a target holding the same data.
func twoDatabases(t *testing.T) (src, dst string) {
	t.Helper()
	src, dst = pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, schemaSQL+reorderedSource+dataSQL)
	pg.Exec(t, dst, schemaSQL+reorderedTarget+dataSQL)
	return src, dst
}

// independentChecksum is a table's md5 over its sorted row texts (columns
// by name), computed by plain SQL: the test's own proof of what the
// databases hold.
func independentChecksum(t *testing.T, db, table string, cols string) string {
	t.Helper()
	conn := pg.Connect(t, db)
	ctx := context.Background()
	conn.Exec(ctx, "SET extra_float_digits = 3")
	var sum string
	if err := conn.QueryRow(ctx, `SELECT md5(coalesce(string_agg(r, E'\n' ORDER BY r COLLATE "C"), '')) FROM (SELECT ROW(`+cols+`)::text AS r FROM `+table+`) s`).Scan(&sum); err != nil {
		t.Fatalf("independent checksum of %s: %v", table, err)
	}
	return sum
}

// testConfig uses small chunks so that every mode, several chunks per
// table and bisection all run on small tables.
func testConfig(src, dst string) Config {
	return Config{Source: pg.URL(src), Target: pg.URL(dst), ChunkRows: 500, LeafRows: 50, Fanout: 4, Jobs: 3}
}

func runVerify(t *testing.T, cfg Config) *Report {
	t.Helper()
	rep, err := Run(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

// diffLines flattens the report's differences into sortable lines.
func diffLines(rep *Report) []string {
	var out []string
	for _, tr := range rep.Tables {
		for _, p := range tr.Problems {
			out = append(out, tr.Table+" | "+p)
		}
		for _, d := range tr.Rows {
			line := tr.Table + " | " + d.Kind + " | " + d.Key
			if d.Row != "" {
				line += d.Row
			}
			if len(d.Columns) > 0 {
				line += " | " + strings.Join(d.Columns, ",")
			}
			out = append(out, line)
		}
	}
	for _, s := range rep.Sequences {
		if s.Behind {
			out = append(out, "sequence "+s.Sequence+" behind")
		}
	}
	sort.Strings(out)
	return out
}
