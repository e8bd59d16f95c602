package redissync

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/testenv"
)

// TestDeleteSlots: emptying a shard's slots on the target (before its RDB
// is loaded again) removes exactly the keys of those slots, reports that
// many, keeps the follow positions and leaves every other key alone, on
// a cluster target (asked slot by slot, here across two masters) and on a
// single server (SCANned).
func TestDeleteSlots(t *testing.T) {
	rc, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	single, err := testenv.StartRedis(testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	ctx := context.Background()
	cc := rc.Client()
	defer cc.Close()

	// The slots of the first master and 100 of another's.
	o0, _ := redis.ParseURL(rc.Nodes[0].URL(0))
	o1, _ := redis.ParseURL(rc.Nodes[1].URL(0))
	own0, err := ownSlots(ctx, o0)
	if err != nil {
		t.Fatal(err)
	}
	own1, err := ownSlots(ctx, o1)
	if err != nil {
		t.Fatal(err)
	}
	slots := append(own0, redis.ClusterSlot{Start: own1[0].Start, End: own1[0].Start + 99})
	inRange := func(s int64) bool {
		for _, r := range slots {
			if s >= int64(r.Start) && s <= int64(r.End) {
				return true
			}
		}
		return false
	}
	// Which keys are in those slots, as the server hashes them.
	var keys []string
	pipe := cc.Pipeline()
	var slotOf []*redis.IntCmd
	for i := range 3000 {
		k := fmt.Sprintf("key:%d", i)
		keys = append(keys, k)
		slotOf = append(slotOf, pipe.ClusterKeySlot(ctx, k))
	}
	pos := slotPosKey(PositionKey+":shard:0", uint16(own0[0].Start))
	keys = append(keys, pos)
	slotOf = append(slotOf, pipe.ClusterKeySlot(ctx, pos))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var want int64
	for i, k := range keys {
		if inRange(slotOf[i].Val()) && k != pos {
			want++
		}
	}
	if want < 1000 || want > 2000 {
		t.Fatalf("%d of the keys in the slots; the test wants a third and more", want)
	}

	for _, tc := range []struct {
		name   string
		target *testenv.Redis
		fill   redis.Cmdable
	}{{"cluster", rc.Nodes[0], cc}, {"single", single, single.Client(0)}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range keys {
				if err := tc.fill.Set(ctx, k, "v", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			o, _ := redis.ParseURL(tc.target.URL(0))
			w, err := NewWriter(ctx, WriterConfig{Target: o}, zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if w.cluster != (tc.name == "cluster") {
				t.Fatalf("writer sees a cluster: %v", w.cluster)
			}
			n, err := w.deleteSlots(ctx, slots)
			if err != nil {
				t.Fatal(err)
			}
			if n != want {
				t.Errorf("deleteSlots reports %d keys deleted, %d were in the slots", n, want)
			}
			for i, k := range keys {
				gone := tc.fill.Exists(ctx, k).Val() == 0
				if gone != (inRange(slotOf[i].Val()) && k != pos) {
					t.Errorf("key %s (slot %d, in the range %v): gone %v", k, slotOf[i].Val(), inRange(slotOf[i].Val()), gone)
				}
			}
		})
	}
}
