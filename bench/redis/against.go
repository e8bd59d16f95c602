package main

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

// runAgainst compares two builds of `replicator redis sync` on one
// source: the binary old and the current code, in rounds of old new new
// old, each into a fresh redis-server. Beside the wall time it reports
// the CPU time each side used, which the machine's load changes much
// less: the replicator's (user + system, from its rusage) and the
// target's (INFO cpu, the redis-server process's own rusage, as
// /proc/PID/stat counts it). Every copy must match the source's DEBUG
// DIGEST.
//
//	go build -o /tmp/old/replicator ./cmd/replicator   # at the older commit
//	go run ./bench/redis -keys 430000 -rounds 2 -against /tmp/old/replicator
func runAgainst(keys, rounds int, old string) error {
	ctx := context.Background()
	work, bin, src, done, err := setUp("bench-redis-", keys, fill)
	if err != nil {
		return err
	}
	defer done()
	c := src.Client(0)
	defer c.Close()
	dbsize, _ := c.DBSize(ctx).Result()
	want, err := digest(ctx, src)
	if err != nil {
		return err
	}
	type result struct{ wall, cpu, target time.Duration }
	res := map[string][]result{}
	one := func(name, bin string) error {
		t, err := testenv.StartRedis(testenv.RedisOptions{})
		if err != nil {
			return err
		}
		defer t.Close()
		load := benchkit.LoadAvg()
		cmd := exec.CommandContext(ctx, bin, "redis", "sync", "--source", src.URL(0), "--target", t.URL(0), "--metrics-addr", "", "--log-format", "json")
		log := benchkit.LogFile(work, "bench")
		cmd.Stdout, cmd.Stderr = log, log
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s redis sync: %w", name, err)
		}
		r := result{wall: time.Since(start), cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
		if r.target, err = serverCPU(ctx, t); err != nil {
			return err
		}
		if err := sameDigest(ctx, t, want); err != nil {
			return fmt.Errorf("%s redis sync: %w", name, err)
		}
		res[name] = append(res[name], r)
		fmt.Printf("  %-4s wall %6.2f s  replicator CPU %5.2f s  target CPU %5.2f s  (load before %s)\n", name, r.wall.Seconds(), r.cpu.Seconds(), r.target.Seconds(), load)
		return nil
	}
	fmt.Printf("%d keys; rounds of old new new old\n", dbsize)
	for range rounds {
		for _, name := range []string{"old", "new", "new", "old"} {
			b := bin
			if name == "old" {
				b = old
			}
			if err := one(name, b); err != nil {
				return err
			}
		}
	}
	ratios := func(f func(result) time.Duration) string {
		var r []float64
		for i := range res["new"] {
			r = append(r, f(res["new"][i]).Seconds()/f(res["old"][i]).Seconds())
		}
		sort.Float64s(r)
		med := (r[(len(r)-1)/2] + r[len(r)/2]) / 2
		return fmt.Sprintf("%s; median %.2f", fmtRatios(r), med)
	}
	fmt.Printf("\nnew/old per pair (sorted), %s, load after %s:\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), benchkit.LoadAvg())
	fmt.Printf("  wall time       %s\n", ratios(func(r result) time.Duration { return r.wall }))
	fmt.Printf("  replicator CPU  %s\n", ratios(func(r result) time.Duration { return r.cpu }))
	fmt.Printf("  target CPU      %s\n", ratios(func(r result) time.Duration { return r.target }))
	return nil
}

// serverCPU is the CPU time redis-server r has used (INFO cpu: its
// process's user + system time).
func serverCPU(ctx context.Context, r *testenv.Redis) (time.Duration, error) {
	c := r.Client(0)
	defer c.Close()
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		for _, f := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(l, f); ok {
				x, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return 0, fmt.Errorf("INFO cpu %q: %w", l, err)
				}
				total += x
			}
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}
