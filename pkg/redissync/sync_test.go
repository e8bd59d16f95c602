package redissync_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

// srv is the source of the syncs, dst their target; tests that need a
// source with other settings start their own (startExtra).
var srv, dst *testenv.Redis

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithRedis(func() int {
		return testenv.RunWithRedis(m.Run, &dst, testenv.RedisOptions{Password: "target-secret"})
	}, &srv, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}}))
}

func targetOptions(r *testenv.Redis) *redis.Options {
	o, err := redis.ParseURL(r.URL(0))
	if err != nil {
		panic(err)
	}
	return o
}

func TestSyncFile(t *testing.T) {
	redistest.LoadInto(t, srv, "")
	redistest.FillEverything(t, srv)
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
			redistest.FlushAll(t, dst)
			// Stale data on the target must be replaced, not merged.
			tc := dst.Client(0)
			tc.RPush(context.Background(), "db0:list:big", "stale")
			tc.Close()
			st, err := redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: rdb, BigKeyBytes: v.big,
				Writer: redissync.WriterConfig{Target: targetOptions(dst), TargetRDBVersion: v.version, Connections: 3}}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if v.native && st.Native == 0 || !v.native && st.Native != 0 {
				t.Errorf("native keys: %d (want some: %v)", st.Native, v.native)
			}
			redistest.AssertIdentical(t, srv, dst)
		})
	}
}
