package cutover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisverify"
)

// redisMarkKey is the key the cutover writes on the Redis source to see
// the follower catch up: the follower applies the source's writes in
// order, so once the target holds the marker's value it holds everything
// written before it.
const redisMarkKey = "replicator:cutover:mark"

// redisCatchUp writes a fresh marker on the Redis source and waits until
// the target holds it (a running `replicator redis sync --follow` carries
// it over). The marker stays until Redis is verified (on both sides it is
// identical), then redisVerify removes it from the source and the follower
// from the target.
func (r *runner) redisCatchUp(ctx context.Context) (string, error) {
	src, tgt := redis.NewClient(r.cfg.RedisSource), redis.NewClient(r.cfg.RedisTargetOptions)
	defer src.Close()
	defer tgt.Close()
	b := make([]byte, 12)
	rand.Read(b)
	mark := hex.EncodeToString(b)
	started := time.Now()
	// Expires on its own should anything below fail.
	if err := src.Set(ctx, redisMarkKey, mark, time.Hour).Err(); err != nil {
		return "", fmt.Errorf("redis source: write the catch-up marker %s: %w", redisMarkKey, err)
	}
	_, err := r.waitFor(ctx, 4, "wait for the Redis follower", func() (bool, string, error) {
		got, err := tgt.Get(ctx, redisMarkKey).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return false, "", fmt.Errorf("redis target: read the catch-up marker %s: %w", redisMarkKey, err)
		}
		return got == mark, "the Redis target does not hold the catch-up marker yet", nil
	}, "is `replicator redis sync --follow` running? start it, then run cutover again (the fence stays)")
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("the Redis follower caught up in %s", time.Since(started).Round(time.Millisecond)), nil
}

// redisVerify compares the two Redis servers with redisverify; a
// difference fails the step like one in Postgres.
func (r *runner) redisVerify(ctx context.Context) (string, error) {
	rep, err := redisverify.Run(ctx, redisverify.Config{Source: r.cfg.RedisSource, Target: r.cfg.RedisTargetOptions}, r.log)
	src := redis.NewClient(r.cfg.RedisSource)
	src.Del(context.Background(), redisMarkKey) // best effort: it expires in an hour anyway
	src.Close()
	if err != nil {
		return "", fmt.Errorf("redis verify: %w", err)
	}
	if !rep.Identical() {
		if err := rep.Write(r.out, "text"); err != nil {
			return "", err
		}
		return "", fmt.Errorf("%w (Redis: %d differences)", ErrDifferences, rep.DiffCount)
	}
	return fmt.Sprintf("Redis: %d keys identical", rep.Checked), nil
}
