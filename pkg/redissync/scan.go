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
	"golang.org/x/sync/errgroup"

	"replicator/pkg/redisconn"
	"replicator/pkg/redisrdb"
)

// The SCAN source, for sources that refuse PSYNC: every database is
// scanned, and each key read with DUMP and PTTL in pipelines. The copy is
// not point-in-time (keys change while the scan runs). A key whose MEMORY
// USAGE exceeds BigKeyBytes is not DUMPed (DUMP returns it whole) but read
// in pages (LRANGE, SSCAN, HSCAN, ZSCAN, GETRANGE) and written with native
// commands in pieces; streams are always DUMPed.

const scanBatch = 500

func sourceDBs(ctx context.Context, c *redis.Client) ([]int, error) {
	info, err := c.Info(ctx, "keyspace").Result()
	if err != nil {
		return nil, err
	}
	var dbs []int
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "db"); ok {
			if i := strings.IndexByte(rest, ':'); i > 0 {
				if n, err := strconv.Atoi(rest[:i]); err == nil {
					dbs = append(dbs, n)
				}
			}
		}
	}
	return dbs, nil
}

func (cfg SyncConfig) sourceClient(db int) *redis.Client {
	o := *cfg.Source
	o.DB = db
	o.PoolSize = 2
	return redis.NewClient(&o)
}

// scanSnapshot copies every database of the source by SCAN. SCAN itself
// runs on one connection per database: its cursor is an opaque position
// in the server's hash table (reverse-binary order over buckets, valid
// across a resize), and splitting one keyspace between several cursors
// would need knowledge of the table size that a client does not have and
// that changes under rehashing, so a partition could skip or repeat keys.
// The expensive part, DUMP + PTTL of each batch of names, runs on
// ScanConnections connections in parallel. (A cluster source is scanned
// shard by shard in parallel on top of that: clustersource.go.)
func scanSnapshot(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (LoadStats, error) {
	var st LoadStats
	c0 := cfg.sourceClient(0)
	defer c0.Close()
	dbs, err := sourceDBs(ctx, c0)
	if err != nil {
		return st, redisconn.Explain("source", cfg.Source, err)
	}
	if err := copyFunctions(ctx, c0, w, log); err != nil {
		return st, err
	}
	workers := cfg.ScanConnections
	if workers <= 0 {
		workers = 4
	}
	log.Info("copying the source by SCAN + DUMP + PTTL", zap.Ints("databases", dbs), zap.Int("connections", workers))
	var mu sync.Mutex
	for _, db := range dbs {
		g, gctx := errgroup.WithContext(ctx)
		batches := make(chan []string, workers)
		for range workers {
			g.Go(func() error {
				c := cfg.sourceClient(db)
				defer c.Close()
				var local LoadStats
				defer func() { mu.Lock(); st.add(local); mu.Unlock() }()
				for keys := range batches {
					if err := copyKeys(gctx, c, w, db, keys, cfg.BigKeyBytes, &local, nil); err != nil {
						return err
					}
				}
				return nil
			})
		}
		g.Go(func() error {
			defer close(batches)
			c := cfg.sourceClient(db)
			defer c.Close()
			var cursor uint64
			for {
				keys, next, err := c.Scan(gctx, cursor, "", scanBatch).Result()
				if err != nil {
					return fmt.Errorf("source db %d: SCAN: %w", db, err)
				}
				if len(keys) > 0 {
					select {
					case batches <- keys:
					case <-gctx.Done():
						return gctx.Err()
					}
				}
				if cursor = next; cursor == 0 {
					return nil
				}
			}
		})
		if err := g.Wait(); err != nil {
			return st, err
		}
	}
	if err := w.Flush(); err != nil {
		return st, err
	}
	logStats(log, "snapshot by SCAN imported", st)
	return st, nil
}

func copyFunctions(ctx context.Context, c *redis.Client, w *Writer, log *zap.Logger) error {
	payload, err := c.Do(ctx, "FUNCTION", "DUMP").Text()
	if err != nil {
		if !errors.Is(err, redis.Nil) {
			log.Info("source functions not copied (FUNCTION DUMP unavailable)", zap.Error(err))
		}
		return nil
	}
	if err := w.Do(ctx, 0, "FUNCTION", "RESTORE", payload, "REPLACE"); err != nil {
		return fmt.Errorf("target: FUNCTION RESTORE of the source's functions: %w", err)
	}
	return nil
}

// copyKeys reads keys with DUMP and PTTL and queues their writes; keys
// that no longer exist on the source are passed to gone (when not nil).
func copyKeys(ctx context.Context, c *redis.Client, w *Writer, db int, keys []string, bigKeyBytes int64, st *LoadStats, gone func(string)) error {
	if len(keys) == 0 {
		return nil
	}
	// Sizes first, so a huge value is never DUMPed whole. MEMORY USAGE may
	// be refused by a managed source; then every key is DUMPed.
	big := map[string]string{}
	if bigKeyBytes > 0 {
		pipe := c.Pipeline()
		sizes := make([]*redis.IntCmd, len(keys))
		types := make([]*redis.StatusCmd, len(keys))
		for i, k := range keys {
			sizes[i] = pipe.MemoryUsage(ctx, k)
			types[i] = pipe.Type(ctx, k)
		}
		pipe.Exec(ctx)
		for i, k := range keys {
			if n, err := sizes[i].Result(); err == nil && n > bigKeyBytes && types[i].Val() != "stream" && types[i].Val() != "none" {
				big[k] = types[i].Val()
			}
		}
	}
	for k, typ := range big {
		copied, err := copyBigKey(ctx, c, w, db, k, typ)
		if err != nil {
			return err
		}
		if copied {
			st.Keys++
			st.Native++
		} else if gone != nil {
			gone(k)
		}
	}
	pipe := c.Pipeline()
	dumps := make([]*redis.StringCmd, len(keys))
	ttls := make([]*redis.DurationCmd, len(keys))
	for i, k := range keys {
		if big[k] != "" {
			continue
		}
		dumps[i] = pipe.Dump(ctx, k)
		ttls[i] = pipe.PTTL(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		if re := movedReshard(c.Options().Addr, err); re != nil {
			return re
		}
		return fmt.Errorf("source db %d: DUMP/PTTL: %w", db, err)
	}
	now := time.Now().UnixMilli()
	for i, k := range keys {
		if dumps[i] == nil {
			continue
		}
		payload, err := dumps[i].Bytes()
		if errors.Is(err, redis.Nil) {
			if gone != nil {
				gone(k)
			}
			continue // deleted since SCAN saw it
		}
		if err != nil {
			return fmt.Errorf("source db %d key %q: DUMP: %w", db, printable([]byte(k)), err)
		}
		var expireAt int64
		if d := ttls[i].Val(); d > 0 {
			expireAt = now + d.Milliseconds()
		} else if d == -2 {
			if gone != nil {
				gone(k)
			}
			continue
		}
		if err := restorePayload(ctx, w, db, []byte(k), payload, expireAt); err != nil {
			return err
		}
		st.Keys++
	}
	return nil
}

// restorePayload writes a DUMP payload taken from the source: unchanged
// when the target reads its version, re-stamped with the target's version
// when only the version number is newer than the encoding needs, and as
// native commands when the target does not know the encoding.
func restorePayload(ctx context.Context, w *Writer, db int, key, payload []byte, expireAt int64) error {
	ver, err := redisrdb.DumpVersion(payload)
	if err != nil {
		return fmt.Errorf("source db %d key %q: %w", db, printable(key), err)
	}
	tv := w.TargetVersion()
	if ver > tv {
		if redisrdb.MinVersion(payload[0]) <= tv {
			payload = redisrdb.EncodeDump(payload[:len(payload)-10], tv)
		} else {
			cmds, err := nativeFromDump(key, expireAt, payload, w.builder(db))
			if err != nil {
				return fmt.Errorf("source db %d: %w", db, err)
			}
			var n int64
			for _, c := range cmds {
				n += cmdBytes(c)
			}
			return w.submit(ctx, &job{db: db, key: key, cmds: cmds, bytes: n, keyDone: true, txStart: true})
		}
	}
	return w.submit(ctx, &job{db: db, key: key, restore: true, payload: payload, expireAt: expireAt,
		cmds:  []command{{"RESTORE", key, expireAt, payload, "ABSTTL", "REPLACE"}},
		bytes: int64(len(payload)), keyDone: true})
}

// copyBigKey copies one large key page by page with native commands. It
// reports false when the key vanished before it could be read.
func copyBigKey(ctx context.Context, c *redis.Client, w *Writer, db int, key, typ string) (bool, error) {
	k := []byte(key)
	// The pieces are one transaction, opened by the first job (the DEL)
	// and closed by the last: the key appears whole or not at all.
	first := true
	send := func(cmds ...command) error {
		var n int64
		for _, cmd := range cmds {
			n += cmdBytes(cmd)
		}
		j := &job{db: db, key: k, cmds: cmds, bytes: n, txStart: first}
		first = false
		return w.submit(ctx, j)
	}
	fail := func(err error) (bool, error) {
		return false, fmt.Errorf("source db %d key %q (%s, copied in pieces): %w", db, printable(k), typ, err)
	}
	ttl, err := c.PTTL(ctx, key).Result()
	if err != nil {
		return fail(err)
	}
	if ttl == -2 {
		return false, nil
	}
	if err := send(command{"DEL", k}); err != nil {
		return false, err
	}
	const chunk = 1 << 20
	switch typ {
	case "string":
		for off := int64(0); ; off += chunk {
			s, err := c.GetRange(ctx, key, off, off+chunk-1).Result()
			if err != nil {
				return fail(err)
			}
			if s != "" {
				if err := send(command{"APPEND", k, s}); err != nil {
					return false, err
				}
			}
			if len(s) < chunk {
				break
			}
		}
	case "list":
		for start := int64(0); ; start += scanBatch {
			vs, err := c.LRange(ctx, key, start, start+scanBatch-1).Result()
			if err != nil {
				return fail(err)
			}
			if len(vs) > 0 {
				cmd := command{"RPUSH", k}
				for _, v := range vs {
					cmd = append(cmd, v)
				}
				if err := send(cmd); err != nil {
					return false, err
				}
			}
			if len(vs) < scanBatch {
				break
			}
		}
	case "set", "hash", "zset":
		var cursor uint64
		for {
			var vs []string
			var err error
			cmd := command{"SADD", k}
			switch typ {
			case "set":
				vs, cursor, err = c.SScan(ctx, key, cursor, "", scanBatch).Result()
				for _, v := range vs {
					cmd = append(cmd, v)
				}
			case "hash":
				vs, cursor, err = c.HScan(ctx, key, cursor, "", scanBatch).Result()
				cmd[0] = "HSET"
				for _, v := range vs {
					cmd = append(cmd, v)
				}
			default:
				vs, cursor, err = c.ZScan(ctx, key, cursor, "", scanBatch).Result()
				cmd[0] = "ZADD"
				for i := 0; i+1 < len(vs); i += 2 {
					cmd = append(cmd, vs[i+1], vs[i])
				}
			}
			if err != nil {
				return fail(err)
			}
			if len(cmd) > 2 {
				if err := send(cmd); err != nil {
					return false, err
				}
			}
			if cursor == 0 {
				break
			}
		}
	default:
		return fail(fmt.Errorf("type %q cannot be copied in pieces", typ))
	}
	var last []command
	if ttl > 0 {
		last = append(last, command{"PEXPIREAT", k, time.Now().Add(ttl).UnixMilli()})
	}
	return true, w.submit(ctx, &job{db: db, key: k, cmds: last, bytes: 1, keyDone: true})
}
