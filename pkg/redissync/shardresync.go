package redissync

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// A full resynchronisation of one shard of a cluster source. When a
// shard's master cannot continue our stream (its replication ID changed,
// or our offset left its backlog) it sends its whole RDB again; that RDB
// holds exactly the keys of the slots it serves. So only those slots are
// emptied on the target (every key whose hash slot is one of them, found
// per slot on a cluster target and by SCAN on a single server, except
// the follow positions) and loaded again from that RDB,
// while the other shards' followers go on. A key deleted on the source
// while the link was down is gone from the target afterwards too.
//
// A crash in the middle leaves the shard's old position in place (it is
// rewritten only once the reload is flushed): the restarted follower asks
// for that position, gets FULLRESYNC again and redoes the reload.

// slotRanges is a set of hash slots as the ranges CLUSTER SLOTS lists.
type slotRanges []redis.ClusterSlot

func (r slotRanges) has(s uint16) bool {
	for _, x := range r {
		if int(s) >= x.Start && int(s) <= x.End {
			return true
		}
	}
	return false
}

func (r slotRanges) String() string {
	var b strings.Builder
	for i, x := range r {
		if i > 0 {
			b.WriteString(",")
		}
		if x.Start == x.End {
			fmt.Fprint(&b, x.Start)
		} else {
			fmt.Fprintf(&b, "%d-%d", x.Start, x.End)
		}
	}
	return b.String()
}

// ownSlots asks a cluster node which slots it serves itself.
func ownSlots(ctx context.Context, o *redis.Options) (slotRanges, error) {
	so := *o
	so.PoolSize, so.MaxRetries = 1, -1
	c := redis.NewClient(&so)
	defer c.Close()
	return slotsOf(ctx, c, o.Addr)
}

// slotsOf is ownSlots on a client c to the node at addr.
func slotsOf(ctx context.Context, c *redis.Client, addr string) (slotRanges, error) {
	id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		return nil, fmt.Errorf("source shard %s: CLUSTER MYID: %w", addr, err)
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, fmt.Errorf("source shard %s: CLUSTER SLOTS: %w", addr, err)
	}
	var out slotRanges
	for _, s := range slots {
		if len(s.Nodes) > 0 && s.Nodes[0].ID == id {
			out = append(out, redis.ClusterSlot{Start: s.Start, End: s.End})
		}
	}
	return out, nil
}

// deleteSlots removes from the target (database 0) every key whose hash
// slot is in slots, except the follow positions, and returns how many
// keys were removed (UNLINK's replies). A cluster target is asked slot by
// slot, on the master that owns it (CLUSTER COUNTKEYSINSLOT, then
// GETKEYSINSLOT); a single server has no slot index, so it is SCANned
// whole.
func (w *Writer) deleteSlots(ctx context.Context, slots slotRanges) (int64, error) {
	if !w.cluster {
		c := w.client(0, 1)
		defer c.Close()
		return scanDeleteSlots(ctx, c, slots)
	}
	cc := w.clusterClient(1)
	defer cc.Close()
	_, owner, err := clusterMasters(ctx, cc)
	if err != nil {
		return 0, err
	}
	served := 0 // slots of the range that a master serves
	for _, r := range slots {
		for s := r.Start; s <= r.End; s++ {
			if owner[s] != "" {
				served++
			}
		}
	}
	var total, done atomic.Int64
	err = cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		addr := n.Options().Addr
		var mine []int
		for _, r := range slots {
			for s := r.Start; s <= r.End; s++ {
				if owner[s] == addr {
					mine = append(mine, s)
				}
			}
		}
		k, err := deleteInSlots(ctx, n, mine)
		total.Add(k)
		done.Add(int64(len(mine)))
		if err != nil {
			return fmt.Errorf("target master %s: %w", addr, err)
		}
		return nil
	})
	if err == nil && done.Load() != int64(served) {
		err = fmt.Errorf("target cluster: %d of the %d slots to empty are served by masters its client does not reach (the cluster is changing?); run the follow again once CLUSTER SLOTS is stable", int64(served)-done.Load(), served)
	}
	return total.Load(), err
}

// getKeysBatch is how many keys one GETKEYSINSLOT asks for.
const getKeysBatch = 1000

// deleteInSlots removes the keys of slots, all served by the master c,
// except the follow positions, and returns how many it removed.
func deleteInSlots(ctx context.Context, c *redis.Client, slots []int) (int64, error) {
	pipe := c.Pipeline()
	counts := make([]*redis.IntCmd, len(slots))
	for i, s := range slots {
		counts[i] = pipe.ClusterCountKeysInSlot(ctx, s)
	}
	if len(slots) > 0 {
		if _, err := pipe.Exec(ctx); err != nil {
			return 0, fmt.Errorf("CLUSTER COUNTKEYSINSLOT: %w", err)
		}
	}
	var n int64
	for i, s := range slots {
		if counts[i].Val() == 0 {
			continue
		}
		// The positions stay: GETKEYSINSLOT lists them again each time,
		// so ask for more than they are once a batch holds nothing else.
		for batch := getKeysBatch; ; {
			keys, err := c.ClusterGetKeysInSlot(ctx, s, batch).Result()
			if err != nil {
				return n, fmt.Errorf("CLUSTER GETKEYSINSLOT %d: %w", s, err)
			}
			del := make([]string, 0, len(keys))
			for _, k := range keys {
				if !IsPositionKey(k) {
					del = append(del, k)
				}
			}
			if len(del) > 0 {
				// One UNLINK for the batch: its keys share the slot.
				m, err := c.Unlink(ctx, del...).Result()
				n += m
				if err != nil {
					return n, fmt.Errorf("UNLINK of slot %d's keys: %w", s, err)
				}
			}
			if len(keys) < batch {
				break
			}
			if len(del) == 0 {
				batch *= 2
			}
		}
	}
	return n, nil
}

// scanDeleteSlots is deleteSlots on a single server: SCAN, and UNLINK the
// keys of the slots.
func scanDeleteSlots(ctx context.Context, c redis.Cmdable, slots slotRanges) (int64, error) {
	var n int64
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, "", 1000).Result()
		if err != nil {
			return n, err
		}
		del := keys[:0]
		for _, k := range keys {
			if slots.has(keySlot(k)) && !IsPositionKey(k) {
				del = append(del, k)
			}
		}
		if len(del) > 0 {
			m, err := c.Unlink(ctx, del...).Result()
			n += m
			if err != nil {
				return n, err
			}
		}
		if cursor = next; cursor == 0 {
			return n, nil
		}
	}
}

// clearShard empties the target's slots of the shard a follower follows,
// before the shard's RDB is loaded again.
func (f *follower) clearShard(ctx context.Context, reason string, newReplid string) error {
	slots, err := ownSlots(ctx, f.cfg.Source)
	if err != nil {
		return err
	}
	f.log.Warn("full resynchronisation of one source shard: it cannot continue from our position; deleting the target's keys of its slots and loading its snapshot again (the other shards keep following)",
		zap.String("reason", reason), zap.String("slots", slots.String()),
		zap.String("replid", f.replid), zap.Int64("offset", f.safe), zap.String("new_replid", newReplid))
	n, err := f.w.deleteSlots(ctx, slots)
	if err != nil {
		return fmt.Errorf("target: deleting the keys of source shard %s's slots %s before reloading it: %w", f.cfg.Source.Addr, slots, err)
	}
	f.log.Info("target keys of the shard's slots deleted", zap.Int64("keys", n))
	return nil
}
