package redissync_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
	"replicator/pkg/redisverify"
)

// The follower under test runs in a child process (this test binary,
// re-executed) so that it can be killed with SIGKILL, as an operator's
// kill -9 or the OOM killer would.
const childFollowerEnv = "REDISSYNC_TEST_CHILD_FOLLOWER"

func runChildFollower() int {
	src, err := redis.ParseURL(os.Getenv("REDISSYNC_TEST_SOURCE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	dstOpts, err := redis.ParseURL(os.Getenv("REDISSYNC_TEST_TARGET"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log, _ := zap.NewProduction()
	_, err = redissync.Sync(context.Background(), redissync.SyncConfig{Source: src, Mode: "psync", Follow: true, DurablePosition: true,
		Writer: redissync.WriterConfig{Target: dstOpts}}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "follower:", err)
		return 1
	}
	return 0
}

type childFollower struct {
	cmd      *exec.Cmd
	log      string
	done     chan error
	precheck func() bool // when set, the data is compared only once it holds
}

func startChildFollower(t *testing.T, source, target *testenv.Redis, logFile string) *childFollower {
	t.Helper()
	return startChildFollowerURL(t, source.URL(0), target.URL(0), logFile)
}

func startChildFollowerURL(t *testing.T, source, target, logFile string) *childFollower {
	t.Helper()
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childFollowerEnv+"=1",
		"REDISSYNC_TEST_SOURCE="+source, "REDISSYNC_TEST_TARGET="+target)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childFollower{cmd: cmd, log: logFile, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait(); f.Close() }()
	t.Cleanup(func() { c.kill() })
	return c
}

func (c *childFollower) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
	c.done <- nil // a second kill returns at once
}

// syncStats reads the source's sync_full and sync_partial_ok (INFO stats):
// how many full and partial resynchronisations it served.
func syncStats(t *testing.T, r *testenv.Redis) (full, partial int64) {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	info, err := c.Info(context.Background(), "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "sync_full:"); ok {
			full, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(l, "sync_partial_ok:"); ok {
			partial, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return full, partial
}

// sameData compares what the two servers serve, key by key, leaving out
// the follower's own position keys on the target.
func sameData(t *testing.T, a, b *testenv.Redis) (bool, string) {
	return sameModels(redistest.ServerModel(t, a), redistest.ServerModel(t, b))
}

func sameModels(ma, mb map[string]*redistest.KeyModel) (bool, string) {
	for k := range mb {
		if name, ok := strings.CutPrefix(k, "0/"); ok && redissync.IsPositionKey(name) {
			delete(mb, k)
		}
	}
	for k, v := range ma {
		w, ok := mb[k]
		if !ok {
			return false, "missing " + k
		}
		if !redistest.SameValue(v, w) {
			return false, fmt.Sprintf("key %s differs: %s vs %s", k, v.Short(), w.Short())
		}
	}
	if len(ma) != len(mb) {
		return false, fmt.Sprintf("%d keys on the source, %d on the target", len(ma), len(mb))
	}
	return true, ""
}

func waitSameData(t *testing.T, a, b *testenv.Redis, c *childFollower, what string) {
	t.Helper()
	c.precheck = func() bool { return sameCount(t, []*testenv.Redis{a}, b) }
	waitSame(t, func() (bool, string) { return sameData(t, a, b) }, c, what)
}

// keyCount is how many keys r holds over every database, and of them
// how many are follow positions.
func keyCount(t *testing.T, nodes ...*testenv.Redis) (keys, positions int64) {
	t.Helper()
	ctx := context.Background()
	for _, n := range nodes {
		for db := 0; db < 16; db++ {
			c := n.Client(db)
			k, err := c.DBSize(ctx).Result()
			if err == nil && db == 0 {
				p, _ := c.Keys(ctx, redissync.PositionKey+"*").Result()
				positions += int64(len(p))
			}
			c.Close()
			if err != nil {
				if db > 0 {
					break // a cluster node has database 0 only
				}
				t.Fatal(err)
			}
			keys += k
		}
	}
	return keys, positions
}

// sameCount is a cheap precondition for the key-by-key comparison, which
// reads a server still being written to only once the counts agree.
func sameCount(t *testing.T, src []*testenv.Redis, dst *testenv.Redis) bool {
	a, _ := keyCount(t, src...)
	b, p := keyCount(t, dst)
	return a == b-p
}

func waitSame(t *testing.T, same func() (bool, string), c *childFollower, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ok, why := false, "key counts differ"
		if c.precheck == nil || c.precheck() {
			ok, why = same()
		}
		if ok {
			return
		}
		select {
		case err := <-c.done:
			log, _ := os.ReadFile(c.log)
			t.Fatalf("%s: the follower exited (%v):\n%s", what, err, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not identical within 60s: %s", what, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// appWrites runs non-idempotent writes (INCR, RPUSH, a transaction, a Lua
// script) in databases 0 and 1 until stop is closed: a command applied
// twice or lost after a resume shows as a difference.
func appWrites(t *testing.T, r *testenv.Redis, stop chan struct{}) func() int {
	var wg sync.WaitGroup
	var n int
	var failed error
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		c0, c1 := r.Client(0), r.Client(1)
		defer c0.Close()
		defer c1.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			c := c0
			if i%3 == 2 {
				c = c1
			}
			_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.Incr(ctx, "resume:counter")
				p.RPush(ctx, "resume:list", i)
				return nil
			})
			if err == nil {
				err = c.Incr(ctx, fmt.Sprintf("resume:c%d", i%17)).Err()
			}
			if err == nil && i%10 == 0 {
				err = c.Eval(ctx, "redis.call('INCR', KEYS[1]); return redis.call('LPUSH', KEYS[2], ARGV[1])", []string{"resume:lua", "resume:lualist"}, i).Err()
			}
			if err != nil {
				failed = err
				return
			}
			n++
		}
	}()
	return func() int {
		close(stop)
		wg.Wait()
		if failed != nil {
			t.Fatalf("app writes: %v", failed)
		}
		return n
	}
}

// A follower killed with -9 while the source is being written resumes from
// the position it stored on the target: the source serves a partial
// resynchronisation (sync_partial_ok) and no full one (sync_full), and the
// target ends identical, nothing lost and nothing applied twice.
func TestFollowResumesAfterKill9(t *testing.T) {
	// A backlog that holds what is written while the follower is down,
	// however far behind a loaded machine lets it fall.
	s := startExtra(t, "--repl-backlog-size", "64mb")
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	logFile := t.TempDir() + "/follower.log"
	f := startChildFollower(t, s, dst, logFile)
	waitSameData(t, s, dst, f, "after the initial copy")

	for round := 0; round < 2; round++ {
		full0, partial0 := syncStats(t, s)
		counter := func() int {
			c := dst.Client(0)
			defer c.Close()
			n, _ := c.Get(context.Background(), "resume:counter").Int()
			return n
		}
		before := counter()
		finish := appWrites(t, s, make(chan struct{}))
		// Kill while commands are flowing; the writes go on meanwhile.
		redistest.WaitFor(t, 30*time.Second, "the follower applying live writes", func() bool { return counter() > before+200 })
		f.kill()
		n := finish()
		t.Logf("round %d: %d app write rounds", round, n)
		f = startChildFollower(t, s, dst, logFile)
		waitSameData(t, s, dst, f, fmt.Sprintf("after kill -9 %d", round+1))
		full1, partial1 := syncStats(t, s)
		if full1 != full0 {
			t.Errorf("round %d: the source served %d full resynchronisations after the kill", round, full1-full0)
		}
		if partial1 != partial0+1 {
			t.Errorf("round %d: sync_partial_ok went from %d to %d, want one partial resynchronisation", round, partial0, partial1)
		}
	}
	// redis verify leaves the position key out and finds the copy identical.
	so, _ := redis.ParseURL(s.URL(0))
	rep, err := redisverify.Run(context.Background(), redisverify.Config{Source: so, Target: targetOptions(dst)}, zap.NewNop())
	if err != nil || !rep.Identical() {
		t.Errorf("redis verify after the resumes: %v, %+v", err, rep)
	}
	log, _ := os.ReadFile(logFile)
	if got := strings.Count(string(log), "resuming from the follow position stored on the target"); got != 2 {
		t.Errorf("log says %d times that it resumes from the stored position, want 2:\n%s", got, log)
	}
	if strings.Contains(string(log), "cannot continue") {
		t.Errorf("log mentions a full resynchronisation:\n%s", log)
	}
	if strings.Contains(string(log), "target-secret") {
		t.Errorf("the follower's log shows the target password")
	}
}

// When the source cannot continue (what was written while the follower was
// down no longer fits its backlog), the restarted follower resynchronises
// in full, says so in one line with the reason, and ends identical.
func TestFollowResumeFullWhenBacklogGone(t *testing.T) {
	s := startExtra(t, "--repl-backlog-size", "16kb")
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	logFile := t.TempDir() + "/follower.log"
	f := startChildFollower(t, s, dst, logFile)
	waitSameData(t, s, dst, f, "after the initial copy")
	f.kill()
	full0, _ := syncStats(t, s)
	c := s.Client(0)
	defer c.Close()
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if err := c.Set(ctx, fmt.Sprintf("big:%d", i), strings.Repeat("x", 1000), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del(ctx, "k1").Err(); err != nil {
		t.Fatal(err)
	}
	f = startChildFollower(t, s, dst, logFile)
	waitSameData(t, s, dst, f, "after the full resynchronisation")
	if full1, _ := syncStats(t, s); full1 != full0+1 {
		t.Errorf("sync_full went from %d to %d, want one full resynchronisation", full0, full1)
	}
	log, _ := os.ReadFile(logFile)
	var lines []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "the source cannot continue") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "backlog") {
		t.Errorf("want one log line about the full resynchronisation naming the backlog, got %q", lines)
	}
}

// A follower of a cluster source keeps one position per shard: killed
// with -9 and restarted, it resumes every shard with a partial
// resynchronisation (sync_partial_ok on each master) and no full one.
func TestFollowClusterSourceResumesAfterKill9(t *testing.T) {
	src, err := testenv.StartRedisCluster(3, testenv.RedisOptions{Password: "src-pass", Args: []string{"--repl-diskless-sync-delay", "0", "--repl-backlog-size", "64mb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	redistest.FlushAll(t, dst)
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	write := func(round int) {
		t.Helper()
		for i := 0; i < 300; i++ {
			if err := cc.Incr(ctx, fmt.Sprintf("c%d", i%50)).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cc.RPush(ctx, fmt.Sprintf("l%d", i%9), round).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0)
	same := func() (bool, string) {
		return sameModels(redistest.ClusterModel(t, src), redistest.ServerModel(t, dst))
	}
	logFile := t.TempDir() + "/follower.log"
	f := startChildFollowerURL(t, src.URL(), dst.URL(0), logFile)
	f.precheck = func() bool { return sameCount(t, src.Nodes, dst) }
	waitSame(t, same, f, "after the copy")
	write(1)
	waitSame(t, same, f, "after live writes")
	type stats struct{ full, partial int64 }
	before := map[int]stats{}
	for i, n := range src.Nodes {
		full, partial := syncStats(t, n)
		before[i] = stats{full, partial}
	}
	f.kill()
	write(2)
	f = startChildFollowerURL(t, src.URL(), dst.URL(0), logFile)
	f.precheck = func() bool { return sameCount(t, src.Nodes, dst) }
	waitSame(t, same, f, "after kill -9")
	for i, n := range src.Nodes {
		full, partial := syncStats(t, n)
		if full != before[i].full || partial != before[i].partial+1 {
			t.Errorf("shard %s: sync_full %d→%d, sync_partial_ok %d→%d; want one partial and no full resynchronisation",
				n.Addr(), before[i].full, full, before[i].partial, partial)
		}
	}
	c := dst.Client(0)
	defer c.Close()
	keys, err := c.Keys(ctx, redissync.PositionKey+"*").Result()
	if err != nil || len(keys) != 3 {
		t.Errorf("position keys on the target: %v (%v), want one per shard", keys, err)
	}
}
