package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/testenv"
	"replicator/pkg/apply"
	"replicator/pkg/redissync"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// herokuMigration is a Heroku-like source: one login role, not a
// superuser, owns the tables and is both the app's login and the
// replicator's; trigger capture; the target holds a copy. extra is more
// of the app's schema, made by that role after appSchema.
func newHerokuMigration(t *testing.T, extra ...string) *migration {
	t.Helper()
	ctx := context.Background()
	m := &migration{src: pg.NewDatabase(t), dst: pg.NewDatabase(t)}
	m.app = "owner_" + m.src
	pg.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN NOSUPERUSER PASSWORD '%s'; GRANT CREATE ON DATABASE %s TO %[1]s", m.app, appPassword, m.src))
	pg.Exec(t, m.src, "GRANT CREATE ON SCHEMA public TO "+m.app)
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, pg.URL(m.src)); err == nil {
			c.Exec(ctx, "DROP OWNED BY "+m.app)
			c.Close(ctx)
		}
		if c, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
			c.Exec(ctx, "DROP ROLE IF EXISTS "+m.app)
			c.Close(ctx)
		}
	})
	m.appURL = pg.URLAs(m.app, appPassword, m.src)
	m.srcURL, m.dstURL = m.appURL, pg.URL(m.dst) // the replicator logs in as the app
	owner, err := pgx.Connect(ctx, m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close(ctx)
	for _, ddl := range append([]string{appSchema}, extra...) {
		if _, err := owner.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}

	// The copy, before the capture triggers exist (nothing writes meanwhile).
	m.copyAndCapture(t, pg.URL(m.src), owner)
	return m
}

// startTriggerStream runs the stream (apply.Stream, as `replicator stream`
// runs it) until the returned stop is called or the test ends, and waits
// until it has applied a batch beyond the one it found.
func (m *migration) startTriggerStream(t *testing.T) (stop func()) {
	t.Helper()
	ctx := context.Background()
	dst := pg.Connect(t, m.dst)
	st, err := state.Load(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	from := st.Applied.ID()
	runCtx, cancel := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() {
		stopped <- apply.Stream(runCtx, apply.StreamConfig{SourceURL: m.srcURL, TargetURL: m.dstURL,
			Trigger: trigger.Config{TickInterval: 100 * time.Millisecond}}, zap.NewNop())
	}()
	done := false
	stop = func() {
		if done {
			return
		}
		done = true
		cancel()
		if err := <-stopped; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("stream: %v", err)
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := state.Load(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		if st.Applied.ID() >= from+2 {
			return stop
		}
		select {
		case err := <-stopped:
			done = true
			t.Fatalf("the stream ended before applying a batch: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream applied batch %d after 30s, want %d", st.Applied.ID(), from+2)
		}
	}
}

// fenceState lists, independently of the code under test, the fence
// triggers on the source and the schema they call into.
func fenceState(t *testing.T, db string) []string {
	return query(t, db, `SELECT format('%s %s', t.tgrelid::regclass, t.tgname) FROM pg_trigger t WHERE t.tgname = 'replicator_fence'
		UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'replicator_fence' ORDER BY 1`)
}

// appWrite is one write of the app on a fresh session.
func appWrite(ctx context.Context, url string) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, `INSERT INTO orders (customer, note) VALUES (7, 'after')`)
	return err
}

// Heroku's real setup: the app and the replicator share one login that
// owns the tables. A stopped stream is refused before anything changes,
// even with a fresh tick; with the stream running, cutover with default
// flags fences (by trigger), drains, verifies and switches; the app's
// writes then fail with the fence's own message; cleanup refuses while
// fenced, and a forced cleanup keeps the fence and --unfence still lifts
// it.
func TestHerokuSharedLoginCutover(t *testing.T) {
	ctx := context.Background()
	m := newHerokuMigration(t)
	args := []string{"cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence"}

	// The stream ran and stopped 40 s ago; the app wrote since; a tick is
	// fresh (as when the stream stopped just after ticking).
	stop := m.startTriggerStream(t)
	stop()
	for i := 0; i < 30; i++ {
		if err := appWrite(ctx, m.appURL); err != nil {
			t.Fatal(err)
		}
	}
	pg.Exec(t, m.dst, `UPDATE replicator.state SET applied_at = now() - interval '40 s'`)
	capt, err := trigger.New(ctx, m.srcURL, trigger.Config{}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := capt.Tick(ctx); err != nil {
		t.Fatal(err)
	}
	capt.Close()
	code, out, errOut := run(t, args...)
	if code != 2 || !strings.Contains(errOut, "no stream is running") || !strings.Contains(errOut, "last applied a batch") {
		t.Fatalf("cutover with the stream stopped: exit %d, want 2 saying when it last applied\n%s\n%s", code, out, errOut)
	}
	if f := fenceState(t, m.src); len(f) != 0 {
		t.Errorf("a refused cutover left fence objects: %v", f)
	}
	if got := query(t, m.dst, `SELECT coalesce(to_regclass('replicator.cutover')::text, 'none')`); got[0] != "none" {
		t.Errorf("a refused cutover created its table")
	}
	if err := appWrite(ctx, m.appURL); err != nil {
		t.Errorf("after a refused cutover the app cannot write: %v", err)
	}

	// The stream runs, the app writes with the shared login.
	stop = m.startTriggerStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 30)
	code, out, errOut = run(t, args...)
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	for i := 1; i <= 7; i++ {
		if l := lineOf(out, i); !strings.Contains(l, ": done") {
			t.Errorf("step %d: %q, want done; output:\n%s", i, l, out)
		}
	}
	if l := lineOf(out, 3); !strings.Contains(l, "method trigger") || !strings.Contains(l, "on 3 tables") {
		t.Errorf("fence step: %q, want the trigger fence on the 3 tables", l)
	}
	if !strings.Contains(out, "write freeze: ") || !strings.Contains(out, "target ready") {
		t.Errorf("no write freeze line:\n%s", out)
	}
	if got := query(t, m.dst, `SELECT (detail->>'seconds')::float8 > 0 FROM replicator.cutover WHERE step = 'freeze'`); len(got) != 1 || got[0] != "true" {
		t.Errorf("freeze record: %v", got)
	}

	// The app was refused with the fence's message, and so is any write.
	app.halt()
	var pgErr *pgconn.PgError
	if !errors.As(app.err, &pgErr) || pgErr.Code != pgerrcode.ReadOnlySQLTransaction || !strings.HasPrefix(pgErr.Message, FenceMessage) {
		t.Errorf("the app stopped with %v, want the fence's refusal", app.err)
	}
	err = appWrite(ctx, m.appURL)
	if !errors.As(err, &pgErr) || !strings.HasPrefix(pgErr.Message, FenceMessage) || !strings.Contains(pgErr.Message, "orders") {
		t.Errorf("after the fence the app's INSERT gave %v, want the fence's message naming orders", err)
	}
	srcSums, dstSums := checksums(t, m.src), checksums(t, m.dst)
	for tbl, sum := range srcSums {
		if dstSums[tbl] != sum {
			t.Errorf("%s: source %s, target %s", tbl, sum, dstSums[tbl])
		}
	}

	// status shows the direction, the fence and the lag.
	code, out, errOut = run(t, "status", "--target", m.dstURL, "--source", m.srcURL)
	for _, want := range []string{"direction:       reverse", "the source is fenced (trigger, done); write freeze", "trigger-capture batches not yet applied"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, lacks %q\n%s\n%s", code, want, out, errOut)
		}
	}

	// cleanup refuses while fenced, and changes nothing.
	fenced := fenceState(t, m.src)
	if len(fenced) != 4 {
		t.Fatalf("fence objects on the source: %v, want 3 triggers and the schema", fenced)
	}
	code, out, errOut = run(t, "cleanup", "--source", m.srcURL, "--target", m.dstURL, "--yes")
	if code != 2 || !strings.Contains(errOut, "fenced") || !strings.Contains(errOut, "--unfence") {
		t.Errorf("cleanup while fenced: exit %d, want 2 naming --unfence\n%s\n%s", code, out, errOut)
	}
	if got := query(t, m.src, `SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator'`); got[0] != "1" {
		t.Errorf("a refused cleanup removed schema replicator on the source")
	}

	// Forced (stream stopped): the fence and its record stay.
	stop()
	code, out, errOut = run(t, "cleanup", "--source", m.srcURL, "--target", m.dstURL, "--yes", "--force")
	if code != 0 {
		t.Fatalf("cleanup --force: exit %d\n%s\n%s", code, out, errOut)
	}
	if f := fenceState(t, m.src); strings.Join(f, ",") != strings.Join(fenced, ",") {
		t.Errorf("cleanup --force changed the fence: %v → %v", fenced, f)
	}
	if got := query(t, m.dst, `SELECT count(*) FROM replicator.cutover WHERE step = 'fence'`); got[0] != "1" {
		t.Errorf("cleanup --force removed the fence record")
	}
	code, out, errOut = run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
	if code != 0 || !strings.Contains(out, "dropped the fence trigger on 3 tables") {
		t.Fatalf("unfence: exit %d\n%s\n%s", code, out, errOut)
	}
	if f := fenceState(t, m.src); len(f) != 0 {
		t.Errorf("unfence left %v", f)
	}
	if err := appWrite(ctx, m.appURL); err != nil {
		t.Errorf("after unfence the app cannot write: %v", err)
	}
}

// Redis in the same night: cutover waits for the running follower to
// carry everything over and verifies Redis inside the freeze.
func TestCutoverWithRedis(t *testing.T) {
	ctx := context.Background()
	m := newHerokuMigration(t)
	var servers [2]*testenv.Redis
	for i := range servers {
		r, err := testenv.StartRedis(testenv.RedisOptions{})
		if err != nil {
			t.Fatalf("start redis: %v", err)
		}
		t.Cleanup(r.Close)
		servers[i] = r
	}
	rsrc, rdst := servers[0], servers[1]
	sc := rsrc.Client(0)
	defer sc.Close()
	for i := 0; i < 200; i++ {
		if err := sc.Set(ctx, fmt.Sprintf("session:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	followCtx, stopFollow := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(followCtx, redissync.SyncConfig{Source: &redis.Options{Addr: rsrc.Addr()}, Follow: true,
			Writer: redissync.WriterConfig{Target: &redis.Options{Addr: rdst.Addr()}}}, zap.NewNop())
		followed <- err
	}()
	t.Cleanup(func() { stopFollow(); <-followed })
	m.startTriggerStream(t)
	// Written just before the cutover: the catch-up must wait for it.
	if err := sc.Set(ctx, "late", "last", 0).Err(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence",
		"--redis-source", rsrc.URL(0), "--redis-target", rdst.URL(0))
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	if l := lineOf(out, 4); !strings.Contains(l, "the Redis follower caught up") {
		t.Errorf("step 4: %q, want the Redis catch-up", l)
	}
	if l := lineOf(out, 6); !strings.Contains(l, "Redis: ") || !strings.Contains(l, "keys identical") {
		t.Errorf("step 6: %q, want Redis verified", l)
	}
	dc := rdst.Client(0)
	defer dc.Close()
	if v, err := dc.Get(ctx, "late").Result(); err != nil || v != "last" {
		t.Errorf("the key written just before the cutover is %q on the target (%v)", v, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := dc.DBSize(ctx).Result()
		if err == nil && n == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("target Redis holds %d keys (%v) after 10 s, want 201 (the marker removed)", n, err)
			break
		}
	}
	run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
}
