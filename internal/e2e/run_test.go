package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/demoapp"
	"replicator/internal/testenv"
)

var (
	dst *testenv.Postgres // the target cluster, shared
	bin string            // the replicator binary built for these tests
)

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "replicator-e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin = filepath.Join(dir, "replicator")
		if err := testenv.BuildReplicator(bin); err != nil {
			fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
			return 1
		}
		return testenv.RunWithPostgres(m, &dst, testenv.PostgresOptions{})
	}())
}

// The sidecar daemon, killed with -9 during the copy and again during the
// stream while the app keeps writing, restarted each time, ends with every
// table identical to the source: nothing lost, nothing applied twice.
func TestRunSurvivesKill9(t *testing.T) {
	src, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	ctx := context.Background()
	sdb, tdb := src.NewDatabase(t), dst.NewDatabase(t)
	if err := demoapp.Seed(ctx, src.URL(sdb), demoapp.Size{Users: 3000, Products: 50, Events: 20000, Documents: 30}); err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan struct{})
	var st demoapp.Stats
	go func() { defer close(loadDone); demoapp.Load(loadCtx, src.URL(sdb), 300, &st) }()

	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--source", src.URL(sdb), "--target", dst.URL(tdb), "--replica-identity-full",
			"--jobs", "2", "--metrics-addr", "", "--log-format", "json", "--chunk-mb", "1")
		cmd.Stdout, cmd.Stderr = &prefixWriter{t: t}, &prefixWriter{t: t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	tconn := dst.Connect(t, tdb)

	// Kill during the copy: once rows have arrived but the copy is not done.
	run := start()
	waitFor(t, 60*time.Second, "the copy to be under way", func() bool {
		var n int64
		tconn.QueryRow(ctx, "SELECT count(*) FROM events").Scan(&n)
		return n > 0 && snapshotStatus(tconn) == "copying"
	})
	run.Process.Signal(syscall.SIGKILL)
	run.Wait()

	// Restart: the copy starts over; kill again once it streams.
	run = start()
	waitFor(t, 120*time.Second, "the snapshot to finish", func() bool { return snapshotStatus(tconn) == "done" })
	streamsFrom(t, tconn, appliedLSN(tconn))
	run.Process.Signal(syscall.SIGKILL)
	run.Wait()

	// Restart once more: straight to streaming from the applied position.
	run = start()
	streamsFrom(t, tconn, appliedLSN(tconn))
	stopLoad()
	<-loadDone
	if st.Transactions.Load() < 100 {
		t.Fatalf("the app wrote only %d transactions during the test", st.Transactions.Load())
	}
	sconn := src.Connect(t, sdb)
	var end string
	sconn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	waitFor(t, 60*time.Second, "the target to apply "+end, func() bool {
		var ok bool
		tconn.QueryRow(ctx, "SELECT coalesce(applied_lsn >= $1::pg_lsn, false) FROM replicator.state", end).Scan(&ok)
		return ok
	})
	run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		t.Fatalf("run did not stop cleanly on SIGTERM: %v", err)
	}

	tables := []string{"users", "products", "orders", "order_items", "events", "audit_log", "documents", "schema_migrations"}
	for _, tbl := range tables {
		a, b := checksum(t, sconn, tbl), checksum(t, tconn, tbl)
		if a != b {
			t.Errorf("table %s differs after kill -9 and restarts: source %s, target %s", tbl, a, b)
		}
	}
}

// appliedLSN is the source position the target has applied ("0/0" before
// the stream's first transaction).
func appliedLSN(conn *pgx.Conn) string {
	s := "0/0"
	conn.QueryRow(context.Background(), "SELECT coalesce(applied_lsn, '0/0')::text FROM replicator.state").Scan(&s)
	return s
}

// streamsFrom waits until the stream has applied source changes past lsn
// (the application keeps writing meanwhile).
func streamsFrom(t *testing.T, conn *pgx.Conn, lsn string) {
	t.Helper()
	waitFor(t, 60*time.Second, "the stream to apply changes past "+lsn, func() bool {
		var ok bool
		conn.QueryRow(context.Background(), "SELECT coalesce(applied_lsn > $1::pg_lsn, false) FROM replicator.state", lsn).Scan(&ok)
		return ok
	})
}

func snapshotStatus(conn *pgx.Conn) string {
	var s string
	conn.QueryRow(context.Background(), "SELECT snapshot_status FROM replicator.state").Scan(&s)
	return s
}

// checksum is computed by the server: count and md5 of the sorted row
// texts, independent of the replicator's own code.
func checksum(t *testing.T, conn *pgx.Conn, table string) string {
	t.Helper()
	var n int64
	var h *string
	q := fmt.Sprintf("SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM %s t", table)
	if err := conn.QueryRow(context.Background(), q).Scan(&n, &h); err != nil {
		t.Fatalf("checksum %s: %v", table, err)
	}
	if h == nil {
		return fmt.Sprintf("%d rows", n)
	}
	return fmt.Sprintf("%d rows md5 %s", n, *h)
}

func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prefixWriter sends the daemon's output to the test log.
type prefixWriter struct{ t *testing.T }

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log("replicator: " + l)
	}
	return len(p), nil
}
