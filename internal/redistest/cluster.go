package redistest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// ClusterModel reads every key of a Redis Cluster master by master
// (database 0, "0/<key>" as ServerModel names them) and fails the test
// when a master holds a key of a slot the cluster says another node
// serves, or two masters hold the same key. A key deleted while the read
// runs is left out.
func ClusterModel(t testing.TB, rc *testenv.RedisCluster) map[string]*KeyModel {
	t.Helper()
	ctx := context.Background()
	out := map[string]*KeyModel{}
	now := time.Now().UnixMilli()
	masters, err := rc.Masters()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := rc.Owners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range masters {
		c := n.Client(0)
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
			if err != nil {
				t.Fatalf("node %s: SCAN: %v", n.Addr(), err)
			}
			for _, k := range keys {
				o, err := owner(k)
				if err != nil {
					t.Fatal(err)
				}
				if o != n {
					t.Errorf("key %q is on node %s, but its slot is served by %s", k, n.Addr(), o.Addr())
				}
				if c.Exists(ctx, k).Val() == 0 {
					continue // deleted since SCAN listed it (the node is being written)
				}
				name := fmt.Sprintf("0/%s", k)
				if _, dup := out[name]; dup {
					t.Errorf("key %q is on two nodes", k)
				}
				out[name] = keyFromServer(t, c, k, now)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		c.Close()
	}
	return out
}
