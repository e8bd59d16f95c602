package redisverify

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"replicator/internal/testenv"
)

// TestLibrariesAndGroups: a copy made by replication is identical,
// function libraries and consumer groups included; a target without the
// library, or whose group has acknowledged other entries, differs.
func TestLibrariesAndGroups(t *testing.T) {
	ctx := context.Background()
	flushFunctions := func() {
		for _, r := range []*testenv.Redis{src, dst} {
			c := r.Client(0)
			c.FunctionFlush(ctx)
			c.Close()
		}
	}
	flushFunctions()
	t.Cleanup(flushFunctions)
	fill(t)
	s := src.Client(0)
	defer s.Close()
	if err := s.FunctionLoad(ctx, "#!lua name=mylib\nredis.register_function('myf', function() return 1 end)").Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"5-1", "5-2", "5-3"} {
		s.XAdd(ctx, &redis.XAddArgs{Stream: "orders", ID: id, Values: []any{"n", id}})
	}
	s.XGroupCreate(ctx, "orders", "workers", "0")
	if err := s.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "workers", Consumer: "w1", Streams: []string{"orders", ">"}, Count: 2}).Err(); err != nil {
		t.Fatal(err)
	}
	copyByReplication(t)
	rep := run(t, Config{})
	if !rep.Identical() || rep.Libraries != (LibraryCount{1, 1}) {
		var b bytes.Buffer
		rep.Write(&b, "text")
		t.Fatalf("copy made by replication: libraries %+v\n%s", rep.Libraries, b.String())
	}

	d := dst.Client(0)
	defer d.Close()
	if err := d.FunctionDelete(ctx, "mylib").Err(); err != nil {
		t.Fatal(err)
	}
	if err := d.XAck(ctx, "orders", "workers", "5-1").Err(); err != nil {
		t.Fatal(err)
	}
	rep = run(t, Config{})
	if rep.Identical() {
		t.Fatal("target without the library and with another PEL reported identical")
	}
	got := map[string]Difference{}
	for _, df := range rep.Differences {
		got[df.Kind] = df
	}
	if df, ok := got["function library missing"]; !ok || df.Key != "mylib" {
		t.Errorf("missing library not reported: %+v", rep.Differences)
	}
	if df, ok := got["group workers"]; !ok || df.Key != "orders" || !strings.Contains(df.Source, "pending 2") || !strings.Contains(df.Target, "pending 1") {
		t.Errorf("differing group not reported: %+v", rep.Differences)
	}
	if len(rep.Differences) != 2 {
		t.Errorf("want exactly these two differences: %+v", rep.Differences)
	}
	var b bytes.Buffer
	rep.Write(&b, "text")
	if !strings.Contains(b.String(), `function library missing "mylib"`) || !strings.Contains(b.String(), "group workers") {
		t.Errorf("text report does not name them:\n%s", b.String())
	}
}
