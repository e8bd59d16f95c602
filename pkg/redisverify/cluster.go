package redisverify

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/redissync"
)

// Per-shard verification, when the source or the target (or both) is a
// Redis Cluster: each side's masters and slot map are read once (CLUSTER
// SLOTS); every source master is scanned on its own connection, and each
// batch of its keys is compared against the target node that serves the
// keys' slots (a single server serves them all), so every comparison is
// between two plain connections and pipelines stay per shard. Keys only
// the target has are found by scanning every target master the same way.
// A cluster has database 0 only: keys a single-server side holds in other
// databases appear as a count difference. A slot that moves during the
// run fails it (MOVED): verify a cluster that is not being resharded.

// topology is one side's masters and which serves each slot; a single
// server is one node serving every slot.
type topology struct {
	nodes []*redis.Client
	addrs []string
	slot  [16384]int // index into nodes
	owned bool       // nodes were opened here (closed by close)
}

func (tp *topology) nodeFor(key string) int { return tp.slot[redissync.KeySlot(key)] }

func (tp *topology) close() {
	if tp.owned {
		for _, c := range tp.nodes {
			c.Close()
		}
	}
}

// discoverTopology reads the slot map when the side's server is in
// cluster mode; nil when it is a single server.
func discoverTopology(ctx context.Context, s *side) (*topology, error) {
	c := s.db(0)
	info, err := c.Info(ctx, "cluster").Result()
	if err != nil {
		return nil, err
	}
	if !strings.Contains(info, "cluster_enabled:1") {
		return nil, nil
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SLOTS: %w", err)
	}
	tp := &topology{owned: true}
	for i := range tp.slot {
		tp.slot[i] = -1
	}
	index := map[string]int{}
	for _, r := range slots {
		if len(r.Nodes) == 0 {
			continue
		}
		addr := r.Nodes[0].Addr
		n, ok := index[addr]
		if !ok {
			n = len(tp.nodes)
			index[addr] = n
			o := *s.o
			o.Addr, o.DB, o.PoolSize = addr, 0, s.workers+1
			tp.nodes = append(tp.nodes, redis.NewClient(&o))
			tp.addrs = append(tp.addrs, addr)
		}
		for i := r.Start; i <= r.End; i++ {
			tp.slot[i] = n
		}
	}
	for i, n := range tp.slot {
		if n < 0 {
			tp.close()
			return nil, fmt.Errorf("slot %d is served by no node (cluster not ok): verify once every slot is served", i)
		}
	}
	return tp, nil
}

func singleTopology(s *side) *topology {
	return &topology{nodes: []*redis.Client{s.db(0)}, addrs: []string{s.o.Addr}}
}

// dbSize is the number of keys over every node of tp, position keys left
// out.
func dbSize(ctx context.Context, tp *topology) (int64, error) {
	var n int64
	for i, c := range tp.nodes {
		k, err := c.DBSize(ctx).Result()
		if err != nil {
			return 0, fmt.Errorf("%s: DBSIZE: %w", tp.addrs[i], err)
		}
		n += k
		if err := scanAll(ctx, c, func(keys []string) error {
			for _, key := range keys {
				if redissync.IsPositionKey(key) {
					n--
				}
			}
			return nil
		}, redissync.PositionKey+"*"); err != nil {
			return 0, fmt.Errorf("%s: %w", tp.addrs[i], err)
		}
	}
	return n, nil
}

// clusters runs the per-shard comparison when either side is a cluster;
// done is false for two single servers.
func (v *verifier) clusters(ctx context.Context, sdbs, tdbs map[int]int64) (done bool, err error) {
	st, err := discoverTopology(ctx, v.src)
	if err != nil {
		return false, fmt.Errorf("source Redis %s: %w", v.cfg.Source.Addr, err)
	}
	tt, err := discoverTopology(ctx, v.dst)
	if err != nil {
		if st != nil {
			st.close()
		}
		return false, fmt.Errorf("target Redis %s: %w", v.cfg.Target.Addr, err)
	}
	if st == nil && tt == nil {
		return false, nil
	}
	if st == nil {
		st = singleTopology(v.src)
	}
	if tt == nil {
		tt = singleTopology(v.dst)
	}
	defer st.close()
	defer tt.close()
	v.log.Info("comparing shard by shard", zap.Strings("source_nodes", st.addrs), zap.Strings("target_nodes", tt.addrs))
	return true, v.clusterRun(ctx, st, tt, sdbs, tdbs)
}

// clusterRun compares database 0 shard by shard.
func (v *verifier) clusterRun(ctx context.Context, st, tt *topology, sdbs, tdbs map[int]int64) error {
	sn, err := dbSize(ctx, st)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	tn, err := dbSize(ctx, tt)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	v.rep.Databases = append(v.rep.Databases, DBCount{DB: 0, Source: sn, Target: tn})
	for db := 1; db < 16; db++ { // only a single-server side can have them
		if sdbs[db] > 0 || tdbs[db] > 0 {
			v.rep.Databases = append(v.rep.Databases, DBCount{DB: db, Source: sdbs[db], Target: tdbs[db]})
		}
	}
	type batch struct {
		node int
		keys []string
	}
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan batch, v.cfg.Workers)
	for range v.cfg.Workers {
		g.Go(func() error {
			for b := range batches {
				groups := map[int][]string{}
				for _, k := range b.keys {
					groups[tt.nodeFor(k)] = append(groups[tt.nodeFor(k)], k)
				}
				for tnode, keys := range groups {
					if err := v.keys(gctx, 0, st.nodes[b.node], tt.nodes[tnode], keys); err != nil {
						return fmt.Errorf("source %s / target %s: %w", st.addrs[b.node], tt.addrs[tnode], err)
					}
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(batches)
		for i, c := range st.nodes {
			send := func(keys []string) error {
				select {
				case batches <- batch{node: i, keys: keys}:
					return nil
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			if v.cfg.Sample > 0 {
				var keys []string
				for range max(1, v.cfg.Sample/len(st.nodes)) {
					k, err := c.RandomKey(gctx).Result()
					if errors.Is(err, redis.Nil) {
						break
					}
					if err != nil {
						return fmt.Errorf("source %s: RANDOMKEY: %w", st.addrs[i], err)
					}
					keys = append(keys, k)
				}
				if len(keys) > 0 {
					if err := send(keys); err != nil {
						return err
					}
				}
				continue
			}
			if err := scanAll(gctx, c, send); err != nil {
				return fmt.Errorf("source %s: %w", st.addrs[i], err)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if v.cfg.Sample > 0 {
		return nil
	}
	// Keys only the target has.
	for i, c := range tt.nodes {
		err := scanAll(ctx, c, func(keys []string) error {
			groups := map[int][]string{}
			for _, k := range keys {
				if !redissync.IsPositionKey(k) {
					groups[st.nodeFor(k)] = append(groups[st.nodeFor(k)], k)
				}
			}
			for snode, keys := range groups {
				pipe := st.nodes[snode].Pipeline()
				ex := make([]*redis.IntCmd, len(keys))
				for j, k := range keys {
					ex[j] = pipe.Exists(ctx, k)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					return fmt.Errorf("source %s: EXISTS: %w", st.addrs[snode], err)
				}
				for j, k := range keys {
					if ex[j].Val() == 0 {
						v.diff(Difference{DB: 0, Key: k, Kind: "extra", Target: "present"})
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("target %s: %w", tt.addrs[i], err)
		}
	}
	return nil
}
