package snapshot

import (
	"context"
	"testing"
)

// Large objects arrive with their oids and contents, including one far
// larger than a copy chunk, and a rerun replaces them rather than failing.
func TestSnapshotCopiesLargeObjects(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE docs (id int PRIMARY KEY, body oid);
		INSERT INTO docs SELECT g, lo_from_bytea(0, convert_to(repeat('doc ' || g, g), 'UTF8')) FROM generate_series(1, 22) g;
		INSERT INTO docs VALUES (100, lo_from_bytea(0, (SELECT string_agg(decode(md5(g::text), 'hex'), '') FROM generate_series(1, 200000) g)));
		SELECT lo_create(0)`)
	const digest = `SELECT count(*)::text || ' ' || coalesce(md5(string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid)), '')
		FROM pg_largeobject_metadata`
	want := queryString(t, src, digest)
	for run := 0; run < 2; run++ {
		if run == 1 {
			// A run interrupted after the large objects were copied.
			pg.Exec(t, dst, `UPDATE replicator.state SET snapshot_status = 'copying'`)
		}
		if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if got := queryString(t, dst, digest); got != want {
			t.Fatalf("run %d: target large objects %s, source %s", run, got, want)
		}
	}
	compareSums(t, tableSums(t, src), tableSums(t, dst))
}

// The source database's own settings arrive on the target database, list
// settings (search_path) element by element; a role's setting in the
// database is not carried.
func TestSnapshotCarriesDatabaseSettings(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY);
		ALTER DATABASE `+src+` SET search_path = app, "$user", public;
		ALTER DATABASE `+src+` SET statement_timeout = '45s';
		ALTER DATABASE `+src+` SET "app.greeting" = 'it''s here';
		ALTER ROLE postgres IN DATABASE `+src+` SET work_mem = '7MB'`)
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	const settings = `SELECT coalesce(string_agg(c, '; ' ORDER BY c), '') FROM pg_db_role_setting s, unnest(s.setconfig) c
		WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND s.setrole = 0`
	if got, want := queryString(t, dst, settings), queryString(t, src, settings); got != want {
		t.Errorf("target database settings %q, source %q", got, want)
	}
	if got := queryString(t, dst, `SELECT current_setting('search_path')`); got != `app, "$user", public` {
		t.Errorf("search_path in a new target session is %q", got)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_db_role_setting WHERE setrole <> 0
		AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())`); n != "0" {
		t.Errorf("a role's setting was carried")
	}
}

// Tables with no column, or only generated ones, are copied (their row
// count is their data) under both captures; trigger capture installs on
// them.
func TestSnapshotZeroColumnTables(t *testing.T) {
	for _, capture := range []string{CaptureLogical, CaptureTrigger} {
		t.Run(capture, func(t *testing.T) {
			src, dst, cfg := pair(t)
			cfg.Capture = capture
			pg.Exec(t, src, `CREATE TABLE empty (); ALTER TABLE empty REPLICA IDENTITY FULL;
				CREATE TABLE gen (a int GENERATED ALWAYS AS (42) STORED); ALTER TABLE gen REPLICA IDENTITY FULL;
				INSERT INTO empty SELECT FROM generate_series(1, 1234);
				INSERT INTO gen SELECT FROM generate_series(1, 17)`)
			if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
				t.Fatal(err)
			}
			compareSums(t, tableSums(t, src), tableSums(t, dst))
			if n := queryString(t, dst, `SELECT count(*)::text FROM empty`); n != "1234" {
				t.Errorf("target holds %s rows of the zero-column table, want 1234", n)
			}
		})
	}
}
