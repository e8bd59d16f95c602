package redissync_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

// A cluster source whose shard fails over while it is followed (CLUSTER
// FAILOVER on the master's replica): the shard's follower finds the
// promoted replica, continues the stream there with PSYNC (no full
// resynchronisation: the new master serves none), and the target ends
// identical, with INCRs written before and after the failover each
// applied once.
func TestFollowClusterSourceAcrossFailover(t *testing.T) {
	src, err := testenv.StartRedisClusterWithReplicas(3, 1, testenv.RedisOptions{Password: "src-pass",
		Args: []string{"--repl-diskless-sync-delay", "0", "--repl-backlog-size", "16mb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := startExtra(t)
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	for i := 0; i < 200; i++ {
		if err := cc.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	obs, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obs))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: sourceOptionsOf(src.Nodes[0]), Mode: "psync", Follow: true, DurablePosition: true,
			Writer: redissync.WriterConfig{Target: sourceOptionsOf(dst)}}, log)
		done <- err
	}()
	same := func(what string) {
		t.Helper()
		waitClusterCopy(t, src, dst, done, what)
	}
	var want [5]int
	incr := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if err := cc.Incr(ctx, fmt.Sprintf("{fo}:%d", i%5)).Err(); err != nil {
				t.Fatal(err)
			}
			want[i%5]++
		}
	}
	incr(50)
	same("before the failover")

	old, err := src.NodeOf(ctx, "{fo}")
	if err != nil {
		t.Fatal(err)
	}
	var replica *testenv.Redis
	for _, n := range src.Nodes {
		c := n.Client(0)
		info := c.Info(ctx, "replication").Val()
		c.Close()
		if strings.Contains(info, "role:slave") && strings.Contains(info, fmt.Sprintf("master_port:%d", old.Port)) {
			replica = n
		}
	}
	if replica == nil {
		t.Fatalf("no replica of %s", old.Addr())
	}
	fullBefore, _ := syncStats(t, replica)
	rcl := replica.Client(0)
	defer rcl.Close()
	defer func() {
		if t.Failed() {
			t.Logf("replica log:\n%s\nold master log:\n%s", replica.LogTail(), old.LogTail())
		}
	}()
	// A manual failover asked for before the master has heard of its
	// replica over the cluster bus times out (after 5 s, in the replica's
	// log): ask again until the replica is master.
	asked := time.Time{}
	redistest.WaitFor(t, time.Minute, "the replica promoted", func() bool {
		if strings.Contains(rcl.Info(ctx, "replication").Val(), "role:master") {
			return true
		}
		if time.Since(asked) > 6*time.Second {
			if err := rcl.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
				t.Fatal(err)
			}
			asked = time.Now()
		}
		return false
	})
	if err := src.WaitOK(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	incr(50)
	same("after the failover")
	// The old master is now the promoted one's replica and owns no
	// slots: the once-a-second reshard watch must look at the master
	// followed now, or it takes every slot for moved and stops the
	// follow. Keep writing for a few of its checks.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		select {
		case err := <-done:
			t.Fatalf("follow ended after the failover: %v", err)
		default:
		}
		incr(5)
	}
	same("a while after the failover")
	c := dst.Client(0)
	defer c.Close()
	for i := 0; i < 5; i++ {
		if v, err := c.Get(ctx, fmt.Sprintf("{fo}:%d", i)).Int(); err != nil || v != want[i] {
			t.Errorf("{fo}:%d on the target = %d (%v), want %d: each INCR once", i, v, err, want[i])
		}
	}
	if full, _ := syncStats(t, replica); full != fullBefore {
		t.Errorf("the promoted master served %d full resynchronisations, want none", full-fullBefore)
	}
	if !logged(logs, "source shard failed over: following its new master") {
		t.Errorf("no log line saying the shard's follower moved to the new master")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// crashMaster kills master m of src with -9 once its replica holds every
// write (Redis replicates asynchronously: writes m had acknowledged but
// not yet sent would be lost with it, and the source itself would then
// hold less than was written), waits until the cluster has promoted the
// replica and every live node routes m's slots to it, and returns the
// replica. m is left out of src.Nodes from then on.
func crashMaster(t *testing.T, src *testenv.RedisCluster, m *testenv.Redis) *testenv.Redis {
	t.Helper()
	ctx := context.Background()
	var replica *testenv.Redis
	for _, n := range src.Nodes {
		c := n.Client(0)
		info := c.Info(ctx, "replication").Val()
		c.Close()
		if strings.Contains(info, "role:slave") && strings.Contains(info, fmt.Sprintf("master_port:%d", m.Port)) {
			replica = n
		}
	}
	if replica == nil {
		t.Fatalf("no replica of %s", m.Addr())
	}
	mc := m.Client(0)
	if n, err := mc.Do(ctx, "WAIT", 1, 10000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for the replica of %s: %d replicas, %v", m.Addr(), n, err)
	}
	mc.Close()
	if err := m.Stop(testenv.Crash); err != nil { // kill -9
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var alive []*testenv.Redis
	for _, n := range src.Nodes {
		if n != m {
			alive = append(alive, n)
		}
	}
	src.Nodes = alive
	// The cluster notices after cluster-node-timeout (5 s) and promotes
	// the replica.
	redistest.WaitFor(t, time.Minute, "the replica promoted", func() bool {
		for _, n := range alive {
			c := n.Client(0)
			slots, err := c.ClusterSlots(ctx).Result()
			info := c.ClusterInfo(ctx).Val()
			c.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			for _, s := range slots {
				if len(s.Nodes) == 0 || strings.HasSuffix(s.Nodes[0].Addr, fmt.Sprintf(":%d", m.Port)) {
					return false
				}
			}
		}
		return true
	})
	return replica
}

// replID is r's current replication ID (INFO replication master_replid).
func replID(t *testing.T, r *testenv.Redis) string {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "master_replid:"); ok {
			return v
		}
	}
	t.Fatalf("%s: no master_replid in INFO replication", r.Addr())
	return ""
}

// A follower of a cluster source whose master is killed with -9 (its
// replica promoted, the follower moved on to it) and that is itself
// killed with -9 afterwards resumes every shard with PSYNC, the failed
// over one on its new master: the shard's durable position is found
// under the same key (the shard's first slot) and names the new master's
// replication ID. No node serves a full resynchronisation, and the
// target ends identical to the source, each INCR applied once; into a
// single server and into a cluster target.
func TestFollowClusterSourceResumesAfterFailover(t *testing.T) {
	for _, into := range []string{"server", "cluster"} {
		t.Run("into a "+into, func(t *testing.T) { resumeAfterFailover(t, into) })
	}
}

func resumeAfterFailover(t *testing.T, into string) {
	src := startSourceCluster(t, 1, "--repl-backlog-size", "16mb")
	ctx := context.Background()
	var targetURL string
	var targetNodes func() []*testenv.Redis
	var targetModel func() map[string]*redistest.KeyModel
	if into == "server" {
		d := startExtra(t)
		targetURL = d.URL(0)
		targetNodes = func() []*testenv.Redis { return []*testenv.Redis{d} }
		targetModel = func() map[string]*redistest.KeyModel { return redistest.ServerModel(t, d) }
	} else {
		rc := startCluster(t)
		targetURL = rc.URL()
		targetNodes = func() []*testenv.Redis {
			ms, err := rc.Masters()
			if err != nil {
				t.Fatal(err)
			}
			return ms
		}
		targetModel = func() map[string]*redistest.KeyModel { return redistest.ClusterModel(t, rc) }
	}
	counters(t, src, 200)
	m, err := src.NodeOf(ctx, "{rs}")
	if err != nil {
		t.Fatal(err)
	}
	// The follower's seed is another master: m will be dead when it
	// restarts.
	masters, err := src.Masters()
	if err != nil {
		t.Fatal(err)
	}
	seed := masters[0]
	if seed == m {
		seed = masters[1]
	}
	count := func() bool {
		ms, err := src.Masters()
		if err != nil {
			return false
		}
		a, _ := keyCount(t, ms...)
		b, p := keyCount(t, targetNodes()...)
		return a == b-p
	}
	same := func() (bool, string) { return sameModels(redistest.ClusterModel(t, src), targetModel()) }
	logFile := t.TempDir() + "/follower.log"
	defer func() {
		if t.Failed() {
			log, _ := os.ReadFile(logFile)
			t.Logf("follower log:\n%s", log)
		}
	}()
	f := startChildFollowerURL(t, seed.URL(0), targetURL, logFile)
	f.precheck = count
	waitSame(t, same, f, "after the copy")
	counters(t, src, 100)
	waitSame(t, same, f, "following")

	replica := crashMaster(t, src, m)
	full0, _ := syncStats(t, replica)
	counters(t, src, 100)
	waitSame(t, same, f, "after the failover")
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "source shard failed over: following its new master") {
		t.Fatalf("the follower did not say it moved to the new master")
	}
	if full, _ := syncStats(t, replica); full != full0 {
		t.Fatalf("the promoted master served %d full resynchronisations during the failover, want none: the test needs the follow to continue there", full-full0)
	}
	// The shard's stored position follows the promoted master: it names
	// the replication ID the stream continues under there.
	newID := replID(t, replica)
	redistest.WaitFor(t, time.Minute, "a stored follow position naming the promoted master's replication ID", func() bool {
		for _, n := range targetNodes() {
			c := n.Client(0)
			keys, _ := c.Keys(ctx, redissync.PositionKey+"*").Result()
			for _, k := range keys {
				if id, _ := c.HGet(ctx, k, "replid").Result(); id == newID {
					c.Close()
					return true
				}
			}
			c.Close()
		}
		return false
	})

	f.kill()
	counters(t, src, 100) // written while the follower is down
	type stats struct{ full, partial int64 }
	before := map[string]stats{}
	for _, n := range src.Nodes {
		full, partial := syncStats(t, n)
		before[n.Addr()] = stats{full, partial}
	}
	f = startChildFollowerURL(t, seed.URL(0), targetURL, logFile)
	f.precheck = count
	waitSame(t, same, f, "after the follower's restart")
	masters, err = src.Masters()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range masters {
		full, partial := syncStats(t, n)
		b := before[n.Addr()]
		if full != b.full || partial != b.partial+1 {
			t.Errorf("source master %s (promoted: %v): sync_full %d→%d, sync_partial_ok %d→%d; want one partial and no full resynchronisation",
				n.Addr(), n == replica, b.full, full, b.partial, partial)
		}
	}
	c := src.Client()
	defer c.Close()
	if v, err := c.Get(ctx, "c0").Int(); err != nil || v != 14 {
		t.Errorf("c0 on the source = %d (%v), want 14: a write was lost in the failover", v, err)
	}
}
