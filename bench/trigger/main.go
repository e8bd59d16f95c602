// Command trigger measures what trigger capture costs the application, the
// way the application sees it: two identical pgbench databases on one
// server, one of them captured, pgbench's default (TPC-B-like) script run
// against each in turn, A B B A …, with durable commits (fsync on,
// synchronous_commit on, full-page writes on). Each pair is one run of
// each database next to each other; the result is the median of the
// pairs' tps ratios (captured ÷ plain), with the 1-minute load average of
// every run, since the machine may be shared.
//
//	go run ./bench/trigger -scale 10 -clients 4 -jobs 2 -duration 20s -pairs 4 -stream both
//
// -stream off: nothing of the capture runs during the captured runs (the
// changelog is read and purged between runs, untimed); on: the ticker
// every second and a consumer that reads every batch through its cursor
// and purges it run on the source as in production (there is no target:
// apply is measured elsewhere); both: the two series, one after the
// other. Every run starts after a CHECKPOINT, so both databases pay the
// same full-page writes.
//
// -instructions instead counts, with callgrind in single-user backends,
// the instructions capture adds per row written and per whole pgbench
// transaction (instructions.go): figures independent of the machine's
// load, to compare variants of the capture function (-variant) and the
// cheapest row triggers there are (-floor). plain ÷ captured per
// transaction is the share of its tps a CPU-bound application keeps.
//
// -probe 1,4 instead looks for costs beyond instructions: WAL, server CPU
// and wait events per transaction of each database, by client count
// (probe.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
	"replicator/pkg/trigger"
)

type options struct {
	scale, clients, jobs, pairs int
	duration                    time.Duration
	stream                      string
}

func main() {
	var o options
	flag.IntVar(&o.scale, "scale", 10, "pgbench scale of each database")
	flag.IntVar(&o.clients, "clients", 4, "pgbench clients (-c)")
	flag.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	flag.DurationVar(&o.duration, "duration", 20*time.Second, "length of each pgbench run (-T)")
	flag.IntVar(&o.pairs, "pairs", 4, "pairs of runs (plain, captured) per series, in A B B A order")
	flag.StringVar(&o.stream, "stream", "both", "off, on or both: whether the ticker and a consumer run during the captured runs")
	instr := flag.Bool("instructions", false, "instead: count with callgrind the instructions capture adds per row and per pgbench transaction (single-user backends, pgbench scale 1)")
	only := flag.String("only", "", "with -instructions: count only the workloads whose name matches this regular expression")
	floor := flag.Bool("floor", false, "with -instructions: count also the cheapest plpgsql row triggers (RETURN NULL; INSERT of constants), with and without SECURITY DEFINER")
	var variants []variant
	flag.Func("variant", "with -instructions, repeatable: NAME=TEMPLATE:FILE counts also a copy of database TEMPLATE (plain or captured) with FILE's SQL run in it", func(s string) error {
		name, rest, ok1 := strings.Cut(s, "=")
		tmpl, file, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || (tmpl != "plain" && tmpl != "captured") {
			return fmt.Errorf("want NAME=plain:FILE or NAME=captured:FILE")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		variants = append(variants, variant{name, tmpl, string(b)})
		return nil
	})
	keep := flag.String("callgrind-out", "", "with -instructions: keep callgrind's output files in this directory")
	probeClients := flag.String("probe", "", "instead: for these client counts (e.g. 1,4), WAL, CPU and wait events per transaction of each database, stream off, -pairs pairs each")
	probeSQL := flag.String("probe-sql", "", "with -probe: a file of SQL run in the captured database first (an experiment)")
	flag.Parse()
	if *probeClients != "" {
		var cs []int
		for _, f := range strings.Split(*probeClients, ",") {
			c, err := strconv.Atoi(f)
			if err != nil || c < 1 {
				fmt.Fprintln(os.Stderr, "bench: -probe wants client counts such as 1,4")
				os.Exit(2)
			}
			cs = append(cs, c)
		}
		var sql []byte
		if *probeSQL != "" {
			var err error
			if sql, err = os.ReadFile(*probeSQL); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
				os.Exit(2)
			}
		}
		if err := probe(o, cs, string(sql)); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if *instr {
		var re *regexp.Regexp
		if *only != "" {
			var err error
			if re, err = regexp.Compile(*only); err != nil {
				fmt.Fprintln(os.Stderr, "bench: -only:", err)
				os.Exit(2)
			}
		}
		if *floor {
			variants = append(floors, variants...)
		}
		if err := instructions(re, variants, *keep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	if o.stream != "off" && o.stream != "on" && o.stream != "both" {
		fmt.Fprintln(os.Stderr, "bench: -stream must be off, on or both")
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type runResult struct {
	db     string
	tps    float64
	txns   int64
	cpuSec float64 // CPU seconds of every server process during the run
	load   string
}

// cpuPerTxn is server CPU milliseconds per pgbench transaction.
func (r runResult) cpuPerTxn() float64 { return 1000 * r.cpuSec / float64(r.txns) }

func run(o options) error {
	ctx := context.Background()
	src, capt, err := setUp(ctx, o, nil)
	if err != nil {
		return err
	}
	defer src.Close()
	defer capt.Close()
	pgbench := filepath.Join(src.BinDir, "pgbench")
	var applied int64
	series := []string{o.stream}
	if o.stream == "both" {
		series = []string{"off", "on"}
	}
	fmt.Printf("\ntrigger capture cost: pgbench default script, scale %d, -c %d -j %d -T %s, %d pairs per series, %d cores, durable commits, %s UTC\n",
		o.scale, o.clients, o.jobs, o.duration, o.pairs, runtime.NumCPU(), time.Now().UTC().Format("2006-01-02 15:04"))
	for _, stream := range series {
		var results []runResult
		var ratios []float64
		for p := 0; p < o.pairs; p++ {
			order := []string{"plain", "captured"}
			if p%2 == 1 {
				order = []string{"captured", "plain"}
			}
			pair := map[string]float64{}
			for _, db := range order {
				if err := benchkit.Exec(ctx, src.URL(db), "CHECKPOINT"); err != nil {
					return err
				}
				var stop func() (int64, error)
				if db == "captured" && stream == "on" {
					stop = consume(ctx, capt, applied)
				}
				res, err := pgbenchRun(ctx, src.DataDir, src.URL(db), pgbench, o)
				if stop != nil {
					a, serr := stop()
					applied = a
					if err == nil {
						err = serr
					}
				}
				if err != nil {
					return err
				}
				res.db = db
				results = append(results, res)
				pair[db] = res.tps
				if db == "captured" {
					// Untimed: the changelog read and purged, so every
					// captured run starts from a small one.
					if applied, err = drain(ctx, capt, applied); err != nil {
						return err
					}
				}
				fmt.Printf("stream %s, pair %d, %s: %.0f tps, %.3f ms server CPU per transaction (load %s)\n", stream, p+1, db, res.tps, res.cpuPerTxn(), res.load)
			}
			ratios = append(ratios, pair["captured"]/pair["plain"])
		}
		fmt.Printf("\nstream %s\n\n| run | database | tps | server CPU per txn | load avg (1 min) |\n|---|---|---|---|---|\n", stream)
		for i, r := range results {
			fmt.Printf("| %d | %s | %.0f | %.3f ms | %s |\n", i+1, r.db, r.tps, r.cpuPerTxn(), r.load)
		}
		var rs []string
		for _, r := range ratios {
			rs = append(rs, fmt.Sprintf("%.2f", r))
		}
		fmt.Printf("\npair ratios captured ÷ plain: %s; median **%.2f** (target ≥ 0.80)\n\n", strings.Join(rs, ", "), median(ratios))
	}
	fmt.Println("load at the end:", benchkit.LoadAvg())
	return nil
}

// pgbenchDatabases creates databases plain and captured on src, each
// initialised by pgbench at scale.
func pgbenchDatabases(ctx context.Context, src *testenv.Postgres, scale int) error {
	for _, db := range []string{"plain", "captured"} {
		if err := benchkit.Exec(ctx, src.URL("postgres"), "CREATE DATABASE "+db); err != nil {
			return err
		}
		fmt.Printf("pgbench -i -s %d %s\n", scale, db)
		if _, _, err := benchkit.Run(ctx, os.Stdout, nil, filepath.Join(src.BinDir, "pgbench"), "-i", "-q", "-s", strconv.Itoa(scale), src.URL(db)); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// pgbenchRun runs pgbench once against url.
func pgbenchRun(ctx context.Context, dataDir, url, pgbench string, o options) (runResult, error) {
	var res runResult
	cpu0, err := clusterCPU(dataDir)
	if err != nil {
		return res, err
	}
	out, err := exec.CommandContext(ctx, pgbench, "-n", "-c", strconv.Itoa(o.clients), "-j", strconv.Itoa(o.jobs),
		"-T", strconv.Itoa(int(o.duration.Seconds())), url).CombinedOutput()
	res.load = benchkit.LoadAvg()
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

// install puts trigger capture on url's database and takes the capture
// point (tick 0), as `replicator snapshot --capture trigger` does.
func install(ctx context.Context, url string) (*trigger.Capture, error) {
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
	return trigger.New(ctx, url, cfg, zap.NewNop(), nil)
}

// consume runs the ticker and a consumer reading and purging every batch
// after applied until the returned stop is called, which returns the last
// batch purged.
func consume(ctx context.Context, capt *trigger.Capture, applied int64) func() (int64, error) {
	cctx, cancel := context.WithCancel(ctx)
	tickDone := make(chan error, 1)
	go func() { tickDone <- capt.RunTicker(cctx) }()
	type done struct {
		applied int64
		err     error
	}
	consDone := make(chan done, 1)
	go func() {
		for {
			b, err := capt.NextBatch(cctx, applied)
			if err == nil {
				err = readBatch(cctx, capt, b)
			}
			if err == nil {
				_, err = capt.Purge(cctx, b.ID)
			}
			if err != nil {
				if errors.Is(err, context.Canceled) {
					err = nil
				}
				consDone <- done{applied, err}
				return
			}
			applied = b.ID
		}
	}()
	return func() (int64, error) {
		cancel()
		<-tickDone
		d := <-consDone
		return d.applied, d.err
	}
}

func readBatch(ctx context.Context, capt *trigger.Capture, b *trigger.Batch) error {
	cur, err := capt.Open(ctx, b)
	if err != nil {
		return err
	}
	for cur.Next(ctx) {
	}
	err = cur.Err()
	cur.Close(context.Background())
	return err
}

// drain ticks, then reads and purges every batch after applied.
func drain(ctx context.Context, capt *trigger.Capture, applied int64) (int64, error) {
	last, err := capt.Tick(ctx)
	if err != nil {
		return applied, err
	}
	for ; applied < last; applied++ {
		b, err := capt.NextBatch(ctx, applied)
		if err != nil {
			return applied, err
		}
		if err := readBatch(ctx, capt, b); err != nil {
			return applied, err
		}
	}
	_, err = capt.Purge(ctx, applied)
	return applied, err
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

// setUp starts the server the tps runs use (wal_level=replica, as on
// Heroku; durable commits, as in production; extra settings on top), with
// the two pgbench databases, capture installed in "captured".
func setUp(ctx context.Context, o options, extra map[string]string) (*testenv.Postgres, *trigger.Capture, error) {
	settings := map[string]string{"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
		"max_wal_size": "'4GB'", "checkpoint_timeout": "'30min'"}
	maps.Copy(settings, extra)
	src, err := testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica", Settings: settings})
	if err != nil {
		return nil, nil, err
	}
	if err := pgbenchDatabases(ctx, src, o.scale); err != nil {
		src.Close()
		return nil, nil, err
	}
	capt, err := install(ctx, src.URL("captured"))
	if err != nil {
		src.Close()
		return nil, nil, err
	}
	return src, capt, nil
}
