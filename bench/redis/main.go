// Command redis is the side-by-side Redis sync benchmark: it fills a source
// redis-server with a mixed dataset by redis-benchmark (strings, hashes,
// lists, sets, sorted sets), then times `replicator redis sync` into one
// empty target and the target's own full sync (REPLICAOF the source) into
// another, one after the other, and checks both with DEBUG DIGEST against
// the source.
//
//	go run ./bench/redis -keys 800000
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

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

func main() {
	keys := flag.Int("keys", 800000, "approximate number of keys in the source")
	flag.Parse()
	if err := run(*keys); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(keys int) error {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "bench-redis-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "replicator")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/replicator").CombinedOutput(); err != nil {
		return fmt.Errorf("build replicator (run from the repository root): %v\n%s", err, out)
	}
	src, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		return err
	}
	defer src.Close()
	t1, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		return err
	}
	defer t1.Close()
	t2, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		return err
	}
	defer t2.Close()

	// Mixed types: 40 % strings, 15 % each of hashes, lists, sets and
	// sorted sets, several members per collection.
	fmt.Printf("filling the source with ~%d keys of mixed types ...\n", keys)
	n := func(share float64) string { return fmt.Sprint(int(float64(keys) * share)) }
	fills := [][]string{
		{"-r", n(0.40), "-n", n(0.60), "-d", "100", "-t", "set"},
		{"-r", n(0.15), "-n", n(0.60), "hset", "h:__rand_int__", "f__rand_int__", "value-__rand_int__"},
		{"-r", n(0.15), "-n", n(0.60), "rpush", "l:__rand_int__", "item-__rand_int__"},
		{"-r", n(0.15), "-n", n(0.60), "sadd", "s:__rand_int__", "member-__rand_int__"},
		{"-r", n(0.15), "-n", n(0.60), "zadd", "z:__rand_int__", "__rand_int__", "member-__rand_int__"},
	}
	for _, f := range fills {
		args := append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(src.Port), "-q", "-P", "64", "-c", "8"}, f...)
		if out, err := exec.Command("redis-benchmark", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(f, " "), err, out)
		}
	}
	c := src.Client(0)
	defer c.Close()
	dbsize, _ := c.DBSize(ctx).Result()
	mem, _ := c.Info(ctx, "memory").Result()
	srcDigest, err := c.Do(ctx, "DEBUG", "DIGEST").Text()
	if err != nil {
		return err
	}
	fmt.Printf("source: %d keys, %s\n", dbsize, usedMemory(mem))

	var results []benchkit.Result
	wall, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, "bench"), nil, bin, "redis", "sync", "--source", src.URL(0), "--target", t1.URL(0),
		"--metrics-addr", "", "--log-format", "json")
	if err != nil {
		return err
	}
	if err := sameDigest(ctx, t1, srcDigest); err != nil {
		return fmt.Errorf("replicator redis sync: %w", err)
	}
	results = append(results, benchkit.Result{Name: "replicator redis sync", Wall: wall, PeakRSS: rss, Note: "PSYNC, RESTORE pipelined"})

	c2 := t2.Client(0)
	defer c2.Close()
	start := time.Now()
	if err := c2.Do(ctx, "REPLICAOF", "127.0.0.1", fmt.Sprint(src.Port)).Err(); err != nil {
		return err
	}
	for {
		info, err := c2.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0") {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return fmt.Errorf("native full sync did not finish in 30 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	nativeWall := time.Since(start)
	c2.Do(ctx, "REPLICAOF", "NO", "ONE")
	if err := sameDigest(ctx, t2, srcDigest); err != nil {
		return fmt.Errorf("native full sync: %w", err)
	}
	results = append(results, benchkit.Result{Name: "REPLICAOF (native full sync)", Wall: nativeWall, Note: "disk-based RDB transfer and load"})

	fmt.Printf("\nredis sync benchmark: %d keys (%s), %s, load %s\n\n", dbsize, usedMemory(mem), time.Now().UTC().Format("2006-01-02"), benchkit.LoadAvg())
	benchkit.Print(os.Stdout, "REPLICAOF (native full sync)", results)
	return nil
}

func sameDigest(ctx context.Context, r *testenv.Redis, want string) error {
	c := r.Client(0)
	defer c.Close()
	got, err := c.Do(ctx, "DEBUG", "DIGEST").Text()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("DEBUG DIGEST %s differs from the source's %s", got, want)
	}
	return nil
}

func usedMemory(info string) string {
	for _, l := range strings.Split(info, "\n") {
		if strings.HasPrefix(l, "used_memory_human:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "used_memory_human:")) + " used"
		}
	}
	return "?"
}
