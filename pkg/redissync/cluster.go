package redissync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Cluster-mode targets (ElastiCache with cluster mode enabled, a Redis
// Cluster). The writer detects one from INFO cluster (cluster_enabled:1)
// and then writes through go-redis' cluster client: every command is
// routed by the hash slot of its key, a pipeline is split into one
// pipeline per shard sent in parallel, MOVED and ASK replies are followed
// (ASKING for a slot being migrated), and the slot map is reloaded when a
// node answers MOVED or stops answering (a failover or a reshard).
//
// A cluster has database 0 only: a key from another source database stops
// the sync with a message naming the database. Commands without a key
// (FLUSHALL, FUNCTION RESTORE/LOAD/DELETE/FLUSH) run on every master.
//
// Follow into a cluster (applyCluster): commands are pipelined per shard
// in stream order; the multi-key writes a cluster would refuse with
// CROSSSLOT and that can be split without changing their effect (DEL,
// UNLINK, MSET) are split per key; a source MULTI/EXEC whose keys share one slot runs as one MULTI/EXEC
// on that shard, one that spans slots is split into one MULTI/EXEC per
// slot (atomic per slot, not across them; counted in the log). Any other
// command the cluster refuses (e.g. RENAME or SMOVE across slots) stops the
// follow with the command, its offset and the cluster's error. The follow
// position is not durable on a cluster target (it cannot share a
// transaction with keys of other slots): a restarted follower copies
// again, and says so.

// targetClient is what the writer needs of a target connection pool: a
// single server (*redis.Client) or a cluster (*redis.ClusterClient).
type targetClient interface {
	redis.Cmdable
	Do(ctx context.Context, args ...any) *redis.Cmd
	Close() error
}

// isCluster reports whether the server c is connected to runs in cluster
// mode.
func isCluster(ctx context.Context, c targetClient) (bool, error) {
	info, err := c.Info(ctx, "cluster").Result()
	if err != nil {
		return false, err
	}
	return strings.Contains(info, "cluster_enabled:1"), nil
}

// clusterClient is a cluster client seeded with the target address.
func (w *Writer) clusterClient(pool int) *redis.ClusterClient {
	o := w.cfg.Target
	return redis.NewClusterClient(&redis.ClusterOptions{
		Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		Dialer: o.Dialer, DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		PoolSize: pool, MaxRetries: -1, // a write is never retried blindly; MOVED/ASK are redirects, not retries
		MaxRedirects: 8,
	})
}

// keyless are commands that act on a whole server and must run on every
// master of a cluster.
func keyless(name string) bool {
	switch name {
	case "FLUSHALL", "FLUSHDB", "FUNCTION", "SCRIPT":
		return true
	}
	return false
}

// errClusterDB is returned for a key outside database 0 with a cluster
// target.
func errClusterDB(db int) error {
	return fmt.Errorf("the target is a Redis Cluster, which has only database 0, and the source has keys in database %d: move them to database 0 on the source, or copy that database to a non-cluster target", db)
}

// clusterDo runs one command on a cluster target: on every master when it
// has no key, else on the shard of its key.
func (w *Writer) clusterDo(ctx context.Context, db int, args ...any) error {
	if db != 0 {
		return errClusterDB(db)
	}
	c := w.clusterClient(1)
	defer c.Close()
	name, _ := args[0].(string)
	if keyless(strings.ToUpper(name)) {
		return c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			return n.Do(ctx, args...).Err()
		})
	}
	return c.Do(ctx, args...).Err()
}

// clusterFollower is the state of a follow into a cluster target.
type clusterFollower struct {
	c     *redis.ClusterClient
	tx    [][]any // commands of an open source MULTI
	split atomic.Int64
	// masters and their position tags, with a durable position
	// (clusterposition.go); read once per connection.
	masters []masterTag
}

func (f *follower) applyCluster(ctx context.Context, batch []replCmd) error {
	if f.cl == nil {
		f.cl = &clusterFollower{c: f.w.clusterClient(2)}
	}
	cf := f.cl
	pipe := cf.c.Pipeline()
	type sent struct {
		cmd *redis.Cmd
		src replCmd
	}
	var all []sent
	var bytesOut int64
	fail := func(src replCmd, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &targetError{fmt.Errorf("target cluster: applying %s from the source at offset %d: %w", bytes.ToUpper(src.args[0]), src.end, err)}
	}
	flush := func() error {
		if len(all) == 0 {
			return nil
		}
		pipe.Exec(ctx) // errors are read per command below
		for _, s := range all {
			if err := s.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
				return fail(s.src, err)
			}
		}
		all = all[:0]
		pipe = cf.c.Pipeline()
		return nil
	}
	for _, c := range batch {
		if len(c.args) == 0 {
			continue
		}
		name := string(bytes.ToUpper(c.args[0]))
		args, n := c.anyArgs()
		bytesOut += n
		switch {
		case name == "PING" || name == "REPLCONF":
			continue
		case name == "SELECT":
			if len(c.args) == 2 && string(c.args[1]) != "0" {
				return &targetError{fmt.Errorf("source offset %d: %w", c.end, errClusterDB(atoiOr(c.args[1], -1)))}
			}
			continue
		case name == "MULTI":
			if err := flush(); err != nil {
				return err
			}
			f.inMulti = true
			cf.tx = cf.tx[:0]
			continue
		case name == "DISCARD":
			f.inMulti = false
			cf.tx = nil
			continue
		case name == "EXEC":
			if err := cf.exec(ctx, f.log); err != nil {
				return fail(c, err)
			}
			f.inMulti = false
			continue
		case f.inMulti:
			cf.tx = append(cf.tx, args)
			continue
		case keyless(name):
			if err := flush(); err != nil {
				return err
			}
			if err := cf.c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
				return n.Do(ctx, args...).Err()
			}); err != nil {
				return fail(c, err)
			}
			continue
		}
		for _, a := range splitPerKey(name, args) {
			all = append(all, sent{cmd: pipe.Do(ctx, a...), src: c})
		}
	}
	if err := flush(); err != nil {
		return err
	}
	f.m.bytesImported(bytesOut)
	for _, c := range batch {
		f.release(c)
		f.applied = c.end
		if !f.inMulti {
			f.safe = c.end
		}
	}
	return nil
}

// exec runs a source transaction: one MULTI/EXEC per hash slot its
// commands touch, in the order the slots first appear (commands on
// different slots touch different keys, so only their order within a slot
// matters).
func (cf *clusterFollower) exec(ctx context.Context, log *zap.Logger) error {
	if len(cf.tx) == 0 {
		return nil
	}
	groups := map[uint16][][]any{}
	var order []uint16
	for _, a := range cf.tx {
		for _, s := range splitPerKey(strings.ToUpper(fmt.Sprint(a[0])), a) {
			var slot uint16
			if len(s) > 1 {
				slot = keySlot(fmt.Sprintf("%s", s[1]))
			}
			if _, ok := groups[slot]; !ok {
				order = append(order, slot)
			}
			groups[slot] = append(groups[slot], s)
		}
	}
	cf.tx = cf.tx[:0]
	if len(order) > 1 && cf.split.Add(1) == 1 {
		log.Warn("a source transaction spans several hash slots; it is applied as one MULTI/EXEC per slot (atomic per slot only); the follow log lines count them",
			zap.Int("slots", len(order)))
	}
	for _, slot := range order {
		var cmds []*redis.Cmd
		_, err := cf.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, a := range groups[slot] {
				cmds = append(cmds, p.Do(ctx, a...))
			}
			return nil
		})
		for _, c := range cmds {
			if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) {
				return e
			}
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

// splitPerKey splits the multi-key writes a cluster refuses across slots
// into one command per key; others are returned unchanged.
func splitPerKey(name string, args []any) [][]any {
	switch name {
	case "DEL", "UNLINK":
		if len(args) > 2 {
			var out [][]any
			for _, k := range args[1:] {
				out = append(out, []any{args[0], k})
			}
			return out
		}
	case "MSET":
		if len(args) > 3 {
			var out [][]any
			for i := 1; i+1 < len(args); i += 2 {
				out = append(out, []any{"SET", args[i], args[i+1]})
			}
			return out
		}
	}
	return [][]any{args}
}

func atoiOr(b []byte, def int) int {
	n := 0
	if len(b) == 0 {
		return def
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return def
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// KeySlot is the Redis Cluster hash slot of key (CRC16 of the key, or of
// its {hash tag}, mod 16384), as in src/cluster.c keyHashSlot.
func KeySlot(key string) uint16 { return keySlot(key) }

func keySlot(key string) uint16 {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	return crc16(key) % 16384
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021), the one Redis Cluster uses.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
