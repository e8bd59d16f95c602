// Command snapshot is the side-by-side snapshot benchmark: on one dataset
// (pgbench at -scale plus a table of large TOASTed rows) and at the same
// parallelism, it times `replicator snapshot`, pg_dump -Fd -j + pg_restore
// -j, `pgcopydb clone`, and a native logical subscription's initial sync
// (with the same schema steps around it), and prints wall times, ratios
// and peak RSS.
//
//	go run ./bench/snapshot -scale 50 -jobs 4
//
// Every method copies into its own fresh database on one target cluster;
// row counts are checked against the source after each, so a fast wrong
// copy cannot win.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

func main() {
	scale := flag.Int("scale", 20, "pgbench scale (100,000 accounts rows each)")
	jobs := flag.Int("jobs", 4, "parallel jobs for every method")
	toastRows := flag.Int("toast-rows", 2000, "rows of ~256 KB TOASTed text in big_toast")
	only := flag.String("only", "", "comma-separated subset of methods: replicator,pg_dump,pgcopydb,subscription")
	pairs := flag.Int("pairs", 0, "instead: this many rounds of `replicator snapshot` (chunked), `replicator snapshot --one-snapshot` and pgcopydb clone (A C B, B C A, …), then a chunked run killed at 50 % and resumed")
	compare := flag.String("compare", "", "instead: `A|B`, two sets of extra `replicator snapshot` arguments (either may be empty) run side by side -pairs times (A B, B A, …), with the CPU of each cluster and of the replicator, user and system")
	flag.Parse()
	chunkedRuns = *pairs
	if *compare != "" {
		a, b, ok := strings.Cut(*compare, "|")
		if !ok || *pairs < 1 {
			fmt.Fprintln(os.Stderr, "bench: -compare wants `A|B` and -pairs at least 1")
			os.Exit(2)
		}
		compareArgs, compareMode = [2][]string{strings.Fields(a), strings.Fields(b)}, true
	}
	if err := run(*scale, *jobs, *toastRows, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// chunkedRuns is -pairs.
var chunkedRuns int

// compareArgs is -compare's A and B, when compareMode.
var (
	compareArgs [2][]string
	compareMode bool
)

func run(scale, jobs, toastRows int, only string) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "bench-snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	os.Chmod(work, 0o777)

	bin := filepath.Join(work, "replicator")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/replicator").CombinedOutput(); err != nil {
		return fmt.Errorf("build replicator (run from the repository root): %v\n%s", err, out)
	}
	settings := map[string]string{"max_wal_size": "'8GB'", "maintenance_work_mem": "'256MB'",
		"max_sync_workers_per_subscription": fmt.Sprint(jobs), "checkpoint_timeout": "'30min'",
		// A fresh cluster writes its first gigabytes of WAL into new
		// segments, later runs into recycled ones: without this, whichever
		// method runs first pays for zero-filling the new segments.
		"wal_init_zero": "off"}
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

	fmt.Printf("building dataset: pgbench scale %d + %d TOASTed rows\n", scale, toastRows)
	if err := benchkit.Exec(ctx, src.URL("postgres"), "CREATE DATABASE app"); err != nil {
		return err
	}
	srcURL := src.URL("app")
	if _, _, err := benchkit.Run(ctx, os.Stdout, nil, filepath.Join(src.BinDir, "pgbench"), "-i", "-q", "-s", fmt.Sprint(scale), srcURL); err != nil {
		return err
	}
	if err := benchkit.Exec(ctx, srcURL, fmt.Sprintf(`CREATE TABLE big_toast (id bigint PRIMARY KEY, body text);
		INSERT INTO big_toast SELECT g, (SELECT string_agg(md5(g::text || ':' || i), '') FROM generate_series(1, 8192) i)
		FROM generate_series(1, %d) g`, toastRows)); err != nil {
		return err
	}
	// The first run must not pay for writing back what building the
	// dataset left dirty.
	if err := benchkit.Exec(ctx, srcURL, "VACUUM ANALYZE"); err != nil {
		return err
	}
	if err := benchkit.Exec(ctx, srcURL, "CHECKPOINT"); err != nil {
		return err
	}
	var size int64
	conn, err := pgx.Connect(ctx, srcURL)
	if err != nil {
		return err
	}
	conn.QueryRow(ctx, "SELECT pg_database_size('app')").Scan(&size)
	want := rowCounts(ctx, conn)
	conn.Close(ctx)
	fmt.Printf("dataset: %d MB on disk, rows %v\n", size>>20, want)

	if chunkedRuns > 0 {
		n := 0
		newTarget := func() (string, func()) {
			n++
			db := fmt.Sprintf("chunked%d", n)
			benchkit.Exec(ctx, dst.URL("postgres"), "CREATE DATABASE "+db)
			return dst.URL(db), func() { benchkit.Exec(ctx, dst.URL("postgres"), "DROP DATABASE "+db+" WITH (FORCE)") }
		}
		check := func(target string) error {
			tconn, err := pgx.Connect(ctx, target)
			if err != nil {
				return err
			}
			defer tconn.Close(ctx)
			if got := rowCounts(ctx, tconn); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("copied rows %v, source has %v", got, want)
			}
			return nil
		}
		fmt.Printf("dataset: pgbench scale %d + %d TOASTed rows (%d MB)\n", scale, toastRows, size>>20)
		if compareMode {
			return comparePairs(ctx, bin, work, srcURL, src.DataDir, dst.DataDir, newTarget, jobs, chunkedRuns, compareArgs[0], compareArgs[1], check)
		}
		return chunkedPairs(ctx, bin, work, srcURL, newTarget, jobs, chunkedRuns, check)
	}

	methods := []struct {
		name string
		run  func(target string) (time.Duration, int64, string, error)
	}{
		{"replicator", func(target string) (time.Duration, int64, string, error) {
			wall, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, "replicator"), nil, bin, "snapshot",
				"--source", srcURL, "--target", target, "--jobs", fmt.Sprint(jobs), "--replica-identity-full", "--metrics-addr", "", "--log-format", "json")
			benchkit.Exec(ctx, srcURL, "SELECT pg_drop_replication_slot('replicator'); DROP PUBLICATION IF EXISTS replicator")
			return wall, rss, "", err
		}},
		{"pg_dump -Fd + pg_restore", func(target string) (time.Duration, int64, string, error) {
			dir := filepath.Join(work, "dump")
			os.RemoveAll(dir)
			w1, r1, err := benchkit.Run(ctx, benchkit.LogFile(work, "pg_dump"), nil, filepath.Join(src.BinDir, "pg_dump"), "-Fd", "-j", fmt.Sprint(jobs), "-f", dir, srcURL)
			if err != nil {
				return 0, 0, "", err
			}
			w2, r2, err := benchkit.Run(ctx, benchkit.LogFile(work, "pg_restore"), nil, filepath.Join(src.BinDir, "pg_restore"), "-j", fmt.Sprint(jobs), "-d", target, dir)
			return w1 + w2, max(r1, r2), fmt.Sprintf("dump %.1f s + restore %.1f s, via a %s directory", w1.Seconds(), w2.Seconds(), dirSize(dir)), err
		}},
		{"pgcopydb clone", func(target string) (time.Duration, int64, string, error) {
			dir := filepath.Join(work, "pgcopydb")
			os.RemoveAll(dir)
			wall, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, "pgcopydb"), nil, "pgcopydb", "clone", "--source", srcURL, "--target", target,
				"--dir", dir, "--table-jobs", fmt.Sprint(jobs), "--index-jobs", fmt.Sprint(jobs), "--split-tables-larger-than", "64MB", "--no-owner", "--no-acl")
			return wall, rss, "--split-tables-larger-than 64MB", err
		}},
		{"native subscription", func(target string) (time.Duration, int64, string, error) {
			return subscription(ctx, src, srcURL, target, jobs, work)
		}},
	}
	var results []benchkit.Result
	for i, m := range methods {
		if only != "" && !strings.Contains(only, strings.Fields(m.name)[0]) {
			continue
		}
		db := fmt.Sprintf("copy%d", i)
		if err := benchkit.Exec(ctx, dst.URL("postgres"), "CREATE DATABASE "+db); err != nil {
			return err
		}
		warm(ctx, srcURL)
		fmt.Printf("running %s ...\n", m.name)
		wall, rss, note, err := m.run(dst.URL(db))
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		tconn, err := pgx.Connect(ctx, dst.URL(db))
		if err != nil {
			return err
		}
		got := rowCounts(ctx, tconn)
		tconn.Close(ctx)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("%s copied rows %v, source has %v", m.name, got, want)
		}
		results = append(results, benchkit.Result{Name: m.name, Wall: wall, PeakRSS: rss, Note: note})
		benchkit.Exec(ctx, dst.URL("postgres"), "DROP DATABASE "+db+" WITH (FORCE)")
	}
	fmt.Printf("\nsnapshot benchmark: pgbench scale %d + %d TOASTed rows (%d MB), --jobs %d, %d cores, load %s, %s\n\n",
		scale, toastRows, size>>20, jobs, numCPU(), benchkit.LoadAvg(), time.Now().UTC().Format("2006-01-02"))
	benchkit.Print(os.Stdout, "replicator", results)
	return nil
}

// subscription times a native logical subscription: pre-data schema, the
// initial table sync (until every table is ready), then post-data.
func subscription(ctx context.Context, src *testenv.Postgres, srcURL, target string, jobs int, work string) (time.Duration, int64, string, error) {
	start := time.Now()
	pgDump := filepath.Join(src.BinDir, "pg_dump")
	psql := filepath.Join(src.BinDir, "psql")
	dump := func(section string) error {
		f := filepath.Join(work, section+".sql")
		if _, _, err := benchkit.Run(ctx, benchkit.LogFile(work, "sub"), nil, pgDump, "--section="+section, "-f", f, srcURL); err != nil {
			return err
		}
		_, _, err := benchkit.Run(ctx, benchkit.LogFile(work, "sub"), nil, psql, "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", f)
		return err
	}
	if err := dump("pre-data"); err != nil {
		return 0, 0, "", err
	}
	if err := benchkit.Exec(ctx, srcURL, "CREATE PUBLICATION bench_pub FOR ALL TABLES"); err != nil {
		return 0, 0, "", err
	}
	defer benchkit.Exec(ctx, srcURL, "DROP PUBLICATION bench_pub")
	conninfo := strings.Replace(srcURL, "postgres://", "postgresql://", 1)
	if err := benchkit.Exec(ctx, target, fmt.Sprintf("CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION bench_pub WITH (copy_data = true)", conninfo)); err != nil {
		return 0, 0, "", err
	}
	syncStart := time.Now()
	for {
		var pending int
		conn, err := pgx.Connect(ctx, target)
		if err != nil {
			return 0, 0, "", err
		}
		err = conn.QueryRow(ctx, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate NOT IN ('r','s')").Scan(&pending)
		conn.Close(ctx)
		if err != nil {
			return 0, 0, "", err
		}
		if pending == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	syncWall := time.Since(syncStart)
	benchkit.Exec(ctx, target, "ALTER SUBSCRIPTION bench_sub DISABLE; ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE); DROP SUBSCRIPTION bench_sub")
	benchkit.Exec(ctx, srcURL, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'bench_sub%' OR slot_name LIKE 'pg_%_sync_%'")
	if err := dump("post-data"); err != nil {
		return 0, 0, "", err
	}
	return time.Since(start), 0, fmt.Sprintf("initial sync %.1f s (max_sync_workers_per_subscription=%d), schema steps serial", syncWall.Seconds(), jobs), nil
}

func rowCounts(ctx context.Context, conn *pgx.Conn) map[string]int64 {
	out := map[string]int64{}
	for _, t := range []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "big_toast"} {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
			n = -1
		}
		out[t] = n
	}
	return out
}

// warm reads every table once so no method pays for a cold source cache.
func warm(ctx context.Context, url string) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return
	}
	defer conn.Close(ctx)
	rowCounts(ctx, conn)
	conn.Exec(ctx, "SELECT sum(length(body)) FROM big_toast")
}

func dirSize(dir string) string {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return fmt.Sprintf("%d MB", n>>20)
}

func numCPU() int {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return 0
	}
	var n int
	fmt.Sscan(string(out), &n)
	return n
}
