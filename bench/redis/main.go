// Command redis is the side-by-side Redis sync benchmark: it fills a source
// redis-server with a mixed dataset by redis-benchmark (strings, hashes,
// lists, sets, sorted sets), then times `replicator redis sync` and the
// target's own full sync (REPLICAOF the source), each into a fresh empty
// redis-server, in rounds of A B B A, and checks every copy with DEBUG
// DIGEST against the source. It prints the median of the pair ratios.
//
//	go run ./bench/redis -keys 430000 -rounds 2
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
)

func main() {
	keys := flag.Int("keys", 430000, "approximate number of keys in the source")
	rounds := flag.Int("rounds", 2, "rounds of A B B A (replicator, REPLICAOF, REPLICAOF, replicator)")
	cluster := flag.Bool("cluster", false, "compare a single-node target with a 3-shard cluster target (cluster.go) instead of the rounds")
	against := flag.String("against", "", "compare this replicator binary (an older build) with the current code, by wall time and CPU (against.go), instead of the rounds")
	flag.Parse()
	do := func() error { return run(*keys, *rounds) }
	if *against != "" {
		do = func() error { return runAgainst(*keys, *rounds, *against) }
	}
	if *cluster {
		do = func() error { return runCluster(*keys) }
	}
	if err := do(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(keys, rounds int) error {
	ctx := context.Background()
	work, bin, src, done, err := setUp("bench-redis-", keys, fill)
	if err != nil {
		return err
	}
	defer done()
	c := src.Client(0)
	defer c.Close()
	dbsize, _ := c.DBSize(ctx).Result()
	mem, _ := c.Info(ctx, "memory").Result()
	srcDigest, err := digest(ctx, src)
	if err != nil {
		return err
	}
	fmt.Printf("source: %d keys, %s\n", dbsize, usedMemory(mem))

	// Each method copies into a fresh, empty redis-server, so that the
	// native side really does a full sync (a replica that was detached
	// would resume with a partial one). Runs go A B B A per round, and
	// each adjacent pair gives one ratio: load drifting over the run
	// falls on both sides.
	loadBefore := benchkit.LoadAvg()
	type run struct {
		wall time.Duration
		rss  int64
	}
	var repl, native []run
	replicator := func() error {
		t, err := testenv.StartRedis(testenv.RedisOptions{})
		if err != nil {
			return err
		}
		defer t.Close()
		wall, rss, err := benchkit.Run(ctx, benchkit.LogFile(work, "bench"), nil, bin, "redis", "sync", "--source", src.URL(0), "--target", t.URL(0),
			"--metrics-addr", "", "--log-format", "json")
		if err != nil {
			return err
		}
		if err := sameDigest(ctx, t, srcDigest); err != nil {
			return fmt.Errorf("replicator redis sync: %w", err)
		}
		repl = append(repl, run{wall, rss})
		fmt.Printf("  replicator redis sync  %.2f s  %d MB\n", wall.Seconds(), rss>>20)
		return nil
	}
	replicaof := func() error {
		t, err := testenv.StartRedis(testenv.RedisOptions{})
		if err != nil {
			return err
		}
		defer t.Close()
		wall, err := fullSync(ctx, t, src.Port)
		if err != nil {
			return err
		}
		if err := sameDigest(ctx, t, srcDigest); err != nil {
			return fmt.Errorf("native full sync: %w", err)
		}
		native = append(native, run{wall, 0})
		fmt.Printf("  REPLICAOF              %.2f s\n", wall.Seconds())
		return nil
	}
	for range rounds {
		for _, m := range []func() error{replicator, replicaof, replicaof, replicator} {
			if err := m(); err != nil {
				return err
			}
		}
	}
	var ratios []float64
	var peak int64
	for i := range repl {
		ratios = append(ratios, repl[i].wall.Seconds()/native[i].wall.Seconds())
		peak = max(peak, repl[i].rss)
	}
	sort.Float64s(ratios)
	med := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		med = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	medWall := func(rs []run) time.Duration {
		w := make([]time.Duration, len(rs))
		for i, r := range rs {
			w[i] = r.wall
		}
		slices.Sort(w)
		return w[len(w)/2]
	}
	fmt.Printf("\nredis sync benchmark: %d keys (%s), %s, %d rounds A B B A, load %s before, %s after\n\n", dbsize, usedMemory(mem),
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), rounds, loadBefore, benchkit.LoadAvg())
	benchkit.Print(os.Stdout, "REPLICAOF (native full sync)", []benchkit.Result{
		{Name: "replicator redis sync", Wall: medWall(repl), PeakRSS: peak, Note: "PSYNC, RESTORE pipelined; median run, highest RSS"},
		{Name: "REPLICAOF (native full sync)", Wall: medWall(native), Note: "disk-based RDB transfer and load; median run"},
	})
	fmt.Printf("\npair ratios (replicator / REPLICAOF): %s; median %.2f\n", fmtRatios(ratios), med)
	return nil
}

// fill writes ~keys keys of mixed types into src by redis-benchmark: 40 %
// strings, 15 % each of hashes, lists, sets and sorted sets, several
// members per collection.
func fill(src *testenv.Redis, keys int) error {
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
	return nil
}

func fmtRatios(r []float64) string {
	var s []string
	for _, x := range r {
		s = append(s, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(s, " ")
}

// fullSync makes t a replica of the source on port and returns how long
// until its link is up with no sync in progress; t is detached after.
func fullSync(ctx context.Context, t *testenv.Redis, port int) (time.Duration, error) {
	c := t.Client(0)
	defer c.Close()
	start := time.Now()
	if err := c.Do(ctx, "REPLICAOF", "127.0.0.1", fmt.Sprint(port)).Err(); err != nil {
		return 0, err
	}
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			return 0, err
		}
		if strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0") {
			break
		}
		if time.Since(start) > 30*time.Minute {
			return 0, fmt.Errorf("native full sync did not finish in 30 minutes")
		}
		time.Sleep(20 * time.Millisecond) // polling a server-side state, not synchronising our own code
	}
	wall := time.Since(start)
	return wall, c.Do(ctx, "REPLICAOF", "NO", "ONE").Err()
}

// digest is DEBUG DIGEST, which takes seconds on a large dataset and a
// busy machine: longer than a client's default read timeout.
func digest(ctx context.Context, r *testenv.Redis) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: r.Addr(), ReadTimeout: 5 * time.Minute})
	defer c.Close()
	return c.Do(ctx, "DEBUG", "DIGEST").Text()
}

func sameDigest(ctx context.Context, r *testenv.Redis, want string) error {
	got, err := digest(ctx, r)
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

// setUp builds the replicator into a new work folder (named with prefix)
// and starts a source redis-server filled by fill with about keys keys;
// done stops the source and removes the folder.
func setUp(prefix string, keys int, fill func(*testenv.Redis, int) error) (work, bin string, src *testenv.Redis, done func(), err error) {
	if work, err = os.MkdirTemp("", prefix); err != nil {
		return "", "", nil, nil, err
	}
	bin = filepath.Join(work, "replicator")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/replicator").CombinedOutput(); err != nil {
		os.RemoveAll(work)
		return "", "", nil, nil, fmt.Errorf("build replicator (run from the repository root): %v\n%s", err, out)
	}
	if src, err = testenv.StartRedis(testenv.RedisOptions{}); err != nil {
		os.RemoveAll(work)
		return "", "", nil, nil, err
	}
	done = func() { src.Close(); os.RemoveAll(work) }
	if err = fill(src, keys); err != nil {
		done()
		return "", "", nil, nil, err
	}
	return work, bin, src, done, nil
}
