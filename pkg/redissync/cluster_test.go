package redissync_test

import (
	"context"
	"fmt"
	"strconv"
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
	"replicator/pkg/redisverify"
)

func startCluster(t *testing.T) *testenv.RedisCluster {
	t.Helper()
	rc, err := testenv.StartRedisCluster(3, testenv.RedisOptions{Password: "target-secret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rc.Close)
	return rc
}

// waitClusterSame waits until the cluster serves what the source serves,
// compared key by key by the test (each key on the node its slot belongs
// to, per the cluster's own CLUSTER KEYSLOT/CLUSTER SLOTS).
func waitClusterSame(t *testing.T, s *testenv.Redis, rc *testenv.RedisCluster, done chan error, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		masters, err := rc.Masters()
		if err != nil {
			t.Fatal(err)
		}
		a, _ := keyCount(t, s)
		b, positions := keyCount(t, masters...)
		if b -= positions; a != b {
			select {
			case err := <-done:
				t.Fatalf("%s: the sync ended: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d keys on the source, %d on the cluster after 60s", what, a, b)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		src, dstm := redistest.ServerModel(t, s), redistest.ClusterModel(t, rc)
		for k := range dstm {
			if name, ok := strings.CutPrefix(k, "0/"); ok && redissync.IsPositionKey(name) {
				delete(dstm, k)
			}
		}
		same := len(src) == len(dstm)
		var why string
		for k, v := range src {
			w, ok := dstm[k]
			if !ok || !redistest.SameValue(v, w) {
				same, why = false, k
				break
			}
		}
		if same {
			redistest.CompareModels(t, src, dstm) // TTLs too
			return
		}
		select {
		case err := <-done:
			t.Fatalf("%s: the sync ended: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not identical within 60s (%d keys on the source, %d on the cluster; first difference %q)", what, len(src), len(dstm), why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func nodeID(t *testing.T, n *testenv.Redis) string {
	t.Helper()
	c := n.Client(0)
	defer c.Close()
	id, err := c.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A single-node source copied into a 3-master cluster and followed: every
// key lands on the shard of its slot, with its value and TTL; transactions
// in one slot, transactions and MSET/DEL across slots, Lua and function
// libraries are carried; and a slot migrated by hand (CLUSTER SETSLOT
// MIGRATING/IMPORTING + MIGRATE) while the follower writes to it is
// followed through ASK and then MOVED. Without a durable position: with
// one, a slot half migrated waits for its migration to end
// (TestFollowIntoClusterResumesAfterKill9).
func TestSyncIntoClusterAndFollow(t *testing.T) {
	s := startExtra(t)
	redistest.FillEverything(t, s)
	ctx := context.Background()
	sc := s.Client(0)
	defer sc.Close()
	for _, db := range []int{1, 2} { // a cluster has database 0 only
		c := s.Client(db)
		if err := c.FlushDB(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if err := sc.Do(ctx, "FUNCTION", "LOAD", "REPLACE", "#!lua name=clusterlib\nredis.register_function('one', function() return 1 end)").Err(); err != nil {
		t.Fatal(err)
	}
	rc := startCluster(t)
	target, err := redis.ParseURL(rc.URL())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	obs, logs := observer.New(zap.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obs))
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: sourceOptionsOf(s), Mode: "psync", Follow: true,
			Writer: redissync.WriterConfig{Target: target}}, log)
		done <- err
	}()
	waitClusterSame(t, s, rc, done, "after the copy")
	for _, n := range rc.Nodes {
		c := n.Client(0)
		if v, err := c.Do(ctx, "FCALL", "one", 0).Int(); err != nil || v != 1 {
			t.Errorf("node %s: function library not carried: FCALL one = %v, %v", n.Addr(), v, err)
		}
		c.Close()
	}

	// Live writes, several of them touching keys of different slots.
	must := func(err error) {
		t.Helper()
		if err != nil && err != redis.Nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		must(sc.Incr(ctx, fmt.Sprintf("live:%d", i)).Err())
		_, err := sc.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, "{user1}:visits")
			p.RPush(ctx, "{user1}:log", i)
			return nil
		})
		must(err)
		_, err = sc.TxPipelined(ctx, func(p redis.Pipeliner) error { // spans slots
			p.Incr(ctx, "a-counter")
			p.SAdd(ctx, "b-set", i)
			p.HSet(ctx, "c-hash", fmt.Sprint(i), i)
			return nil
		})
		must(err)
		must(sc.MSet(ctx, fmt.Sprintf("m1:%d", i), i, fmt.Sprintf("m2:%d", i), i).Err())
		must(sc.Eval(ctx, "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])", []string{"lua1", "lua2"}, i).Err())
	}
	must(sc.Del(ctx, "m1:3", "m2:4", "db0:str").Err())
	must(sc.Expire(ctx, "live:1", time.Hour).Err())
	waitClusterSame(t, s, rc, done, "after live writes")
	if !logged(logs, "spans several hash slots") {
		t.Errorf("no log line saying a transaction across slots was split per slot")
	}

	// Move the slot of {mig} from its node to another, by hand, half way,
	// while the follower writes to its keys.
	for i := 0; i < 40; i++ {
		must(sc.Set(ctx, fmt.Sprintf("{mig}:%d", i), i, 0).Err())
	}
	waitClusterSame(t, s, rc, done, "before the reshard")
	from, err := rc.NodeOf(ctx, "{mig}")
	if err != nil {
		t.Fatal(err)
	}
	to := rc.Nodes[0]
	if to == from {
		to = rc.Nodes[1]
	}
	fc, tc := from.Client(0), to.Client(0)
	defer fc.Close()
	defer tc.Close()
	slot, err := fc.ClusterKeySlot(ctx, "{mig}").Result()
	if err != nil {
		t.Fatal(err)
	}
	fromID, toID := nodeID(t, from), nodeID(t, to)
	must(tc.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", fromID).Err())
	must(fc.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", toID).Err())
	migrate := func(n int64) {
		t.Helper()
		keys, err := fc.ClusterGetKeysInSlot(ctx, int(slot), int(n)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
			return
		}
		args := []any{"MIGRATE", "127.0.0.1", to.Port, "", 0, 5000, "AUTH", "target-secret", "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(fc.Do(ctx, args...).Err())
	}
	migrate(20)
	// Keys already moved are written through ASK, the others where they are.
	for i := 0; i < 40; i++ {
		must(sc.Set(ctx, fmt.Sprintf("{mig}:%d", i), "during-"+strconv.Itoa(i), 0).Err())
	}
	cc := rc.Client()
	defer cc.Close()
	redistest.WaitFor(t, 30*time.Second, "writes to the migrating slot applied", func() bool {
		v, _ := cc.Get(ctx, "{mig}:39").Result()
		w, _ := cc.Get(ctx, "{mig}:0").Result()
		return v == "during-39" && w == "during-0"
	})
	migrate(1000)
	for _, n := range rc.Nodes {
		c := n.Client(0)
		must(c.Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", toID).Err())
		c.Close()
	}
	if err := rc.WaitOK(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The follower's slot map is now stale: MOVED sends it to the new node.
	for i := 0; i < 40; i++ {
		must(sc.Append(ctx, fmt.Sprintf("{mig}:%d", i), "-after").Err())
	}
	waitClusterSame(t, s, rc, done, "after the reshard")
	if n, err := tc.ClusterCountKeysInSlot(ctx, int(slot)).Result(); err != nil || n != 40 {
		t.Errorf("slot %d on its new node holds %d keys (%v), want 40", slot, n, err)
	}
	// redis verify, shard by shard, agrees.
	rep, err := redisverify.Run(ctx, redisverify.Config{Source: sourceOptionsOf(s), Target: target}, zaptest.NewLogger(t))
	if err != nil || !rep.Identical() {
		t.Errorf("redis verify into the cluster: %v, %+v", err, rep)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// A key outside database 0 cannot go to a cluster: the sync stops with a
// message naming the database.
func TestSyncIntoClusterRefusesOtherDatabases(t *testing.T) {
	s := startExtra(t)
	c := s.Client(3)
	if err := c.Set(context.Background(), "elsewhere", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rc := startCluster(t)
	target, _ := redis.ParseURL(rc.URL())
	_, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: sourceOptionsOf(s), Mode: "psync",
		Writer: redissync.WriterConfig{Target: target}}, zaptest.NewLogger(t))
	if err == nil || !strings.Contains(err.Error(), "database 3") || !strings.Contains(err.Error(), "Cluster") {
		t.Fatalf("sync of database 3 into a cluster: %v, want an error naming database 3 and the cluster", err)
	}
	if strings.Contains(err.Error(), "target-secret") {
		t.Errorf("error shows the password: %v", err)
	}
}

func sourceOptionsOf(r *testenv.Redis) *redis.Options {
	o, err := redis.ParseURL(r.URL(0))
	if err != nil {
		panic(err)
	}
	return o
}

// slotOwners maps each node of rc (by index) to the slot ranges it serves.
func slotOwners(t *testing.T, rc *testenv.RedisCluster) map[int][]redis.ClusterSlot {
	t.Helper()
	c := rc.Nodes[0].Client(0)
	defer c.Close()
	slots, err := c.ClusterSlots(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int][]redis.ClusterSlot{}
	for _, s := range slots {
		for i, n := range rc.Nodes {
			if s.Nodes[0].Addr == n.Addr() {
				out[i] = append(out[i], redis.ClusterSlot{Start: s.Start, End: s.End})
			}
		}
	}
	return out
}

// A cluster source is copied and followed shard by shard, each master
// over its own replication link, into a cluster target with the same
// slot layout: shard i of the target ends with the DEBUG DIGEST (computed
// by redis-server) of shard i of the source, and key by key the same.
func TestSyncClusterSourceShardByShard(t *testing.T) {
	src, err := testenv.StartRedisCluster(3, testenv.RedisOptions{Password: "src-pass", Args: []string{"--repl-diskless-sync-delay", "0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt := startCluster(t)
	if a, b := fmt.Sprint(slotOwners(t, src)), fmt.Sprint(slotOwners(t, tgt)); a != b {
		t.Fatalf("the two clusters split the slots differently (%s vs %s); the per-shard comparison needs the same layout", a, b)
	}
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	fill := func(round int) {
		t.Helper()
		for i := 0; i < 300; i++ {
			k := fmt.Sprintf("r%d:k%d", round, i)
			if err := cc.Set(ctx, k, strings.Repeat("v", i%50), 0).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cc.RPush(ctx, fmt.Sprintf("list%d", i%7), round, i).Err(); err != nil {
				t.Fatal(err)
			}
			if err := cc.HSet(ctx, fmt.Sprintf("{h%d}:hash", i%11), fmt.Sprint(i), round).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := cc.Expire(ctx, fmt.Sprintf("r%d:k1", round), time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := cc.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, "{acct}:balance")
			p.RPush(ctx, "{acct}:history", round)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if err := cc.Del(ctx, fmt.Sprintf("r%d:k2", round)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	fill(0)
	source, _ := redis.ParseURL(src.URL())
	target, _ := redis.ParseURL(tgt.URL())
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: source, Mode: "psync", Follow: true,
			Writer: redissync.WriterConfig{Target: target}}, zaptest.NewLogger(t))
		done <- err
	}()
	sameShards := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for i := range src.Nodes {
			for redistest.Digest(t, src.Nodes[i]) != redistest.Digest(t, tgt.Nodes[i]) {
				select {
				case err := <-done:
					t.Fatalf("%s: the sync ended: %v", what, err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: shard %d (%s) differs from the source's after 60s", what, i, tgt.Nodes[i].Addr())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		redistest.CompareModels(t, redistest.ClusterModel(t, src), redistest.ClusterModel(t, tgt))
	}
	sameShards("after the copy")
	fill(1)
	sameShards("after live writes")
	rep, err := redisverify.Run(ctx, redisverify.Config{Source: source, Target: target}, zaptest.NewLogger(t))
	if err != nil || !rep.Identical() {
		t.Errorf("redis verify cluster to cluster: %v, %+v", err, rep)
	}
	// Every master has exactly one replica attached: our follower.
	for _, n := range src.Nodes {
		c := n.Client(0)
		info := c.Info(ctx, "replication").Val()
		c.Close()
		if !strings.Contains(info, "connected_slaves:1") {
			t.Errorf("source shard %s: want one replication link (ours), INFO says:\n%s", n.Addr(), info)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// A follow into a cluster target goes on through a failover of one of
// its shards (CLUSTER FAILOVER on the replica, as ElastiCache does in a
// maintenance window): writes to the shard's slots get MOVED to the
// promoted replica, the slot map is reloaded, and nothing is lost.
func TestFollowIntoClusterAcrossFailover(t *testing.T) {
	s := startExtra(t)
	fillSmall(t, s)
	rc, err := testenv.StartRedisClusterWithReplicas(3, 1, testenv.RedisOptions{Password: "target-secret"})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	target, _ := redis.ParseURL(rc.URL())
	ctx := context.Background()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: sourceOptionsOf(s), Mode: "psync", Follow: true,
			Writer: redissync.WriterConfig{Target: target}}, zaptest.NewLogger(t))
		done <- err
	}()
	waitClusterSame(t, s, rc, done, "after the copy")
	sc := s.Client(0)
	defer sc.Close()
	old, err := rc.NodeOf(ctx, "{fo}")
	if err != nil {
		t.Fatal(err)
	}
	oc := old.Client(0)
	defer oc.Close()
	oldID := nodeID(t, old)
	var replica *testenv.Redis
	for _, n := range rc.Nodes {
		c := n.Client(0)
		info := c.Info(ctx, "replication").Val()
		c.Close()
		if strings.Contains(info, "role:slave") && strings.Contains(info, fmt.Sprintf("master_port:%d", old.Port)) {
			replica = n
		}
	}
	if replica == nil {
		t.Fatalf("no replica of %s (%s)", old.Addr(), oldID)
	}
	rcl := replica.Client(0)
	defer rcl.Close()
	for i := 0; i < 50; i++ {
		if err := sc.Incr(ctx, fmt.Sprintf("{fo}:%d", i%5)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitClusterSame(t, s, rc, done, "before the failover")
	if err := rcl.Do(ctx, "CLUSTER", "FAILOVER").Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 30*time.Second, "the replica promoted", func() bool {
		return strings.Contains(rcl.Info(ctx, "replication").Val(), "role:master")
	})
	if err := rc.WaitOK(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := sc.Incr(ctx, fmt.Sprintf("{fo}:%d", i%5)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := sc.Set(ctx, fmt.Sprintf("after:%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitClusterSame(t, s, rc, done, "after the failover")
	if n, err := rcl.Get(ctx, "{fo}:0").Int(); err != nil || n != 20 {
		t.Errorf("{fo}:0 on the promoted node = %d (%v), want 20", n, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// A cluster source that refuses PSYNC is scanned shard by shard in
// parallel and followed by each shard's own keyspace notifications (a
// cluster node publishes only its own keys' events).
func TestSyncClusterSourceBySCAN(t *testing.T) {
	src, err := testenv.StartRedisCluster(3, testenv.RedisOptions{Password: "src-pass",
		Args: []string{"--rename-command", "PSYNC", "", "--rename-command", "SYNC", ""}})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tgt := startCluster(t)
	ctx := context.Background()
	cc := src.Client()
	defer cc.Close()
	for i := 0; i < 300; i++ {
		if err := cc.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	source, _ := redis.ParseURL(src.URL())
	target, _ := redis.ParseURL(tgt.URL())
	obs, logs := observer.New(zap.InfoLevel)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: source, Mode: "auto", Follow: true,
			Writer: redissync.WriterConfig{Target: target}}, zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), obs)))
		done <- err
	}()
	same := func(what string) {
		t.Helper()
		redistest.WaitFor(t, 60*time.Second, what, func() bool {
			select {
			case err := <-done:
				t.Fatalf("%s: the sync ended: %v", what, err)
			default:
			}
			ok, _ := sameModels(redistest.ClusterModel(t, src), redistest.ClusterModel(t, tgt))
			return ok
		})
		redistest.CompareModels(t, redistest.ClusterModel(t, src), redistest.ClusterModel(t, tgt))
	}
	same("after the SCAN")
	redistest.WaitFor(t, 30*time.Second, "three shard subscriptions", func() bool {
		n := 0
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "snapshot by SCAN imported") {
				n++
			}
		}
		return n == 3
	})
	for i := 0; i < 100; i++ {
		if err := cc.Incr(ctx, fmt.Sprintf("k%d", i)).Err(); err != nil {
			t.Fatal(err)
		}
		if err := cc.Del(ctx, fmt.Sprintf("k%d", 150+i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	same("after live writes on every shard")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}

// Big keys copied in pieces into a cluster: each key's pieces are one
// transaction that spans several pipelines (PipelineCommands 2), held open
// on a connection to the master of the key's slot. From an RDB stream
// (psync) and from SCAN.
func TestSyncBigKeysIntoCluster(t *testing.T) {
	s := startExtra(t)
	c := s.Client(0)
	ctx := context.Background()
	for i := 0; i < 12; i++ {
		p := c.Pipeline()
		k := fmt.Sprintf("big%d", i)
		for j := 0; j < 1200; j++ {
			v := fmt.Sprintf("value-%d-%d", i, j)
			p.RPush(ctx, k+":list", v)
			p.HSet(ctx, k+":hash", v, j)
			p.SAdd(ctx, k+":set", v)
			p.ZAdd(ctx, k+":zset", redis.Z{Score: float64(j), Member: v})
		}
		p.Set(ctx, k+":str", strings.Repeat("x", 3<<20+i), 0)
		p.PExpire(ctx, k+":hash", time.Hour)
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	rc := startCluster(t)
	target, _ := redis.ParseURL(rc.URL())
	for _, mode := range []string{"psync", "scan"} {
		t.Run(mode, func(t *testing.T) {
			st, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptionsOf(s), Mode: mode, BigKeyBytes: 1024, FlushTarget: true,
				Writer: redissync.WriterConfig{Target: target, PipelineCommands: 2}}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if st.Native == 0 {
				t.Error("no key was copied in pieces")
			}
			redistest.CompareModels(t, redistest.ServerModel(t, s), redistest.ClusterModel(t, rc))
		})
	}
}
