package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

// A workload of the per-row count: lines(n) are statements writing n rows
// in all, run in one transaction that is rolled back, so every database
// runs it from the same state. The figure is the difference between two
// sizes divided by the rows between them, which leaves out what is paid
// once (start-up, loading plpgsql and hstore, compiling the function).
type workload struct {
	name         string
	small, large int
	lines        func(n int) []string
}

func perStatement(n int, stmt func(i int) string) []string {
	var l []string
	for i := 1; i <= n; i++ {
		l = append(l, stmt(i))
	}
	return l
}

var workloads = []workload{
	{"UPDATE pgbench_accounts, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string {
			return fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d", i%5000, i*37)
		})
	}},
	{"INSERT INTO pgbench_history, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string {
			return fmt.Sprintf("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%d, 1, %d, %d, CURRENT_TIMESTAMP)", i%10+1, i*37, i%5000)
		})
	}},
	{"DELETE FROM pgbench_accounts, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string { return fmt.Sprintf("DELETE FROM pgbench_accounts WHERE aid = %d", i*37) })
	}},
	{"UPDATE pgbench_accounts, rows 5,001 to 15,000 of one statement", 5000, 15000, func(n int) []string {
		return []string{fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %d", n)}
	}},
	{"INSERT INTO pgbench_history, rows 5,001 to 15,000 of one statement", 5000, 15000, func(n int) []string {
		return []string{fmt.Sprintf("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT g %% 10 + 1, 1, g, g %% 5000, CURRENT_TIMESTAMP FROM generate_series(1, %d) g", n)}
	}},
}

// instructions counts, with callgrind in a single-user backend, the
// instructions each workload takes in the plain and the captured database
// (pgbench scale 1 each), and prints what capture adds per row: a figure
// that does not depend on what else the machine runs.
func instructions() error {
	ctx := context.Background()
	if _, err := exec.LookPath("valgrind"); err != nil {
		return fmt.Errorf("-instructions needs valgrind: apt-get install -y valgrind")
	}
	src, err := testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica"})
	if err != nil {
		return err
	}
	defer src.Close()
	if err := pgbenchDatabases(ctx, src, 1); err != nil {
		return err
	}
	capt, err := install(ctx, src.URL("captured"))
	if err != nil {
		return err
	}
	capt.Close()
	for _, db := range []string{"plain", "captured"} {
		if err := benchkit.Exec(ctx, src.URL(db), "VACUUM ANALYZE"); err != nil {
			return err
		}
	}
	if err := src.Stop(testenv.Fast); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "replicator-bench-instr-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o777); err != nil {
		return err
	}
	count := func(db string, lines []string) (int64, error) {
		script := filepath.Join(work, "q.sql")
		body := "BEGIN;\n" + strings.Join(lines, ";\n") + ";\nROLLBACK;\n"
		if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
			return 0, err
		}
		out := filepath.Join(work, "cg.out")
		os.Remove(out)
		args := []string{"valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
			filepath.Join(src.BinDir, "postgres"), "--single", "-D", src.DataDir, db}
		if os.Geteuid() == 0 {
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
		}
		in, err := os.Open(script)
		if err != nil {
			return 0, err
		}
		defer in.Close()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Stdin = in
		if b, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("callgrind of a single-user backend on %s: %w\n%s", db, err, b)
		} else if strings.Contains(string(b), "ERROR:") {
			return 0, fmt.Errorf("single-user backend on %s: %s", db, b)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && (f[0] == "summary:" || f[0] == "totals:") {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
		return 0, fmt.Errorf("no instruction total in %s", out)
	}
	fmt.Println("\n| workload | plain, per row | captured, per row | capture adds, per row |\n|---|---:|---:|---:|")
	for _, w := range workloads {
		var per [2]float64
		for i, db := range []string{"plain", "captured"} {
			small, err := count(db, w.lines(w.small))
			if err != nil {
				return err
			}
			large, err := count(db, w.lines(w.large))
			if err != nil {
				return err
			}
			per[i] = float64(large-small) / float64(w.large-w.small)
		}
		fmt.Printf("| %s | %.0f | %.0f | %.0f |\n", w.name, per[0], per[1], per[1]-per[0])
	}
	return nil
}
