package redissync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Cluster sources. A source that runs in cluster mode is copied shard by
// shard: the masters are read from CLUSTER NODES, and each is copied and
// followed on its own, in parallel, exactly as a single server would be
// (PSYNC with its own replication ID, offset and follow position; or, in
// SCAN mode, its own SCAN and keyspace notifications, which a cluster node
// only publishes for its own keys). All shards write into the one writer,
// which routes by slot when the target is a cluster too.
//
// A failover of a source shard is followed: when its link drops, the
// shard's follower asks the cluster (any master it knew) which master now
// serves the shard's first slot and continues there with PSYNC <replid>
// <offset+1>; a promoted replica keeps its old master's replication ID as
// its second ID, so it continues the stream (+CONTINUE) without a full
// resync. A shard that cannot continue its stream (FULLRESYNC: a kill -9
// of its master lost what its replica had not yet received, or the
// backlog moved past us) is reloaded alone: the target's keys of that
// shard's slots are deleted and its RDB loaded again while the other
// shards keep following (shardresync.go). Limits: a reshard of the
// source is not followed: the follow stops, naming the slots and to rerun
// with --flush-target once the reshard is done (reshard.go). The shard's
// durable position is named by its first slot, which the promoted replica
// keeps (position.go): a follower restarted after a failover resumes the
// shard on its new master with PSYNC.

// shard is one master of a cluster source.
type shard struct {
	id, addr string
	slot     int // the first slot it serves
}

// errNotACluster: the source is a single server.
var errNotACluster = errors.New("not a cluster")

// clusterNodesError: the source is a cluster whose masters cannot be
// listed.
type clusterNodesError struct{ err error }

func (e *clusterNodesError) Error() string { return e.err.Error() }
func (e *clusterNodesError) Unwrap() error { return e.err }

// clusterShards lists the masters serving slots. It returns
// errNotACluster for a single server, a *clusterNodesError for a cluster
// whose masters cannot be listed, and any other error when the source
// cannot be asked at all.
func clusterShards(ctx context.Context, o *redis.Options) ([]shard, error) {
	so := *o
	so.PoolSize = 1
	so.MaxRetries = -1
	c := redis.NewClient(&so)
	defer c.Close()
	on, err := isCluster(ctx, c)
	if err != nil {
		return nil, err
	}
	if !on {
		return nil, errNotACluster
	}
	nodes, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, &clusterNodesError{fmt.Errorf("source Redis %s is a cluster: CLUSTER NODES: %w", o.Addr, err)}
	}
	seedHost, _, _ := net.SplitHostPort(o.Addr)
	var out []shard
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue // replicas, failed masters, masters without slots
		}
		addr, _, _ := strings.Cut(f[1], "@")
		if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
			addr = net.JoinHostPort(seedHost, port)
		}
		slot, _, _ := strings.Cut(f[8], "-")
		first, err := strconv.Atoi(slot)
		if err != nil {
			continue // an importing/migrating marker, not a range
		}
		out = append(out, shard{id: f[0], addr: addr, slot: first})
	}
	if len(out) == 0 {
		return nil, &clusterNodesError{fmt.Errorf("source Redis %s is a cluster, but CLUSTER NODES lists no master serving slots", o.Addr)}
	}
	return out, nil
}

// syncClusterSource copies and follows every shard of a cluster source
// in parallel; the first that fails stops the others.
func syncClusterSource(ctx context.Context, cfg SyncConfig, w *Writer, shards []shard, log *zap.Logger) (LoadStats, error) {
	addrs := make([]string, len(shards))
	for i, s := range shards {
		addrs[i] = s.addr
	}
	log.Info("the source is a Redis Cluster: each master is copied and followed on its own connection", zap.Strings("shards", addrs))
	var mu sync.Mutex
	var total LoadStats
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range shards {
		scfg := cfg
		o := *cfg.Source
		o.Addr = s.addr
		scfg.Source = &o
		scfg.shardID, scfg.shardSlot, scfg.shardSeeds = s.id, s.slot, addrs
		g.Go(func() error {
			st, err := syncLive(gctx, scfg, w, log.With(zap.String("shard", s.addr)))
			mu.Lock()
			total.add(st)
			mu.Unlock()
			if err != nil {
				return fmt.Errorf("source shard %s: %w", s.addr, err)
			}
			return nil
		})
	}
	err := g.Wait()
	return total, err
}

func (s *LoadStats) add(o LoadStats) {
	s.Keys += o.Keys
	s.Restored += o.Restored
	s.Strings += o.Strings
	s.Native += o.Native
	s.SkippedExpired += o.SkippedExpired
	s.SkippedEmpty += o.SkippedEmpty
	s.Functions += o.Functions
	s.Bytes += o.Bytes
	s.ExpiredFields += o.ExpiredFields
	s.DuplicateKeys += o.DuplicateKeys
	s.DroppedFieldTTLs += o.DroppedFieldTTLs
}

// shardMaster asks the masters in seeds, in turn, which master serves
// slot now (after a failover it is the promoted replica).
func shardMaster(ctx context.Context, o *redis.Options, seeds []string, slot int) (string, error) {
	var last error
	for _, seed := range seeds {
		so := *o
		so.Addr, so.PoolSize, so.MaxRetries, so.DialerRetries = seed, 1, -1, 1
		c := redis.NewClient(&so)
		slots, err := c.ClusterSlots(ctx).Result()
		c.Close()
		if err != nil {
			last = err
			continue
		}
		for _, s := range slots {
			if s.Start <= slot && slot <= s.End && len(s.Nodes) > 0 {
				addr := s.Nodes[0].Addr
				if host, port, err := net.SplitHostPort(addr); err == nil && host == "" {
					h, _, _ := net.SplitHostPort(seed)
					addr = net.JoinHostPort(h, port)
				}
				return addr, nil
			}
		}
		last = fmt.Errorf("no master serves slot %d", slot)
	}
	return "", fmt.Errorf("source cluster: which master serves slot %d: %w", slot, last)
}
