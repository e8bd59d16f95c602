package trigger_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
	"replicator/pkg/apply"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

// schemasDDL has the shapes of real schemas that trigger capture must
// carry: GENERATED ALWAYS identity columns beside and as the key, a table
// with no column, one with only generated columns.
const schemasDDL = `
CREATE TABLE identity_column_test (pk_col bigint PRIMARY KEY, id_col integer GENERATED ALWAYS AS IDENTITY, name text);
CREATE TABLE ident_key (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
CREATE TABLE empty ();
CREATE TABLE gen (a int GENERATED ALWAYS AS (42) STORED, b text GENERATED ALWAYS AS ('x' || 1) STORED);
CREATE TABLE metrics (id int PRIMARY KEY, v int);
`

var schemasTables = []string{"identity_column_test", "ident_key", "empty", "gen", "metrics"}

// TestStreamRealSchemas streams, through pkg/apply as `replicator stream`
// does, changes to those tables, including writes made under
// session_replication_role = replica (which ordinary triggers miss), and
// checks every table against an independent checksum. Writes of a
// session marked as this tool's apply are not captured.
func TestStreamRealSchemas(t *testing.T) {
	s, targetDB, target := schemasPair(t)
	s.exec(t, `
		UPDATE identity_column_test SET name = 'one' WHERE pk_col = 1;
		UPDATE ident_key SET note = 'one' WHERE id = 1;
		INSERT INTO identity_column_test (pk_col, name) VALUES (100, 'new');
		INSERT INTO ident_key (note) VALUES ('new');
		INSERT INTO empty DEFAULT VALUES;
		INSERT INTO gen DEFAULT VALUES;
		BEGIN;
		UPDATE identity_column_test SET name = name || ' set-wise' WHERE pk_col BETWEEN 2 AND 15;
		UPDATE ident_key SET note = note || ' set-wise' WHERE id BETWEEN 2 AND 15;
		INSERT INTO empty SELECT FROM generate_series(1, 1500);
		INSERT INTO gen SELECT FROM generate_series(1, 7);
		DELETE FROM empty WHERE ctid IN (SELECT ctid FROM empty LIMIT 4);
		DELETE FROM gen WHERE ctid = (SELECT ctid FROM gen LIMIT 1);
		DELETE FROM ident_key WHERE id = 4;
		COMMIT`)
	// Under the replica role, as tools and some applications write
	// (setting it takes a superuser).
	src.Exec(t, s.db, `SET session_replication_role = replica;
		UPDATE metrics SET v = 7 WHERE id <= 10;
		INSERT INTO ident_key (note) VALUES ('replica role');
		DELETE FROM identity_column_test WHERE pk_col = 20;
		INSERT INTO empty DEFAULT VALUES`)
	// A session marked as apply's is not captured.
	before := queryInt(t, src, s.db, `SELECT count(*) FROM replicator.changelog`)
	src.Exec(t, s.db, fmt.Sprintf(`SET %s = on; UPDATE metrics SET v = v WHERE id = 1`, trigger.ApplyingSetting))
	if after := queryInt(t, src, s.db, `SELECT count(*) FROM replicator.changelog`); after != before {
		t.Errorf("a session marked %s was captured: %d changelog rows, then %d", trigger.ApplyingSetting, before, after)
	}

	if err := streamTo(t, s, targetDB, target); err != nil {
		t.Fatalf("the stream stopped with %v", err)
	}
	compareTables(t, s.connect(t), target, append([]string(nil), schemasTables...))
}

// streamTo runs the stream until the target has applied every change
// the source holds now, or until it stops by itself (its error).
func streamTo(t *testing.T, s *source, targetDB string, target *pgx.Conn) error {
	t.Helper()
	ctx := context.Background()
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	last, err := capt.Tick(ctx)
	capt.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := apply.StreamConfig{SourceURL: s.url, TargetURL: src.URL(targetDB), Trigger: testConfig(),
		Capture: wal.Config{SpillDir: t.TempDir()}, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- apply.Stream(rctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))) }()
	ended := false
	defer func() {
		cancel()
		if !ended {
			<-done // not logging past the test's end
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := state.Load(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		if st.Applied.ID() >= last {
			break
		}
		select {
		case err := <-done:
			ended = true
			return err
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("applied batch %d, want %d after 60s", st.Applied.ID(), last)
		}
	}
	cancel()
	ended = true
	return <-done
}

// A change the target refuses, in a batch that changes several tables,
// is named by its own table and key: an ALWAYS identity key moved to
// DEFAULT fails when its statement is prepared, which pgx reports as the
// batch's first result.
func TestRefusalNamesItsTable(t *testing.T) {
	s, targetDB, target := schemasPair(t)
	s.exec(t, `BEGIN;
		UPDATE metrics SET v = v + 1;
		INSERT INTO metrics VALUES (21, 1);
		UPDATE ident_key SET id = DEFAULT WHERE id = 3;
		UPDATE metrics SET v = 9 WHERE id = 5;
		COMMIT`)
	err := streamTo(t, s, targetDB, target)
	var ae *apply.ApplyError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v, want an ApplyError", err)
	}
	for _, want := range []string{"ident_key", "(id)=(3)", "changelog id", "428C9"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "metrics") {
		t.Errorf("error %q names another table", err)
	}
}

// schemasPair is a source with schemasDDL and rows, trigger capture
// installed, and a target holding its snapshot, as `replicator snapshot
// --capture trigger` leaves them.
func schemasPair(t *testing.T) (*source, string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, schemasDDL+`
		INSERT INTO identity_column_test (pk_col, name) SELECT g, 'n' || g FROM generate_series(1, 20) g;
		INSERT INTO ident_key (note) SELECT 'k' || g FROM generate_series(1, 20) g;
		INSERT INTO empty SELECT FROM generate_series(1, 5);
		INSERT INTO gen SELECT FROM generate_series(1, 3);
		INSERT INTO metrics SELECT g, 0 FROM generate_series(1, 20) g`)
	targetDB := src.NewDatabase(t)
	src.Exec(t, targetDB, schemasDDL)
	target := src.Connect(t, targetDB)
	tables := install(t, s) // refused the zero-column tables before: "columns" NOT NULL
	if n := queryInt(t, src, s.db, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator_capture%' AND tgenabled <> 'A'`); n != 0 {
		t.Errorf("%d capture triggers do not fire ALWAYS", n)
	}

	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st := cp.State()
	st.SnapshotStatus = state.SnapshotCopying
	if err := state.Begin(ctx, target, &st); err != nil {
		t.Fatal(err)
	}
	copyAll(t, s, cp.SnapshotName, targetDB, tables)
	cp.Release(ctx)
	if err := state.SetSnapshotStatus(ctx, target, state.SnapshotDone); err != nil {
		t.Fatal(err)
	}

	return s, targetDB, target
}

// copyAll copies every table through the exported snapshot with plain
// COPY, which (unlike copySnapshot's column lists) also carries tables
// with no column and leaves generated columns to the target.
func copyAll(t *testing.T, s *source, snapshotName, targetDB string, tables []*trigger.Table) {
	t.Helper()
	ctx := context.Background()
	from := s.connect(t)
	to := src.Connect(t, targetDB)
	if _, err := from.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); err != nil {
		t.Fatal(err)
	}
	if _, err := from.Exec(ctx, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", snapshotName)); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		pr, pw := io.Pipe()
		go func() {
			_, err := from.PgConn().CopyTo(ctx, pw, fmt.Sprintf("COPY %s TO STDOUT", tb))
			pw.CloseWithError(err)
		}()
		if _, err := to.PgConn().CopyFrom(ctx, pr, fmt.Sprintf("COPY %s FROM STDIN", tb)); err != nil {
			t.Fatalf("copy %s: %v", tb, err)
		}
	}
	from.Exec(ctx, "COMMIT")
}

func queryInt(t *testing.T, pg *testenv.Postgres, db, sql string) int64 {
	t.Helper()
	conn := pg.Connect(t, db)
	defer conn.Close(context.Background())
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
