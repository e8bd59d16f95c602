package redissync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

// startFollow runs a durable PSYNC follow of the cluster source src into
// target; its logs are observed. done receives what Sync returned.
func startFollow(t *testing.T, src *testenv.RedisCluster, target *redis.Options) (done chan error, logs *observer.ObservedLogs, cancel context.CancelFunc) {
	t.Helper()
	return startFollowMode(t, src, target, "psync")
}

// startFollowMode is startFollow with the given --mode.
func startFollowMode(t *testing.T, src *testenv.RedisCluster, target *redis.Options, mode string) (done chan error, logs *observer.ObservedLogs, cancel context.CancelFunc) {
	t.Helper()
	obs, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obs))
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan error, 1)
	go func() {
		_, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptionsOf(src.Nodes[0]), Mode: mode, Follow: true, DurablePosition: true,
			Writer: redissync.WriterConfig{Target: target}}, log)
		done <- err
	}()
	return done, logs, cancel
}

// clusterFollow is startFollow into dst, stopped when the test ends,
// which fails if the follow ended with an error.
func clusterFollow(t *testing.T, src *testenv.RedisCluster, dst *testenv.Redis) (done chan error, logs *observer.ObservedLogs) {
	t.Helper()
	done, logs, cancel := startFollow(t, src, sourceOptionsOf(dst))
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("follow ended with %v", err)
		}
	})
	return done, logs
}

// startSourceCluster starts a cluster source of 3 masters with replicas
// replicas each, stopped when the test ends.
func startSourceCluster(t *testing.T, replicas int, args ...string) *testenv.RedisCluster {
	t.Helper()
	src, err := testenv.StartRedisClusterWithReplicas(3, replicas, testenv.RedisOptions{Password: "src-pass",
		Args: append([]string{"--repl-diskless-sync-delay", "0"}, args...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return src
}

// loseStream makes master m unable to continue its replicas' streams: a
// new replication ID (as after a restart without its RDB), and the links
// dropped.
func loseStream(t *testing.T, m *testenv.Redis) {
	t.Helper()
	ctx := context.Background()
	mc := m.Client(0)
	defer mc.Close()
	if err := mc.Do(ctx, "DEBUG", "CHANGE-REPL-ID").Err(); err != nil {
		t.Fatal(err)
	}
	if err := mc.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
}

// waitClusterCopy waits until dst serves what the masters of src serve,
// key by key (the follow positions left out).
func waitClusterCopy(t *testing.T, src *testenv.RedisCluster, dst *testenv.Redis, done chan error, what string) {
	t.Helper()
	why := ""
	defer func() {
		if t.Failed() {
			t.Logf("%s: last difference: %s", what, why)
		}
	}()
	redistest.WaitFor(t, time.Minute, what, func() bool {
		select {
		case err := <-done:
			t.Fatalf("%s: the follow ended: %v", what, err)
		default:
		}
		masters, err := src.Masters()
		if err != nil {
			return false
		}
		a, _ := keyCount(t, masters...)
		b, p := keyCount(t, dst)
		if a != b-p {
			why = fmt.Sprintf("%d keys on the source, %d on the target", a, b-p)
			return false
		}
		var ok bool
		ok, why = sameModels(redistest.ClusterModel(t, src), redistest.ServerModel(t, dst))
		return ok
	})
}

// counters INCRs n keys spread over every shard, and the {rs} keys of one.
func counters(t *testing.T, src *testenv.RedisCluster, n int) {
	t.Helper()
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	for i := 0; i < n; i++ {
		if err := cc.Incr(ctx, fmt.Sprintf("c%d", i%40)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := cc.RPush(ctx, fmt.Sprintf("{rs}:l%d", i%3), i).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// followedCluster is a cluster source (3 masters, with replicas
// replicas each) copied into a single-node target and followed.
type followedCluster struct {
	src  *testenv.RedisCluster
	dst  *testenv.Redis
	done chan error
	logs *observer.ObservedLogs
	m    *testenv.Redis   // the master serving {rs}
	full map[string]int64 // sync_full of each node once the copy is in
}

func startFollowedCluster(t *testing.T, replicas int, args ...string) *followedCluster {
	t.Helper()
	src := startSourceCluster(t, replicas, args...)
	fc := &followedCluster{src: src, dst: startExtra(t), full: map[string]int64{}}
	counters(t, src, 200)
	fc.done, fc.logs = clusterFollow(t, src, fc.dst)
	waitClusterCopy(t, src, fc.dst, fc.done, "after the copy")
	var err error
	if fc.m, err = src.NodeOf(context.Background(), "{rs}"); err != nil {
		t.Fatal(err)
	}
	for _, n := range src.Nodes {
		fc.full[n.Addr()], _ = syncStats(t, n)
	}
	return fc
}

// One shard of a cluster source that cannot continue the stream (its
// replication ID changed: DEBUG CHANGE-REPL-ID, as after a restart
// without its RDB) is reloaded alone: the target's keys of that shard's
// slots are deleted (a key there the source does not have disappears)
// and the shard's snapshot loaded again; the other two shards keep
// following without a full resynchronisation, and every INCR is applied
// once.
func TestFollowClusterSourceResyncsOneShard(t *testing.T) {
	fc := startFollowedCluster(t, 0)
	src, dst, done, logs, m, full := fc.src, fc.dst, fc.done, fc.logs, fc.m, fc.full
	ctx := context.Background()
	// A key of that shard's slots the source no longer has (deleted while
	// the follower could not see it) must not survive the reload.
	c := dst.Client(0)
	defer c.Close()
	if err := c.Set(ctx, "{rs}:deleted-on-the-source", "stale", 0).Err(); err != nil {
		t.Fatal(err)
	}
	loseStream(t, m)
	counters(t, src, 200)
	waitClusterCopy(t, src, dst, done, "after the shard's resynchronisation")
	counters(t, src, 100)
	waitClusterCopy(t, src, dst, done, "following again")

	for _, n := range src.Nodes {
		want := full[n.Addr()]
		if n == m {
			want++
		}
		if got, _ := syncStats(t, n); got != want {
			t.Errorf("source shard %s served %d full resynchronisations, want %d", n.Addr(), got-full[n.Addr()], want-full[n.Addr()])
		}
	}
	if !logged(logs, "full resynchronisation of one source shard") {
		t.Errorf("no log line saying one shard was resynchronised")
	}
	if v, err := c.Get(ctx, "c0").Int(); err != nil || v != 13 {
		t.Errorf("c0 on the target = %d (%v), want 13: each INCR once", v, err)
	}
}

// A source master killed with -9 (cluster source, one replica per
// master): the cluster promotes its replica, and the shard's follower
// goes on there, by PSYNC if the replica had everything we applied, or
// by reloading that shard alone; the target ends identical to the
// cluster, and the other shards never resynchronise.
func TestFollowClusterSourceMasterKilled(t *testing.T) {
	fc := startFollowedCluster(t, 1, "--repl-backlog-size", "16mb")
	src, dst, done, logs, m, full := fc.src, fc.dst, fc.done, fc.logs, fc.m, fc.full
	ctx := context.Background()
	crashMaster(t, src, m)
	counters(t, src, 200)
	// The follower finds the new master once its reconnects to the dead
	// one have failed (backoff) and it reads the topology again.
	redistest.WaitFor(t, time.Minute, "the shard's follower on the new master", func() bool {
		return logged(logs, "source shard failed over: following its new master") || logged(logs, "full resynchronisation of one source shard")
	})
	waitClusterCopy(t, src, dst, done, "after the failover")

	for _, n := range src.Nodes {
		if n == m {
			continue
		}
		got, _ := syncStats(t, n)
		if got == full[n.Addr()] {
			continue
		}
		// Only the promoted replica may have served one: the reload of its
		// shard, when it lacked part of what we had applied.
		if got != full[n.Addr()]+1 || !logged(logs, "full resynchronisation of one source shard") {
			t.Errorf("source node %s served %d full resynchronisations", n.Addr(), got-full[n.Addr()])
		}
	}
	if !logged(logs, "source shard failed over: following its new master") {
		t.Errorf("no log line saying the shard's follower moved to the new master")
	}
	c := dst.Client(0)
	defer c.Close()
	if v, err := c.Get(ctx, "c0").Int(); err != nil || v != 10 {
		t.Errorf("c0 on the target = %d (%v), want 10: each INCR once", v, err)
	}
}

// Slots migrated between the masters of a cluster source while it is
// followed (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as
// redis-cli --cluster reshard does): the follow stops with an error that
// names the slot and the fix, instead of applying the two shards' halves
// of the move (a DEL here, a RESTORE-ASKING there) in no fixed order.
func TestFollowClusterSourceStopsOnReshard(t *testing.T) {
	for _, mode := range []string{"psync", "scan"} {
		t.Run(mode, func(t *testing.T) { followStopsOnReshard(t, mode) })
	}
}

func followStopsOnReshard(t *testing.T, mode string) {
	src := startSourceCluster(t, 0)
	dst := startExtra(t)
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	for i := 0; i < 20; i++ {
		if err := cc.Set(ctx, fmt.Sprintf("{mv}:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	counters(t, src, 100)
	done, _, cancel := startFollowMode(t, src, sourceOptionsOf(dst), mode)
	defer cancel()
	waitClusterCopy(t, src, dst, done, "after the copy")

	from, err := src.NodeOf(ctx, "{mv}")
	if err != nil {
		t.Fatal(err)
	}
	to := src.Nodes[0]
	if to == from {
		to = src.Nodes[1]
	}
	fc, tc := from.Client(0), to.Client(0)
	defer fc.Close()
	defer tc.Close()
	slot := redissync.KeySlot("{mv}")
	fromID, toID := nodeID(t, from), nodeID(t, to)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(fc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	args := []any{"MIGRATE", "127.0.0.1", to.Port, "", 0, 5000, "AUTH", "src-pass", "KEYS"}
	for i := 0; i < 20; i++ {
		args = append(args, fmt.Sprintf("{mv}:%d", i))
	}
	must(fc.Do(ctx, args...).Err())
	for _, n := range src.Nodes {
		c := n.Client(0)
		must(c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
		c.Close()
	}
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the follow went on through a reshard of the source")
	}
	if err == nil {
		t.Fatal("the follow ended without an error on a reshard of the source")
	}
	t.Logf("the follow stopped: %v", err)
	for _, want := range []string{"resharded", fmt.Sprint(slot), "--flush-target"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The same reload of one shard into a cluster target with a durable
// position: the shard's slot positions are replaced, its slots emptied
// and reloaded on the target's masters, and the follow goes on.
func TestFollowClusterSourceResyncsOneShardIntoCluster(t *testing.T) {
	src := startSourceCluster(t, 0)
	tgt := startCluster(t)
	counters(t, src, 100)
	done, logs, cancel := startFollow(t, src, sourceOptionsOf(tgt.Nodes[0]))
	defer cancel()
	ctx := context.Background()
	same := func(what string) {
		t.Helper()
		why := ""
		redistest.WaitFor(t, time.Minute, what, func() bool {
			select {
			case err := <-done:
				t.Fatalf("%s: the follow ended: %v", what, err)
			default:
			}
			var ok bool
			ok, why = sameModels(redistest.ClusterModel(t, src), redistest.ClusterModel(t, tgt))
			return ok
		})
		if t.Failed() {
			t.Logf("%s: %s", what, why)
		}
	}
	same("after the copy")
	m, err := src.NodeOf(ctx, "{rs}")
	if err != nil {
		t.Fatal(err)
	}
	tc := tgt.Client()
	defer tc.Close()
	if err := tc.Set(ctx, "{rs}:deleted-on-the-source", "stale", 0).Err(); err != nil {
		t.Fatal(err)
	}
	loseStream(t, m)
	counters(t, src, 100)
	same("after the shard's resynchronisation")
	counters(t, src, 100)
	same("following again")
	if !logged(logs, "full resynchronisation of one source shard") {
		t.Errorf("no log line saying one shard was resynchronised")
	}
	if v, err := tc.Get(ctx, "c0").Int(); err != nil || v != 9 {
		t.Errorf("c0 on the target = %d (%v), want 9: each INCR once", v, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}
