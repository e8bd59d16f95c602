// Command trigger measures what trigger capture costs the source: pgbench's
// default (TPC-B-like) script at the same scale, clients and duration,
// without and with the capture triggers installed, alternating rounds in
// one run, and prints tps and the loss.
//
//	go run ./bench/trigger -scale 10 -clients 4 -duration 30s -rounds 2
//
// While the triggers are installed, the capture runs as in production on
// the source side: the ticker every second and a consumer that reads every
// batch through its cursor and purges it (there is no target: apply cost
// is measured elsewhere). The load average is printed with the results:
// the machine may be shared.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
	"replicator/pkg/trigger"
)

func main() {
	scale := flag.Int("scale", 10, "pgbench scale")
	clients := flag.Int("clients", 4, "pgbench clients")
	duration := flag.Duration("duration", 30*time.Second, "length of each pgbench run")
	rounds := flag.Int("rounds", 2, "rounds of (without, with) triggers")
	flag.BoolVar(&durable, "durable", false, "fsync=on and full_page_writes=on: commits wait for the disk, as in production")
	flag.BoolVar(&consume, "consume", true, "run the ticker and a consumer (read + purge) during the runs with triggers")
	flag.Parse()
	if err := run(*scale, *clients, *duration, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var consume, durable bool

type runResult struct {
	with   bool
	tps    float64
	txns   int64
	cpuSec float64 // CPU seconds of every server process during the run
	load   string
	note   string
}

// cpuPerTxn is server CPU milliseconds per pgbench transaction: on a
// shared machine far steadier than tps, which moves with other tenants.
func (r runResult) cpuPerTxn() float64 { return 1000 * r.cpuSec / float64(r.txns) }

func run(scale, clients int, duration time.Duration, rounds int) error {
	ctx := context.Background()
	// wal_level=replica, as on Heroku. By default the test cluster's
	// fsync=off makes pgbench CPU-bound, so the triggers' share of the work
	// shows fully (the worst case); -durable makes commits wait for the
	// disk, as on a production server.
	settings := map[string]string{"max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'"}
	if durable {
		settings["fsync"], settings["full_page_writes"] = "on", "on"
	}
	src, err := testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica", Settings: settings})
	if err != nil {
		return err
	}
	defer src.Close()
	if err := benchkit.Exec(ctx, src.URL("postgres"), "CREATE DATABASE app"); err != nil {
		return err
	}
	url := src.URL("app")
	pgbench := filepath.Join(src.BinDir, "pgbench")
	fmt.Printf("pgbench -i -s %d\n", scale)
	if _, _, err := benchkit.Run(ctx, os.Stdout, nil, pgbench, "-i", "-q", "-s", strconv.Itoa(scale), url); err != nil {
		return err
	}
	var results []runResult
	for r := 0; r < rounds; r++ {
		for _, with := range []bool{false, true} {
			if err := benchkit.Exec(ctx, url, "VACUUM ANALYZE"); err != nil {
				return err
			}
			res, err := oneRun(ctx, src.DataDir, url, pgbench, clients, duration, with)
			if err != nil {
				return err
			}
			fmt.Printf("round %d, triggers %v: %.0f tps, %.3f ms server CPU per transaction (load %s) %s\n", r+1, with, res.tps, res.cpuPerTxn(), res.load, res.note)
			results = append(results, res)
		}
	}
	var sumWithout, sumWith, cpuWithout, cpuWith float64
	for _, r := range results {
		if r.with {
			sumWith += r.tps
			cpuWith += r.cpuPerTxn()
		} else {
			sumWithout += r.tps
			cpuWithout += r.cpuPerTxn()
		}
	}
	n := float64(rounds)
	without, with := sumWithout/n, sumWith/n
	cpuWithout, cpuWith = cpuWithout/n, cpuWith/n
	fmt.Printf("\ntrigger capture overhead: pgbench default script, scale %d, %d clients, %s per run, %d rounds, %d cores, %s\n\n",
		scale, clients, duration, rounds, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02"))
	fmt.Println("| run | triggers | tps | server CPU per txn | load avg (1 min) | note |")
	fmt.Println("|---|---|---|---|---|---|")
	for i, r := range results {
		on := "no"
		if r.with {
			on = "yes"
		}
		fmt.Printf("| %d | %s | %.0f | %.3f ms | %s | %s |\n", i+1, on, r.tps, r.cpuPerTxn(), r.load, r.note)
	}
	fmt.Printf("| mean | no | %.0f | %.3f ms | | |\n| mean | yes | %.0f | %.3f ms | | |\n", without, cpuWithout, with, cpuWith)
	fmt.Printf("\ntps with triggers / without = %.2f (loss %.1f %%; target ≤ 25 %%)\n", with/without, 100*(1-with/without))
	fmt.Printf("server CPU per transaction without / with = %.2f (the tps a CPU-bound source keeps: loss %.1f %%)\n",
		cpuWithout/cpuWith, 100*(1-cpuWithout/cpuWith))
	return nil
}

// oneRun runs pgbench once; with triggers it installs them first, takes a
// capture point, runs the ticker and a consumer during the run, and
// uninstalls afterwards.
func oneRun(ctx context.Context, dataDir, url, pgbench string, clients int, duration time.Duration, with bool) (runResult, error) {
	res := runResult{with: with}
	cpu0, err := clusterCPU(dataDir)
	if err != nil {
		return res, err
	}
	var stop func() (string, error)
	var out []byte
	if with {
		if stop, err = startCapture(ctx, url); err != nil {
			return res, err
		}
	}
	out, err = exec.CommandContext(ctx, pgbench, "-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(min(clients, 2)),
		"-T", strconv.Itoa(int(duration.Seconds())), url).CombinedOutput()
	res.load = benchkit.LoadAvg()
	if stop != nil {
		note, serr := stop()
		res.note = note
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		return res, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	time.Sleep(200 * time.Millisecond) // let the closed backends be reaped
	cpu1, err := clusterCPU(dataDir)
	if err != nil {
		return res, err
	}
	res.cpuSec = cpu1 - cpu0
	n := regexp.MustCompile(`number of transactions actually processed: ([0-9]+)`).FindSubmatch(out)
	if n == nil {
		return res, fmt.Errorf("no transaction count in pgbench output:\n%s", out)
	}
	res.txns, _ = strconv.ParseInt(string(n[1]), 10, 64)
	m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindSubmatch(out)
	if m == nil {
		return res, fmt.Errorf("no tps in pgbench output:\n%s", out)
	}
	res.tps, _ = strconv.ParseFloat(string(m[1]), 64)
	return res, nil
}

func startCapture(ctx context.Context, url string) (func() (string, error), error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	cfg := trigger.Config{TickInterval: time.Second}
	if _, err := trigger.Install(ctx, conn, cfg, zap.NewNop()); err != nil {
		return nil, err
	}
	cp, err := trigger.StartCapturePoint(ctx, url, zap.NewNop())
	if err != nil {
		return nil, err
	}
	cp.Release(ctx)
	capt, err := trigger.New(ctx, url, cfg, zap.NewNop(), nil)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	if !consume {
		cancel()
	}
	tickDone := make(chan error, 1)
	go func() { tickDone <- capt.RunTicker(cctx) }()
	type counts struct {
		batches, changes int64
		err              error
	}
	consDone := make(chan counts, 1)
	go func() {
		var c counts
		var applied int64
		for {
			b, err := capt.NextBatch(cctx, applied)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					c.err = err
				}
				consDone <- c
				return
			}
			cur, err := capt.Open(cctx, b)
			if err != nil {
				c.err = err
				consDone <- c
				return
			}
			for cur.Next(cctx) {
				c.changes++
			}
			err = cur.Err()
			cur.Close(ctx)
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					c.err = err
				}
				consDone <- c
				return
			}
			applied = b.ID
			c.batches++
			if _, err := capt.Purge(cctx, applied); err != nil && !errors.Is(err, context.Canceled) {
				c.err = err
				consDone <- c
				return
			}
		}
	}()
	return func() (string, error) {
		cancel()
		<-tickDone
		c := <-consDone
		capt.Close()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			return "", err
		}
		defer conn.Close(ctx)
		var left int64
		conn.QueryRow(ctx, "SELECT count(*) FROM replicator.changelog").Scan(&left)
		if err := trigger.Uninstall(ctx, conn); err != nil {
			return "", err
		}
		note := fmt.Sprintf("%d changes read in %d batches and purged; %d rows left at stop", c.changes, c.batches, left)
		return note, c.err
	}, nil
}

// clusterCPU is the CPU time, in seconds, used so far by the cluster of
// dataDir: the postmaster, its live children, and its exited children
// (backends of closed connections), from /proc (clock ticks of 1/100 s).
func clusterCPU(dataDir string) (float64, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("read postmaster.pid: %w", err)
	}
	pm := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	stat := func(pid string) (ppid string, ticks float64, ok bool) {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return "", 0, false
		}
		// fields after the parenthesized command name
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v }
		// f[1] ppid, f[11] utime, f[12] stime, f[13] cutime, f[14] cstime
		ticks = num(11) + num(12)
		if pid == pm {
			ticks += num(13) + num(14)
		}
		return f[1], ticks, true
	}
	_, total, ok := stat(pm)
	if !ok {
		return 0, fmt.Errorf("postmaster %s is not running", pm)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		if ppid, t, ok := stat(e.Name()); ok && ppid == pm {
			total += t
		}
	}
	return total / 100, nil
}
