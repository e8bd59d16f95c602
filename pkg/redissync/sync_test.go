package redissync_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
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
	if os.Getenv(childFollowerEnv) != "" {
		os.Exit(runChildFollower())
	}
	os.Exit(testenv.RunWithRedis(func() int {
		return testenv.RunWithRedis(m.Run, &dst, testenv.RedisOptions{Password: "target-secret"})
	}, &srv, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}}))
}

// newMetrics returns unregistered metrics, read by the test directly.
func newMetrics(t *testing.T) *redissync.Metrics {
	t.Helper()
	m, err := redissync.NewMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkKeysCounted checks the keys metric counted exactly the keys the
// sync reports written.
func checkKeysCounted(t *testing.T, m *redissync.Metrics, st redissync.LoadStats) {
	t.Helper()
	if got := testutil.ToFloat64(m.KeysImported); got != float64(st.Keys) {
		t.Errorf("keys imported metric %v, the sync wrote %d keys", got, st.Keys)
	}
	if st.Keys > 0 && testutil.ToFloat64(m.BytesImported) <= 0 {
		t.Errorf("bytes imported metric %v after %d keys", testutil.ToFloat64(m.BytesImported), st.Keys)
	}
}

// masterOffset is r's master_repl_offset (INFO replication).
func masterOffset(t *testing.T, r *testenv.Redis) int64 {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	info, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "master_repl_offset:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("master_repl_offset %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("no master_repl_offset in INFO replication of %s", r.Addr())
	return 0
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
	if err := os.WriteFile(rdb, b, 0o600); err != nil {
		t.Fatal(err)
	}

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
			if err := tc.RPush(context.Background(), "db0:list:big", "stale").Err(); err != nil {
				t.Fatal(err)
			}
			tc.Close()
			m := newMetrics(t)
			st, err := redissync.Sync(context.Background(), redissync.SyncConfig{RDBFile: rdb, BigKeyBytes: v.big,
				Writer: redissync.WriterConfig{Target: targetOptions(dst), TargetRDBVersion: v.version, Connections: 3}, Metrics: m}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			checkKeysCounted(t, m, st)
			if v.native && st.Native == 0 || !v.native && st.Native != 0 {
				t.Errorf("native keys: %d (want some: %v)", st.Native, v.native)
			}
			redistest.AssertIdentical(t, srv, dst)
		})
	}
}
