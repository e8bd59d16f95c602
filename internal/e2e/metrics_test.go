package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"replicator/internal/testenv"
	"replicator/pkg/verify"
)

// Every metric the alert rules and the dashboard in deploy/ use (listed
// in deploy/metrics.txt) is exported: scraped from the running daemon
// (`run`) and the running Redis follower, and, for verify, which is a
// short command, gathered from the registry verify fills.
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
		names := scrape(addr)
		return names["replicator_applied_changes_total"] && names["replicator_snapshot_rows_total"]
	})
	for n := range scrape(addr) {
		exported[n] = true
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
	waitFor(t, 60*time.Second, "the Redis follower's metrics", func() bool { return scrape(addr2)["replicator_redis_keys_imported_total"] })
	for n := range scrape(addr2) {
		exported[n] = true
	}

	// verify.
	reg := prometheus.NewRegistry()
	if _, err := verify.Run(ctx, verify.Config{Source: dst.URL(sdb), Target: dst.URL(tdb), WaitTimeout: -1}, nil, reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
	}

	for _, name := range want {
		if !exported[name] {
			t.Errorf("deploy/ uses metric %s, which the replicator does not export", name)
		}
	}
}

// scrape returns the metric names /metrics declares (# TYPE lines).
func scrape(addr string) map[string]bool {
	out := map[string]bool{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
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
