package redissync

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// SCAN-mode follow, for sources that refuse PSYNC (ElastiCache, possibly
// Heroku Key-Value Store): keyspace notifications name the keys that
// changed, and each named key's current value is copied again (DUMP +
// PTTL, or DEL when it is gone).
//
// Guarantees:
//   - The subscription is made before the SCAN starts, so a key changed
//     while the snapshot is taken is copied again after it.
//   - Every key named in an event ends with the value the source had when
//     it was read after the event (a key is state, copied whole, so events
//     may be merged or repeated without harm).
//   - A lost stretch of events is detected and repaired: notifications are
//     fire-and-forget pub/sub, so events published while our subscription
//     is down (a dropped connection, or the source closing it for
//     exceeding client-output-buffer-limit pubsub) are lost for good. The
//     client re-subscribes by itself; each re-subscription, and each time
//     more than keyspacePendingKeys keys wait to be copied, is counted
//     (log line, reconnects metric) and followed by a full re-SCAN of the
//     source; on a single-node source and target, keys the target has and
//     the source no longer has are deleted too.
//
// Limits:
//   - Not point-in-time, and not transactional: the keys of one MULTI/EXEC
//     on the source are copied one by one, and a reader of the target may
//     see some of them changed before the others.
//   - Between an event and the copy, the key is read again: the lag is one
//     round trip plus the batch wait, and a burst on one key costs one copy.
//   - The source must publish the events: this tries CONFIG SET
//     notify-keyspace-events KA; a source that refuses CONFIG (ElastiCache
//     does; set the parameter group's notify-keyspace-events to KA) and does
//     not publish them leaves the target stale, so the log says so at the
//     start and `redis verify` must run before cutover.
//   - After a lost stretch on a cluster shard or into a cluster target,
//     keys deleted meanwhile are not removed (the re-SCAN copies what
//     exists; deciding what to delete needs the whole keyspace): the log
//     says so; run `redis verify`.
//   - A reshard of a cluster source is not followed: a migrated key's
//     "del" event on the master it left and its "restore" event on the
//     master it joined are handled by two shard followers in no fixed
//     order, so the target could lose it. Each shard's follower checks its
//     master's slots once a second, as the PSYNC follow does, and stops
//     naming the slots and --flush-target (reshard.go); a key moved within
//     that second may already be deleted on the target, which the rerun
//     with --flush-target repairs.

// keyspacePendingKeys bounds the distinct keys waiting to be copied; past
// it, the set is dropped and the whole source is scanned again (bounded
// memory instead of an unbounded backlog).
const keyspacePendingKeys = 100_000

type dbKey struct {
	db  int
	key string
}

// keyspaceFollower collects keyspace events into a bounded set of keys to
// copy.
type keyspaceFollower struct {
	cfg SyncConfig
	w   *Writer
	log *zap.Logger
	sub *redis.PubSub
	c   *redis.Client

	mu      sync.Mutex
	pending map[dbKey]struct{}
	rescan  string // why the whole source must be scanned again; "" when not
	gaps    int64  // re-subscriptions seen (stretches of lost events)
	wake    chan struct{}
}

// subscribeKeyspace turns on the source's notifications when it may and
// subscribes; events are collected from then on.
func subscribeKeyspace(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (*keyspaceFollower, error) {
	c := cfg.sourceClient(0)
	prev, _ := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err := c.ConfigSet(ctx, "notify-keyspace-events", "KA").Err(); err != nil {
		log.Warn("cannot enable keyspace notifications on the source (CONFIG SET refused); set notify-keyspace-events to KA through your provider, or changes will not be followed", zap.Error(err))
	} else {
		log.Info("enabled keyspace notifications on the source (notify-keyspace-events KA)", zap.String("previous", prev["notify-keyspace-events"]))
	}
	sub := c.PSubscribe(ctx, "__keyspace@*__:*")
	if _, err := sub.Receive(ctx); err != nil { // the confirmation: subscribed from here on
		sub.Close()
		c.Close()
		return nil, fmt.Errorf("source %s: PSUBSCRIBE to keyspace notifications: %w", cfg.Source.Addr, err)
	}
	f := &keyspaceFollower{cfg: cfg, w: w, log: log, sub: sub, c: c, pending: map[dbKey]struct{}{}, wake: make(chan struct{}, 1)}
	go f.collect()
	return f, nil
}

func (f *keyspaceFollower) close() {
	f.sub.Close()
	f.c.Close()
}

// collect reads the subscription until it is closed.
func (f *keyspaceFollower) collect() {
	for msg := range f.sub.ChannelWithSubscriptions(redis.WithChannelSize(10000)) {
		f.mu.Lock()
		switch m := msg.(type) {
		case *redis.Subscription:
			// go-redis re-subscribes after a dropped connection; what was
			// published meanwhile is lost.
			if m.Kind == "psubscribe" {
				f.gaps++
				f.rescan = "the keyspace subscription was re-established after a disconnect; events published meanwhile are lost"
				f.w.metrics.reconnected()
			}
		case *redis.Message:
			if k, ok := parseKeyspaceChannel(m.Channel); ok && f.rescan == "" {
				f.pending[k] = struct{}{}
				if len(f.pending) > keyspacePendingKeys {
					f.pending = map[dbKey]struct{}{}
					f.rescan = fmt.Sprintf("more than %d changed keys waiting to be copied", keyspacePendingKeys)
				}
			}
		}
		f.mu.Unlock()
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// parseKeyspaceChannel reads "__keyspace@<db>__:<key>".
func parseKeyspaceChannel(ch string) (dbKey, bool) {
	rest, ok := strings.CutPrefix(ch, "__keyspace@")
	if !ok {
		return dbKey{}, false
	}
	i := strings.Index(rest, "__:")
	if i < 0 {
		return dbKey{}, false
	}
	db, err := strconv.Atoi(rest[:i])
	if err != nil {
		return dbKey{}, false
	}
	return dbKey{db: db, key: rest[i+3:]}, true
}

// take returns the keys waiting and whether (and why) to re-scan instead.
func (f *keyspaceFollower) take() (map[dbKey]struct{}, string, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys, why := f.pending, f.rescan
	f.pending, f.rescan = map[dbKey]struct{}{}, ""
	return keys, why, f.gaps
}

// follow copies the notified keys until ctx ends.
func (f *keyspaceFollower) follow(ctx context.Context) error {
	f.log.Warn("following by keyspace notifications: keys are copied again as they change; a lost stretch of events is repaired by a full re-SCAN; verify before cutover")
	clients := map[int]*redis.Client{}
	defer func() {
		for _, cl := range clients {
			cl.Close()
		}
	}()
	var copied, deleted, rescans int64
	// A shard of a cluster source stops on a reshard (reshard.go).
	var watch *slotWatch
	var checked time.Time
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	if f.cfg.shardID != "" {
		watch = &slotWatch{log: f.log}
		defer watch.close()
	}
	for {
		if watch != nil && time.Since(checked) >= time.Second {
			if err := watch.check(ctx, f.cfg.Source); err != nil {
				return errors.Unwrap(err)
			}
			checked = time.Now()
		}
		keys, why, gaps := f.take()
		if why != "" {
			rescans++
			f.log.Warn("re-scanning the whole source", zap.String("reason", why), zap.Int64("rescans", rescans), zap.Int64("lost_event_stretches", gaps))
			if err := f.rescanAll(ctx); err != nil {
				return err
			}
			continue
		}
		if len(keys) == 0 {
			select {
			case <-ctx.Done():
				f.log.Info("keyspace follow stopped", zap.Int64("keys_copied", copied), zap.Int64("keys_deleted", deleted), zap.Int64("rescans", rescans))
				return nil
			case <-f.wake:
			case <-tick.C:
			}
			continue
		}
		byDB := map[int][]string{}
		for k := range keys {
			byDB[k.db] = append(byDB[k.db], k.key)
		}
		for db, names := range byDB {
			cl := clients[db]
			if cl == nil {
				cl = f.cfg.sourceClient(db)
				clients[db] = cl
			}
			for len(names) > 0 {
				n := min(len(names), scanBatch)
				var st LoadStats
				var gone []string
				if err := copyKeys(ctx, cl, f.w, db, names[:n], f.cfg.BigKeyBytes, &st, func(k string) { gone = append(gone, k) }); err != nil {
					return err
				}
				for _, k := range gone {
					if err := f.w.submit(ctx, &job{db: db, key: []byte(k), cmds: []command{{"DEL", k}}, bytes: int64(len(k))}); err != nil {
						return err
					}
				}
				copied += st.Keys
				deleted += int64(len(gone))
				names = names[n:]
			}
		}
		if err := f.w.Flush(); err != nil {
			return err
		}
	}
}

// rescanAll copies the whole source again and, where the tool can know
// the whole keyspace on both sides, deletes target keys the source lost.
func (f *keyspaceFollower) rescanAll(ctx context.Context) error {
	if _, err := scanSnapshot(ctx, f.cfg, f.w, f.log); err != nil {
		return err
	}
	if f.cfg.shardID != "" || f.w.cluster {
		f.log.Warn("after lost keyspace events, keys deleted on the source meanwhile may remain on the target (a cluster's keyspace is not reconciled): run redis verify")
		return nil
	}
	return f.deleteExtra(ctx)
}

// deleteExtra deletes the target keys that the source does not have.
func (f *keyspaceFollower) deleteExtra(ctx context.Context) error {
	var removed int64
	for db := 0; db < 16; db++ {
		tc := f.w.client(db, 1)
		sc := f.cfg.sourceClient(db)
		var cursor uint64
		for {
			keys, next, err := tc.Scan(ctx, cursor, "", scanBatch).Result()
			if err != nil {
				tc.Close()
				sc.Close()
				return fmt.Errorf("target db %d: SCAN: %w", db, err)
			}
			pipe := sc.Pipeline()
			ex := make([]*redis.IntCmd, len(keys))
			for i, k := range keys {
				ex[i] = pipe.Exists(ctx, k)
			}
			if len(keys) > 0 {
				if _, err := pipe.Exec(ctx); err != nil {
					tc.Close()
					sc.Close()
					return fmt.Errorf("source db %d: EXISTS: %w", db, err)
				}
			}
			for i, k := range keys {
				if ex[i].Val() == 0 && !(db == 0 && IsPositionKey(k)) {
					if err := f.w.submit(ctx, &job{db: db, key: []byte(k), cmds: []command{{"DEL", k}}, bytes: int64(len(k))}); err != nil {
						tc.Close()
						sc.Close()
						return err
					}
					removed++
				}
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		tc.Close()
		sc.Close()
	}
	f.log.Info("re-scan done; target keys the source no longer has were deleted", zap.Int64("deleted", removed))
	return f.w.Flush()
}
