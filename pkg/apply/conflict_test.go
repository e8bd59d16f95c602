package apply

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
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
)

// TestStreamSurvivesTargetDeadlock provokes a real deadlock on the
// target between the stream's apply and another session, as a
// verification installing its triggers did during a cutover: the apply's
// transaction updates table a and then waits for b, held by the other
// session, which then asks for a. The server aborts the apply's
// transaction (the other session's deadlock_timeout is longer, so the
// apply's check finds the cycle). The stream must apply the same batch
// again in the same session: no reconnect (same target backend, same
// walsender on the slot, no stream error), each change counted once, and
// the target identical to the source.
func TestStreamSurvivesTargetDeadlock(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL);
		CREATE TABLE b (id int PRIMARY KEY, v int NOT NULL)`,
		`INSERT INTO a VALUES (1, 0); INSERT INTO b VALUES (1, 0)`)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	obs, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), obs))
	m := newMetrics()
	cfg := p.config(t)
	cfg.Metrics = m
	r := &running{done: make(chan struct{})}
	sctx, stop := context.WithCancel(context.Background())
	r.cancel = stop
	go func() {
		r.err = Stream(sctx, cfg, log)
		close(r.done)
	}()
	t.Cleanup(func() { r.stop(t) })

	srcPG.Exec(t, p.src, `INSERT INTO a VALUES (2, 0)`)
	p.waitCaughtUp(t, 60*time.Second, r)
	src := srcPG.Connect(t, p.src)
	defer src.Close(context.Background())
	walsender := func() int {
		t.Helper()
		var pid *int
		if err := src.QueryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		if pid == nil {
			return 0
		}
		return *pid
	}
	walsenderBefore := walsender()
	if walsenderBefore == 0 {
		t.Fatal("the slot is not active while the stream runs")
	}

	dst := targetCluster(t)
	watch := dst.Connect(t, p.dst)
	defer watch.Close(context.Background())
	other := dst.Connect(t, p.dst)
	defer other.Close(context.Background())
	var otherPid int
	if err := other.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&otherPid); err != nil {
		t.Fatal(err)
	}
	// The other session never runs the deadlock check first: the apply's
	// (the default 1 s) finds the cycle and its transaction is the victim.
	mustExec(t, other, `SET deadlock_timeout = '5min'`)
	mustExec(t, other, `BEGIN`)
	mustExec(t, other, `UPDATE b SET v = v WHERE id = 1`)

	// One source transaction writing a, then b.
	srcPG.Exec(t, p.src, `BEGIN; UPDATE a SET v = 1 WHERE id = 1; UPDATE b SET v = 1 WHERE id = 1; COMMIT`)

	// The apply holds a's row and waits for b's.
	applyPid := waitFor(t, ctx, watch, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND $1 = ANY(pg_blocking_pids(pid))`, otherPid)
	// The stream's target session is the one holding the stream lock.
	holdsStreamLock := func(pid int) bool {
		t.Helper()
		var held bool
		if err := watch.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1)`, pid).Scan(&held); err != nil {
			t.Fatal(err)
		}
		return held
	}
	if !holdsStreamLock(applyPid) {
		t.Fatalf("backend %d waiting for the other session is not the stream's (it holds no stream lock)", applyPid)
	}

	// The other session now asks for a: a deadlock.
	lockA := make(chan error, 1)
	go func() {
		_, err := other.Exec(ctx, `UPDATE a SET v = v WHERE id = 1`)
		lockA <- err
	}()
	if err := <-lockA; err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.DeadlockDetected {
			t.Fatal("the other session, not the apply, was chosen as the deadlock's victim: the test did not provoke what it means to")
		}
		t.Fatalf("the other session's update of a: %v", err)
	}
	// It got a's row only because the apply's transaction was rolled
	// back. It changes nothing: the target must end as the source is.
	mustExec(t, other, `ROLLBACK`)

	p.waitCaughtUp(t, 60*time.Second, r)
	p.assertIdentical(t)

	retries := logs.FilterMessageSnippet("applying it again").All()
	if len(retries) != 1 {
		t.Errorf("want 1 logged retry, got %d: %v", len(retries), retries)
	}
	fields := map[string]any{}
	if len(retries) > 0 {
		fields = retries[0].ContextMap()
	}
	if fields["sqlstate"] != pgerrcode.DeadlockDetected {
		t.Errorf("the retry logs sqlstate %v, want %s", fields["sqlstate"], pgerrcode.DeadlockDetected)
	}
	if tables := fmt.Sprint(fields["tables"]); !strings.Contains(tables, "public.a") || !strings.Contains(tables, "public.b") {
		t.Errorf("the retry names tables %s, want public.a and public.b", tables)
	}
	if n := testutil.ToFloat64(m.ApplyRetries.WithLabelValues(pgerrcode.DeadlockDetected)); n != 1 {
		t.Errorf("replicator_apply_retries_total{sqlstate=%q} = %v, want 1", pgerrcode.DeadlockDetected, n)
	}
	if n := testutil.ToFloat64(m.ApplyRetries.WithLabelValues(pgerrcode.SerializationFailure)); n != 0 {
		t.Errorf("replicator_apply_retries_total{sqlstate=%q} = %v, want 0", pgerrcode.SerializationFailure, n)
	}
	for _, stage := range []string{"connect", "capture", "apply"} {
		if n := testutil.ToFloat64(m.StreamErrors.WithLabelValues(stage)); n != 0 {
			t.Errorf("replicator_stream_errors_total{stage=%q} = %v, want 0: the stream reconnected", stage, n)
		}
	}
	for _, table := range []string{"public.a", "public.b"} {
		if n := testutil.ToFloat64(m.AppliedChanges.WithLabelValues(table, "update")); n != 1 {
			t.Errorf("replicator_applied_changes_total{table=%q,op=\"update\"} = %v, want 1", table, n)
		}
	}
	if pid := walsender(); pid != walsenderBefore {
		t.Errorf("the slot's walsender changed from %d to %d: the stream reconnected", walsenderBefore, pid)
	}
	if !holdsStreamLock(applyPid) {
		t.Errorf("target backend %d no longer holds the stream lock: the stream reconnected", applyPid)
	}
}

// waitFor polls query (one int column) on c until it returns a row.
func waitFor(t *testing.T, ctx context.Context, c *pgx.Conn, query string, args ...any) int {
	t.Helper()
	for {
		var v int
		err := c.QueryRow(ctx, query, args...).Scan(&v)
		if err == nil {
			return v
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatalf("%s: %v", query, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: no row before the test's deadline", query)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestConflictIsRetriedInSession(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code, Message: "m"} }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"deadlock", &ApplyError{Table: "t", Err: pg(pgerrcode.DeadlockDetected)}, true},
		{"serialization failure", fmt.Errorf("target: commit through 0/1: %w", pg(pgerrcode.SerializationFailure)), true},
		{"lock timeout", &ApplyError{Table: "t", Err: pg(pgerrcode.LockNotAvailable)}, false},
		{"a stage's deadlock", &StageError{Stage: "apply", Err: pg(pgerrcode.DeadlockDetected)}, false},
		{"source conflict", &StageError{Stage: "capture", Err: pg(pgerrcode.SerializationFailure)}, false},
		{"unique violation", &ApplyError{Table: "t", Err: pg(pgerrcode.UniqueViolation)}, false},
		{"nil", nil, false},
	} {
		if got := conflict(c.err); got != c.want {
			t.Errorf("%s: conflict(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
