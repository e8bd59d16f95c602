package redissync

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// A reshard of a cluster source while its shards are followed is not
// followed: MIGRATE moves a key by a DEL in the stream of the master it
// leaves and a RESTORE-ASKING in the stream of the master it joins, and
// the two streams are applied independently, so the key could end up
// deleted on the target, or a later write to it applied out of order. The
// follower of each shard therefore stops, naming the slots and the fix,
// when
//
//   - its stream carries RESTORE-ASKING (keys migrated into its master),
//     before that command is applied;
//   - its master marks a slot MIGRATING or IMPORTING (CLUSTER NODES), or
//     serves other slots than when the follow started (CLUSTER SLOTS),
//     checked once a second.
//
// A slot migrated into a master added after the start is caught on the
// master it leaves. The check cannot stop a key that a reshard shorter
// than a second moved out of a shard from being deleted on the target
// first; the follow still stops with the slots named, so no key is lost
// silently.

// errReshard is the error that stops the follow of shard on a source
// reshard (the caller names the shard).
func errReshard(shard, what string) error {
	return &targetError{fmt.Errorf("the source is being resharded (%s; seen on %s), which a follow does not carry: let the reshard finish, then rerun `replicator redis sync` with --flush-target to copy the source again", what, shard)}
}

// restoreAsking finds a key migrated into the shard in a batch.
func (f *follower) restoreAsking(batch []replCmd) error {
	for _, c := range batch {
		if len(c.args) > 1 && bytes.EqualFold(c.args[0], []byte("RESTORE-ASKING")) {
			k := string(c.args[1])
			return errReshard(f.cfg.Source.Addr, fmt.Sprintf("key %q of slot %d migrated into it at offset %d", printable(c.args[1]), keySlot(k), c.end))
		}
	}
	return nil
}

// checkSlots compares the slots the shard's master serves with those it
// served when the follow started (recorded on the first call), and looks
// for slots it is migrating or importing.
func (f *follower) checkSlots(ctx context.Context) error {
	now, err := ownSlots(ctx, f.cfg.Source)
	if err != nil {
		return nil // the link's own errors say more; checked again next second
	}
	if f.slots == nil {
		f.slots = now
	} else if gone, came := f.slots.minus(now), now.minus(f.slots); len(gone)+len(came) > 0 {
		what := ""
		if len(gone) > 0 {
			what = "slots " + gone.String() + " moved to another master"
		}
		if len(came) > 0 {
			what = strings.TrimPrefix(what+"; ", "; ") + "slots " + came.String() + " moved in from another master"
		}
		return errReshard(f.cfg.Source.Addr, what)
	}
	so := *f.cfg.Source
	so.PoolSize, so.MaxRetries = 1, -1
	c := redis.NewClient(&so)
	defer c.Close()
	nodes, err := c.ClusterNodes(ctx).Result()
	if err != nil {
		return nil
	}
	for _, l := range strings.Split(nodes, "\n") {
		fields := strings.Fields(l)
		if len(fields) < 9 || !strings.Contains(fields[2], "myself") {
			continue
		}
		var moving []string
		for _, s := range fields[8:] {
			if strings.HasPrefix(s, "[") {
				moving = append(moving, strings.Trim(s, "[]"))
			}
		}
		if len(moving) > 0 {
			return errReshard(so.Addr, "slots migrating (slot->-node) or importing (slot-<-node): "+strings.Join(moving, " "))
		}
	}
	return nil
}

// minus is the slots of r that o does not hold, as ranges.
func (r slotRanges) minus(o slotRanges) slotRanges {
	var out slotRanges
	for _, x := range r {
		for s := x.Start; s <= x.End; s++ {
			if o.has(uint16(s)) {
				continue
			}
			if n := len(out); n > 0 && out[n-1].End == s-1 {
				out[n-1].End = s
			} else {
				out = append(out, redis.ClusterSlot{Start: s, End: s})
			}
		}
	}
	return out
}
