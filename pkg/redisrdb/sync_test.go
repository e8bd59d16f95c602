package redisrdb

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
)

func flushAll(t *testing.T, r *testenv.Redis) {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

func digest(t *testing.T, r *testenv.Redis) string {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	d, err := c.Do(context.Background(), "DEBUG", "DIGEST").Text()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// assertIdentical compares the two servers by DEBUG DIGEST (computed by
// redis-server itself) and key by key (values, TTLs, stream groups).
func assertIdentical(t *testing.T, a, b *testenv.Redis) {
	t.Helper()
	if da, db := digest(t, a), digest(t, b); da != db {
		t.Errorf("DEBUG DIGEST differs: source %s target %s", da, db)
	}
	compareModels(t, serverModel(t, a), serverModel(t, b))
}

func targetOptions(r *testenv.Redis) *redis.Options {
	o, err := redis.ParseURL(r.URL(0))
	if err != nil {
		panic(err)
	}
	return o
}

func TestSyncFile(t *testing.T) {
	loadInto(t, "")
	fillEverything(t, srv)
	c := srv.Client(0)
	if err := c.Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	rdb := filepath.Join(t.TempDir(), "source.rdb")
	b, err := os.ReadFile(filepath.Join(srv.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(rdb, b, 0o600)

	for _, v := range []struct {
		name    string
		big     int64
		version int
		native  bool
	}{
		{"restore", 0, 0, false},
		{"big keys in pieces", 1024, 0, true},
		{"target too old for listpacks", 0, 9, true},
	} {
		t.Run(v.name, func(t *testing.T) {
			flushAll(t, dst)
			// Stale data on the target must be replaced, not merged.
			tc := dst.Client(0)
			tc.RPush(context.Background(), "db0:list:big", "stale")
			tc.Close()
			st, err := Sync(context.Background(), SyncConfig{RDBFile: rdb, BigKeyBytes: v.big,
				Writer: WriterConfig{Target: targetOptions(dst), TargetRDBVersion: v.version, Connections: 3}}, zaptest.NewLogger(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			if v.native && st.Native == 0 || !v.native && st.Native != 0 {
				t.Errorf("native keys: %d (want some: %v)", st.Native, v.native)
			}
			assertIdentical(t, srv, dst)
		})
	}
}
