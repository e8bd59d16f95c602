// Command apply is the side-by-side apply benchmark: it builds a backlog of
// pgbench transactions on the source while nothing consumes it, then times
// how long `replicator stream` takes to catch up (from its start until the
// backlog's last row is visible on the target) and how long a native logical
// subscription takes for the same backlog (from ENABLE), one after the other. It
// then measures replicator's steady-state apply lag while pgbench writes at
// a fixed rate, and checks every copy against the source with a checksum.
//
//	go run ./bench/apply -scale 10 -transactions 100000 -rate 1000
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

func main() {
	scale := flag.Int("scale", 10, "pgbench scale")
	txs := flag.Int("transactions", 100000, "backlog size: pgbench transactions (TPC-B-like: 3 updates, 1 insert each)")
	clients := flag.Int("clients", 8, "pgbench clients for the backlog")
	rate := flag.Int("rate", 1000, "pgbench rate (tps) for the steady-state lag run")
	steady := flag.Duration("steady", 30*time.Second, "length of the steady-state lag run")
	flag.Parse()
	if err := run(*scale, *txs, *clients, *rate, *steady); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(scale, txs, clients, rate int, steady time.Duration) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "bench-apply-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if ok {
			os.RemoveAll(work)
		} else {
			fmt.Fprintln(os.Stderr, "logs kept in", work)
		}
	}()
	bin := filepath.Join(work, "replicator")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/replicator").CombinedOutput(); err != nil {
		return fmt.Errorf("build replicator (run from the repository root): %v\n%s", err, out)
	}
	settings := map[string]string{"max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'"}
	src, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: settings})
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := testenv.StartPostgres(testenv.PostgresOptions{Settings: settings})
	if err != nil {
		return err
	}
	defer dst.Close()
	pgbench := filepath.Join(src.BinDir, "pgbench")

	must := func(url, q string) error { return benchkit.Exec(ctx, url, q) }
	if err := must(src.URL("postgres"), "CREATE DATABASE app"); err != nil {
		return err
	}
	srcURL := src.URL("app")
	log := benchkit.LogFile(work, "bench")
	if _, _, err := benchkit.Run(ctx, log, nil, pgbench, "-i", "-q", "-s", fmt.Sprint(scale), srcURL); err != nil {
		return err
	}
	// The backlog ends with a marker row; a consumer has caught up when the
	// marker is visible on its target: the data is there, whatever the
	// consumer's rhythm of confirming positions to the source.
	if err := must(srcURL, "CREATE TABLE bench_marker (id int PRIMARY KEY)"); err != nil {
		return err
	}
	for _, db := range []string{"repl", "native"} {
		if err := must(dst.URL("postgres"), "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	replURL, nativeURL := dst.URL("repl"), dst.URL("native")

	// Both consumers start from the same quiet source state.
	fmt.Println("initial copy for replicator (snapshot) and for the native subscription (pg_dump) ...")
	if _, _, err := benchkit.Run(ctx, log, nil, bin, "snapshot", "--source", srcURL, "--target", replURL,
		"--jobs", "2", "--replica-identity-full", "--metrics-addr", "", "--log-format", "json"); err != nil {
		return err
	}
	dump := filepath.Join(work, "dump.sql")
	if _, _, err := benchkit.Run(ctx, log, nil, filepath.Join(src.BinDir, "pg_dump"), "-f", dump, "-N", "replicator", srcURL); err != nil {
		return err
	}
	if _, _, err := benchkit.Run(ctx, log, nil, filepath.Join(src.BinDir, "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", nativeURL, "-f", dump); err != nil {
		return err
	}
	if err := must(srcURL, "CREATE PUBLICATION bench_pub FOR ALL TABLES"); err != nil {
		return err
	}
	if err := must(nativeURL, fmt.Sprintf("CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION bench_pub WITH (copy_data = false, enabled = false)", srcURL)); err != nil {
		return err
	}

	fmt.Printf("building a backlog of %d pgbench transactions ...\n", txs)
	if _, _, err := benchkit.Run(ctx, log, nil, pgbench, "-n", "-c", fmt.Sprint(clients), "-j", "2",
		"-t", fmt.Sprint(txs/clients), srcURL); err != nil {
		return err
	}
	if err := must(srcURL, "INSERT INTO bench_marker VALUES (1)"); err != nil {
		return err
	}
	endLSN, backlogBytes, err := walEnd(ctx, srcURL)
	if err != nil {
		return err
	}
	fmt.Printf("backlog: %d MB of WAL up to %s\n", backlogBytes>>20, endLSN)

	// replicator stream: from start until its slot confirms endLSN.
	start := time.Now()
	stream := exec.Command(bin, "stream", "--source", srcURL, "--target", replURL, "--metrics-addr", "127.0.0.1:0", "--log-format", "json")
	stream.Stdout, stream.Stderr = log, log
	if err := stream.Start(); err != nil {
		return err
	}
	if err := waitMarker(ctx, replURL, 30*time.Minute); err != nil {
		stream.Process.Kill()
		return fmt.Errorf("replicator stream: %w", err)
	}
	replWall := time.Since(start)
	benchkit.WaitSlot(ctx, srcURL, "replicator", endLSN, time.Minute)
	stream.Process.Signal(syscall.SIGTERM)
	stream.Wait()
	replRSS := rss(stream)

	// Native subscription on the same backlog.
	start = time.Now()
	if err := must(nativeURL, "ALTER SUBSCRIPTION bench_sub ENABLE"); err != nil {
		return err
	}
	if err := waitMarker(ctx, nativeURL, 30*time.Minute); err != nil {
		return fmt.Errorf("native subscription: %w", err)
	}
	nativeWall := time.Since(start)

	for _, t := range []struct{ name, url string }{{"replicator", replURL}, {"native subscription", nativeURL}} {
		if err := benchkit.SameData(ctx, srcURL, t.url, benchkit.PgbenchTables); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	must(nativeURL, "ALTER SUBSCRIPTION bench_sub DISABLE")

	// Steady state: replicator stream while pgbench writes at a fixed rate.
	fmt.Printf("steady state: pgbench at %d tps for %s ...\n", rate, steady)
	port, _ := testenv.FreePort()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	stream = exec.Command(bin, "stream", "--source", srcURL, "--target", replURL, "--metrics-addr", addr, "--log-format", "json")
	stream.Stdout, stream.Stderr = log, log
	if err := stream.Start(); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	samples := make(chan []float64, 1)
	sctx, stop := context.WithCancel(ctx)
	go func() { samples <- sampleLag(sctx, addr) }()
	pb := exec.Command(pgbench, "-n", "-c", "4", "-j", "2", "-R", fmt.Sprint(rate), "-T", fmt.Sprint(int(steady.Seconds())), srcURL)
	pbOut, _ := pb.CombinedOutput()
	stop()
	lags := <-samples
	endLSN, _, _ = walEnd(ctx, srcURL)
	benchkit.WaitSlot(ctx, srcURL, "replicator", endLSN, 5*time.Minute)
	stream.Process.Signal(syscall.SIGTERM)
	stream.Wait()
	steadyRSS := rss(stream)
	if err := benchkit.SameData(ctx, srcURL, replURL, benchkit.PgbenchTables); err != nil {
		return fmt.Errorf("replicator after steady state: %w", err)
	}
	achieved := tpsOf(string(pbOut))

	results := []benchkit.Result{
		{Name: "replicator stream", Wall: replWall, PeakRSS: replRSS, Note: fmt.Sprintf("%.0f tx/s", float64(txs)/replWall.Seconds())},
		{Name: "native subscription", Wall: nativeWall, Note: fmt.Sprintf("%.0f tx/s", float64(txs)/nativeWall.Seconds())},
	}
	fmt.Printf("\napply benchmark: catch-up of %d pgbench transactions (%d MB WAL, scale %d), %d cores, load %s, %s\n\n",
		txs, backlogBytes>>20, scale, 2, benchkit.LoadAvg(), time.Now().UTC().Format("2006-01-02"))
	benchkit.Print(os.Stdout, "replicator stream", results)
	fmt.Printf("\ncatch-up throughput: replicator %.2f × the native subscription's\n", nativeWall.Seconds()/replWall.Seconds())
	sort.Float64s(lags)
	if len(lags) > 0 {
		fmt.Printf("steady state at %s tps for %s: replicator_apply_lag_seconds mean %.3f s, p99 %.3f s, max %.3f s over %d samples; peak RSS %d MB\n",
			achieved, steady, mean(lags), lags[len(lags)*99/100], lags[len(lags)-1], len(lags), steadyRSS>>20)
	}
	ok = true
	return nil
}

func walEnd(ctx context.Context, url string) (string, int64, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close(ctx)
	var lsn string
	var behind int64
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, coalesce((SELECT max(pg_current_wal_lsn() - confirmed_flush_lsn) FROM pg_replication_slots), 0)::bigint`).Scan(&lsn, &behind)
	return lsn, behind, err
}

// waitMarker waits until the backlog's last row is visible on the target.
func waitMarker(ctx context.Context, url string, limit time.Duration) error {
	return benchkit.WaitTrue(ctx, url, limit, "the backlog's last row reaching the target", "SELECT EXISTS (SELECT FROM bench_marker)")
}

// sampleLag reads replicator_apply_lag_seconds from /metrics every 500 ms.
func sampleLag(ctx context.Context, addr string) []float64 {
	var out []float64
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "replicator_apply_lag_seconds ") {
				if v, err := strconv.ParseFloat(strings.Fields(line)[1], 64); err == nil {
					out = append(out, v)
				}
			}
		}
		resp.Body.Close()
	}
}

func rss(cmd *exec.Cmd) int64 {
	if cmd.ProcessState == nil {
		return 0
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss * 1024
	}
	return 0
}

func tpsOf(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "tps = ") {
			return strings.Fields(line)[2]
		}
	}
	return "?"
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
