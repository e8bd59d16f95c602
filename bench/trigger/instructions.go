package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
	// txns: lines are whole transactions, each committed (BEGIN … COMMIT
	// in the lines themselves), instead of statements of one transaction
	// rolled back; n counts transactions.
	txns bool
}

func perStatement(n int, stmt func(i int) string) []string {
	var l []string
	for i := 1; i <= n; i++ {
		l = append(l, stmt(i))
	}
	return l
}

// tpcb is pgbench's default script (TPC-B-like) for transaction i, with
// values spread as pgbench's random ones are, over a scale 1 database.
func tpcb(i int) string {
	aid, tid, bid, delta := (i*7919)%100000+1, i%10+1, 1, i%10001-5000
	return fmt.Sprintf(`BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + %[4]d WHERE aid = %[1]d;
SELECT abalance FROM pgbench_accounts WHERE aid = %[1]d;
UPDATE pgbench_tellers SET tbalance = tbalance + %[4]d WHERE tid = %[2]d;
UPDATE pgbench_branches SET bbalance = bbalance + %[4]d WHERE bid = %[3]d;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%[2]d, %[3]d, %[1]d, %[4]d, CURRENT_TIMESTAMP);
COMMIT`, aid, tid, bid, delta)
}

var workloads = []workload{
	{"pgbench TPC-B transaction (3 UPDATEs, SELECT, INSERT, COMMIT)", 300, 900, func(n int) []string {
		return perStatement(n, tpcb)
	}, true},
	{"UPDATE pgbench_accounts, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string {
			return fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + %d WHERE aid = %d", i%5000, i*37)
		})
	}, false},
	{"INSERT INTO pgbench_history, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string {
			return fmt.Sprintf("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (%d, 1, %d, %d, CURRENT_TIMESTAMP)", i%10+1, i*37, i%5000)
		})
	}, false},
	{"DELETE FROM pgbench_accounts, one row per statement", 500, 1500, func(n int) []string {
		return perStatement(n, func(i int) string { return fmt.Sprintf("DELETE FROM pgbench_accounts WHERE aid = %d", i*37) })
	}, false},
	{"UPDATE pgbench_accounts, rows 5,001 to 15,000 of one statement", 5000, 15000, func(n int) []string {
		return []string{fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %d", n)}
	}, false},
	{"INSERT INTO pgbench_history, rows 5,001 to 15,000 of one statement", 5000, 15000, func(n int) []string {
		return []string{fmt.Sprintf("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT g %% 10 + 1, 1, g, g %% 5000, CURRENT_TIMESTAMP FROM generate_series(1, %d) g", n)}
	}, false},
}

// A variant is one more database to count: a copy of template with sql
// run in it.
type variant struct {
	name, template, sql string
}

// floorTrigger puts an AFTER INSERT OR UPDATE OR DELETE row trigger on
// each pgbench table calling body (as SECURITY DEFINER when definer):
// the cost of any row trigger in plpgsql that does as much.
func floorTrigger(body string, definer bool) string {
	sec := ""
	if definer {
		sec = " SECURITY DEFINER"
	}
	s := `CREATE TABLE public.floor_log (rel oid NOT NULL, op "char" NOT NULL);
CREATE FUNCTION public.floor() RETURNS trigger LANGUAGE plpgsql` + sec + ` AS $f$BEGIN ` + body + ` RETURN NULL; END$f$;
`
	for _, t := range []string{"pgbench_accounts", "pgbench_tellers", "pgbench_branches", "pgbench_history"} {
		s += "CREATE TRIGGER floor AFTER INSERT OR UPDATE OR DELETE ON " + t + " FOR EACH ROW EXECUTE FUNCTION public.floor();\n"
	}
	return s
}

// floors are the cheapest row triggers in plpgsql, by the same count: one
// that only returns, one that INSERTs constants into a table without an
// index, each with and without SECURITY DEFINER.
var floors = []variant{
	{"floor: RETURN NULL", "plain", floorTrigger("", false)},
	{"floor: RETURN NULL, SECURITY DEFINER", "plain", floorTrigger("", true)},
	{"floor: INSERT constants, no index", "plain", floorTrigger("INSERT INTO public.floor_log VALUES (1, 'U');", false)},
	{"floor: INSERT constants, no index, SECURITY DEFINER", "plain", floorTrigger("INSERT INTO public.floor_log VALUES (1, 'U');", true)},
}

// instructions counts, with callgrind in a single-user backend, the
// instructions each workload takes in the plain and the captured database
// (pgbench scale 1 each) and in each variant's, and prints what each adds
// per row (per transaction for whole transactions) and, for whole
// transactions, plain ÷ variant: the share of its tps a CPU-bound
// application keeps. These figures do not depend on what else the machine
// runs. only, when not nil, selects the workloads by name; keep, when not
// empty, is a directory to keep callgrind's output files in (for
// callgrind_annotate), named by run, database and size.
func instructions(only *regexp.Regexp, variants []variant, keep string) error {
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
	dbs := []string{"plain", "captured"}
	names := []string{"plain", "captured"}
	for i, v := range variants {
		db := fmt.Sprintf("variant%d", i+1)
		if err := benchkit.Exec(ctx, src.URL("postgres"), fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", db, v.template)); err != nil {
			return err
		}
		if err := benchkit.Exec(ctx, src.URL(db), v.sql); err != nil {
			return fmt.Errorf("variant %q: %w", v.name, err)
		}
		dbs = append(dbs, db)
		names = append(names, v.name)
	}
	for _, db := range dbs {
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
	runs := 0
	count := func(db string, lines []string, txns bool) (int64, error) {
		script := filepath.Join(work, "q.sql")
		body := "BEGIN;\n" + strings.Join(lines, ";\n") + ";\nROLLBACK;\n"
		if txns {
			body = strings.Join(lines, ";\n") + ";\n"
		}
		if err := os.WriteFile(script, []byte(body), 0o644); err != nil {
			return 0, err
		}
		out := filepath.Join(work, "cg.out")
		os.Remove(out)
		runs++
		if keep != "" {
			out = filepath.Join(keep, fmt.Sprintf("%02d-%s-%d.callgrind", runs, db, len(lines)))
		}
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
	fmt.Printf("\n| workload | database | per row or transaction | adds to plain | plain ÷ this |\n|---|---|---:|---:|---:|\n")
	for _, w := range workloads {
		if only != nil && !only.MatchString(w.name) {
			continue
		}
		var plain float64
		for i, db := range dbs {
			small, err := count(db, w.lines(w.small), w.txns)
			if err != nil {
				return err
			}
			large, err := count(db, w.lines(w.large), w.txns)
			if err != nil {
				return err
			}
			per := float64(large-small) / float64(w.large-w.small)
			if i == 0 {
				plain = per
			}
			fmt.Printf("| %s | %s | %.0f | %.0f | %.3f |\n", w.name, names[i], per, per-plain, plain/per)
		}
	}
	return nil
}
