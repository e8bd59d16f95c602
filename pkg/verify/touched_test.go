package verify

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// An incremental run after Track compares only the rows written since on
// either side, finds a row changed on the target alone and one changed on
// the source alone, and compares a keyless table whole.
func TestTouchedComparesOnlyWhatChanged(t *testing.T) {
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	ddl := `CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 10000) i;
		CREATE TABLE pairs (a int, b text, PRIMARY KEY (b, a));
		INSERT INTO pairs SELECT i, 'p' || i FROM generate_series(1, 3000) i;
		CREATE TABLE notes (v text);
		INSERT INTO notes SELECT 'n' || i FROM generate_series(1, 500) i;
		CREATE TABLE quiet (id int PRIMARY KEY);
		INSERT INTO quiet SELECT generate_series(1, 5000);
		CREATE TABLE calm (id int PRIMARY KEY);
		INSERT INTO calm SELECT generate_series(1, 5000);
		ANALYZE;`
	pg.Exec(t, src, ddl)
	pg.Exec(t, dst, ddl)
	// A difference from before the logs start: no log names it.
	pg.Exec(t, dst, `UPDATE quiet SET id = -1 WHERE id = 77`)
	ctx := context.Background()
	for _, s := range []struct{ db, name string }{{src, "source"}, {dst, "target"}} {
		n, err := Track(ctx, pg.URL(s.db), s.name)
		if err != nil {
			t.Fatal(err)
		}
		if n != 5 {
			t.Fatalf("%s: tracked %d tables, want 5", s.name, n)
		}
	}
	// A hot row, still being written on the target while compared: a
	// logged difference is in flight, the unlogged one is a difference.
	pg.Exec(t, dst, `UPDATE items SET v = 'hot' WHERE id = 3`)
	live := testConfig(src, dst)
	live.InFlightLogged = true
	full := runVerify(t, live)
	if got := diffLines(full); len(got) != 2 || !strings.Contains(strings.Join(got, " "), "id=77") || !strings.Contains(strings.Join(got, " "), "id=-1") {
		t.Errorf("full run with the logs: differences %v, want only quiet's id 77 (missing) and -1 (extra)", got)
	}
	if f := full.InFlight["public.items"]; len(f) != 1 || f[0].Key != "id=3" {
		t.Errorf("in flight: %v, want items id=3", full.InFlight)
	}
	pg.Exec(t, dst, `UPDATE items SET v = 'v3' WHERE id = 3; UPDATE quiet SET id = 77 WHERE id = -1`)
	if full := runVerify(t, testConfig(src, dst)); full.Different() {
		t.Fatalf("identical databases reported different: %v", diffLines(full))
	}

	// The stream's work: the same writes on both sides.
	same := `UPDATE items SET v = 'new' WHERE id IN (10, 20, 30);
		INSERT INTO items VALUES (20000, 'fresh');
		DELETE FROM items WHERE id = 40;
		UPDATE pairs SET a = a + 100000 WHERE a = 5;
		INSERT INTO notes VALUES ('late');`
	pg.Exec(t, src, same)
	pg.Exec(t, dst, same)
	// Planted: a row changed on the target directly, a row changed on the
	// source that never reached the target.
	pg.Exec(t, dst, `UPDATE items SET v = 'typo' WHERE id = 500`)
	pg.Exec(t, src, `DELETE FROM items WHERE id = 600`)

	cfg := testConfig(src, dst)
	cfg.Touched = true
	rep := runVerify(t, cfg)
	if !rep.Touched {
		t.Fatal("report does not say it compared touched rows only")
	}
	byName := map[string]TableResult{}
	for _, tr := range rep.Tables {
		byName[tr.Table] = tr
	}
	items := byName["public.items"]
	// Source log: 10, 20, 30, 20000, 40, 600; target log: 3, 10, 20, 30,
	// 20000, 40, 500. Each key is compared once.
	if items.RowsCompared != 8 {
		t.Errorf("items: compared %d logged keys, want 8 (of 10000 rows)", items.RowsCompared)
	}
	got := map[string]string{}
	for _, d := range items.Rows {
		got[d.Key] = d.Kind
	}
	if got["id=500"] != Different || got["id=600"] != ExtraOnTarget || len(got) != 2 {
		t.Errorf("items differences = %v, want 500 different and 600 extra on the target", got)
	}
	// A key update logs the old key and the new one.
	if p := byName["public.pairs"]; p.RowsCompared != 2 || !p.Identical {
		t.Errorf("pairs: compared %d keys (want 2), identical %v", p.RowsCompared, p.Identical)
	}
	if n := byName["public.notes"]; !n.Whole || !n.Identical || n.SourceRows != 501 {
		t.Errorf("notes (no key): whole %v identical %v rows %d; want compared whole, 501 rows", n.Whole, n.Identical, n.SourceRows)
	}
	// quiet: its fix (-1 back to 77) was logged: two keys.
	if q := byName["public.quiet"]; q.RowsCompared != 2 || !q.Identical {
		t.Errorf("quiet: compared %d keys, identical %v; want the 2 fixed ones", q.RowsCompared, q.Identical)
	}
	if q := byName["public.calm"]; q.RowsCompared != 0 || q.SourceRows != 0 || !q.Identical {
		t.Errorf("calm: compared %d keys and read %d rows; want nothing read", q.RowsCompared, q.SourceRows)
	}

	// A crash empties the unlogged log, sentinel included: no log then.
	pg.Exec(t, dst, `DELETE FROM replicator.verify_touched WHERE rel = ''`)
	if _, err := Run(ctx, cfg, nil); !errors.Is(err, ErrNoTouchedLog) {
		t.Errorf("incremental run with an emptied log: %v, want ErrNoTouchedLog", err)
	}

	for _, s := range []struct{ db, name string }{{src, "source"}, {dst, "target"}} {
		if err := Untrack(ctx, pg.URL(s.db), s.name); err != nil {
			t.Fatal(err)
		}
		if err := Untrack(ctx, pg.URL(s.db), s.name); err != nil {
			t.Fatalf("second Untrack: %v", err)
		}
		var n int
		if err := pg.Connect(t, s.db).QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_verify%'`).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s: %d tracking triggers left after Untrack (%v)", s.name, n, err)
		}
	}
	if _, err := Run(ctx, cfg, nil); !errors.Is(err, ErrNoTouchedLog) {
		t.Errorf("incremental run without a log: %v, want ErrNoTouchedLog", err)
	}
}

// Track locks its tables in one order whatever the map's: by schema, then
// name, so two trackers never take them crosswise.
func TestTrackOrderIsDeterministic(t *testing.T) {
	rels := map[string]*relation{}
	for _, q := range [][2]string{{"public", "b"}, {"public", "a"}, {"App", "z"}, {"app", "a"}, {"public", "B"}, {"zz", "a"}} {
		rels[q[0]+"."+q[1]] = &relation{schema: q[0], name: q[1]}
	}
	want := "App.z app.a public.B public.a public.b zz.a"
	for range 20 {
		var got []string
		for _, r := range trackOrder(rels) {
			got = append(got, r.qualified())
		}
		if s := strings.Join(got, " "); s != want {
			t.Fatalf("track order %s, want %s", s, want)
		}
	}
}
