package snapshot

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) {
	code := testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{})
	if binDir != "" {
		os.RemoveAll(binDir) // the CLI tests' build
	}
	os.Exit(code)
}

// pair makes a source and a target database in the shared cluster and a
// config with a slot name of this test's own (slots are cluster-wide).
func pair(t *testing.T) (src, dst string, cfg Config) {
	t.Helper()
	src = pg.NewDatabase(t)
	dst = pg.NewDatabase(t)
	cfg = Config{SourceURL: pg.URL(src), TargetURL: pg.URL(dst), Jobs: 3, SlotName: "s_" + src, ChunkBytes: 64 << 10}
	return src, dst, cfg
}

func testLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)) }

// tableSums computes, independently of the code under test, one checksum
// per table (row count and md5 of the sorted row texts) and one line per
// sequence, for every relation outside the system and replicator schemas.
func tableSums(t *testing.T, db string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn := pg.Connect(t, db)
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'replicator')
		AND n.nspname !~ '^pg_toast' ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	type rel struct{ schema, name, kind string }
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.schema, &r.name, &r.kind); err != nil {
			t.Fatal(err)
		}
		rels = append(rels, r)
	}
	out := map[string]string{}
	for _, r := range rels {
		q := pgutil.QualifiedName(r.schema, r.name)
		var sum string
		var err error
		if r.kind == "S" {
			err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT last_value || '/' || is_called FROM %s`, q)).Scan(&sum)
		} else {
			err = conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) || '/' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), '') FROM ONLY %s t`, q)).Scan(&sum)
		}
		if err != nil {
			t.Fatalf("checksum %s in %s: %v", q, db, err)
		}
		out[r.kind+" "+q] = sum
	}
	return out
}

func compareSums(t *testing.T, want, got map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s missing on the target", k)
		} else if g != w {
			t.Errorf("%s differs: source %s, target %s", k, w, g)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s on the target is not on the source", k)
		}
	}
}

func queryString(t *testing.T, db, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := pg.Connect(t, db).QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func mustContain(t *testing.T, s string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(s, p) {
			t.Errorf("%q does not mention %q", s, p)
		}
	}
}

func pgxConnect(url string) (*pgx.Conn, error) { return pgx.Connect(context.Background(), url) }
