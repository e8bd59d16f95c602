package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The harness itself: a cluster starts with logical decoding, survives a
// crash and restart with committed data intact, and so does Redis.
func TestPostgresCrashRestart(t *testing.T) {
	pg, err := StartPostgres(PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	db := pg.NewDatabase(t)
	pg.Exec(t, db, "CREATE TABLE t(x int); INSERT INTO t VALUES (1),(2)")
	var wal string
	if err := pg.Connect(t, db).QueryRow(context.Background(), "SHOW wal_level").Scan(&wal); err != nil || wal != "logical" {
		t.Fatalf("wal_level = %q, %v; want logical", wal, err)
	}
	if err := pg.Restart(Crash); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pg.Connect(t, db).QueryRow(context.Background(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after crash: count = %d, %v; want 2", n, err)
	}
}

func TestRedisRestart(t *testing.T) {
	r, err := StartRedis(RedisOptions{Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c := r.Client(0)
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Restart(Crash); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
}

// The proxy forwards, cuts open connections, and refuses new ones while
// down.
func TestProxyCutAndDown(t *testing.T) {
	r, err := StartRedis(RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p, err := StartProxy(r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: p.Addr(), MaxRetries: -1, PoolSize: 1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// A command in flight when the connection is cut fails.
	errc := make(chan error, 1)
	go func() { errc <- c.BLPop(ctx, 5*time.Second, "empty-list").Err() }()
	time.Sleep(200 * time.Millisecond)
	p.Cut()
	if err := <-errc; err == nil || err == redis.Nil {
		t.Fatalf("a command on a cut connection returned %v, want a connection error", err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after reconnect: %q, %v", v, err)
	}
	p.SetDown(true)
	if err := c.Get(ctx, "k").Err(); err == nil {
		t.Fatal("a command through a downed proxy succeeded")
	}
	p.SetDown(false)
	if err := c.Get(ctx, "k").Err(); err != nil {
		t.Fatalf("after the proxy came back: %v", err)
	}
	if p.Accepted() < 2 {
		t.Fatalf("accepted %d connections, want a reconnect", p.Accepted())
	}
}

// Crash restarts in a row come back without "shared memory block still in
// use" even while backends are busy.
func TestPostgresRepeatedCrash(t *testing.T) {
	pg, err := StartPostgres(PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	for i := 0; i < 5; i++ {
		conns := make([]interface{ Close(context.Context) error }, 0, 5)
		for j := 0; j < 5; j++ {
			conns = append(conns, pg.Connect(t, "postgres"))
		}
		if err := pg.Restart(Crash); err != nil {
			t.Fatalf("restart %d after a crash: %v", i, err)
		}
	}
}
