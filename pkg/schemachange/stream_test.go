package schemachange_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/testenv"
	"replicator/pkg/apply"
	"replicator/pkg/schemachange"
	"replicator/pkg/snapshot"
	"replicator/pkg/status"
	"replicator/pkg/trigger"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{}))
}

const appSchema = `
CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, n int NOT NULL DEFAULT 0);
CREATE TABLE events (id bigint NOT NULL, k int NOT NULL, note text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE events_1 PARTITION OF events FOR VALUES FROM (0) TO (100);
INSERT INTO users (name) SELECT 'u' || g FROM generate_series(1, 200) g;
INSERT INTO events SELECT g, g % 100, 'e' FROM generate_series(1, 300) g;
`

// migration is a source with the application's schema, copied into a
// target by a real snapshot in the given capture mode, and the stream
// running on it with --ddl mode.
type migration struct {
	src, dst   string
	srcURL     string
	mode       string
	reg        *prometheus.Registry
	metrics    *schemachange.Metrics
	streamDone chan error
	stop       context.CancelFunc
	logs       *observer.ObservedLogs // the stream's, Info and above
}

func startMigration(t *testing.T, capture string, mode schemachange.Mode) *migration {
	t.Helper()
	return startMigrationWith(t, capture, mode, "", 300*time.Millisecond)
}

// startMigrationWith is startMigration with more of the application's
// schema (run after appSchema) and the stream's catalog poll interval.
func startMigrationWith(t *testing.T, capture string, mode schemachange.Mode, schema string, poll time.Duration) *migration {
	t.Helper()
	m := &migration{src: pg.NewDatabase(t), dst: pg.NewDatabase(t), mode: capture, reg: prometheus.NewRegistry()}
	m.srcURL = pg.URL(m.src)
	pg.Exec(t, m.src, appSchema+schema)
	obs, logs := observer.New(zap.InfoLevel)
	m.logs = logs
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), obs))
	ctx := context.Background()
	slot := "s_" + m.src
	if _, err := snapshot.Run(ctx, snapshot.Config{SourceURL: m.srcURL, TargetURL: pg.URL(m.dst), Jobs: 2, Capture: capture,
		SlotName: slot, Publication: "p_" + m.src}, log); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if capture == snapshot.CaptureLogical {
		t.Cleanup(func() {
			c, err := pgx.Connect(context.Background(), pg.URL("postgres"))
			if err != nil {
				return
			}
			defer c.Close(context.Background())
			for range 50 {
				if _, err := c.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot); err == nil {
					return
				}
				time.Sleep(100 * time.Millisecond) // the slot's last walsender going away
			}
		})
	}
	var err error
	if m.metrics, err = schemachange.NewMetrics(m.reg); err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	m.stop = stop
	m.streamDone = make(chan error, 1)
	go func() {
		m.streamDone <- apply.Stream(sctx, apply.StreamConfig{SourceURL: m.srcURL, TargetURL: pg.URL(m.dst),
			Trigger: trigger.Config{TickInterval: 100 * time.Millisecond}, DDL: mode, SchemaPollInterval: poll,
			SchemaMetrics: m.metrics, TableCopier: snapshot.TableCopier{}, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}, log)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-m.streamDone:
		case <-time.After(30 * time.Second):
		}
	})
	return m
}

// writer is the application under load: its own connection, writing
// until stopped, to whatever the phase says exists.
type writer struct {
	phase  atomic.Int32 // 1: users.email exists; 2: posts exists; 3: events_2 exists
	writes atomic.Int64
	// deadlocks counts the application's transactions that lost a
	// deadlock with trigger capture's install (and were retried).
	deadlocks atomic.Int64
	stop      chan struct{}
	done      chan error
}

func startWriter(t *testing.T, url string) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer conn.Close(context.Background())
		r := rand.New(rand.NewSource(1))
		ctx := context.Background()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			stmts := []string{
				fmt.Sprintf(`UPDATE users SET n = n + 1 WHERE id = %d`, 1+r.Intn(200)),
				fmt.Sprintf(`INSERT INTO users (name) VALUES ('w%d')`, i),
				fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 'w')`, 1000+i, r.Intn(100)),
			}
			p := w.phase.Load()
			if p >= 1 {
				stmts = append(stmts, fmt.Sprintf(`UPDATE users SET email = 'm%d' WHERE id = %d`, i, 1+r.Intn(200)))
			}
			if p >= 2 {
				stmts = append(stmts, fmt.Sprintf(`INSERT INTO posts (title) VALUES ('p%d')`, i))
			}
			if p >= 3 {
				stmts = append(stmts, fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 'w2')`, 1000+i, 100+r.Intn(100)))
			}
			if _, err := conn.Exec(ctx, "BEGIN; "+strings.Join(stmts, "; ")+"; COMMIT"); err != nil {
				// Trigger capture's install, run again after a new column or
				// table, takes each table's lock in turn: the application's
				// transaction can be chosen as a deadlock's victim. It
				// retries, as an application does.
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
					conn.Exec(ctx, "ROLLBACK")
					w.deadlocks.Add(1)
					continue
				}
				w.done <- fmt.Errorf("application write: %w", err)
				return
			}
			w.writes.Add(1)
		}
	}()
	return w
}

func (w *writer) waitWrites(t *testing.T, n int64) {
	t.Helper()
	target := w.writes.Load() + n
	deadline := time.Now().Add(20 * time.Second)
	for w.writes.Load() < target {
		select {
		case err := <-w.done:
			t.Fatalf("the writer stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer made no progress")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *writer) finish(t *testing.T) {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatal(err)
	}
	if n := w.deadlocks.Load(); n > 0 {
		t.Logf("%d application transactions lost a deadlock with trigger capture's install and were retried", n)
	}
}

// tableSums is computed in the database, independently of the code under
// test: per table, its columns (name and type, in order) and the md5 of
// its sorted row texts.
func tableSums(t *testing.T, db string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname),
			(SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
				FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	cols := map[string]string{}
	var names []string
	for rows.Next() {
		var name, c string
		if err := rows.Scan(&name, &c); err != nil {
			t.Fatal(err)
		}
		cols[name] = c
		names = append(names, name)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	out := map[string]string{}
	for _, name := range names {
		var sum string
		if err := conn.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), '') FROM %s t`, name)).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		out[name] = cols[name] + " | " + sum
	}
	return out
}

func (m *migration) waitIdentical(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		want, got := tableSums(t, m.src), tableSums(t, m.dst)
		if fmt.Sprint(want) == fmt.Sprint(got) {
			return
		}
		select {
		case err := <-m.streamDone:
			m.streamDone <- err
			chain := ""
			for e := err; e != nil; e = errors.Unwrap(e) {
				chain += fmt.Sprintf(" %T", e)
			}
			t.Fatalf("the stream stopped: %v (%s)", err, chain)
		default:
		}
		if time.Now().After(deadline) {
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s:\n source %s\n target %s\n%s", k, v, got[k], rowDiff(t, m.src, m.dst, k))
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("%s is on the target only", k)
				}
			}
			t.Fatal("the target did not become identical to the source within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// rowDiff shows a few rows that differ between the two sides' table.
func rowDiff(t *testing.T, src, dst, table string) string {
	read := func(db string) map[string]bool {
		conn, err := pgx.Connect(context.Background(), pg.URL(db))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(context.Background(), fmt.Sprintf(`SELECT t::text FROM %s t`, table))
		if err != nil {
			return nil
		}
		out := map[string]bool{}
		for rows.Next() {
			var s string
			rows.Scan(&s)
			out[s] = true
		}
		return out
	}
	a, b := read(src), read(dst)
	var lines []string
	for r := range a {
		if !b[r] && len(lines) < 5 {
			lines = append(lines, " source only: "+r)
		}
	}
	for r := range b {
		if !a[r] && len(lines) < 10 {
			lines = append(lines, " target only: "+r)
		}
	}
	return strings.Join(lines, "\n")
}

// deploy runs a migration's DDL on the source, retrying when it loses a
// deadlock with the application's writes, as a deploy tool would.
func deploy(t *testing.T, db, sql string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for attempt := 0; ; attempt++ {
		_, err := conn.Exec(context.Background(), sql)
		var pgErr *pgconn.PgError
		if err != nil && errors.As(err, &pgErr) && pgErr.Code == "40P01" && attempt < 20 {
			continue
		}
		if err != nil {
			t.Fatalf("deploy %q: %v", sql, err)
		}
		return
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func queryBool(t *testing.T, db, sql string) bool {
	t.Helper()
	var b bool
	conn, err := pgx.Connect(context.Background(), pg.URL(db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), sql).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAdditiveChangesWhileStreaming is the deploy the issue describes, in
// each capture mode, under a writer: ADD COLUMN (with a default, NOT NULL,
// and one with a volatile default) and writes to it at once, CREATE TABLE
// and rows in it, CREATE INDEX, a new partition and rows routed into it.
// The target must end identical, new column and new table included, with
// the index built, and status and metrics must count what was applied.
func TestAdditiveChangesWhileStreaming(t *testing.T) {
	for _, capture := range []string{snapshot.CaptureLogical, snapshot.CaptureTrigger} {
		t.Run(capture, func(t *testing.T) {
			m := startMigration(t, capture, schemachange.ModeApply)
			w := startWriter(t, m.srcURL)
			w.waitWrites(t, 20)

			// ADD COLUMN, then writes to it straight away (the writer's and
			// one to every row).
			deploy(t, m.src, `ALTER TABLE users ADD COLUMN email text; ALTER TABLE users ADD COLUMN score int NOT NULL DEFAULT 7`)
			w.phase.Store(1)
			// (deploy retries a deadlock with the writer, whose transaction
			// updates two users rows in random order: the app's own business)
			deploy(t, m.src, `UPDATE users SET email = 'all' || id WHERE id <= 200`)
			w.waitWrites(t, 20)

			// CREATE TABLE, then rows in it.
			deploy(t, m.src, `CREATE TABLE posts (id serial PRIMARY KEY, user_id bigint REFERENCES users, title text NOT NULL);
				INSERT INTO posts (user_id, title) SELECT g, 'first ' || g FROM generate_series(1, 50) g`)
			w.phase.Store(2)
			w.waitWrites(t, 20)

			// CREATE INDEX and a new partition.
			deploy(t, m.src, `CREATE INDEX users_name_idx ON users (name)`)
			deploy(t, m.src, `CREATE TABLE events_2 PARTITION OF events FOR VALUES FROM (100) TO (200)`)
			// A table filled before it is attached, faster than a poll: no
			// capture saw its rows, only the copy carries them.
			deploy(t, m.src, `CREATE TABLE events_3 (LIKE events INCLUDING ALL);
				INSERT INTO events_3 SELECT g, 200 + g % 100, 'pre-attach' FROM generate_series(1, 40) g;
				ALTER TABLE events ATTACH PARTITION events_3 FOR VALUES FROM (200) TO (300)`)
			w.phase.Store(3)
			w.waitWrites(t, 20)

			// A volatile default: each source row has its own value.
			deploy(t, m.src, `ALTER TABLE posts ADD COLUMN r float8 DEFAULT random()`)
			w.waitWrites(t, 20)
			w.finish(t)

			m.waitIdentical(t)
			waitFor(t, "the index on the target", func() bool {
				return queryBool(t, m.dst, `SELECT EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('public.users_name_idx') AND indisvalid)`)
			})
			if !queryBool(t, m.dst, `SELECT (SELECT relispartition FROM pg_class WHERE oid = 'public.events_2'::regclass)
					AND pg_get_expr(relpartbound, oid) = 'FOR VALUES FROM (100) TO (200)' FROM pg_class WHERE oid = 'public.events_2'::regclass`) {
				t.Error("events_2 is not a partition of events with the source's bounds on the target")
			}
			// The index counts as applied once its build is recorded, a
			// moment after it became valid.
			waitFor(t, "replicator_schema_changes_total{action=applied} to reach 6", func() bool {
				return testutil.ToFloat64(m.metrics.Changes.WithLabelValues(schemachange.ActionApplied)) >= 6
			})
			if n := testutil.ToFloat64(m.metrics.Changes.WithLabelValues(schemachange.ActionStopped)); n != 0 {
				t.Errorf("replicator_schema_changes_total{action=stopped} = %v, want 0", n)
			}
			st, err := status.Gather(context.Background(), pg.Connect(t, m.dst), nil)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			st.WriteText(&b)
			if st.SchemaChanges == nil || st.SchemaChanges.Applied < 6 || !strings.Contains(b.String(), "schema changes:") {
				t.Errorf("status does not show the schema changes applied:\n%s", b.String())
			}
		})
	}
}

// TestDropColumnStopsTheStream: a DROP COLUMN on the source stops the
// stream, in each capture mode, with one message naming the column, what
// was seen and the fix, and only after every change made before it is
// applied. Making the fix on the target and restarting resumes the
// stream to identical.
func TestDropColumnStopsTheStream(t *testing.T) {
	for _, capture := range []string{snapshot.CaptureLogical, snapshot.CaptureTrigger} {
		t.Run(capture, func(t *testing.T) {
			m := startMigration(t, capture, schemachange.ModeApply)
			w := startWriter(t, m.srcURL)
			w.waitWrites(t, 30)
			w.finish(t)
			// The stream is running: it has applied the writer's rows.
			waitFor(t, "the stream to apply the writer's rows", func() bool {
				return queryBool(t, m.dst, `SELECT count(*) > 200 FROM users`)
			})
			pg.Exec(t, m.src, `UPDATE users SET n = 1000 + id WHERE id <= 10`)
			pg.Exec(t, m.src, `ALTER TABLE users DROP COLUMN n`)
			var err error
			select {
			case err = <-m.streamDone:
				m.streamDone <- err // for the cleanup
			case <-time.After(30 * time.Second):
				t.Fatal("the stream did not stop on the DROP COLUMN")
			}
			var re *schemachange.RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("the stream stopped with %v, want a refused schema change", err)
			}
			msg := err.Error()
			for _, want := range []string{"column public.users.n", "was dropped on the source", "ALTER TABLE public.users DROP COLUMN n", "restart the stream"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not say %q", msg, want)
				}
			}
			if n := testutil.ToFloat64(m.metrics.Changes.WithLabelValues(schemachange.ActionStopped)); n != 1 {
				t.Errorf("replicator_schema_changes_total{action=stopped} = %v, want 1", n)
			}
			// Every change made before the DROP is on the target.
			if !queryBool(t, m.dst, `SELECT count(*) = 10 FROM users WHERE id <= 10 AND n = 1000 + id`) {
				t.Error("the updates made before the DROP COLUMN were not applied before the stream stopped")
			}
		})
	}
}

// TestDDLStopStopsOnAnAddColumn: with --ddl stop even an additive change
// stops the stream, naming it and pointing at --ddl apply; once the
// operator has made the change on the target, a restarted stream goes on
// to identical.
func TestDDLStopStopsOnAnAddColumn(t *testing.T) {
	m := startMigration(t, snapshot.CaptureLogical, schemachange.ModeStop)
	waitFor(t, "the stream to take its schema baseline", func() bool {
		return queryBool(t, m.dst, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'replicator' AND tablename = 'schema_catalog')`)
	})
	pg.Exec(t, m.src, `ALTER TABLE users ADD COLUMN email text; UPDATE users SET email = 'x' || id WHERE id <= 5`)
	var err error
	select {
	case err = <-m.streamDone:
		m.streamDone <- err
	case <-time.After(30 * time.Second):
		t.Fatal("the stream did not stop on the ADD COLUMN")
	}
	var re *schemachange.RefusedError
	refused := errors.As(err, &re) && strings.Contains(err.Error(), "column public.users.email was added on the source (text)") &&
		strings.Contains(err.Error(), "--ddl apply")
	// The UPDATE in the ALTER's own transaction must not reach apply
	// (which would stop on its own message): the refusal comes first.
	if !refused {
		t.Fatalf("the stream stopped with %v, want the ADD COLUMN named and --ddl apply suggested", err)
	}
	if queryBool(t, m.dst, `SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email')`) {
		t.Fatal("--ddl stop added the column on the target")
	}
	// The fix: the operator adds the column on the target, restarts.
	pg.Exec(t, m.dst, `ALTER TABLE users ADD COLUMN email text`)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- apply.Stream(ctx, apply.StreamConfig{SourceURL: m.srcURL, TargetURL: pg.URL(m.dst), DDL: schemachange.ModeStop,
			SchemaPollInterval: 300 * time.Millisecond, TableCopier: snapshot.TableCopier{}}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	}()
	defer func() { stop(); err := <-done; done <- err }() // and again for the cleanup
	m.streamDone = done
	m.waitIdentical(t)
}

// TestCLIExitsTwoOnADropColumn runs `replicator stream` itself: a DROP
// COLUMN on the source makes it exit with code 2 and print the one
// message.
func TestCLIExitsTwoOnADropColumn(t *testing.T) {
	bin := t.TempDir() + "/replicator"
	if err := testenv.BuildReplicator(bin); err != nil {
		t.Fatal(err)
	}
	m := startMigration(t, snapshot.CaptureLogical, schemachange.ModeApply)
	m.stop() // the CLI streams instead
	<-m.streamDone
	m.streamDone <- nil
	cmd := exec.Command(bin, "stream", "--source", m.srcURL, "--target", pg.URL(m.dst), "--metrics-addr", "127.0.0.1:0", "--schema-poll", "200ms")
	var stderr strings.Builder
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to take its schema baseline", func() bool {
		return queryBool(t, m.dst, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'replicator' AND tablename = 'schema_catalog')`)
	})
	pg.Exec(t, m.src, `ALTER TABLE users DROP COLUMN n`)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("replicator stream did not exit on the DROP COLUMN:\n%s", stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("replicator stream ended with %v, want exit code 2:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "column public.users.n was dropped on the source; the target still has it: drop it on the target (ALTER TABLE public.users DROP COLUMN n)") {
		t.Errorf("the output does not carry the message:\n%s", stderr.String())
	}
}
