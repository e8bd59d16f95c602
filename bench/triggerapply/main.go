// Command triggerapply compares apply throughput under trigger capture with
// a native logical subscription on the same backlog: pgbench writes a
// backlog while nothing consumes it, then `replicator stream` (trigger
// capture) catches up, timed until the target committed the batch holding
// the backlog, and then a native subscription, created
// before the backlog, catches up, timed until its slot confirms the WAL
// end. Both copies are checked against the source with a checksum.
//
//	go run ./bench/triggerapply -scale 10 -transactions 50000
//
// The source runs wal_level=logical only so that the native subscription
// can run; trigger capture does not use it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
	"replicator/pkg/trigger"
)

func main() {
	scale := flag.Int("scale", 10, "pgbench scale")
	txs := flag.Int("transactions", 50000, "backlog size: pgbench transactions (TPC-B-like: 3 updates, 1 insert each)")
	clients := flag.Int("clients", 4, "pgbench clients for the backlog")
	flag.BoolVar(&tickBacklog, "tick-backlog", false, "run the trigger ticker while the backlog is written, as the snapshot does during a copy (the backlog then arrives as one-second batches)")
	flag.Parse()
	if err := run(*scale, *txs, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var tickBacklog bool

func run(scale, txs, clients int) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "bench-triggerapply-")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if ok && os.Getenv("KEEP") == "" {
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
	logf, err := os.Create(filepath.Join(work, "bench.log"))
	if err != nil {
		return err
	}
	defer logf.Close()

	if err := benchkit.Exec(ctx, src.URL("postgres"), "CREATE DATABASE app"); err != nil {
		return err
	}
	srcURL := src.URL("app")
	if _, _, err := benchkit.Run(ctx, logf, nil, pgbench, "-i", "-q", "-s", fmt.Sprint(scale), srcURL); err != nil {
		return err
	}
	for _, db := range []string{"repl", "native"} {
		if err := benchkit.Exec(ctx, dst.URL("postgres"), "CREATE DATABASE "+db); err != nil {
			return err
		}
	}
	replURL, nativeURL := dst.URL("repl"), dst.URL("native")

	// The native copy and its slot come first, while the source is quiet
	// and has no capture triggers yet (pg_dump would carry them along);
	// the publication names the pgbench tables, not the changelog.
	fmt.Println("initial copies: pg_dump + disabled subscription, then replicator snapshot --capture trigger ...")
	dump := filepath.Join(work, "dump.sql")
	if _, _, err := benchkit.Run(ctx, logf, nil, filepath.Join(src.BinDir, "pg_dump"), "-f", dump, srcURL); err != nil {
		return err
	}
	if _, _, err := benchkit.Run(ctx, logf, nil, filepath.Join(src.BinDir, "psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", nativeURL, "-f", dump); err != nil {
		return err
	}
	if err := benchkit.Exec(ctx, srcURL, "CREATE PUBLICATION bench_pub FOR TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"); err != nil {
		return err
	}
	if err := benchkit.Exec(ctx, nativeURL, fmt.Sprintf("CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION bench_pub WITH (copy_data = false, enabled = false)", srcURL)); err != nil {
		return err
	}
	if _, _, err := benchkit.Run(ctx, logf, nil, bin, "snapshot", "--source", srcURL, "--target", replURL,
		"--capture", "trigger", "--jobs", "2", "--metrics-addr", "", "--log-format", "json"); err != nil {
		return err
	}

	fmt.Printf("building a backlog of %d pgbench transactions (captured by the triggers; ticker running: %v) ...\n", txs, tickBacklog)
	stopTicker := func() {}
	if tickBacklog {
		capt, err := trigger.New(ctx, srcURL, trigger.Config{}, zap.NewNop(), nil)
		if err != nil {
			return err
		}
		tctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { capt.RunTicker(tctx); close(done) }()
		stopTicker = func() { cancel(); <-done; capt.Close() }
	}
	if _, _, err := benchkit.Run(ctx, logf, nil, pgbench, "-n", "-c", fmt.Sprint(clients), "-j", "2",
		"-t", fmt.Sprint(txs/clients), srcURL); err != nil {
		return err
	}
	stopTicker()
	var lastTick int64
	if err := benchkit.QueryRow(ctx, srcURL, `SELECT max(id) FROM replicator.ticks`, &lastTick); err != nil {
		return err
	}
	var endLSN string
	var rows int64
	if err := benchkit.QueryRow(ctx, srcURL, `SELECT pg_current_wal_lsn()::text, (SELECT count(*) FROM replicator.changelog)`, &endLSN, &rows); err != nil {
		return err
	}
	fmt.Printf("backlog: %d changelog rows, WAL up to %s\n", rows, endLSN)

	// replicator stream, trigger capture: from start until the changelog
	// is empty, i.e. every batch is committed on the target and purged.
	start := time.Now()
	stream := exec.Command(bin, "stream", "--source", srcURL, "--target", replURL, "--metrics-addr", "", "--log-format", "json")
	stream.Stdout, stream.Stderr = logf, logf
	if err := stream.Start(); err != nil {
		return err
	}
	// The stream ticks when it starts: batch lastTick+1 closes the backlog.
	if err := waitApplied(ctx, replURL, lastTick+1, 30*time.Minute); err != nil {
		stream.Process.Kill()
		return fmt.Errorf("replicator stream: %w", err)
	}
	replWall := time.Since(start)
	stream.Process.Signal(syscall.SIGTERM)
	stream.Wait()
	replRSS := int64(0)
	if ru, ok := stream.ProcessState.SysUsage().(*syscall.Rusage); ok {
		replRSS = ru.Maxrss * 1024
	}

	start = time.Now()
	if err := benchkit.Exec(ctx, nativeURL, "ALTER SUBSCRIPTION bench_sub ENABLE"); err != nil {
		return err
	}
	if err := benchkit.WaitSlot(ctx, srcURL, "bench_sub", endLSN, 30*time.Minute); err != nil {
		return fmt.Errorf("native subscription: %w", err)
	}
	nativeWall := time.Since(start)
	benchkit.Exec(ctx, nativeURL, "ALTER SUBSCRIPTION bench_sub DISABLE")

	for _, t := range []struct{ name, url string }{{"replicator (trigger capture)", replURL}, {"native subscription", nativeURL}} {
		if err := benchkit.SameData(ctx, srcURL, t.url, benchkit.PgbenchTables); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	results := []benchkit.Result{
		{Name: "replicator stream (trigger)", Wall: replWall, PeakRSS: replRSS, Note: fmt.Sprintf("%.0f tx/s", float64(txs)/replWall.Seconds())},
		{Name: "native subscription", Wall: nativeWall, Note: fmt.Sprintf("%.0f tx/s", float64(txs)/nativeWall.Seconds())},
	}
	fmt.Printf("\ntrigger apply benchmark: catch-up of %d pgbench transactions (%d changelog rows, up to batch %d, scale %d), load %s, %s\n\n",
		txs, rows, lastTick+1, scale, benchkit.LoadAvg(), time.Now().UTC().Format("2006-01-02 15:04"))
	benchkit.Print(os.Stdout, "replicator stream (trigger)", results)
	fmt.Printf("\ncatch-up throughput: replicator (trigger capture) %.2f × the native subscription's\n", nativeWall.Seconds()/replWall.Seconds())
	ok = true
	return nil
}

// waitApplied waits until the target has committed batch: every change
// of the backlog is then applied (the purge of the source's changelog
// follows, as the native slot's WAL release does).
func waitApplied(ctx context.Context, url string, batch int64, limit time.Duration) error {
	return benchkit.WaitTrue(ctx, url, limit, fmt.Sprintf("batch %d applied", batch), `SELECT applied_batch >= $1 FROM replicator.state`, batch)
}
