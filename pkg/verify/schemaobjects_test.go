package verify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"replicator/pkg/report"
)

// Types, sequences, functions and views that differ are reported with
// their fix, as tables' columns are; running the fixes leaves the two
// catalogs alike, by PostgreSQL's own account of each object.
func TestSchemaDifferencesObjects(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	const base = `CREATE TABLE people (id int PRIMARY KEY, m mood, age posint);`
	pg.Exec(t, src, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE DOMAIN posint AS int CONSTRAINT posint_check CHECK (VALUE > 0);
		CREATE SEQUENCE invoice_no INCREMENT BY 5;
		`+base+`
		CREATE VIEW happy_people AS SELECT id FROM people WHERE m = 'happy';
		CREATE FUNCTION add_one(i int) RETURNS int LANGUAGE sql AS 'SELECT i + 1';`)
	pg.Exec(t, dst, `CREATE TYPE mood AS ENUM ('sad', 'happy');
		CREATE DOMAIN posint AS int CONSTRAINT posint_check CHECK (VALUE >= 0);
		CREATE SEQUENCE invoice_no;
		CREATE SEQUENCE leftover;
		`+base+`
		CREATE VIEW happy_people AS SELECT id FROM people WHERE m = 'happy' AND age > 1;`)

	rep := runVerify(t, testConfig(src, dst))
	if !rep.Different() {
		t.Fatal("differences of types, sequences, functions and views did not make the report different")
	}
	type want struct{ name, object, kind, fix string }
	wants := []want{
		{"public.mood", "enum", SchemaDefinition, `ALTER TYPE "public"."mood" ADD VALUE IF NOT EXISTS 'ok' AFTER 'sad'`},
		{"public.posint", "domain", SchemaDefinition, "CREATE DOMAIN public.posint AS integer CONSTRAINT posint_check CHECK ((VALUE > 0))"},
		{"public.invoice_no", "sequence", SchemaDefinition, `ALTER SEQUENCE "public"."invoice_no" AS bigint INCREMENT BY 5`},
		{"public.leftover", "sequence", SchemaExtra, "if the source dropped it: DROP SEQUENCE public.leftover"},
		{"public.happy_people", "view", SchemaDefinition, `CREATE OR REPLACE VIEW "public"."happy_people" AS`},
		{"public.add_one(i integer)", "function", SchemaMissing, "CREATE OR REPLACE FUNCTION public.add_one(i integer)"},
	}
	for _, w := range wants {
		found := false
		for _, d := range rep.Schema {
			if d.Table == w.name && d.Object == w.object && d.Kind == w.kind {
				found = true
				if !strings.Contains(d.Fix, w.fix) {
					t.Errorf("%s %s %s: fix %q, want it to contain %q", w.name, w.object, w.kind, d.Fix, w.fix)
				}
				if d.Source == d.Target {
					t.Errorf("%s %s: source and target both read %q", w.name, w.object, d.Source)
				}
			}
		}
		if !found {
			t.Errorf("not reported: %s %s %s", w.name, w.object, w.kind)
		}
	}
	if len(rep.Schema) != len(wants) {
		for _, d := range rep.Schema {
			t.Logf("reported: %s", d)
		}
		t.Errorf("%d schema differences reported, want %d", len(rep.Schema), len(wants))
	}
	if rep.SchemaObjects != 5 {
		t.Errorf("%d objects compared, want the source's 5 (mood, posint, invoice_no, happy_people, add_one)", rep.SchemaObjects)
	}
	if !strings.Contains(rep.schemaSummary(), "5 types, sequences, functions and views") {
		t.Errorf("summary %q does not say how many objects were compared", rep.schemaSummary())
	}

	// Run the fixes; the domain's is a recipe, done here by hand.
	for _, d := range rep.Schema {
		switch {
		case d.Object == "domain":
			pg.Exec(t, dst, `ALTER DOMAIN posint DROP CONSTRAINT posint_check; ALTER DOMAIN posint ADD CONSTRAINT posint_check CHECK (VALUE > 0)`)
		default:
			fix := strings.TrimPrefix(d.Fix, "if the source dropped it: ")
			fix, _, _ = strings.Cut(fix, " (if PostgreSQL refuses")
			pg.Exec(t, dst, fix)
		}
	}
	// PostgreSQL's own account of each object, on both sides.
	const probe = `SELECT concat_ws(' | ',
		enum_range(NULL::mood)::text,
		(SELECT string_agg(pg_get_constraintdef(oid), ',') FROM pg_constraint WHERE contypid = 'posint'::regtype),
		(SELECT increment_by::text FROM pg_sequences WHERE sequencename = 'invoice_no'),
		(SELECT string_agg(sequencename, ',' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'),
		pg_get_viewdef('happy_people'::regclass),
		to_regprocedure('add_one(int)')::text)`
	var a, b string
	ctx := context.Background()
	sc, dc := pg.Connect(t, src), pg.Connect(t, dst)
	if err := sc.QueryRow(ctx, probe).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := dc.QueryRow(ctx, probe).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("after the fixes the catalogs still differ:\nsource: %s\ntarget: %s", a, b)
	}
	rep = runVerify(t, testConfig(src, dst))
	for _, d := range rep.Schema {
		t.Errorf("after the fixes: %s", d)
	}

	// --tables narrows the comparison to tables: objects are not
	// compared, and the summary says so.
	pg.Exec(t, dst, `DROP FUNCTION add_one(int)`)
	cfg := testConfig(src, dst)
	cfg.Tables = []string{"public.people"}
	rep = runVerify(t, cfg)
	if len(rep.Schema) != 0 || !rep.ObjectsSkipped || !strings.Contains(rep.schemaSummary(), "not compared (--tables)") {
		t.Errorf("with --tables: %d differences, skipped %v, summary %q", len(rep.Schema), rep.ObjectsSkipped, rep.schemaSummary())
	}
}

// A function whose body holds a password (a dblink_connect's conninfo, a
// URL's user:password@) and that differs between the two sides: no
// format of the report carries a fragment of either side's password,
// and the difference names the function and a fix that works (run
// here as an operator would, with the two URLs in the environment).
func TestSchemaDifferencesHideCredentials(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	const fn = `CREATE FUNCTION remote_total() RETURNS int LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM dblink_connect('host=billing user=app password=''Sr9 cXpw41'' dbname=billing');
			PERFORM dblink_connect('postgres://app:Tg5zQpw83@billing/billing');
			RETURN %s;
		END $$`
	pg.Exec(t, src, fmt.Sprintf(fn, "1"))
	pg.Exec(t, dst, strings.NewReplacer("Sr9 cXpw41", "Ko2 mNpw77", "Tg5zQpw83", "Lh8vWpw62").Replace(fmt.Sprintf(fn, "2")))

	rep := runVerify(t, testConfig(src, dst))
	var text, js, md bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteMarkdown(&md, report.Header{Version: "test"}); err != nil {
		t.Fatal(err)
	}
	for format, out := range map[string]string{"text": text.String(), "json": js.String(), "markdown": md.String()} {
		for _, frag := range []string{"Sr9", "cXpw", "Tg5z", "Qpw83", "Ko2", "mNpw", "Lh8v", "Wpw62"} {
			if strings.Contains(out, frag) {
				t.Errorf("the %s report holds %q of a password:\n%s", format, frag, out)
			}
		}
		if !strings.Contains(out, "remote_total") || !strings.Contains(out, "holds a credential") {
			t.Errorf("the %s report does not name the function and say why its fix is a command:\n%s", format, out)
		}
	}
	if len(rep.Schema) != 1 {
		t.Fatalf("%d schema differences, want the function's: %v", len(rep.Schema), rep.Schema)
	}
	d := rep.Schema[0]
	if d.Table != "public.remote_total()" || d.Kind != SchemaDefinition {
		t.Errorf("reported %s, want public.remote_total()'s definition", d)
	}
	i := strings.Index(d.Fix, "psql ")
	if i < 0 {
		t.Fatalf("fix %q gives no command", d.Fix)
	}
	cmd := d.Fix[i:]
	run := exec.Command("sh", "-c", cmd)
	run.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL="+pg.URL(src), "REPLICATOR_TARGET_URL="+pg.URL(dst))
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("the fix %q failed: %v\n%s", cmd, err, out)
	}
	// The target's function is now the source's, password and all.
	const probe = `SELECT md5(prosrc) FROM pg_proc WHERE proname = 'remote_total'`
	var a, b string
	if err := pg.Connect(t, src).QueryRow(context.Background(), probe).Scan(&a); err != nil {
		t.Fatal(err)
	}
	if err := pg.Connect(t, dst).QueryRow(context.Background(), probe).Scan(&b); err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Errorf("after the fix the function's body differs: source md5 %s, target %s", a, b)
	}
	for _, d := range runVerify(t, testConfig(src, dst)).Schema {
		t.Errorf("after the fix: %s", d)
	}
}
