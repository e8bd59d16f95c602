package main

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

// runCluster (-cluster) times `replicator redis sync` from one source into
// a single-node target (A) and into a local 3-master Redis Cluster (B),
// in the order A B B A, emptying the target before each run, and reports
// keys/s for each, the median of the two pairs' ratios, the peak RSS and
// the machine's load. The single-node copy must match the source's DEBUG
// DIGEST; the cluster copy must hold as many keys as the source and every
// key of a 2000-key random sample must DUMP the same through the cluster.
func runCluster(keys int) error {
	ctx := context.Background()
	work, bin, src, done, err := setUp("bench-redis-cluster-", keys, fillMixed)
	if err != nil {
		return err
	}
	defer done()
	single, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		return err
	}
	defer single.Close()
	cl, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		return err
	}
	defer cl.Close()
	c := slowClient(src)
	defer c.Close()
	dbsize, _ := c.DBSize(ctx).Result()
	mem, _ := c.Info(ctx, "memory").Result()
	srcDigest, err := c.Do(ctx, "DEBUG", "DIGEST").Text()
	if err != nil {
		return err
	}
	fmt.Printf("source: %d keys, %s\n", dbsize, usedMemory(mem))

	type run struct {
		wall time.Duration
		rss  int64
	}
	var singleRuns, clusterRuns []run
	for i, target := range []string{"single", "cluster", "cluster", "single"} {
		url := single.URL(0)
		if target == "cluster" {
			url = cl.URL()
		}
		if err := emptyTargets(ctx, single, cl); err != nil {
			return err
		}
		wall, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, fmt.Sprintf("run%d", i)), nil, bin, "redis", "sync",
			"--source", src.URL(0), "--target", url, "--metrics-addr", "", "--log-format", "json")
		if err != nil {
			return err
		}
		if target == "single" {
			if err := sameDigestSlow(ctx, single, srcDigest); err != nil {
				return fmt.Errorf("single-node target: %w", err)
			}
			singleRuns = append(singleRuns, run{wall, rss})
		} else {
			if err := sameInCluster(ctx, c, cl, dbsize); err != nil {
				return fmt.Errorf("cluster target: %w", err)
			}
			clusterRuns = append(clusterRuns, run{wall, rss})
		}
		fmt.Printf("run %d (%s): %.1f s, %.0f keys/s, peak RSS %d MB, load %s\n", i+1, target, wall.Seconds(), float64(dbsize)/wall.Seconds(), rss>>20, benchkit.LoadAvg())
	}
	// Pairs (A1,B1) and (A2,B2) as run: A B | B A.
	ratios := []float64{
		clusterRuns[0].wall.Seconds() / singleRuns[0].wall.Seconds(),
		clusterRuns[1].wall.Seconds() / singleRuns[1].wall.Seconds(),
	}
	sort.Float64s(ratios)
	med := (ratios[0] + ratios[1]) / 2
	medWall := func(rs []run) time.Duration { return (rs[0].wall + rs[1].wall) / 2 }
	maxRSS := func(rs []run) int64 { return max(rs[0].rss, rs[1].rss) }
	fmt.Printf("\nredis sync into a 3-shard cluster vs a single node: %d keys (%s), %s, load %s\n\n", dbsize, usedMemory(mem), time.Now().UTC().Format("2006-01-02"), benchkit.LoadAvg())
	fmt.Printf("| target | wall time (mean of 2) | keys/s | peak RSS |\n|---|---|---|---|\n")
	fmt.Printf("| single node | %.1f s | %.0f | %d MB |\n", medWall(singleRuns).Seconds(), float64(dbsize)/medWall(singleRuns).Seconds(), maxRSS(singleRuns)>>20)
	fmt.Printf("| 3-shard cluster | %.1f s | %.0f | %d MB |\n", medWall(clusterRuns).Seconds(), float64(dbsize)/medWall(clusterRuns).Seconds(), maxRSS(clusterRuns)>>20)
	fmt.Printf("\ncluster / single wall-time ratio per pair: %.2f, %.2f; median %.2f\n", ratios[0], ratios[1], med)
	return nil
}

// fillMixed fills r with ~keys keys in the mix run uses.
func fillMixed(r *testenv.Redis, keys int) error {
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
		args := append([]string{"-h", "127.0.0.1", "-p", fmt.Sprint(r.Port), "-q", "-P", "64", "-c", "8"}, f...)
		if out, err := exec.Command("redis-benchmark", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("redis-benchmark %s: %v\n%s", strings.Join(f, " "), err, out)
		}
	}
	return nil
}

// slowClient is a client whose reads may take minutes (DEBUG DIGEST and
// FLUSHALL of a large keyspace on a busy machine).
func slowClient(r *testenv.Redis) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr(), ReadTimeout: 5 * time.Minute, MaxRetries: -1})
}

func sameDigestSlow(ctx context.Context, r *testenv.Redis, want string) error {
	c := slowClient(r)
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

func emptyTargets(ctx context.Context, single *testenv.Redis, cl *testenv.RedisCluster) error {
	for _, r := range append([]*testenv.Redis{single}, cl.Nodes...) {
		c := slowClient(r)
		err := c.FlushAll(ctx).Err()
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// sameInCluster checks the key count over all shards and a random sample
// of keys, DUMPed from the source and through the cluster.
func sameInCluster(ctx context.Context, src *redis.Client, cl *testenv.RedisCluster, want int64) error {
	var total int64
	for _, n := range cl.Nodes {
		c := slowClient(n)
		k, err := c.DBSize(ctx).Result()
		c.Close()
		if err != nil {
			return err
		}
		total += k
	}
	if total != want {
		return fmt.Errorf("%d keys over the shards, the source has %d", total, want)
	}
	cc := cl.Client()
	defer cc.Close()
	for i := 0; i < 2000; i++ {
		k, err := src.RandomKey(ctx).Result()
		if err != nil {
			return err
		}
		a, err := canonical(ctx, src, k)
		if err != nil {
			return err
		}
		b, err := canonical(ctx, cc, k)
		if err != nil {
			return fmt.Errorf("key %q: %w", k, err)
		}
		if a != b {
			return fmt.Errorf("key %q differs", k)
		}
	}
	return nil
}

// canonical is a key's type and value in an order-independent form (a
// DUMP payload is not: a set's or hash's members come in hash-table
// order, which differs between two servers holding the same members).
func canonical(ctx context.Context, c redis.Cmdable, k string) (string, error) {
	typ, err := c.Type(ctx, k).Result()
	if err != nil {
		return "", err
	}
	var v []string
	switch typ {
	case "string":
		s, err := c.Get(ctx, k).Result()
		return typ + " " + s, err
	case "list":
		v, err = c.LRange(ctx, k, 0, -1).Result()
	case "set":
		v, err = c.SMembers(ctx, k).Result()
		sort.Strings(v)
	case "hash":
		var m map[string]string
		m, err = c.HGetAll(ctx, k).Result()
		for f, x := range m {
			v = append(v, f+"="+x)
		}
		sort.Strings(v)
	case "zset":
		var zs []redis.Z
		zs, err = c.ZRangeWithScores(ctx, k, 0, -1).Result()
		for _, z := range zs {
			v = append(v, fmt.Sprintf("%v=%v", z.Member, z.Score))
		}
	default:
		return "", fmt.Errorf("type %s not compared", typ)
	}
	return typ + " " + strings.Join(v, "\x00"), err
}
