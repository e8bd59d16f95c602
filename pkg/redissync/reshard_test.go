package redissync

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/testenv"
)

// TestSlotWatchOneClientAndQuietFailures: the reshard watch of a shard
// asks its master over one connection however often it checks; when the
// master stops answering CLUSTER (here: its ACL forbids it) the follow is
// not stopped and the failure is logged once, and once more when the
// master answers again.
func TestSlotWatchOneClientAndQuietFailures(t *testing.T) {
	rc, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx := context.Background()
	admin := rc.Nodes[0].Client(0)
	defer admin.Close()
	if err := admin.Do(ctx, "ACL", "SETUSER", "watcher", "on", ">watch-pass", "+@all", "~*").Err(); err != nil {
		t.Fatal(err)
	}
	firstID := func() int64 {
		t.Helper()
		c := rc.Nodes[0].Client(0)
		defer c.Close()
		id, err := c.ClientID(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	core, logs := observer.New(zapcore.InfoLevel)
	w := &slotWatch{log: zap.New(core)}
	defer w.close()
	src := &redis.Options{Addr: rc.Nodes[0].Addr(), Username: "watcher", Password: "watch-pass"}
	before := firstID()
	for range 5 {
		if err := w.check(ctx, src); err != nil {
			t.Fatalf("check of a cluster at rest: %v", err)
		}
	}
	// Connection IDs count up: the one after ours and the watch's.
	if opened := firstID() - before - 1; opened != 1 {
		t.Errorf("5 checks opened %d connections to the master, want 1", opened)
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "watcher", "-cluster").Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.check(ctx, src); err != nil {
			t.Fatalf("a check that cannot ask stopped the follow: %v", err)
		}
	}
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("3 failed checks logged %d warnings, want 1: %v", got, logs.All())
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "watcher", "+cluster").Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := w.check(ctx, src); err != nil {
			t.Fatalf("check after recovery: %v", err)
		}
	}
	if got := logs.FilterLevelExact(zapcore.InfoLevel).Len(); got != 1 {
		t.Errorf("recovery logged %d infos, want 1: %v", got, logs.All())
	}
	if got := logs.FilterLevelExact(zapcore.WarnLevel).Len(); got != 1 {
		t.Errorf("%d warnings in all, want the one", got)
	}
	// A moved slot is still noticed.
	if err := admin.Do(ctx, "CLUSTER", "SETSLOT", w.slots[0].Start, "MIGRATING", clusterNodeID(t, rc.Nodes[1])).Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.check(ctx, src); err == nil {
		t.Error("a slot marked migrating was not noticed")
	}
}

func clusterNodeID(t *testing.T, n *testenv.Redis) string {
	t.Helper()
	c := n.Client(0)
	defer c.Close()
	id, err := c.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
