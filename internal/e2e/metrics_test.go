package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"replicator/internal/testenv"
	"replicator/pkg/verify"
)

// Every metric the alert rules and the dashboard in deploy/ use (listed
// in deploy/metrics.txt) is exported: scraped from the running daemon
// (`run`) and the running Redis follower, and, for verify, which is a
// short command, gathered from the registry verify fills. A metric is
// exported from the moment it is registered, so the values are checked
// too: each moved as the work done implies, and the lags are sane.
func TestDeployMetricsAreExported(t *testing.T) {
	ctx := context.Background()
	want := readLines(t, "../../deploy/metrics.txt")
	exported := map[string]bool{}

	// Postgres: the daemon after a snapshot and some streamed changes.
	sdb, tdb := dst.NewDatabase(t), dst.NewDatabase(t)
	dst.Exec(t, sdb, "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	port, _ := testenv.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	run := exec.Command(bin, "run", "--source", dst.URL(sdb), "--target", dst.URL(tdb), "--metrics-addr", addr, "--log-format", "json")
	run.Stdout, run.Stderr = &prefixWriter{t: t}, &prefixWriter{t: t}
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Signal(syscall.SIGTERM); run.Wait() }()
	waitFor(t, 60*time.Second, "the stream to apply a change", func() bool {
		dst.Exec(t, sdb, "UPDATE items SET v = v || 'y' WHERE id = 1")
		m, _ := testenv.ScrapeMetrics(addr)
		return m.Has("replicator_applied_changes_total") && m.Has("replicator_snapshot_rows_total")
	})
	// A last change, and a WAL position inside its transaction: the
	// applied position passes it only once that transaction is applied.
	sconn := dst.Connect(t, sdb)
	var inside float64
	if err := pgx.BeginFunc(ctx, sconn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE items SET v = 'last' WHERE id = 2"); err != nil {
			return err
		}
		return tx.QueryRow(ctx, "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::float8").Scan(&inside)
	}); err != nil {
		t.Fatal(err)
	}
	var m testenv.Metrics
	waitFor(t, 60*time.Second, "replicator_last_applied_lsn to pass the last change", func() bool {
		m, _ = testenv.ScrapeMetrics(addr)
		lsn, _ := m.Value("replicator_last_applied_lsn")
		return lsn >= inside
	})
	for n := range m {
		exported[n] = true
	}
	atLeast(t, m, 100, "replicator_snapshot_rows_total")
	atLeast(t, m, 100*len("1\tx\n"), "replicator_snapshot_bytes_total")
	atLeast(t, m, 2, "replicator_applied_transactions_total")
	atLeast(t, m, 2, "replicator_applied_changes_total", "op", "update")
	if n, _ := m.Count("replicator_apply_batch_changes"); n < 1 {
		t.Errorf("replicator_apply_batch_changes observed %v batches, want at least 1", n)
	}
	atLeast(t, m, 1, "replicator_apply_batch_changes") // its sum: changes in those batches
	within(t, m, 0, 300, "replicator_apply_lag_seconds")
	within(t, m, 0, 1<<30, "replicator_source_lag_bytes")
	for _, stage := range []string{"connect", "capture", "apply"} {
		if _, ok := m.Value("replicator_stream_errors_total", "stage", stage); !ok {
			t.Errorf("replicator_stream_errors_total has no sample for stage %s", stage)
		}
	}
	for _, code := range []string{"40P01", "40001"} {
		within(t, m, 0, 0, "replicator_apply_retries_total", "sqlstate", code)
	}

	// Redis: the follower after the initial load.
	rs, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	rt, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	c := rs.Client(0)
	defer c.Close()
	c.Set(ctx, "k", "v", 0)
	port2, _ := testenv.FreePort()
	addr2 := fmt.Sprintf("127.0.0.1:%d", port2)
	follow := exec.Command(bin, "redis", "sync", "--source", rs.URL(0), "--target", rt.URL(0), "--follow", "--metrics-addr", addr2, "--log-format", "json")
	follow.Stdout, follow.Stderr = &prefixWriter{t: t}, &prefixWriter{t: t}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Signal(syscall.SIGTERM); follow.Wait() }()
	waitFor(t, 60*time.Second, "the Redis follower to import the source's key", func() bool {
		m, _ = testenv.ScrapeMetrics(addr2)
		n, _ := m.Value("replicator_redis_keys_imported_total")
		return n >= 1
	})
	for n := range m {
		exported[n] = true
	}
	within(t, m, 0, 1<<30, "replicator_redis_follow_lag_bytes")

	// verify: the copy above, equal now, and a pair that differs in one row.
	reg := prometheus.NewRegistry()
	// One set of verify counters for the process: both runs add to it.
	verifyMetrics, err := verify.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := verify.Run(ctx, verify.Config{Source: dst.URL(sdb), Target: dst.URL(tdb), WaitTimeout: -1, Metrics: verifyMetrics}, nil)
	if err != nil {
		t.Fatal(err)
	}
	vm := gather(t, reg)
	if rep.Different() {
		t.Errorf("verify found differences in the streamed copy")
	}
	atLeast(t, vm, 100, "replicator_verify_rows_total", "side", "source")
	atLeast(t, vm, 100, "replicator_verify_rows_total", "side", "target")
	within(t, vm, 0, 0, "replicator_verify_chunks_mismatched_total")
	vs, vt := dst.NewDatabase(t), dst.NewDatabase(t)
	dst.Exec(t, vs, "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g")
	dst.Exec(t, vt, "CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g; UPDATE items SET v = 'changed' WHERE id = 50")
	if rep, err = verify.Run(ctx, verify.Config{Source: dst.URL(vs), Target: dst.URL(vt), WaitTimeout: -1, Metrics: verifyMetrics}, nil); err != nil {
		t.Fatal(err)
	}
	if !rep.Different() {
		t.Errorf("verify found no difference between tables that differ in one row")
	}
	vm = gather(t, reg)
	atLeast(t, vm, 1, "replicator_verify_chunks_mismatched_total")
	for n := range vm {
		exported[n] = true
	}

	for _, name := range want {
		if !exported[name] {
			t.Errorf("deploy/ uses metric %s, which the replicator does not export", name)
		}
	}
}

func gather(t *testing.T, reg *prometheus.Registry) testenv.Metrics {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	m := testenv.Metrics{}
	for _, mf := range mfs {
		m[mf.GetName()] = mf
	}
	return m
}

// atLeast checks that the samples of name with the given labels add up
// to at least min.
func atLeast[N int | float64](t *testing.T, m testenv.Metrics, min N, name string, labels ...string) {
	t.Helper()
	v, ok := m.Value(name, labels...)
	switch {
	case !ok:
		t.Errorf("%s%v: not exported", name, labels)
	case v < float64(min):
		t.Errorf("%s%v = %v, want at least %v", name, labels, v, min)
	}
}

// within checks that name is exported with a value in [lo, hi].
func within(t *testing.T, m testenv.Metrics, lo, hi float64, name string, labels ...string) {
	t.Helper()
	v, ok := m.Value(name, labels...)
	switch {
	case !ok:
		t.Errorf("%s%v: not exported", name, labels)
	case v < lo || v > hi:
		t.Errorf("%s%v = %v, want between %v and %v", name, labels, v, lo, hi)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
