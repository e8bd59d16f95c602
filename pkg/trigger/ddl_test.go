package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/trigger"
)

// drain reads every batch from after applied up to the latest tick, and
// calls fn with each change. It returns the last batch read.
func drain(t *testing.T, capt *trigger.Capture, applied int64, fn func(*trigger.Change)) int64 {
	t.Helper()
	ctx := context.Background()
	last, err := capt.Tick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for applied < last {
		b, err := capt.NextBatch(ctx, applied)
		if err != nil {
			t.Fatal(err)
		}
		cur, err := capt.Open(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		for cur.Next(ctx) {
			fn(cur.Change())
		}
		if err := cur.Err(); err != nil {
			t.Fatal(err)
		}
		cur.Close(ctx)
		applied = b.ID
	}
	return applied
}

// value returns the text of column name in a change's new values, and
// whether the change carries it.
func value(ch *trigger.Change, name string) (string, bool) {
	for i, c := range ch.Table.Columns {
		if c.Name == name && i < len(ch.New) && ch.New[i].Kind != trigger.ValueUnchanged {
			if ch.New[i].Kind == trigger.ValueNull {
				return "NULL", true
			}
			return string(ch.New[i].Text), true
		}
	}
	return "", false
}

// ADD COLUMN while several sessions write: every value written to the new
// column, from the first write after the ALTER committed, is in the
// captured changes, and applying them gives the source's table.
func TestAddColumnWhileWriting(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE users (id int PRIMARY KEY, name text)`)
	install(t, s)
	capt := startCapture(t, s)

	const writers = 4
	var (
		wg      sync.WaitGroup
		nextID  atomic.Int64
		mu      sync.Mutex
		written = map[string]string{} // "id/email value" → how it was written
		after   atomic.Int64          // writes naming email that committed
		stop    = make(chan struct{})
		errs    = make(chan error, writers+1)
	)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, s.url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := nextID.Add(1)
				email := fmt.Sprintf("u%d@w%d.example", id, w)
				// Until the ALTER commits the new column does not exist
				// and the write fails: it is written without it then.
				_, err := conn.Exec(ctx, `INSERT INTO users (id, name, email) VALUES ($1, 'n', $2)`, id, email)
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UndefinedColumn {
					_, err = conn.Exec(ctx, `INSERT INTO users (id, name) VALUES ($1, 'n')`, id)
					email = ""
				}
				if err != nil {
					errs <- err
					return
				}
				if email == "" {
					continue
				}
				upd := fmt.Sprintf("changed%d@w%d.example", n, w)
				// An update of the new column only, of another writer's row.
				target := max(id-1-int64(n%7), 1)
				tag, err := conn.Exec(ctx, `UPDATE users SET email = $2 WHERE id = $1 AND email IS NOT NULL`, target, upd)
				if err != nil && !isRetryable(err) {
					errs <- err
					return
				}
				mu.Lock()
				written[fmt.Sprintf("%d/%s", id, email)] = "insert"
				if err == nil && tag.RowsAffected() == 1 {
					written[fmt.Sprintf("%d/%s", target, upd)] = "update"
				}
				mu.Unlock()
				after.Add(1)
			}
		}(w)
	}
	// The ALTER comes from its own session while the writers run.
	waitFor := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for !done() {
			select {
			case err := <-errs:
				t.Fatalf("application write failed: %v", err)
			case <-time.After(time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s", what)
			}
		}
	}
	waitFor("200 writes before the ALTER", func() bool { return nextID.Load() >= 200 })
	s.exec(t, `ALTER TABLE users ADD COLUMN email text`)
	waitFor("300 writes naming the new column", func() bool { return after.Load() >= 300 })
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("application write failed: %v", err)
	}

	seen := map[string]bool{}
	target := newTarget(t, `CREATE TABLE users (id int PRIMARY KEY, name text, email text)`)
	tx, err := target.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, capt, 0, func(ch *trigger.Change) {
		if v, ok := value(ch, "email"); ok && v != "NULL" {
			id, _ := value(ch, "id")
			if id == "" {
				id = strings.Trim(strings.SplitN(ch.KeyString(), "=", 2)[1], "()")
			}
			seen[id+"/"+v] = true
		}
		if err := applyChange(ctx, tx, ch); err != nil {
			t.Fatal(err)
		}
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lost := 0
	for k, how := range written {
		if !seen[k] {
			if lost++; lost <= 5 {
				t.Errorf("the %s of %s after ADD COLUMN is not in the captured changes", how, k)
			}
		}
	}
	if lost > 0 || len(written) < 300 {
		t.Errorf("%d of %d values of the new column were lost", lost, len(written))
	}
	compareTables(t, s.connect(t), target, []string{"users"})
}

// DROP COLUMN and RENAME COLUMN (also of a key column): a dropped column
// disappears from later changes, a renamed one appears under its new
// name, and the key of a row is never lost.
func TestDropAndRenameColumn(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, `CREATE TABLE t (id int PRIMARY KEY, a text, b text, c text)`)
	install(t, s)
	capt := startCapture(t, s)
	conn := s.connect(t)
	exec := func(q string) {
		t.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`INSERT INTO t VALUES (1, 'a1', 'b1', 'c1')`)
	exec(`ALTER TABLE t DROP COLUMN b`)
	exec(`INSERT INTO t VALUES (2, 'a2', 'c2')`)
	exec(`UPDATE t SET c = 'c1x' WHERE id = 1`)
	exec(`ALTER TABLE t RENAME COLUMN c TO d`)
	exec(`INSERT INTO t VALUES (3, 'a3', 'd3')`)
	exec(`UPDATE t SET d = 'd2x' WHERE id = 2`)
	exec(`ALTER TABLE t RENAME COLUMN id TO uid`)
	exec(`UPDATE t SET a = 'a3x' WHERE uid = 3`)
	exec(`DELETE FROM t WHERE uid = 1`)
	exec(`INSERT INTO t VALUES (4, 'a4', 'd4')`)

	var got []string
	drain(t, capt, 0, func(ch *trigger.Change) {
		d := fmt.Sprintf("%s %s", ch.Op, ch.KeyString())
		for i, c := range ch.Table.Columns {
			if i < len(ch.New) && ch.New[i].Kind == trigger.ValueText {
				d += fmt.Sprintf(" %s=%s", c.Name, ch.New[i].Text)
			}
		}
		got = append(got, d)
	})
	want := []string{
		"insert (id)=(1) id=1 a=a1 b=b1 c=c1",
		"insert (id)=(2) id=2 a=a2 c=c2",
		"update (id)=(1) c=c1x",
		"insert (id)=(3) id=3 a=a3 d=d3",
		"update (id)=(2) d=d2x",
		// The trigger's key argument names id, which the row no longer
		// has: the whole old row is the key, and the whole new row is
		// recorded (the reader cannot tell whether the key moved).
		"update (uid)=(3) uid=3 a=a3x d=d3",
		"delete (uid)=(1)",
		"insert (uid)=(4) uid=4 a=a4 d=d4",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("captured changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Values of every kind the tests know arrive as the source's text, which
// the target's input functions read back to the same values: applied to
// an identical target table, the tables are identical (compared by each
// row's text, independently of the capture).
func TestTypeRichRoundTrip(t *testing.T) {
	ctx := context.Background()
	const ddl = `
CREATE TYPE mood AS ENUM ('sad', 'it''s "ok"');
CREATE TYPE pair AS (x int, label text);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE rich (
	id  int PRIMARY KEY,
	arr int[], tarr text[], comp pair, carr pair[],
	js json, jb jsonb, by bytea, ts timestamptz, tsn timestamp, d date,
	f8 float8, f4 float4, n numeric, dom posint, m mood, iv interval, b bool, ch char(5),
	g text GENERATED ALWAYS AS (id::text || '!') STORED
);`
	s := newSource(t, src)
	s.exec(t, ddl)
	install(t, s)
	capt := startCapture(t, s)
	conn := s.connect(t)
	// Odd session settings: the capture pins its own.
	if _, err := conn.Exec(ctx, `SET DateStyle = 'German, DMY'; SET IntervalStyle = 'sql_standard'; SET TimeZone = 'America/St_Johns'; SET extra_float_digits = -2; SET bytea_output = 'escape'`); err != nil {
		t.Fatal(err)
	}
	rows := []string{
		`(1, '{1,NULL,3}', ARRAY['a,b', NULL, 'c"d', '', 'NULL', 'back\slash'], ROW(1, 'x, "y"'), ARRAY[ROW(2, NULL)::pair, NULL],
		  '{"b": 1,   "a": [1.10, 2], "b": 2}', '{"b": 1, "a": 1.10}', '\x00ff5c27', '2024-02-29 23:59:59.999999+05:30', '0044-03-15 12:00 BC', 'infinity',
		  'NaN', '-Infinity', 'NaN', 7, 'it''s "ok"', '1 year -2 days 03:04:05.5', true, 'ab')`,
		`(2, '{}', '{}', ROW(NULL, NULL), '{}', '"\u00e9"', 'null', '', '-infinity', '2000-01-01 00:00', '4713-01-01 BC',
		  '-0', 1.17549435e-38, '-0.000', 1, 'sad', '-1 mon', false, '     ')`,
		`(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0.1, 3.4028235e38, 12345678901234567890.12345678901234567890, NULL, NULL, NULL, NULL, NULL)`,
	}
	for _, r := range rows {
		if _, err := conn.Exec(ctx, `INSERT INTO rich (id, arr, tarr, comp, carr, js, jb, by, ts, tsn, d, f8, f4, n, dom, m, iv, b, ch) VALUES `+r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `UPDATE rich SET js = '{"z":  0}', f8 = 'Infinity', comp.label = 'new', ts = ts + interval '1 microsecond' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	target := newTarget(t, ddl)
	tx, err := target.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drain(t, capt, 0, func(ch *trigger.Change) {
		if _, ok := value(ch, "g"); ok {
			t.Errorf("%s of %s carries the generated column g", ch.Op, ch.KeyString())
		}
		if err := applyChange(ctx, tx, ch); err != nil {
			t.Fatal(err)
		}
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	compareTables(t, s.connect(t), target, []string{"rich"})
	// json keeps its text exactly (spaces, order, duplicate keys).
	var js string
	if err := target.QueryRow(ctx, `SELECT js::text FROM rich WHERE id = 2`).Scan(&js); err != nil || js != `"\u00e9"` {
		t.Errorf("json on the target: %q, %v", js, err)
	}
}

// newTarget is a database of its own on the test server with ddl run.
func newTarget(t *testing.T, ddl string) *pgx.Conn {
	t.Helper()
	db := src.NewDatabase(t)
	src.Exec(t, db, ddl)
	return src.Connect(t, db)
}
