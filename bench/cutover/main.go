// Command cutover measures the write freeze of `replicator cutover
// --fence` as the application sees it: a client writes at a steady rate
// (one UPDATE of a random pgbench account per write) to the source; the
// freeze runs from its first refused write to its first write accepted on
// the target, which it starts once cutover prints the switch. The time is
// taken by the writing client, not by the tool; the tool's own "write
// freeze" line is shown beside it.
//
//	go run ./bench/cutover -scales 20,200 -rate 200
//
// For each scale one pgbench source is built (wal_level=logical), and four
// cutovers run against fresh copies of it, alternating the verification
// inside the freeze (A B B A): logical capture with --verify full (the
// full comparison before the fence, inside the freeze only the rows
// written since), logical with --verify full-in-freeze (every table inside
// the freeze, the way it was done before), then trigger capture in the
// opposite order. Each copy is made by `replicator snapshot`, streamed by
// `replicator stream`, and undone afterwards (--unfence, cleanup). The
// load average is printed with every run: the machine may be shared.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

func main() {
	scales := flag.String("scales", "20", "pgbench scales, comma-separated (20 is about 300 MB, 200 about 3 GB)")
	rate := flag.Int("rate", 200, "the client's writes per second")
	only := flag.String("runs", "", "runs to do, comma-separated capture/verify (e.g. logical/full); default the four A B B A runs")
	flag.Parse()
	if err := run(*scales, *rate, *only); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type runSpec struct{ capture, verify string }

var defaultRuns = []runSpec{{"logical", "full"}, {"logical", "full-in-freeze"}, {"trigger", "full-in-freeze"}, {"trigger", "full"}}

type result struct {
	scale        int
	spec         runSpec
	sizeMB       int64
	clientFreeze time.Duration // first refused write to first write accepted on the target
	toolFreeze   string        // the tool's own line
	cutoverWall  time.Duration
	writes       int64
	load         string
}

func run(scalesFlag string, rate int, only string) error {
	ctx := context.Background()
	runs := defaultRuns
	if only != "" {
		runs = nil
		for _, r := range strings.Split(only, ",") {
			c, v, ok := strings.Cut(r, "/")
			if !ok {
				return fmt.Errorf("-runs %q: use capture/verify, e.g. logical/full", r)
			}
			runs = append(runs, runSpec{c, v})
		}
	}
	work, err := os.MkdirTemp("", "bench-cutover-")
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "logs in", work)
	bin := filepath.Join(work, "replicator")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/replicator").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v\n%s", err, out)
	}
	settings := map[string]string{"max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'", "max_connections": "100"}
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
	log := benchkit.LogFile(work, "bench")
	pgbench, err := exec.LookPath("pgbench")
	if err != nil {
		return err
	}
	var results []result
	for _, sc := range strings.Split(scalesFlag, ",") {
		scale, err := strconv.Atoi(sc)
		if err != nil {
			return fmt.Errorf("-scales %q: %w", sc, err)
		}
		db := fmt.Sprintf("pgb%d", scale)
		if err := benchkit.Exec(ctx, src.URL("postgres"), "CREATE DATABASE "+db); err != nil {
			return err
		}
		srcURL := src.URL(db)
		started := time.Now()
		if _, _, err := benchkit.Run(ctx, log, nil, pgbench, "-i", "-q", "-s", fmt.Sprint(scale), srcURL); err != nil {
			return err
		}
		var size int64
		if err := benchkit.QueryRow(ctx, srcURL, "SELECT pg_database_size(current_database())", &size); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "scale %d: %d MB built in %s\n", scale, size>>20, time.Since(started).Round(time.Second))
		for i, spec := range runs {
			r, err := one(ctx, log, bin, srcURL, dst, fmt.Sprintf("t%d_%d", scale, i), spec, rate)
			if err != nil {
				return fmt.Errorf("scale %d %s/%s: %w", scale, spec.capture, spec.verify, err)
			}
			r.scale, r.sizeMB = scale, size>>20
			results = append(results, r)
			fmt.Fprintf(os.Stderr, "scale %d %s/%s: client freeze %.2f s, %s, cutover %.1f s, load %s\n",
				scale, spec.capture, spec.verify, r.clientFreeze.Seconds(), r.toolFreeze, r.cutoverWall.Seconds(), r.load)
		}
		if err := benchkit.Exec(ctx, src.URL("postgres"), "DROP DATABASE "+db); err != nil {
			return err
		}
	}
	report(os.Stdout, results, rate)
	return nil
}

// one copies the source into a fresh target database, streams, and runs a
// fenced cutover while the client writes.
func one(ctx context.Context, log io.Writer, bin, srcURL string, dst *testenv.Postgres, db string, spec runSpec, rate int) (result, error) {
	res := result{spec: spec}
	if err := benchkit.Exec(ctx, dst.URL("postgres"), "CREATE DATABASE "+db); err != nil {
		return res, err
	}
	dstURL := dst.URL(db)
	defer benchkit.Exec(ctx, dst.URL("postgres"), "DROP DATABASE "+db+" WITH (FORCE)")
	if _, _, err := benchkit.Run(ctx, log, nil, bin, "snapshot", "--source", srcURL, "--target", dstURL,
		"--capture", spec.capture, "--jobs", "2", "--replica-identity-full", "--metrics-addr", "", "--log-format", "json"); err != nil {
		return res, err
	}
	stream := exec.Command(bin, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")
	stream.Stdout, stream.Stderr = log, log
	if err := stream.Start(); err != nil {
		return res, err
	}
	streamDone := make(chan struct{})
	go func() { stream.Wait(); close(streamDone) }()
	defer func() {
		stream.Process.Signal(syscall.SIGTERM)
		select {
		case <-streamDone:
		case <-time.After(time.Minute):
			stream.Process.Kill()
			<-streamDone
		}
		// Give the source back for the next run: lift the fence, remove
		// slot, publication, triggers and bookkeeping.
		benchkit.Run(ctx, log, nil, bin, "cutover", "--unfence", "--source", srcURL, "--target", dstURL, "--log-format", "json")
		benchkit.Run(ctx, log, nil, bin, "cleanup", "--source", srcURL, "--target", dstURL, "--log-format", "json", "--yes")
	}()

	var accounts int64
	if err := benchkit.QueryRow(ctx, srcURL, "SELECT count(*) FROM pgbench_accounts", &accounts); err != nil {
		return res, err
	}
	w := &writer{src: srcURL, dst: dstURL, accounts: accounts, rate: rate, switched: make(chan struct{})}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	writerDone := make(chan error, 1)
	go func() { writerDone <- w.run(wctx) }()
	// A steady state first: the stream applies the client's writes.
	time.Sleep(5 * time.Second) // not synchronisation: the warm-up the measurement starts after

	cut := exec.Command(bin, "cutover", "--source", srcURL, "--target", dstURL, "--fence", "--verify", spec.verify,
		"--timeout", "30m", "--log-format", "json")
	stdout, err := cut.StdoutPipe()
	if err != nil {
		return res, err
	}
	cut.Stderr = log
	started := time.Now()
	if err := cut.Start(); err != nil {
		return res, err
	}
	sc := bufio.NewScanner(stdout)
	var switchOnce sync.Once
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(log, "cutover:", line)
		if strings.HasPrefix(line, "write freeze: ") {
			res.toolFreeze = line
		}
		// The app is told to switch when cutover prints the switch step.
		if strings.HasPrefix(line, "step 7/") {
			switchOnce.Do(func() { close(w.switched) })
		}
	}
	if err := cut.Wait(); err != nil {
		return res, fmt.Errorf("cutover: %w (see the log)", err)
	}
	res.cutoverWall = time.Since(started)
	res.load = benchkit.LoadAvg()
	select {
	case err := <-writerDone:
		if err != nil {
			return res, err
		}
	case <-time.After(time.Minute):
		return res, errors.New("the client made no write on the target within a minute of the switch")
	}
	res.clientFreeze = w.acceptedAt.Sub(w.refusedAt)
	res.writes = w.writes
	return res, nil
}

// writer is the application: rate writes a second to the source until one
// is refused, then, once told to switch, to the target until one commits.
type writer struct {
	src, dst   string
	accounts   int64
	rate       int
	switched   chan struct{}
	refusedAt  time.Time
	acceptedAt time.Time
	writes     int64
}

func (w *writer) run(ctx context.Context) error {
	write := func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = $1`, 1+rand.Int64N(w.accounts))
		return err
	}
	conn, err := pgx.Connect(ctx, w.src)
	if err != nil {
		return err
	}
	tick := time.NewTicker(time.Second / time.Duration(w.rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			conn.Close(context.Background())
			return ctx.Err()
		case <-tick.C:
		}
		if conn.IsClosed() {
			if conn, err = pgx.Connect(ctx, w.src); err != nil {
				return err
			}
		}
		if err := write(conn); err != nil {
			// Refused by the fence (or the session was ended by it).
			w.refusedAt = time.Now()
			conn.Close(context.Background())
			break
		}
		w.writes++
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-w.switched:
	}
	conn, err = pgx.Connect(ctx, w.dst)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for {
		if err := write(conn); err == nil {
			w.acceptedAt = time.Now()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func report(out io.Writer, rs []result, rate int) {
	fmt.Fprintf(out, "\nwrite freeze as the client saw it, %d writes/s, machine load (1 min) per run; %s\n\n", rate, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintln(out, "| scale | size | capture | verification | client freeze | tool's freeze line | cutover wall | load |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(out, "| %d | %d MB | %s | %s | %.2f s | %s | %.1f s | %s |\n", r.scale, r.sizeMB, r.spec.capture, r.spec.verify,
			r.clientFreeze.Seconds(), strings.TrimPrefix(r.toolFreeze, "write freeze: "), r.cutoverWall.Seconds(), r.load)
	}
	// Pairs by scale and capture: full-in-freeze over full.
	type key struct {
		scale   int
		capture string
	}
	pairs := map[key][2]time.Duration{}
	for _, r := range rs {
		k := key{r.scale, r.spec.capture}
		p := pairs[k]
		if r.spec.verify == "full" {
			p[0] = r.clientFreeze
		} else {
			p[1] = r.clientFreeze
		}
		pairs[k] = p
	}
	byScale := map[int][]float64{}
	for k, p := range pairs {
		if p[0] > 0 && p[1] > 0 {
			byScale[k.scale] = append(byScale[k.scale], float64(p[1])/float64(p[0]))
		}
	}
	var scales []int
	for s := range byScale {
		scales = append(scales, s)
	}
	sort.Ints(scales)
	for _, s := range scales {
		v := byScale[s]
		sort.Float64s(v)
		med := v[len(v)/2]
		if len(v)%2 == 0 {
			med = (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		fmt.Fprintf(out, "\nscale %d: median ratio of the pairs (full-in-freeze / full) %.2f over %d pairs\n", s, med, len(v))
	}
	up, _ := exec.Command("uptime").Output()
	fmt.Fprintf(out, "\nuptime: %s", up)
}
