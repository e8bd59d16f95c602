package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"replicator/internal/testenv"
)

// seedRedis fills the source like an app's cache and session store:
// sessions with TTLs, cached pages, counters, a leaderboard, job queues,
// user hashes and an event stream, in databases 0 and 1.
func seedRedis(ctx context.Context, r *testenv.Redis, users int) error {
	c0, c1 := r.Client(0), r.Client(1)
	defer c0.Close()
	defer c1.Close()
	p := c0.Pipeline()
	for i := 1; i <= users; i++ {
		p.Set(ctx, fmt.Sprintf("session:%d", i), fmt.Sprintf(`{"user":%d,"csrf":"%x"}`, i, i*7919), time.Duration(1+i%48)*time.Hour)
		p.HSet(ctx, fmt.Sprintf("user:%d", i), "name", fmt.Sprintf("User %d", i), "visits", i%100, "plan", []string{"free", "pro"}[i%2])
		if i%10 == 0 {
			p.Set(ctx, fmt.Sprintf("cache:page:/products/%d", i), fmt.Sprintf("<html>%0400d</html>", i), 0)
			p.ZAdd(ctx, "leaderboard", redis.Z{Score: float64(i % 997), Member: fmt.Sprintf("user:%d", i)})
			p.SAdd(ctx, "active_users", i)
		}
		if i%500 == 0 {
			if _, err := p.Exec(ctx); err != nil {
				return fmt.Errorf("seed redis: %w", err)
			}
		}
	}
	p.RPush(ctx, "queue:mailers", "welcome:1", "welcome:2", "digest:3")
	p.XAdd(ctx, &redis.XAddArgs{Stream: "events", Values: map[string]any{"kind": "signup", "user": 1}})
	if _, err := p.Exec(ctx); err != nil {
		return fmt.Errorf("seed redis: %w", err)
	}
	return c1.Set(ctx, "feature:new_checkout", "on", 0).Err()
}

// loadRedis writes like a live app until ctx ends: session churn, counters,
// leaderboard moves, queue pushes and pops, deletes and expiries.
func loadRedis(ctx context.Context, r *testenv.Redis, perSecond int) int64 {
	c := r.Client(0)
	defer c.Close()
	tick := time.NewTicker(time.Second / time.Duration(max(perSecond, 1)))
	defer tick.Stop()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	var n int64
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
		u := 1 + rng.IntN(1000)
		var err error
		switch i % 7 {
		case 0:
			err = c.Set(ctx, fmt.Sprintf("session:new:%d", i), "fresh", 30*time.Minute).Err()
		case 1:
			err = c.HIncrBy(ctx, fmt.Sprintf("user:%d", u), "visits", 1).Err()
		case 2:
			err = c.ZIncrBy(ctx, "leaderboard", 1, fmt.Sprintf("user:%d", u)).Err()
		case 3:
			err = c.RPush(ctx, "queue:mailers", fmt.Sprintf("receipt:%d", i)).Err()
		case 4:
			err = c.LPop(ctx, "queue:mailers").Err()
		case 5:
			err = c.Del(ctx, fmt.Sprintf("session:%d", u)).Err()
		case 6:
			err = c.Incr(ctx, "counter:page_views").Err()
		}
		if err == nil || err == redis.Nil {
			n++
		}
	}
}

func exec(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}
