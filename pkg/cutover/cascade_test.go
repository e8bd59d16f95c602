package cutover

import (
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A foreign key with ON DELETE CASCADE on Heroku's setup: the source's role
// cannot skip triggers per session, so the cutover drops the key on the
// source for the fallback window (the cascade runs on the target, and its
// deletes arrive as captured changes). The reverse stream must keep it
// dropped: added back, it would cascade the carried delete of an order on
// the source, and the carried delete of that order's lines would find
// them gone and stop the stream. After the rollback the key is back,
// validated, and both sides hold the same rows.
func TestReverseCarriesCascadeOnce(t *testing.T) {
	m := newHerokuMigration(t, `CREATE TABLE lines (order_id bigint NOT NULL REFERENCES orders (id) ON DELETE CASCADE, n int NOT NULL, qty int NOT NULL,
			PRIMARY KEY (order_id, n));
		INSERT INTO lines SELECT i, k, k FROM generate_series(1, 60) i, generate_series(1, 3) k`)
	m.startTriggerStream(t)
	code, out, errOut := run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence")
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "1 foreign keys with actions dropped") {
		t.Fatalf("the cutover did not drop the cascading key for the window:\n%s", out)
	}
	srcKey := func() []string {
		return query(t, m.src, `SELECT conname || ' ' || convalidated FROM pg_constraint WHERE conrelid = 'lines'::regclass AND contype = 'f'`)
	}
	rev := startReverse(t, m)
	waitReverse(t, m, rev)

	// The app on the target deletes orders (their lines cascade there),
	// adds orders with lines, and changes lines.
	for i := 1; i <= 20; i++ {
		pg.Exec(t, m.dst, `DELETE FROM orders WHERE id = `+strconv.Itoa(i))
	}
	pg.Exec(t, m.dst, `WITH o AS (INSERT INTO orders (customer, note) VALUES (5, 'aws') RETURNING id)
		INSERT INTO lines SELECT o.id, k, 1 FROM o, generate_series(1, 4) k`)
	pg.Exec(t, m.dst, `UPDATE lines SET qty = qty + 10 WHERE order_id BETWEEN 21 AND 30`)
	waitReverse(t, m, rev)
	if k := srcKey(); len(k) != 0 {
		t.Errorf("the source has its cascading key back inside the fallback window: %v", k)
	}
	for _, q := range []string{`SELECT count(*) FROM lines WHERE order_id <= 20`, `SELECT count(*) FROM orders WHERE id <= 20`} {
		if got := query(t, m.src, q); got[0] != "0" {
			t.Errorf("source: %s = %s, want 0 (deleted on the target)", q, got[0])
		}
	}
	if got := query(t, m.src, `SELECT count(*) FROM lines WHERE order_id IN (SELECT id FROM orders WHERE note = 'aws')`); got[0] != "4" {
		t.Errorf("source: %s lines of the order made on the target, want 4", got[0])
	}
	sameTables(t, m.dst, m.src)

	code, out, errOut = run(t, "cutover", "--rollback", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s")
	if code != 0 {
		t.Fatalf("rollback: exit %d\n%s\n%s\nreverse: %s", code, out, errOut, tail(rev.out.String(), 20))
	}
	if k := srcKey(); len(k) != 1 || k[0] != "lines_order_id_fkey true" {
		t.Errorf("the source's cascading key after the rollback: %v, want it back and validated", k)
	}
	sameTables(t, m.dst, m.src)

	// A second window, after the rollback: the key is dropped and kept
	// again, and the reverse stream starts from a new baseline, not the
	// first window's.
	rev.kill(syscall.SIGTERM)
	pg.Exec(t, m.src, `DELETE FROM orders WHERE id BETWEEN 21 AND 25`) // the app, back on the source
	code, out, errOut = run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence")
	if code != 0 || !strings.Contains(out, "1 foreign keys with actions dropped") {
		t.Fatalf("second cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := query(t, m.dst, `SELECT count(*) FROM lines WHERE order_id BETWEEN 21 AND 25`); got[0] != "0" {
		t.Errorf("the source's cascade of its own delete did not reach the target: %s lines left", got[0])
	}
	rev = startReverse(t, m)
	waitReverse(t, m, rev)
	pg.Exec(t, m.dst, `DELETE FROM orders WHERE id BETWEEN 26 AND 30`)
	waitReverse(t, m, rev)
	if got := query(t, m.src, `SELECT count(*) FROM lines WHERE order_id BETWEEN 26 AND 30`); got[0] != "0" {
		t.Errorf("second window: %s lines of the orders deleted on the target are still on the source", got[0])
	}
	if k := srcKey(); len(k) != 0 {
		t.Errorf("second window: the source has its cascading key back: %v", k)
	}
	sameTables(t, m.dst, m.src)
	code, out, errOut = run(t, "cutover", "--rollback", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s")
	if code != 0 {
		t.Fatalf("second rollback: exit %d\n%s\n%s\nreverse: %s", code, out, errOut, tail(rev.out.String(), 20))
	}
	sameTables(t, m.dst, m.src)
}
