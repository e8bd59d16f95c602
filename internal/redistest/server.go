package redistest

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/internal/testenv"
)

// The ground truth is the real redis-server: what it serves is read here
// in the same canonical form ModelOf builds from decoder events.

// ServerModel reads every key of every database the way a client sees it.
func ServerModel(t testing.TB, r *testenv.Redis) map[string]*KeyModel {
	t.Helper()
	ctx := context.Background()
	out := map[string]*KeyModel{}
	now := time.Now().UnixMilli()
	for db := 0; db < 16; db++ {
		c := r.Client(db)
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				out[fmt.Sprintf("%d/%s", db, k)] = keyFromServer(t, c, k, now)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		c.Close()
	}
	return out
}

// keyFromServer reads key k of the database c is connected to.
func keyFromServer(t testing.TB, c *redis.Client, k string, now int64) *KeyModel {
	ctx := context.Background()
	typ := c.Type(ctx, k).Val()
	m := &KeyModel{typ: typ}
	// PEXPIRETIME (Redis 7) is the absolute expiry: a PTTL added to one
	// "now" for a whole scan drifts by as long as the scan takes, seconds
	// on a loaded machine. now is the fallback for older servers.
	if at, err := c.Do(ctx, "PEXPIRETIME", k).Int64(); err == nil {
		if at > 0 {
			m.expireAt = at
		}
	} else if pttl := c.PTTL(ctx, k).Val(); pttl > 0 {
		m.expireAt = now + pttl.Milliseconds()
	}
	switch typ {
	case "string":
		m.members = []string{c.Get(ctx, k).Val()}
	case "list":
		m.members = c.LRange(ctx, k, 0, -1).Val()
	case "set":
		m.members = c.SMembers(ctx, k).Val()
		sort.Strings(m.members)
	case "zset":
		for _, z := range c.ZRangeWithScores(ctx, k, 0, -1).Val() {
			m.members = append(m.members, z.Member.(string)+"="+fmtScore(z.Score))
		}
		sort.Strings(m.members)
	case "hash":
		for f, v := range c.HGetAll(ctx, k).Val() {
			m.members = append(m.members, f+"="+v)
		}
		sort.Strings(m.members)
	case "stream":
		for _, e := range c.XRange(ctx, k, "-", "+").Val() {
			parts := []string{e.ID}
			// go-redis returns fields as a map; order them as XRANGE sent
			// them by reading the raw reply instead.
			raw := c.Do(ctx, "XRANGE", k, e.ID, e.ID).Val().([]any)[0].([]any)[1].([]any)
			for _, f := range raw {
				parts = append(parts, f.(string))
			}
			m.members = append(m.members, strings.Join(parts, " "))
		}
		info := c.XInfoStream(ctx, k).Val()
		m.extra = append(m.extra, fmt.Sprintf("len=%d last=%s", info.Length, info.LastGeneratedID))
		for _, g := range c.XInfoGroups(ctx, k).Val() {
			m.extra = append(m.extra, fmt.Sprintf("group %s last=%s", g.Name, g.LastDeliveredID))
			for _, cons := range c.XInfoConsumers(ctx, k, g.Name).Val() {
				m.extra = append(m.extra, "consumer "+cons.Name)
			}
			pend := c.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: k, Group: g.Name, Start: "-", End: "+", Count: 1 << 30}).Val()
			for _, p := range pend {
				m.extra = append(m.extra, fmt.Sprintf("pel %s %s %d", p.ID, p.Consumer, p.RetryCount))
			}
		}
	default:
		t.Fatalf("key %q: unexpected type %q", k, typ)
	}
	return m
}

// CompareModels reports every difference between a decoded (or source)
// model and what a server serves; expiries may differ by 3 s. Keys of
// decoded that are expired or empty collections are dropped first, as
// redis-server drops them when loading.
func CompareModels(t testing.TB, decoded, served map[string]*KeyModel) {
	t.Helper()
	now := time.Now().UnixMilli()
	for k, v := range decoded {
		if v.expireAt != 0 && v.expireAt < now { // expired: redis-server drops it on load
			delete(decoded, k)
		}
	}
	DropEmpty(decoded)
	for k, d := range decoded {
		s, ok := served[k]
		if !ok {
			t.Errorf("key %s decoded but not served by redis-server", k)
			continue
		}
		if !SameValue(d, s) {
			t.Errorf("key %s differs:\n decoded %s\n served  %s", k, d.Short(), s.Short())
		}
		if (d.expireAt == 0) != (s.expireAt == 0) || math.Abs(float64(d.expireAt-s.expireAt)) > 3000 {
			t.Errorf("key %s expiry: decoded %d served %d", k, d.expireAt, s.expireAt)
		}
	}
	for k := range served {
		if _, ok := decoded[k]; !ok {
			t.Errorf("key %s served by redis-server but not decoded", k)
		}
	}
}

// LoadInto restarts srv on a copy of file ("" for an empty server).
func LoadInto(t testing.TB, srv *testenv.Redis, file string) {
	t.Helper()
	if err := srv.Stop(testenv.Fast); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(srv.Dir, "dump.rdb"))
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(srv.Dir, "dump.rdb"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(srv.Dir, "dump.rdb"))
}

// FillEverything writes every type in small and large encodings, with
// TTLs, in databases 0 to 2 (keys prefixed "db<n>:"), streams with deleted
// entries, groups, consumers and pending entries.
func FillEverything(t testing.TB, r *testenv.Redis) {
	t.Helper()
	ctx := context.Background()
	for db := 0; db < 3; db++ {
		c := r.Client(db)
		p := c.Pipeline()
		pre := fmt.Sprintf("db%d:", db)
		p.Set(ctx, pre+"str", "hello", 0)
		p.Set(ctx, pre+"int", "12345", 0)
		p.Set(ctx, pre+"negint", "-7", 0)
		p.Set(ctx, pre+"bigint", "9223372036854775807", 0)
		p.Set(ctx, pre+"lzf", strings.Repeat("compressible-", 200), 0)
		p.Set(ctx, pre+"binary", "\x00\xff\r\n", 0)
		p.Set(ctx, pre+"ttl", "expiring", time.Hour)
		p.RPush(ctx, pre+"list:small", "a", "b", 1, -2, 1000000)
		for i := 0; i < 3000; i++ {
			p.RPush(ctx, pre+"list:big", fmt.Sprintf("element-%d", i), i)
		}
		p.RPush(ctx, pre+"list:longvals", strings.Repeat("v", 10000), strings.Repeat("w", 70000))
		p.SAdd(ctx, pre+"set:int", 1, 2, 3, -100, 1<<40)
		for i := 0; i < 600; i++ {
			p.SAdd(ctx, pre+"set:bigint", i*7)
		}
		p.SAdd(ctx, pre+"set:small", "x", "y", "z")
		for i := 0; i < 1000; i++ {
			p.SAdd(ctx, pre+"set:big", fmt.Sprintf("member-%d", i))
		}
		p.ZAdd(ctx, pre+"zset:small", redis.Z{Score: 1.5, Member: "a"}, redis.Z{Score: -3, Member: "b"}, redis.Z{Score: math.Inf(1), Member: "inf"})
		for i := 0; i < 500; i++ {
			p.ZAdd(ctx, pre+"zset:big", redis.Z{Score: float64(i) / 3, Member: fmt.Sprintf("m%d", i)})
		}
		p.HSet(ctx, pre+"hash:small", "f1", "v1", "f2", 2)
		for i := 0; i < 400; i++ {
			p.HSet(ctx, pre+"hash:big", fmt.Sprintf("field%d", i), fmt.Sprintf("value%d", i))
		}
		p.HSet(ctx, pre+"hash:longval", "f", strings.Repeat("z", 100))
		p.Expire(ctx, pre+"hash:big", 2*time.Hour)
		p.PExpire(ctx, pre+"list:small", 90*time.Minute)
		for i := 0; i < 300; i++ {
			p.XAdd(ctx, &redis.XAddArgs{Stream: pre + "stream", ID: fmt.Sprintf("%d-1", 1000+i), Values: []any{"f", i, "g", "x"}})
		}
		p.XAdd(ctx, &redis.XAddArgs{Stream: pre + "stream", ID: "5000-0", Values: []any{"other", "fields"}})
		p.XDel(ctx, pre+"stream", "1005-1", "1010-1")
		p.XGroupCreate(ctx, pre+"stream", "g1", "0")
		p.XGroupCreate(ctx, pre+"stream", "g2", "$")
		p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g1", Consumer: "alice", Streams: []string{pre + "stream", ">"}, Count: 5})
		p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g1", Consumer: "bob", Streams: []string{pre + "stream", ">"}, Count: 3})
		p.XAck(ctx, pre+"stream", "g1", "1001-1")
		p.XAdd(ctx, &redis.XAddArgs{Stream: pre + "stream:small", Values: []any{"k", "v"}})
		if _, err := p.Exec(ctx); err != nil {
			t.Fatalf("fill db %d: %v", db, err)
		}
		c.Close()
	}
}

// FlushAll empties every database of r.
func FlushAll(t testing.TB, r *testenv.Redis) {
	t.Helper()
	c := r.Client(0)
	defer c.Close()
	if err := c.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// Digest is r's DEBUG DIGEST, computed by redis-server over every database;
// an error fails the test (an empty digest would compare equal).
func Digest(t testing.TB, r *testenv.Redis) string {
	t.Helper()
	// DEBUG DIGEST walks every value: on a few hundred thousand keys and
	// a loaded machine it takes longer than a client's default 3 s read
	// timeout. It is one command that ends, so a long timeout only waits
	// for its answer.
	base := r.Client(0)
	o := *base.Options()
	base.Close()
	o.ReadTimeout = 2 * time.Minute
	c := redis.NewClient(&o)
	defer c.Close()
	d, err := c.Do(context.Background(), "DEBUG", "DIGEST").Text()
	if err != nil {
		t.Fatalf("DEBUG DIGEST on %s: %v", r.Addr(), err)
	}
	return d
}

// AssertIdentical compares two servers by DEBUG DIGEST (computed by
// redis-server itself) and key by key (values, TTLs, stream groups).
func AssertIdentical(t testing.TB, a, b *testenv.Redis) {
	t.Helper()
	if da, db := Digest(t, a), Digest(t, b); da != db {
		t.Errorf("DEBUG DIGEST differs: source %s target %s", da, db)
	}
	CompareModels(t, ServerModel(t, a), ServerModel(t, b))
}

// WaitFor polls cond until it holds, failing the test with what was
// awaited when timeout passes first. The timeout only stops a broken run
// from hanging the suite; no timing is asserted.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// FunctionCodes is the code of every function library srv serves, sorted.
func FunctionCodes(t testing.TB, srv *testenv.Redis) []string {
	t.Helper()
	c := srv.Client(0)
	defer c.Close()
	libs, err := c.FunctionList(context.Background(), redis.FunctionListQuery{WithCode: true}).Result()
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, l := range libs {
		codes = append(codes, l.Code)
	}
	slices.Sort(codes)
	return codes
}
