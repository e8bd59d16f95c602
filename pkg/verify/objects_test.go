package verify

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// objectsDDL has what a stream does not carry: sequences, a materialized
// view, large objects; and a sequence whose table name holds quotes.
const objectsDDL = `
CREATE TABLE items (id serial PRIMARY KEY, v text);
CREATE TABLE """dqname""" (id serial PRIMARY KEY);
INSERT INTO items (v) SELECT 'v' || g FROM generate_series(1, 50) g;
CREATE MATERIALIZED VIEW item_count AS SELECT count(*) AS n FROM items;
SELECT lo_from_bytea(90000 + g, convert_to('large object ' || g, 'UTF8')) FROM generate_series(1, 3) g;
`

// TestSequencesAndViewsWarnUntilCutover: on identical data, sequences
// behind the source are warnings, not differences, until cutover has
// moved them; from then on they are differences. A materialized view that
// differs is always a warning. Large objects are compared by count and
// checksum.
func TestSequencesAndViewsWarnUntilCutover(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, objectsDDL)
	pg.Exec(t, dst, objectsDDL)
	pg.Exec(t, src, `SELECT nextval('items_id_seq') FROM generate_series(1, 10); SELECT nextval('"""dqname""_id_seq"');
		INSERT INTO items (v) VALUES ('after'); DELETE FROM items WHERE v = 'after'; REFRESH MATERIALIZED VIEW item_count;
		INSERT INTO items (v) VALUES ('again'); DELETE FROM items WHERE v = 'again'`)
	// The target's view is computed from the same rows: make it stale.
	pg.Exec(t, dst, `INSERT INTO items (id, v) VALUES (1000, 'x'); REFRESH MATERIALIZED VIEW item_count; DELETE FROM items WHERE id = 1000`)

	rep := runVerify(t, testConfig(src, dst))
	if rep.Different() || !rep.Warned() || rep.SequencesBehind != 2 {
		t.Fatalf("different %v warned %v, %d sequences behind: %q", rep.Different(), rep.Warned(), rep.SequencesBehind, diffLines(rep))
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{"IDENTICAL", "Warnings", `sequence public."""dqname""_id_seq"`, "materialized view public.item_count",
		"cutover", "large objects are copied by the snapshot only"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("report does not say %q:\n%s", want, text.String())
		}
	}
	if strings.Contains(text.String(), `public."dqname"_id_seq`) {
		t.Errorf("a sequence name is printed unquoted:\n%s", text.String())
	}
	if lo := rep.LargeObjects; lo == nil || !lo.Identical || lo.Source != 3 {
		t.Errorf("large objects: %+v, want 3, identical", lo)
	}

	// Once cutover has moved the sequences, what is behind is a difference.
	pg.Exec(t, dst, `CREATE SCHEMA IF NOT EXISTS replicator;
		CREATE TABLE replicator.cutover (step text PRIMARY KEY, status text, detail jsonb, updated_at timestamptz);
		INSERT INTO replicator.cutover VALUES ('sequences', 'done', '{}', now())`)
	if rep := runVerify(t, testConfig(src, dst)); !rep.Different() || !rep.Warned() {
		t.Errorf("after cutover moved the sequences: different %v (want true: sequences behind), warned %v (want true: the view)",
			rep.Different(), rep.Warned())
	}
	pg.Exec(t, dst, `DROP SCHEMA replicator CASCADE`)

	// A large object missing on the target is a difference.
	conn := pg.Connect(t, dst)
	if _, err := conn.Exec(context.Background(), `SELECT lo_unlink(max(oid)) FROM pg_largeobject_metadata`); err != nil {
		t.Fatal(err)
	}
	rep = runVerify(t, testConfig(src, dst))
	if !rep.Different() || rep.LargeObjects.Identical || rep.LargeObjects.Target != 2 {
		t.Errorf("a missing large object is not a difference: %+v", rep.LargeObjects)
	}
}
