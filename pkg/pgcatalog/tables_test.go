package pgcatalog

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/state"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

// fixture has one object of every kind the definition speaks of. The
// extension-owned objects are made members with ALTER EXTENSION … ADD, as
// an extension script's CREATE would (no contrib extension creates a
// table); pg_depend records them the same way.
const fixture = `
CREATE EXTENSION citext;
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
CREATE SCHEMA "Odd Schema";
CREATE SCHEMA replicator;

CREATE TABLE public.plain (id int PRIMARY KEY, v text);
CREATE UNLOGGED TABLE public.scratch (v text);
CREATE TABLE public.nothing (id int PRIMARY KEY);
ALTER TABLE public.nothing REPLICA IDENTITY NOTHING;
CREATE TABLE public.full_ident (v text);
ALTER TABLE public.full_ident REPLICA IDENTITY FULL;
CREATE TABLE public.by_index (a int NOT NULL);
CREATE UNIQUE INDEX by_index_a ON public.by_index (a);
ALTER TABLE public.by_index REPLICA IDENTITY USING INDEX by_index_a;
CREATE TABLE public.lost_index (a int NOT NULL);
CREATE UNIQUE INDEX lost_index_a ON public.lost_index (a);
ALTER TABLE public.lost_index REPLICA IDENTITY USING INDEX lost_index_a;
DROP INDEX public.lost_index_a;
CREATE TABLE "Odd Schema"."Mixed.Case ""quoted""" (id int PRIMARY KEY);

CREATE TABLE public.events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01') PARTITION BY RANGE (at);
CREATE TABLE "Odd Schema".events_2025_h1 PARTITION OF public.events_2025 FOR VALUES FROM ('2025-01-01') TO ('2025-07-01');
CREATE TABLE public.parent_inh (id int);
CREATE TABLE public.child_inh () INHERITS (public.parent_inh);

CREATE TABLE replicator.bookkeeping (id int);
CREATE TABLE public.ext_owned (id int);
ALTER EXTENSION citext ADD TABLE public.ext_owned;

CREATE VIEW public.v AS SELECT * FROM public.plain;
CREATE VIEW public.ext_view AS SELECT 1 AS x;
ALTER EXTENSION citext ADD VIEW public.ext_view;
CREATE MATERIALIZED VIEW public.mv AS SELECT 1 AS x;
CREATE FOREIGN TABLE public.ft (a int) SERVER files OPTIONS (filename '/dev/null');
CREATE SEQUENCE public.seq;
CREATE SEQUENCE public.ext_seq;
ALTER EXTENSION citext ADD SEQUENCE public.ext_seq;
CREATE SEQUENCE replicator.seq;
`

// oddTable is the odd name as names() shows it, schema.name unquoted.
const oddTable = `Odd Schema.Mixed.Case "quoted"`

// setup builds the fixture and returns a connection that also holds a
// temporary table (visible in its pg_class, as any session's are).
func setup(t *testing.T) *pgx.Conn {
	t.Helper()
	db := pg.NewDatabase(t)
	pg.Exec(t, db, fixture)
	conn := pg.Connect(t, db)
	if _, err := conn.Exec(context.Background(), `CREATE TEMP TABLE tmp (id int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return conn
}

func names(ts []Table) []string {
	var out []string
	for i := range ts {
		out = append(out, ts[i].Schema+"."+ts[i].Name)
	}
	slices.Sort(out)
	return out
}

func list(t *testing.T, conn *pgx.Conn, o Options) []Table {
	t.Helper()
	ts, err := Tables(context.Background(), conn, o)
	if err != nil {
		t.Fatal(err)
	}
	// Where is the same condition: it counts the same relations.
	var n int
	if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE `+Where(o)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != len(ts) {
		t.Errorf("Where(%+v) counts %d relations, Tables lists %d", o, n, len(ts))
	}
	return ts
}

func TestSelections(t *testing.T) {
	conn := setup(t)
	common := []string{oddTable, "public.by_index", "public.child_inh", "public.full_ident", "public.lost_index",
		"public.nothing", "public.parent_inh", "public.plain", "public.scratch"}
	cases := []struct {
		name string
		o    Options
		also []string
	}{
		{"all tables", Options{}, []string{"public.events", "public.events_2024", "public.events_2025", "Odd Schema.events_2025_h1"}},
		{"row tables", Options{Tables: RowTables}, []string{"public.events_2024", "Odd Schema.events_2025_h1"}},
		{"root tables", Options{Tables: RootTables}, []string{"public.events"}},
		{"writable", Options{Also: []Kind{View, Foreign}},
			[]string{"public.events", "public.events_2024", "public.events_2025", "Odd Schema.events_2025_h1", "public.v", "public.ft"}},
		{"readable", Options{Tables: RowTables, Also: []Kind{Sequence}},
			[]string{"public.events_2024", "Odd Schema.events_2025_h1", "public.seq"}},
		{"matviews", Options{Tables: RootTables, Also: []Kind{Matview}}, []string{"public.events", "public.mv"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			want := append(slices.Clone(common), c.also...)
			slices.Sort(want)
			got := names(list(t, conn, c.o))
			if !slices.Equal(got, want) {
				t.Errorf("listed\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
			}
		})
	}
}

func TestTableFields(t *testing.T) {
	conn := setup(t)
	byName := map[string]Table{}
	for _, tb := range list(t, conn, Options{Also: []Kind{View, Foreign, Sequence, Matview}}) {
		byName[tb.Schema+"."+tb.Name] = tb
	}
	get := func(name string) Table {
		t.Helper()
		tb, ok := byName[name]
		if !ok {
			t.Fatalf("%s is not listed", name)
		}
		return tb
	}
	events := get("public.events")
	type want struct {
		kind             Kind
		partition        bool
		root             uint32 // 0: the table itself
		unlogged, pk     bool
		ident            byte
		identIdx, key    bool
		schema, relation string
	}
	for name, w := range map[string]want{
		"public.plain":              {kind: Ordinary, pk: true, ident: 'd', key: true},
		"public.scratch":            {kind: Ordinary, unlogged: true, ident: 'd'},
		"public.nothing":            {kind: Ordinary, pk: true, ident: 'n'},
		"public.full_ident":         {kind: Ordinary, ident: 'f', key: true},
		"public.by_index":           {kind: Ordinary, ident: 'i', identIdx: true, key: true},
		"public.lost_index":         {kind: Ordinary, ident: 'i'},
		"public.events":             {kind: Partitioned, pk: true, ident: 'd', key: true},
		"public.events_2024":        {kind: Ordinary, partition: true, root: events.OID, pk: true, ident: 'd', key: true},
		"public.events_2025":        {kind: Partitioned, partition: true, root: events.OID, pk: true, ident: 'd', key: true},
		"Odd Schema.events_2025_h1": {kind: Ordinary, partition: true, root: events.OID, pk: true, ident: 'd', key: true},
		"public.child_inh":          {kind: Ordinary, ident: 'd'},
		oddTable:                    {kind: Ordinary, pk: true, ident: 'd', key: true, schema: "Odd Schema", relation: `Mixed.Case "quoted"`},
		"public.v":                  {kind: View, ident: 'n'},
		"public.ft":                 {kind: Foreign, ident: 'n'},
		"public.seq":                {kind: Sequence, ident: 'n'},
		"public.mv":                 {kind: Matview, ident: 'd'},
		"public.parent_inh":         {kind: Ordinary, ident: 'd'},
	} {
		tb := get(name)
		root := w.root
		if root == 0 {
			root = tb.OID
		}
		if tb.Kind != w.kind || tb.Partition != w.partition || tb.Root != root || tb.Unlogged != w.unlogged ||
			tb.HasPrimaryKey != w.pk || tb.ReplicaIdentity != w.ident || tb.HasIdentityIndex != w.identIdx || tb.HasReplicaKey != w.key {
			t.Errorf("%s: kind %c partition %v root %d unlogged %v pk %v ident %c identIdx %v key %v; want %c %v %d %v %v %c %v %v",
				name, tb.Kind, tb.Partition, tb.Root, tb.Unlogged, tb.HasPrimaryKey, tb.ReplicaIdentity, tb.HasIdentityIndex, tb.HasReplicaKey,
				w.kind, w.partition, root, w.unlogged, w.pk, w.ident, w.identIdx, w.key)
		}
		if !tb.Owned {
			t.Errorf("%s: not owned by the superuser that created it", name)
		}
		if w.schema != "" && (tb.Schema != w.schema || tb.Name != w.relation) {
			t.Errorf("%s: schema %q name %q, want %q %q", name, tb.Schema, tb.Name, w.schema, w.relation)
		}
		if name == oddTable && tb.String() != `"Odd Schema"."Mixed.Case ""quoted"""` {
			t.Errorf("%s: String() is %s, not quoted for SQL", name, tb.String())
		}
	}
	if len(byName) != 17 {
		t.Errorf("listed %d relations, want the 17 above: %v", len(byName), names(slices.Collect(maps.Values(byName))))
	}
}

// TestOwned: listing needs no privilege on the tables, and Owned says
// whose they are.
func TestOwned(t *testing.T) {
	conn := setup(t)
	ctx := context.Background()
	role := "pgcatalog_reader"
	if _, err := conn.Exec(ctx, `CREATE ROLE `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Exec(t, "postgres", `DROP ROLE IF EXISTS `+role) })
	if _, err := conn.Exec(ctx, `CREATE TABLE public.theirs (id int); ALTER TABLE public.theirs OWNER TO `+role+`; SET ROLE `+role); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, `RESET ROLE; DROP TABLE public.theirs`)
	ts := list(t, conn, Options{})
	if len(ts) != 14 {
		t.Errorf("listed %d tables as %s, want 14: %v", len(ts), role, names(ts))
	}
	for _, tb := range ts {
		if tb.Owned != (tb.Name == "theirs") {
			t.Errorf("%s: Owned %v as %s", &tb, tb.Owned, role)
		}
	}
}

func TestUserSchema(t *testing.T) {
	conn := setup(t)
	rows, err := conn.Query(context.Background(), `SELECT nspname FROM pg_namespace n WHERE `+UserSchema+` ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"Odd Schema", "public"}; !slices.Equal(got, want) {
		t.Errorf("user schemas %q, want %q (the temporary schemas exist: this session has a temp table)", got, want)
	}
}

func TestDefinitionsAgree(t *testing.T) {
	if bookkeepingSchema != state.Schema {
		t.Errorf("the bookkeeping schema left out is %q, state.Schema is %q", bookkeepingSchema, state.Schema)
	}
	if !strings.Contains(strings.Join(strings.Fields(UserRelation), " "), NotExtensionMember("pg_class", "c.oid")) {
		t.Errorf("UserRelation does not spell NotExtensionMember(pg_class, c.oid):\n%s\n%s", UserRelation, NotExtensionMember("pg_class", "c.oid"))
	}
}
