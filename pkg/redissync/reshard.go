package redissync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
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
//     checked once a second (slotWatch, in the SCAN-mode follow too,
//     where a migrated key's "del" event on the master it leaves and its
//     "restore" event on the master it joins are handled by two shard
//     followers in no fixed order).
//
// A slot migrated into a master added after the start is caught on the
// master it leaves. The check cannot stop a key that a reshard shorter
// than a second moved out of a shard from being deleted on the target
// first; the follow still stops with the slots named, so no key is lost
// silently.

// errReshard is the error that stops the follow of shard on a source
// reshard (the caller names the shard).
func errReshard(shard, what string) error {
	// The caller's error adds how many keys are on the target and
	// --flush-target (startOver).
	return &targetError{fmt.Errorf("the source is being resharded (%s; seen on %s), which a follow does not carry: let the reshard finish, then copy the source again", what, shard)}
}

// movedReshard is errReshard for a key read from a shard of a cluster
// source that answers MOVED or ASK: its slot has left that master, or is
// leaving it. nil when err is neither.
func movedReshard(shard string, err error) error {
	msg := err.Error()
	for _, p := range []string{"MOVED ", "ASK "} {
		if strings.HasPrefix(msg, p) {
			slot, _, _ := strings.Cut(strings.TrimPrefix(msg, p), " ")
			return errReshard(shard, fmt.Sprintf("slot %s answered %s", slot, strings.TrimSpace(p)))
		}
	}
	return nil
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

// slotWatch notices a reshard of one shard of a cluster source, for both
// follow modes: the slots its master served when the follow started,
// compared once a second with those it serves now. It keeps one client
// to the master for its life, dialled again when the follow moves to
// another master (after a failover) or the client fails. A check that
// cannot ask does not stop the follow (the link's own errors say more
// about a dead master): it is logged once when the checks start failing
// and once when they work again. close ends it.
type slotWatch struct {
	log   *zap.Logger
	slots slotRanges // recorded on the first check

	c       *redis.Client
	addr    string // the master c talks to
	failing bool   // the last check could not ask
}

// check compares the slots the shard's master src (the one followed now:
// after a failover, the promoted replica, which serves the same slots)
// serves with those served at the first check, and looks for slots it is
// migrating or importing.
func (w *slotWatch) check(ctx context.Context, src *redis.Options) error {
	if w.c != nil && w.addr != src.Addr {
		w.close()
	}
	if w.c == nil {
		so := *src
		so.PoolSize, so.MaxRetries = 1, -1
		w.c, w.addr = redis.NewClient(&so), src.Addr
	}
	now, err := slotsOf(ctx, w.c, src.Addr)
	if err != nil {
		return w.cannotAsk(ctx, err)
	}
	if w.slots == nil {
		w.slots = now
	} else if gone, came := w.slots.minus(now), now.minus(w.slots); len(gone)+len(came) > 0 {
		what := ""
		if len(gone) > 0 {
			what = "slots " + gone.String() + " moved to another master"
		}
		if len(came) > 0 {
			what = strings.TrimPrefix(what+"; ", "; ") + "slots " + came.String() + " moved in from another master"
		}
		return errReshard(src.Addr, what)
	}
	nodes, err := w.c.ClusterNodes(ctx).Result()
	if err != nil {
		return w.cannotAsk(ctx, fmt.Errorf("source shard %s: CLUSTER NODES: %w", src.Addr, err))
	}
	if w.failing {
		w.failing = false
		w.log.Info("reshard watch: the source shard's master answers again", zap.String("shard", src.Addr))
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
			return errReshard(src.Addr, "slots migrating (slot->-node) or importing (slot-<-node): "+strings.Join(moving, " "))
		}
	}
	return nil
}

// cannotAsk records a check that got no answer: logged when the checks
// start failing, not each second. A client that failed (not an error
// reply of the master) is dialled again at the next check.
func (w *slotWatch) cannotAsk(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil // the follow is stopping
	}
	if !w.failing {
		w.failing = true
		w.log.Warn("reshard watch: cannot ask the source shard's master for its slots; a reshard is not noticed until it answers (checked every second, the follow goes on)",
			zap.String("shard", w.addr), zap.Error(err))
	}
	var re redis.Error
	if !errors.As(err, &re) {
		w.close()
	}
	return nil
}

// close closes the watch's client; a later check dials again.
func (w *slotWatch) close() {
	if w.c != nil {
		w.c.Close()
		w.c = nil
	}
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
