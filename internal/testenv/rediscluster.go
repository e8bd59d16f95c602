package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a throwaway Redis Cluster of masters only (no replicas),
// created with `redis-cli --cluster create`: each node is a real
// redis-server with cluster-enabled, its own directory and port, and its
// cluster bus on port+10000. Nodes can be stopped and restarted like any
// Redis (they rejoin from the nodes.conf in their directory).
type RedisCluster struct {
	Nodes []*Redis
}

// StartRedisCluster starts masters nodes and joins them into one cluster
// with the 16384 slots spread evenly, and waits until every node reports
// cluster_state:ok.
func StartRedisCluster(masters int, opts RedisOptions) (*RedisCluster, error) {
	return StartRedisClusterWithReplicas(masters, 0, opts)
}

// StartRedisClusterWithReplicas is StartRedisCluster with replicas
// replicas per master (redis-cli --cluster-replicas), waiting also until
// every replica's link to its master is up.
func StartRedisClusterWithReplicas(masters, replicas int, opts RedisOptions) (*RedisCluster, error) {
	if _, err := RedisServerBin(); err != nil {
		return nil, err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, errors.New("redis-cli not found on PATH: it comes with redis-server (`sudo apt-get install redis-server`)")
	}
	rc := &RedisCluster{}
	fail := func(err error) (*RedisCluster, error) {
		rc.Close()
		return nil, err
	}
	for i := 0; i < masters*(1+replicas); i++ {
		n, err := startClusterNode(opts)
		if err != nil {
			return fail(err)
		}
		rc.Nodes = append(rc.Nodes, n)
	}
	args := []string{"--cluster", "create"}
	for _, n := range rc.Nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", fmt.Sprint(replicas), "--cluster-yes")
	cmd := exec.Command(cli, args...)
	if opts.Password != "" {
		cmd.Env = append(os.Environ(), "REDISCLI_AUTH="+opts.Password)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out))
	}
	if err := rc.WaitOK(60 * time.Second); err != nil {
		return fail(err)
	}
	return rc, nil
}

// startClusterNode starts one cluster-enabled node on a port whose bus
// port (port+10000) is also free.
func startClusterNode(opts RedisOptions) (*Redis, error) {
	dir, err := os.MkdirTemp("", "replicator-rediscluster-")
	if err != nil {
		return nil, err
	}
	o := opts
	o.Args = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "5000", "--cluster-require-full-coverage", "no"}, opts.Args...)
	if opts.Password != "" {
		o.Args = append(o.Args, "--masterauth", opts.Password)
	}
	r := &Redis{Dir: dir, opts: o}
	for attempt := 0; attempt < 20; attempt++ {
		if r.Port, err = FreePort(); err != nil {
			break
		}
		if r.Port+10000 > 65535 || !portFree(r.Port+10000) {
			continue
		}
		if err = r.Start(); err == nil {
			return r, nil
		}
	}
	os.RemoveAll(dir)
	if err == nil {
		err = errors.New("no free port pair (port, port+10000) for a cluster node")
	}
	return nil, err
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// WaitOK waits until every node reports cluster_state:ok and agrees on
// who serves every slot.
func (rc *RedisCluster) WaitOK(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var why string
		for _, n := range rc.Nodes {
			c := n.Client(0)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			info, err := c.ClusterInfo(ctx).Result()
			cancel()
			c.Close()
			if err != nil {
				why = err.Error()
				break
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				why = fmt.Sprintf("node %s not ok yet", n.Addr())
				break
			}
			c = n.Client(0)
			ctx, cancel = context.WithTimeout(context.Background(), 2*time.Second)
			repl, err := c.Info(ctx, "replication").Result()
			cancel()
			c.Close()
			if err != nil || strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
				why = fmt.Sprintf("replica %s not in sync yet", n.Addr())
				break
			}
		}
		if why == "" {
			why = rc.slotsAgreed()
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis cluster not ready after %s: %s", timeout, why)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// slotsAgreed is "" when every node's slot map (CLUSTER SLOTS) is the
// same and names as owners exactly the nodes that say they are masters;
// else what differs. Right after a failover a node may still give the
// slots to the old master while the new one already says it is master.
func (rc *RedisCluster) slotsAgreed() string {
	masters, err := rc.Masters()
	if err != nil {
		return err.Error()
	}
	isMaster := map[string]bool{}
	for _, m := range masters {
		isMaster[m.Addr()] = true
	}
	var first string
	for _, n := range rc.Nodes {
		c := n.Client(0)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		slots, err := c.ClusterSlots(ctx).Result()
		cancel()
		c.Close()
		if err != nil {
			return fmt.Sprintf("node %s: CLUSTER SLOTS: %v", n.Addr(), err)
		}
		var b strings.Builder
		owners := map[string]bool{}
		for _, sl := range slots {
			if len(sl.Nodes) == 0 {
				return fmt.Sprintf("node %s: slots %d-%d have no node", n.Addr(), sl.Start, sl.End)
			}
			fmt.Fprintf(&b, "%d-%d:%s ", sl.Start, sl.End, sl.Nodes[0].Addr)
			owners[sl.Nodes[0].Addr] = true
		}
		for a := range owners {
			if !isMaster[a] {
				return fmt.Sprintf("node %s gives slots to %s, which is not a master", n.Addr(), a)
			}
		}
		if len(owners) != len(isMaster) {
			return fmt.Sprintf("node %s gives slots to %d nodes, %d are masters", n.Addr(), len(owners), len(isMaster))
		}
		if first == "" {
			first = b.String()
		} else if b.String() != first {
			return fmt.Sprintf("node %s does not agree on the slot map yet", n.Addr())
		}
	}
	return ""
}

// Masters are the nodes that are masters now (INFO replication role),
// in the order of Nodes.
func (rc *RedisCluster) Masters() ([]*Redis, error) {
	var out []*Redis
	for _, n := range rc.Nodes {
		c := n.Client(0)
		info, err := c.Info(context.Background(), "replication").Result()
		c.Close()
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", n.Addr(), err)
		}
		if strings.Contains(info, "role:master") {
			out = append(out, n)
		}
	}
	return out, nil
}

// Addrs are the nodes' host:port.
func (rc *RedisCluster) Addrs() []string {
	var out []string
	for _, n := range rc.Nodes {
		out = append(out, n.Addr())
	}
	return out
}

// URL is a redis:// URL of the first node (any node is a seed).
func (rc *RedisCluster) URL() string { return rc.Nodes[0].URL(0) }

// Client is a cluster client (routes by slot, follows MOVED and ASK); the
// caller closes it.
func (rc *RedisCluster) Client() *redis.ClusterClient {
	return redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), Password: rc.Nodes[0].opts.Password,
		DialTimeout: 2 * time.Second})
}

// NodeOf returns the node that serves key's slot, as the nodes themselves
// report it (CLUSTER KEYSLOT, CLUSTER SLOTS).
func (rc *RedisCluster) NodeOf(ctx context.Context, key string) (*Redis, error) {
	owner, err := rc.Owners(ctx)
	if err != nil {
		return nil, err
	}
	return owner(key)
}

// Owners reads the slot map once (CLUSTER SLOTS) and returns a lookup of
// the node serving a key's slot (CLUSTER KEYSLOT, asked of the server).
func (rc *RedisCluster) Owners(ctx context.Context) (func(key string) (*Redis, error), error) {
	c := rc.Nodes[0].Client(0)
	slots, err := c.ClusterSlots(ctx).Result()
	c.Close()
	if err != nil {
		return nil, err
	}
	return func(key string) (*Redis, error) {
		c := rc.Nodes[0].Client(0)
		defer c.Close()
		slot, err := c.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return nil, err
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for _, n := range rc.Nodes {
					if n.Addr() == s.Nodes[0].Addr {
						return n, nil
					}
				}
			}
		}
		return nil, fmt.Errorf("no node serves slot %d of key %q", slot, key)
	}, nil
}

// Close stops every node and removes their directories.
func (rc *RedisCluster) Close() {
	for _, n := range rc.Nodes {
		n.Close()
	}
}
