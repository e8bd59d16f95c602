package redisverify

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
)

// fillVia writes the same data through any client (a single server's or a
// cluster's, which routes each key to its shard).
func fillVia(t *testing.T, c redis.Cmdable) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		if err := c.Set(ctx, fmt.Sprintf("s%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.HSet(ctx, fmt.Sprintf("h%d", i%20), fmt.Sprint(i), i).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.RPush(ctx, fmt.Sprintf("{l}%d", i%7), i).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Expire(ctx, "s1", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
}

// redis verify against a cluster compares shard by shard: identical data
// written independently into a single server and a 3-master cluster (and
// into two clusters) is reported identical; a changed, a missing and an
// extra key on different shards are each reported, and nothing else.
func TestVerifyClusterPerShard(t *testing.T) {
	ctx := context.Background()
	single, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	a, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	sc := single.Client(0)
	defer sc.Close()
	ac, bc := a.Client(), b.Client()
	defer ac.Close()
	defer bc.Close()
	fillVia(t, sc)
	fillVia(t, ac)
	fillVia(t, bc)
	url := func(u string) *redis.Options { o, _ := redis.ParseURL(u); return o }
	for _, pair := range []struct {
		name     string
		src, dst *redis.Options
	}{
		{"single to cluster", url(single.URL(0)), url(a.URL())},
		{"cluster to single", url(a.URL()), url(single.URL(0))},
		{"cluster to cluster", url(a.URL()), url(b.URL())},
	} {
		rep, err := Run(ctx, Config{Source: pair.src, Target: pair.dst}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatalf("%s: %v", pair.name, err)
		}
		if !rep.Identical() || rep.Checked != 327 {
			t.Errorf("%s: identical data reported as %+v (checked %d of 327 keys)", pair.name, rep, rep.Checked)
		}
	}
	// Three differences, on keys that live on different shards.
	if err := bc.Set(ctx, "s5", "changed", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := bc.Del(ctx, "h3").Err(); err != nil {
		t.Fatal(err)
	}
	if err := bc.Set(ctx, "only-on-target", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(ctx, Config{Source: url(a.URL()), Target: url(b.URL())}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range rep.Differences {
		got[d.Key] = d.Kind
	}
	want := map[string]string{"s5": "value", "h3": "missing", "only-on-target": "extra"}
	if fmt.Sprint(got) != fmt.Sprint(want) || rep.DiffCount != 3 || rep.Identical() {
		t.Errorf("differences %v (total %d), want %v", got, rep.DiffCount, want)
	}
}
