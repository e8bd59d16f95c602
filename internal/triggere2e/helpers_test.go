package triggere2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
)

// heroku runs wal_level=replica, as Heroku Postgres looks to its
// customers; normal is an ordinary source (wal_level=logical).
var heroku, normal *testenv.Postgres

// bin is the built replicator command.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "replicator-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "replicator")
	if err := testenv.BuildReplicator(bin); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	if heroku, err = testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica"}); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a PostgreSQL test server: %v\n", err)
		return 1
	}
	defer heroku.Close()
	if normal, err = testenv.StartPostgres(testenv.PostgresOptions{}); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a PostgreSQL test server: %v\n", err)
		return 1
	}
	defer normal.Close()
	return m.Run()
}

const appPassword = "app-Pw-e2e-7"

// appSource makes a database owned by a new login role that is neither
// superuser nor REPLICATION (Heroku's default credential) and returns the
// database and the URL as that role.
func appSource(t *testing.T, pg *testenv.Postgres) (db, url string) {
	t.Helper()
	role := fmt.Sprintf("app_%d", time.Now().UnixNano()%1e9)
	pg.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' NOSUPERUSER NOREPLICATION NOCREATEDB NOCREATEROLE", role, appPassword))
	t.Cleanup(func() {
		ctx := context.Background()
		if conn, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
			conn.Exec(ctx, "DROP ROLE IF EXISTS "+role)
			conn.Close(ctx)
		}
	})
	db = pg.NewDatabase(t)
	pg.Exec(t, db, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", db, role))
	return db, pg.URLAs(role, appPassword, db)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec1(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%v\nSQL: %s", err, sql)
	}
}

// sums computes, with SQL only and independently of the code under test,
// one checksum per application table: row count and the md5 of its rows'
// text forms in sorted order. A partitioned table is summed at its root.
func sums(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'replicator') AND n.nspname !~ '^pg_toast'
		ORDER BY 1, 2`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var s, n string
		if err := rows.Scan(&s, &n); err != nil {
			t.Fatal(err)
		}
		names = append(names, pgutil.QualifiedName(s, n))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, q := range names {
		var sum string
		err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) || '/' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), '') FROM %s t`, q)).Scan(&sum)
		if err != nil {
			t.Fatalf("checksum %s: %v", q, err)
		}
		out[q] = sum
	}
	return out
}

func diffSums(want, got map[string]string) string {
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if want[k] != got[k] {
			fmt.Fprintf(&b, "  %s: source %q, target %q\n", k, want[k], got[k])
		}
	}
	return b.String()
}

// replicator runs the built command; its output is kept for failures.
type proc struct {
	cmd *exec.Cmd
	out *bytes.Buffer
}

func command(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, append(args[:1:1], append([]string{"--log-format", "json"}, args[1:]...)...)...)
	cmd.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL=", "REPLICATOR_TARGET_URL=", "TMPDIR="+t.TempDir())
	return cmd
}

func start(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: command(t, args...), out: &bytes.Buffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start replicator %s: %v", args[0], err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

// runOK runs a command to its end and fails the test unless it exits 0.
func runOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := command(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("replicator %s: %v\n%s", args[0], err, out)
	}
	return string(out)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%v\nSQL: %s", err, sql)
	}
	return s
}

func queryInt(t *testing.T, conn *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%v\nSQL: %s", err, sql)
	}
	return n
}
