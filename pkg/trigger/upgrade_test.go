package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/trigger"
)

// upgradeWrites are writes of every kind the row functions tell apart:
// inserts, an update of one column, an update that changes nothing, a
// key change, an update moving a row to another partition, deletes, on a
// table with a primary key, one without a key, and a partitioned one.
const upgradeWrites = `
INSERT INTO app.a VALUES (1, 'one', 10), (2, 'two', 20), (3, NULL, 30);
UPDATE app.a SET v = 'uno' WHERE id = 1;
UPDATE app.a SET w = w WHERE id = 2;
UPDATE app.a SET id = 4, w = 40 WHERE id = 3;
DELETE FROM app.a WHERE id = 2;
INSERT INTO app.nokey VALUES (1, 'x'), (1, 'x'), (2, NULL);
UPDATE app.nokey SET y = 'z' WHERE x = 2;
DELETE FROM app.nokey WHERE x = 1;
INSERT INTO app.p VALUES (1, 1, 'a'), (2, 15, 'b');
UPDATE app.p SET t = 'c' WHERE id = 1;
UPDATE app.p SET k = 12 WHERE id = 1;
DELETE FROM app.p WHERE id = 2;
`

// changelog returns the changelog's rows in id order, without id and
// txid, with part as the batch reader takes it (0: not a partition).
func changelog(t *testing.T, s *source) []string {
	t.Helper()
	conn := s.connect(t)
	rows, err := conn.Query(context.Background(), `SELECT format('%s %s %s %s %s', op, rel::regclass, coalesce(nullif(part, rel), 0)::regclass, key, vals)
		FROM replicator.changelog WHERE op <> 'T' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A source an earlier version installed (one row trigger calling
// replicator.capture_row) keeps being captured, is named by
// CheckInstalled, and is upgraded by the next start of capture; the
// functions per operation record exactly what the one function did.
func TestUpgradeFromOneRowFunction(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE SCHEMA app;
		CREATE TABLE app.a (id int PRIMARY KEY, v text, w int);
		CREATE TABLE app.nokey (x int, y text);
		CREATE TABLE app.p (id int, k int, t text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
		CREATE TABLE app.p1 PARTITION OF app.p FOR VALUES FROM (0) TO (10);
		CREATE TABLE app.p2 PARTITION OF app.p FOR VALUES FROM (10) TO (20)`)
	install(t, s)
	conn := s.connect(t)

	// The earlier layout, put back as that version left it: its function,
	// and on each table one trigger calling it with the same arguments.
	earlier, err := os.ReadFile("testdata/capture_row_earlier.sql")
	if err != nil {
		t.Fatal(err)
	}
	s.exec(t, string(earlier))
	rows, err := conn.Query(ctx, `SELECT tgrelid::regclass::text, tgargs FROM pg_trigger WHERE tgname = $1 AND tgparentid = 0`, trigger.InsertTrigger)
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for rows.Next() {
		var rel string
		var raw []byte
		if err := rows.Scan(&rel, &raw); err != nil {
			t.Fatal(err)
		}
		var args []string
		for _, a := range strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00") {
			args = append(args, pgutil.QuoteLiteral(a))
		}
		for _, name := range []string{trigger.InsertTrigger, trigger.UpdateTrigger, trigger.DeleteTrigger} {
			stmts = append(stmts, fmt.Sprintf("DROP TRIGGER %s ON %s", name, rel))
		}
		stmts = append(stmts, fmt.Sprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION replicator.capture_row(%s)", trigger.EarlierRowTrigger, rel, strings.Join(args, ", ")),
			fmt.Sprintf("ALTER TABLE %s ENABLE ALWAYS TRIGGER %s", rel, trigger.EarlierRowTrigger))
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(stmts) != 15 {
		t.Fatalf("%d statements to put the earlier layout back (want 15): %v", len(stmts), err)
	}
	s.exec(t, strings.Join(stmts, ";\n"))

	err = trigger.CheckInstalled(ctx, conn)
	if !errors.Is(err, trigger.ErrEarlierInstall) {
		t.Fatalf("CheckInstalled on the earlier layout: %v, want ErrEarlierInstall", err)
	}
	for _, want := range []string{`"app"."a"`, `"app"."nokey"`, `"app"."p"`, "install trigger capture again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckInstalled on the earlier layout: %v, want it to name %s", err, want)
		}
	}

	// The same writes from the same state, under each layout.
	s.exec(t, upgradeWrites)
	old := changelog(t, s)
	s.exec(t, `TRUNCATE app.a, app.nokey, app.p; DELETE FROM replicator.changelog; DELETE FROM replicator.truncates`)

	// Starting capture upgrades the earlier layout in place.
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatalf("start capture on the earlier layout: %v", err)
	}
	capt.Close()
	if err := trigger.CheckInstalled(ctx, conn); err != nil {
		t.Fatalf("CheckInstalled after the upgrade: %v", err)
	}
	var left int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_trigger WHERE tgname = $1)
		+ (SELECT count(*) FROM pg_proc WHERE oid = to_regprocedure('replicator.capture_row()'))`, trigger.EarlierRowTrigger).Scan(&left); err != nil || left != 0 {
		t.Errorf("%d triggers and functions of the earlier layout left after the upgrade (%v)", left, err)
	}

	s.exec(t, upgradeWrites)
	now := changelog(t, s)
	if len(old) != 18 {
		t.Errorf("the earlier function recorded %d changes, want 18:\n%s", len(old), strings.Join(old, "\n"))
	}
	if !slices.Equal(old, now) {
		t.Errorf("the functions per operation record\n%s\nwhere the earlier function recorded\n%s", strings.Join(now, "\n"), strings.Join(old, "\n"))
	}
	// Raw, a row of a table that is not a partition records part = rel
	// now (NULL before), which the batch reader takes alike.
	var self int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM replicator.changelog WHERE part = rel`).Scan(&self); err != nil || self == 0 {
		t.Errorf("%d rows with part = rel (%v): the reader's reading of them is not tested", self, err)
	}
}
