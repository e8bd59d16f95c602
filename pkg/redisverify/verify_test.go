package redisverify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
)

var src, dst *testenv.Redis

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithRedis(func() int {
		return testenv.RunWithRedis(m.Run, &dst, testenv.RedisOptions{})
	}, &src, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}}))
}

func opts(r *testenv.Redis) *redis.Options {
	o, _ := redis.ParseURL(r.URL(0))
	return o
}

// copyByReplication makes dst a copy of src with Redis' own replication,
// independent of the code under test.
func copyByReplication(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	c := dst.Client(0)
	defer c.Close()
	host, port := "127.0.0.1", fmt.Sprint(src.Port)
	if err := c.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		info := c.Info(ctx, "replication").Val()
		if strings.Contains(info, "master_link_status:up") && strings.Contains(info, "master_sync_in_progress:0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica never caught up: %s", info)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Wait until the replica has every write, then detach it.
	s := src.Client(0)
	defer s.Close()
	if n, err := s.Do(ctx, "WAIT", 1, 10000).Int(); err != nil || n < 1 {
		t.Fatalf("WAIT for the replica: %d replicas acknowledged, %v", n, err)
	}
	if err := c.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
}

func fill(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for _, r := range []*testenv.Redis{src, dst} {
		c := r.Client(0)
		c.FlushAll(ctx)
		c.Close()
	}
	for db := 0; db < 2; db++ {
		c := src.Client(db)
		p := c.Pipeline()
		for i := 0; i < 300; i++ {
			p.Set(ctx, fmt.Sprintf("s%d", i), i, 0)
		}
		p.Set(ctx, "ttl", "x", time.Hour)
		p.RPush(ctx, "list", "a", "b", "c")
		for i := 0; i < 3000; i++ {
			p.SAdd(ctx, "bigset", fmt.Sprintf("m%d", i))
			p.HSet(ctx, "bighash", fmt.Sprint(i), i)
			p.ZAdd(ctx, "bigzset", redis.Z{Score: float64(i) / 7, Member: fmt.Sprint(i)})
		}
		p.XAdd(ctx, &redis.XAddArgs{Stream: "stream", ID: "1-1", Values: []any{"f", "v", "f", "w"}})
		p.XGroupCreate(ctx, "stream", "g", "0")
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	cfg.Source, cfg.Target = opts(src), opts(dst)
	rep, err := Run(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestIdenticalThenDifferences(t *testing.T) {
	fill(t)
	copyByReplication(t)
	rep := run(t, Config{})
	if !rep.Identical() {
		var b bytes.Buffer
		rep.Write(&b, "text")
		t.Fatalf("copy made by replication reported different:\n%s", b.String())
	}
	if rep.Checked != 2*306 {
		t.Errorf("checked %d keys, want %d", rep.Checked, 2*306)
	}

	ctx := context.Background()
	d0, d1 := dst.Client(0), dst.Client(1)
	defer d0.Close()
	defer d1.Close()
	d0.Set(ctx, "s1", "changed", 0)
	d0.Del(ctx, "s2")
	d0.Set(ctx, "only-on-target", 1, 0)
	d0.Expire(ctx, "s3", time.Hour)
	d0.SRem(ctx, "bigset", "m1500")
	d0.SAdd(ctx, "bigset", "intruder")
	d1.HSet(ctx, "bighash", "7", "other")
	d1.ZAdd(ctx, "bigzset", redis.Z{Score: 99, Member: "3"})
	d1.Del(ctx, "list")
	d1.Set(ctx, "list", "now a string", 0)
	d1.XAdd(ctx, &redis.XAddArgs{Stream: "stream", ID: "2-1", Values: []any{"x", "y"}})

	rep = run(t, Config{})
	want := map[string]string{
		"0/s1": "value", "0/s2": "missing", "0/only-on-target": "extra", "0/s3": "ttl", "0/bigset": "value",
		"1/bighash": "value", "1/bigzset": "value", "1/list": "type", "1/stream": "value",
	}
	got := map[string]string{}
	for _, d := range rep.Differences {
		got[fmt.Sprintf("%d/%s", d.DB, d.Key)] = d.Kind
	}
	for k, kind := range want {
		if got[k] != kind {
			t.Errorf("%s: got difference %q, want %q", k, got[k], kind)
		}
	}
	if len(got) != len(want) || rep.Identical() {
		t.Errorf("differences %v", got)
	}

	// Every format renders; JSON parses and says not identical.
	var b bytes.Buffer
	if err := rep.Write(&b, "json"); err != nil {
		t.Fatal(err)
	}
	var parsed struct {
		Identical bool `json:"identical"`
		Total     int  `json:"differences_total"`
	}
	if err := json.Unmarshal(b.Bytes(), &parsed); err != nil || parsed.Identical || parsed.Total != len(want) {
		t.Errorf("json report: %v %+v\n%s", err, parsed, b.String())
	}
	for _, f := range []string{"text", "markdown"} {
		b.Reset()
		if err := rep.Write(&b, f); err != nil || !strings.Contains(b.String(), "bighash") {
			t.Errorf("%s report: %v\n%s", f, err, b.String())
		}
	}

	// A sample checks at most N keys per database.
	rep = run(t, Config{Sample: 5})
	if rep.Checked > 10 || rep.Checked == 0 || !rep.Sampled {
		t.Errorf("sample checked %d keys", rep.Checked)
	}
}
