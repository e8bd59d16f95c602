package redisrdb

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/internal/testenv"
)

// The ground truth for the decoder is the real redis-server: whatever it
// serves after loading an RDB must be exactly what the decoder produced
// from the same bytes.

// srv is the source (and ground-truth) server, dst a target for syncs.
var srv, dst *testenv.Redis

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithRedis(func() int {
		return testenv.RunWithRedis(m.Run, &dst, testenv.RedisOptions{Password: "target-secret"})
	}, &srv, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}}))
}

// serverModel reads every key of every database the way a client sees it.
func serverModel(t *testing.T, r *testenv.Redis) map[string]*keyModel {
	t.Helper()
	ctx := context.Background()
	out := map[string]*keyModel{}
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

func keyFromServer(t *testing.T, c *redis.Client, k string, now int64) *keyModel {
	ctx := context.Background()
	typ := c.Type(ctx, k).Val()
	m := &keyModel{typ: typ}
	if pttl := c.PTTL(ctx, k).Val(); pttl > 0 {
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

// compareModels reports every difference; expiry within tolerance.
func compareModels(t *testing.T, decoded, served map[string]*keyModel) {
	t.Helper()
	now := time.Now().UnixMilli()
	for k, v := range decoded {
		if v.expireAt != 0 && v.expireAt < now { // expired: redis-server drops it on load
			delete(decoded, k)
		}
	}
	dropEmpty(decoded)
	for k, d := range decoded {
		s, ok := served[k]
		if !ok {
			t.Errorf("key %s decoded but not served by redis-server", k)
			continue
		}
		if d.typ != s.typ || strings.Join(d.members, "\x00") != strings.Join(s.members, "\x00") || strings.Join(d.extra, "|") != strings.Join(s.extra, "|") {
			t.Errorf("key %s differs:\n decoded %s\n served  %s", k, trunc(d), trunc(s))
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

func trunc(m *keyModel) string {
	s := m.String()
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

// loadInto restarts the shared server on a copy of file.
func loadInto(t *testing.T, file string) {
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

func TestGroundTruthFixtures(t *testing.T) {
	for _, name := range []string{"encodings.rdb", "hash-zipmap.rdb", "hash-ziplist.rdb", "zset-ziplist.rdb",
		"list-quicklist.rdb", "scriptbackup.rdb", "corrupt_empty_keys.rdb"} {
		t.Run(name, func(t *testing.T) {
			file := filepath.Join(fixtureDir, name)
			f, err := os.Open(file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			decoded, _, err := decodeAll(f)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			loadInto(t, file)
			compareModels(t, decoded, serverModel(t, srv))
		})
	}
}

// TestGroundTruthServerWritten fills the server with every type in small
// and large encodings, TTLs and several databases, has it SAVE, and checks
// the decoded dump.rdb against what it serves.
func TestGroundTruthServerWritten(t *testing.T) {
	loadInto(t, "") // an empty server
	ctx := context.Background()
	fillEverything(t, srv)
	c := srv.Client(0)
	defer c.Close()
	if err := c.Do(ctx, "FUNCTION", "LOAD", "#!lua name=gtlib\nredis.register_function('gtf', function() return 1 end)").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	served := serverModel(t, srv)
	f, err := os.Open(filepath.Join(srv.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	decoded, other, err := decodeAll(f)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	compareModels(t, decoded, served)
	if len(served) < 30 {
		t.Fatalf("only %d keys served: the fill did not work", len(served))
	}
	if !strings.Contains(strings.Join(other, "\n"), "function #!lua name=gtlib") {
		t.Errorf("function library not decoded; other events: %q", other)
	}
	// Every value round-trips through a DUMP payload made by the server.
	for k := range served {
		db, _ := strconv.Atoi(k[:strings.IndexByte(k, '/')])
		name := k[strings.IndexByte(k, '/')+1:]
		cl := srv.Client(db)
		payload, err := cl.Dump(ctx, name).Bytes()
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDumpDecoder([]byte(name), payload, Options{BatchItems: 5})
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		got, _, err := modelOf(d)
		if err != nil {
			t.Fatalf("%s: DUMP payload: %v", k, err)
		}
		g, s := got["0/"+name], served[k]
		if g == nil || g.typ != s.typ || strings.Join(g.members, "\x00") != strings.Join(s.members, "\x00") || strings.Join(g.extra, "|") != strings.Join(s.extra, "|") {
			t.Errorf("%s: DUMP payload decodes to %v, server has %v", k, g, trunc(s))
		}
	}
}

// fillEverything writes every type in small and large encodings.
func fillEverything(t *testing.T, r *testenv.Redis) {
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
