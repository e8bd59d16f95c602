package cutover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/internal/testenv"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// One cluster holds every test's source and target databases. The
// snapshot uses the cluster-wide slot name "replicator", so these tests do
// not run in parallel.
var pg *testenv.Postgres

func TestMain(m *testing.M) {
	code := testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{})
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

// replicatorBin builds the command once; the migration is set up with the
// real `replicator snapshot` and `replicator stream`, as users run them.
func replicatorBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "replicator-cutover-bin-"); binErr != nil {
			return
		}
		binErr = testenv.BuildReplicator(filepath.Join(binDir, "replicator"))
	})
	if binErr != nil {
		t.Fatalf("build replicator: %v", binErr)
	}
	return filepath.Join(binDir, "replicator")
}

func command(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(replicatorBin(t), append(args, "--log-format", "json")...)
	cmd.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL=", "REPLICATOR_TARGET_URL=", "REPLICATOR_REDIS_TARGET_URL=", "TMPDIR="+t.TempDir())
	return cmd
}

const appPassword = "App-Secret-9x"

// run runs the command to its end and returns its exit code and output;
// no output may hold a password.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := command(t, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	started := time.Now()
	err := cmd.Run()
	t.Logf("replicator %s took %s", args[0], time.Since(started).Round(time.Millisecond))
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args[0], err)
	}
	for _, pw := range []string{testenv.Password, appPassword} {
		if strings.Contains(o.String()+e.String(), pw) {
			t.Errorf("the output of %s holds a password:\n%s\n%s", args[0], o.String(), e.String())
		}
	}
	return code, o.String(), e.String()
}

// migration is a source database with an app role, and a target database
// holding its snapshot.
type migration struct {
	src, dst       string
	srcURL, dstURL string
	app, appURL    string
}

const appSchema = `
CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, note text, amount numeric(10,2));
CREATE TABLE events (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, order_id bigint NOT NULL, kind text NOT NULL);
CREATE TABLE settings (name text PRIMARY KEY, value text);
CREATE SEQUENCE invoice_no START 5000;
CREATE SEQUENCE countdown INCREMENT -1 START 100 MINVALUE -100000 MAXVALUE 100;
INSERT INTO orders (customer, note, amount) SELECT i % 50, md5(i::text), i * 1.5 FROM generate_series(1, 2000) i;
INSERT INTO events (order_id, kind) SELECT i, 'created' FROM generate_series(1, 2000) i;
INSERT INTO settings VALUES ('mode', 'live');
SELECT nextval('invoice_no') FROM generate_series(1, 10);
SELECT nextval('countdown') FROM generate_series(1, 7);`

// newMigration creates the source with an app role that may write to
// orders and events (not settings), and runs `replicator snapshot`.
func newMigration(t *testing.T) *migration {
	t.Helper()
	m := &migration{src: pg.NewDatabase(t), dst: pg.NewDatabase(t)}
	m.srcURL, m.dstURL = pg.URL(m.src), pg.URL(m.dst)
	m.app = "app_" + m.src
	pg.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", m.app, appPassword))
	t.Cleanup(func() {
		ctx := context.Background()
		if c, err := pgx.Connect(ctx, m.srcURL); err == nil {
			c.Exec(ctx, "DROP OWNED BY "+m.app)
			c.Close(ctx)
		}
		if c, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
			c.Exec(ctx, "DROP ROLE IF EXISTS "+m.app)
			c.Close(ctx)
		}
	})
	m.appURL = pg.URLAs(m.app, appPassword, m.src)
	pg.Exec(t, m.src, appSchema)
	pg.Exec(t, m.src, fmt.Sprintf(`GRANT SELECT, INSERT, UPDATE, DELETE ON orders, events TO %[1]s;
		GRANT SELECT ON settings TO %[1]s; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO %[1]s`, m.app))
	code, out, errOut := run(t, "snapshot", "--source", m.srcURL, "--target", m.dstURL, "--metrics-addr", "", "--jobs", "2")
	if code != 0 {
		t.Fatalf("snapshot: exit %d\n%s\n%s", code, out, errOut)
	}
	return m
}

// startStream runs `replicator stream` until the test ends and waits until
// its slot is active.
func (m *migration) startStream(t *testing.T) {
	t.Helper()
	cmd := command(t, "stream", "--source", m.srcURL, "--target", m.dstURL, "--metrics-addr", "")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		stopping := time.Now()
		defer func() { t.Logf("the stream stopped in %s", time.Since(stopping).Round(time.Millisecond)) }()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("stream log:\n%s", tail(stderr.String(), 3000))
		}
	})
	c := pg.Connect(t, m.src)
	started := time.Now()
	defer func() { t.Logf("the stream's slot was active after %s", time.Since(started).Round(time.Millisecond)) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var active bool
		c.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'replicator'`).Scan(&active)
		if active {
			return
		}
		select {
		case <-exited:
			t.Fatalf("the stream ended:\n%s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream's slot is not active after 30s:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// writer is the app: it logs in as the app role and keeps writing orders
// and events until it is refused, reconnecting when its session is ended.
type writer struct {
	commits atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	err     error // the refusal that ended it (nil if stopped)
}

func (m *migration) startWriter(t *testing.T) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		ctx := context.Background()
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(ctx)
			}
		}()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if conn == nil || conn.IsClosed() {
				var err error
				if conn, err = pgx.Connect(ctx, m.appURL); err != nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
			}
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				var id int64
				if err := tx.QueryRow(ctx, `INSERT INTO orders (customer, note, amount) VALUES ($1, $2, $3) RETURNING id`,
					i%50, fmt.Sprintf("live %d", i), float64(i)/4).Scan(&id); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `INSERT INTO events (order_id, kind) VALUES ($1, 'created')`, id); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `UPDATE orders SET note = note || '+', amount = amount + 1 WHERE id = $1`, 1+i%2000)
				return err
			})
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
				w.commits.Add(1)
			case errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.InsufficientPrivilege || pgErr.Code == pgerrcode.ReadOnlySQLTransaction):
				w.err = err // fenced: permission denied or read-only
				return
			default:
				// Session ended by the fence, or a lost connection.
				conn.Close(ctx)
				conn = nil
			}
			time.Sleep(3 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { w.halt() })
	return w
}

func (w *writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

func (w *writer) waitCommits(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.commits.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the app committed %d transactions in 30s, want %d", w.commits.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// query runs a query in db and returns its rows as text lines, so tests
// can compare catalog states without the code under test.
func query(t *testing.T, db, sql string, args ...any) []string {
	t.Helper()
	c := pg.Connect(t, db)
	defer c.Close(context.Background())
	rows, err := c.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		vals, err := r.Values()
		return fmt.Sprint(vals...), err
	})
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return out
}

// tableGrants lists every privilege on the database's user tables.
func tableGrants(t *testing.T, db string) []string {
	return query(t, db, `SELECT format('%s %s %s %s %s', c.oid::regclass, coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable, g.rolname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
		LEFT JOIN pg_roles r ON r.oid = a.grantee JOIN pg_roles g ON g.oid = a.grantor
		WHERE c.relkind IN ('r', 'p', 'v') AND n.nspname = 'public' ORDER BY 1`)
}

// dbSettings lists the per-database settings of db.
func dbSettings(t *testing.T, db string) []string {
	return query(t, "postgres", `SELECT coalesce(setconfig::text, '') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
		WHERE d.datname = $1 ORDER BY 1`, db)
}

// sequenceValues lists every sequence's last value, computed here.
func sequenceValues(t *testing.T, db string) map[string]int64 {
	c := pg.Connect(t, db)
	defer c.Close(context.Background())
	out := map[string]int64{}
	for _, name := range query(t, db, `SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname = 'public'`) {
		var v int64
		if err := c.QueryRow(context.Background(), "SELECT last_value FROM "+name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		out[name] = v
	}
	return out
}

// checksums computes, independently of the code under test, a row count
// and an md5 of the sorted row texts of every user table of db.
func checksums(t *testing.T, db string) map[string]string {
	t.Helper()
	c := pg.Connect(t, db)
	defer c.Close(context.Background())
	sums := map[string]string{}
	for _, tbl := range query(t, db, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'`) {
		var n int64
		var sum string
		if err := c.QueryRow(context.Background(), fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), '')
			FROM %s t`, tbl)).Scan(&n, &sum); err != nil {
			t.Fatal(err)
		}
		sums[tbl] = fmt.Sprintf("%d rows md5 %s", n, sum)
	}
	return sums
}

// lineOf returns the output line of step n (the last one, after any
// "waiting" lines).
func lineOf(out string, n int) string {
	var found string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, fmt.Sprintf("step %d/", n)) {
			found = l
		}
	}
	return found
}

// copyAndCapture copies dumpURL's schema and rows to the target with
// pg_dump | psql while nothing writes, then installs trigger capture on the
// source through owner and records its capture point on the target, as
// `replicator snapshot` does under trigger capture.
func (m *migration) copyAndCapture(t *testing.T, dumpURL string, owner *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	bin, err := testenv.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	dump := exec.Command(filepath.Join(bin, "pg_dump"), "--no-owner", "--no-privileges", dumpURL)
	restore := exec.Command(filepath.Join(bin, "psql"), "-q", "-v", "ON_ERROR_STOP=1", m.dstURL)
	restore.Stdin, _ = dump.StdoutPipe()
	var rerr strings.Builder
	restore.Stderr, restore.Stdout = &rerr, io.Discard
	if err := restore.Start(); err != nil {
		t.Fatal(err)
	}
	if err := dump.Run(); err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	if err := restore.Wait(); err != nil {
		t.Fatalf("psql: %v: %s", err, rerr.String())
	}
	if _, err := trigger.Install(ctx, owner, trigger.Config{}, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	cp, err := trigger.StartCapturePoint(ctx, m.srcURL, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st := cp.State()
	st.SnapshotStatus = state.SnapshotDone
	if err := state.Begin(ctx, pg.Connect(t, m.dst), &st); err != nil {
		t.Fatal(err)
	}
	cp.Release(ctx)
}
