package redissync_test

import (
	"context"
	"fmt"
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
	incr := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			if err := cc.Incr(ctx, fmt.Sprintf("{fo}:%d", i%5)).Err(); err != nil {
				t.Fatal(err)
			}
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
	c := dst.Client(0)
	defer c.Close()
	for i := 0; i < 5; i++ {
		if v, err := c.Get(ctx, fmt.Sprintf("{fo}:%d", i)).Int(); err != nil || v != 20 {
			t.Errorf("{fo}:%d on the target = %d (%v), want 20: each INCR once", i, v, err)
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
