package redissync

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/testenv"
)

// The positions of one shard on a cluster target, as a follower killed
// just after the source's shard failed over leaves them: the floors
// written since carry the promoted master's replication ID, one floor
// and a slot position beyond it still the old master's (the stream is
// the same: PSYNC2 keeps the offsets). They are read as one stream: the
// follow resumes at the lowest floor under the newest ID, and the slot's
// position is honoured (left out, its commands would be applied twice).
func TestReadClusterPositionsAcrossFailover(t *testing.T) {
	rc, err := testenv.StartRedisCluster(3, testenv.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx := context.Background()
	o, err := redis.ParseURL(rc.URL())
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWriter(ctx, WriterConfig{Target: o}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cc := w.clusterClient(1)
	defer cc.Close()
	masters, _, err := clusterMasters(ctx, cc)
	if err != nil || len(masters) != 3 {
		t.Fatalf("masters %v (%v)", masters, err)
	}
	base := PositionKey + ":shard:0"
	oldID, newID := strings.Repeat("a", 40), strings.Repeat("b", 40)
	floors := []struct {
		id  string
		off int64
	}{{newID, 1200}, {oldID, 1000}, {newID, 1200}}
	for i, m := range masters {
		if err := cc.HSet(ctx, floorKey(base, m.tag), "replid", floors[i].id, "offset", floors[i].off, "db", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A slot of the master whose floor is the old one: only its own
	// position says it holds the stream beyond that floor.
	_, owner, err := clusterMasters(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	slot := uint16(0)
	for owner[slot] != masters[1].addr {
		slot++
	}
	if err := cc.HSet(ctx, slotPosKey(base, slot), "replid", oldID, "offset", 1100, "db", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cp, ok, err := readClusterPositions(ctx, w, base, zap.NewNop())
	if err != nil || !ok {
		t.Fatalf("positions not resumable: ok %v, %v", ok, err)
	}
	if cp.min.offset != 1000 || cp.min.replid != newID {
		t.Errorf("resume at %s %d, want %s 1000 (the lowest floor, under the newest ID)", cp.min.replid, cp.min.offset, newID)
	}
	const want = 1100
	if cp.held[slot] != want {
		t.Errorf("slot %d holds the stream up to %d, want %d", slot, cp.held[slot], want)
	}
}
