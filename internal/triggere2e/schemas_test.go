package triggere2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// realSchema has the shapes real schemas have and toy ones lack: ALWAYS
// identity columns beside and as the key, a table with no column and one
// with only generated columns, serial sequences, a materialized view,
// large objects and a database-level setting.
const realSchema = `
CREATE TABLE identity_column_test (pk_col bigint PRIMARY KEY, id_col integer GENERATED ALWAYS AS IDENTITY, name text);
CREATE TABLE ident_key (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text);
CREATE TABLE empty ();
CREATE TABLE gen (a int GENERATED ALWAYS AS (42) STORED);
CREATE TABLE orders (id serial PRIMARY KEY, doc oid, v int);
INSERT INTO identity_column_test (pk_col, name) SELECT g, 'n' || g FROM generate_series(1, 20) g;
INSERT INTO ident_key (note) SELECT 'k' || g FROM generate_series(1, 20) g;
INSERT INTO empty SELECT FROM generate_series(1, 5);
INSERT INTO gen SELECT FROM generate_series(1, 3);
INSERT INTO orders (doc, v) SELECT lo_from_bytea(0, convert_to('invoice ' || g, 'UTF8')), 0 FROM generate_series(1, 22) g;
CREATE MATERIALIZED VIEW order_count AS SELECT count(*) AS n FROM orders;
`

// The whole Heroku path on such a schema: snapshot with trigger capture,
// stream under the application's writes (some made under
// session_replication_role = replica), then verify: identical, exit 0,
// with the stream's limits (sequences, the materialized view) reported as
// warnings rather than differences, and the large objects and the
// database setting on the target.
func TestRealSchemaMigration(t *testing.T) {
	srcDB, srcURL := appSource(t, heroku)
	dstDB := heroku.NewDatabase(t)
	dstURL := heroku.URL(dstDB)
	app := connect(t, srcURL)
	exec1(t, app, realSchema+`ALTER DATABASE `+srcDB+` SET search_path = public, "$user"`)
	runOK(t, "snapshot", "--source", srcURL, "--target", dstURL, "--capture", "trigger", "--metrics-addr", "")
	stream := start(t, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "")

	exec1(t, app, `
		UPDATE identity_column_test SET name = 'changed' WHERE pk_col <= 10;
		INSERT INTO identity_column_test (pk_col, name) VALUES (100, 'new');
		UPDATE ident_key SET note = 'changed' WHERE id BETWEEN 5 AND 9;
		INSERT INTO ident_key (note) VALUES ('new');
		DELETE FROM ident_key WHERE id = 2;
		INSERT INTO empty SELECT FROM generate_series(1, 40);
		INSERT INTO gen DEFAULT VALUES;
		INSERT INTO orders (v) SELECT 1 FROM generate_series(1, 97);
		REFRESH MATERIALIZED VIEW order_count`)
	heroku.Exec(t, srcDB, `SET session_replication_role = replica; UPDATE orders SET v = 7 WHERE id <= 5; INSERT INTO empty DEFAULT VALUES`)

	dst := connect(t, dstURL)
	deadline := time.Now().Add(90 * time.Second)
	for {
		d := diffSums(sums(t, app), sums(t, dst))
		if d == "" {
			break
		}
		if stream.cmd.ProcessState != nil || time.Now().After(deadline) {
			t.Fatalf("target not identical:\n%s\nstream output:\n%s", d, stream.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The stream moves the target's sequences up to the source's (every
	// 10s by default).
	const seqs = `SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'`
	want := queryString(t, app, seqs)
	for got := queryString(t, dst, seqs); got != want; got = queryString(t, dst, seqs) {
		if stream.cmd.ProcessState != nil || time.Now().After(deadline.Add(30*time.Second)) {
			t.Fatalf("target sequences %s, source %s\nstream output:\n%s", got, want, stream.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	out, err := command(t, "verify", "--source", srcURL, "--target", dstURL).CombinedOutput()
	if code := exitCode(err); code != 0 {
		t.Fatalf("verify on identical data: exit %d, want 0\n%s", code, out)
	}
	for _, want := range []string{"IDENTICAL", "0 behind on target", "materialized view public.order_count", "22 on source, 22 on target, identical"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	var setting string
	if err := dst.QueryRow(context.Background(), `SELECT array_to_string(setconfig, ';') FROM pg_db_role_setting
		WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND setrole = 0`).Scan(&setting); err != nil ||
		setting != `search_path=public, "$user"` {
		t.Errorf("target database settings %q (%v), want the source's search_path", setting, err)
	}
}
