package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"replicator/bench/benchkit"
)

// chunkedPairs runs `replicator snapshot` (the chunked copy, its
// default), `replicator snapshot --one-snapshot` and `pgcopydb clone` side
// by side, pairs times, in the order A C B, then B C A, then A C B …
// (after one uncounted run), and
// reports the median of the pairs' ratios; then one chunked run killed
// (SIGKILL) once half of its chunks are done and resumed, against the
// median uninterrupted one. During every replicator run the age of the oldest
// source transaction holding a snapshot (pg_stat_activity.xact_start of
// backends with a backend_xmin) is sampled every second.
func chunkedPairs(ctx context.Context, bin, work, srcURL string, newTarget func() (string, func()), jobs, pairs int,
	check func(target string) error) error {
	replicator := func(target string, extra ...string) (time.Duration, int64, error) {
		defer benchkit.Exec(ctx, srcURL, "SELECT pg_drop_replication_slot('replicator'); DROP PUBLICATION IF EXISTS replicator")
		args := append([]string{"snapshot", "--source", srcURL, "--target", target, "--jobs", fmt.Sprint(jobs),
			"--replica-identity-full", "--metrics-addr", "", "--log-format", "json"}, extra...)
		return benchkit.Run(ctx, benchkit.LogFile(work, "replicator"+strings.Join(extra, "")), nil, bin, args...)
	}
	pgcopydb := func(target string) (time.Duration, int64, error) {
		dir := work + "/pgcopydb"
		os.RemoveAll(dir)
		return benchkit.Run(ctx, benchkit.LogFile(work, "pgcopydb"), nil, "pgcopydb", "clone", "--source", srcURL, "--target", target,
			"--dir", dir, "--table-jobs", fmt.Sprint(jobs), "--index-jobs", fmt.Sprint(jobs), "--split-tables-larger-than", "64MB", "--no-owner", "--no-acl")
	}
	// The first copy into a fresh target cluster takes about half as long
	// again as any later one (scale 200 here: 34 s, then 23 s for the same
	// run, the target's system time doubled: it writes new WAL segments
	// rather than recycled ones). One run, not counted, goes first, so
	// that no method pays it; before, the method that went first in a
	// pair (the chunked copy in two of three pairs) did.
	{
		target, drop := newTarget()
		warm(ctx, srcURL)
		wall, _, err := replicator(target)
		drop()
		if err != nil {
			return fmt.Errorf("warm-up run: %w", err)
		}
		fmt.Printf("warm-up: replicator %.1f s (not counted)\n", wall.Seconds())
	}
	var ratios, oneRatios []float64
	var repWalls []time.Duration
	var maxXactAge time.Duration
	var peakRSS int64
	for p := 0; p < pairs; p++ {
		order := []string{"replicator", "one-snapshot", "pgcopydb"}
		if p%2 == 1 {
			order = []string{"pgcopydb", "one-snapshot", "replicator"}
		}
		walls := map[string]time.Duration{}
		for _, m := range order {
			target, drop := newTarget()
			warm(ctx, srcURL)
			var wall time.Duration
			var rss int64
			var err error
			switch m {
			case "replicator":
				stop := sampleXactAge(ctx, srcURL, &maxXactAge)
				wall, rss, err = replicator(target)
				stop()
				peakRSS = max(peakRSS, rss)
			case "one-snapshot":
				wall, _, err = replicator(target, "--one-snapshot")
			default:
				wall, _, err = pgcopydb(target)
			}
			if err == nil {
				err = check(target)
			}
			drop()
			if err != nil {
				return fmt.Errorf("pair %d, %s: %w", p+1, m, err)
			}
			walls[m] = wall
			fmt.Printf("pair %d: %s %.1f s\n", p+1, m, wall.Seconds())
		}
		repWalls = append(repWalls, walls["replicator"])
		ratios = append(ratios, walls["replicator"].Seconds()/walls["pgcopydb"].Seconds())
		oneRatios = append(oneRatios, walls["replicator"].Seconds()/walls["one-snapshot"].Seconds())
	}
	slices.Sort(ratios)
	slices.Sort(oneRatios)
	slices.Sort(repWalls)

	// Killed at 50 % of its chunks, then resumed.
	target, drop := newTarget()
	defer drop()
	warm(ctx, srcURL)
	stop := sampleXactAge(ctx, srcURL, &maxXactAge)
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "snapshot", "--source", srcURL, "--target", target, "--jobs", fmt.Sprint(jobs),
		"--replica-identity-full", "--metrics-addr", "", "--log-format", "json")
	log := benchkit.LogFile(work, "replicator-killed")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	half := false
	for deadline := time.Now().Add(30 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var total, done int
		if benchkit.QueryRow(ctx, target, `SELECT count(*), count(snapshot) FROM replicator.chunks`, &total, &done) == nil && total > 0 && done*2 >= total {
			half = true
			break
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	killedAt := time.Since(start)
	if !half {
		return fmt.Errorf("the chunked run never reached half of its chunks")
	}
	resumed, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, "replicator-resumed"), nil, bin, "snapshot",
		"--source", srcURL, "--target", target, "--jobs", fmt.Sprint(jobs), "--replica-identity-full", "--metrics-addr", "", "--log-format", "json")
	stop()
	benchkit.Exec(ctx, srcURL, "SELECT pg_drop_replication_slot('replicator'); DROP PUBLICATION IF EXISTS replicator")
	if err != nil {
		return fmt.Errorf("resumed run: %w", err)
	}
	if err := check(target); err != nil {
		return fmt.Errorf("resumed run: %w", err)
	}
	peakRSS = max(peakRSS, rss)
	median := func(d []time.Duration) time.Duration { return (d[(len(d)-1)/2] + d[len(d)/2]) / 2 }
	fmt.Printf("\nchunked snapshot vs pgcopydb clone, --jobs %d, %d pairs (A B B A), load %s, %s\n", jobs, pairs, benchkit.LoadAvg(), time.Now().UTC().Format("2006-01-02"))
	fmt.Printf("  pair ratios replicator/pgcopydb: %.2f; median %.2f ×\n", ratios, (ratios[(len(ratios)-1)/2]+ratios[len(ratios)/2])/2)
	fmt.Printf("  pair ratios replicator/replicator --one-snapshot: %.2f; median %.2f ×\n", oneRatios, (oneRatios[(len(oneRatios)-1)/2]+oneRatios[len(oneRatios)/2])/2)
	fmt.Printf("  killed at 50 %% after %.1f s, resumed in %.1f s: %.1f s in all, %.2f × the median uninterrupted run (%.1f s)\n",
		killedAt.Seconds(), resumed.Seconds(), (killedAt + resumed).Seconds(), (killedAt+resumed).Seconds()/median(repWalls).Seconds(), median(repWalls).Seconds())
	fmt.Printf("  oldest source transaction with a snapshot during replicator runs: %.1f s (%s)\n", maxXactAge.Seconds(), oldestXact)
	fmt.Printf("  replicator peak RSS: %d MB\n", peakRSS>>20)
	return nil
}

// sampleXactAge keeps in *maxAge the oldest age seen, once a second, of a
// source transaction that holds a snapshot (a backend_xmin), until the
// returned stop; oldestXact says which backend it was.
func sampleXactAge(ctx context.Context, srcURL string, maxAge *time.Duration) (stop func()) {
	var running atomic.Bool
	running.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for running.Load() {
			var secs float64
			var who string
			if benchkit.QueryRow(ctx, srcURL, `SELECT coalesce(extract(epoch FROM now() - xact_start), 0)::float8,
					backend_type || ' ' || state || ': ' || left(query, 120)
				FROM pg_stat_activity
				WHERE backend_xmin IS NOT NULL AND pid <> pg_backend_pid() AND datname = current_database()
				ORDER BY xact_start LIMIT 1`, &secs, &who) == nil {
				if age := time.Duration(secs * float64(time.Second)); age > *maxAge {
					*maxAge, oldestXact = age, who
				}
			}
			time.Sleep(time.Second)
		}
	}()
	return func() { running.Store(false); <-done }
}

// oldestXact describes the backend whose transaction was the oldest seen.
var oldestXact string
