package redissync_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/internal/redistest"
	"replicator/pkg/redissync"
)

// A follower into a 3-master cluster target, killed with -9 while the
// application writes non-idempotent commands (INCR, RPUSH, LPUSH, a
// transaction across slots, a Lua script), resumes with a partial
// resynchronisation, and every shard ends identical to the source: no
// command applied twice on any master, none lost. Each master holds its
// own floor, and each slot written its own position.
func TestFollowIntoClusterResumesAfterKill9(t *testing.T) {
	src := startExtra(t, "--repl-backlog-size", "64mb")
	rc := startCluster(t)
	ctx := context.Background()
	sc := src.Client(0)
	defer sc.Close()
	p := sc.Pipeline()
	for i := 0; i < 300; i++ {
		p.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr atomic.Value
	var writes atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := sc.TxPipelined(ctx, func(p redis.Pipeliner) error { // spans slots
				p.Incr(ctx, "cr:counter")
				p.RPush(ctx, "cr:list", i)
				p.LPush(ctx, fmt.Sprintf("cr:l%d", i%7), i)
				return nil
			})
			if err == nil {
				err = sc.Incr(ctx, fmt.Sprintf("cr:c%d", i%23)).Err()
			}
			if err == nil && i%10 == 0 {
				err = sc.Eval(ctx, "redis.call('INCR', KEYS[1]); return redis.call('RPUSH', KEYS[2], ARGV[1])", []string{"cr:lua", "cr:lualist"}, i).Err()
			}
			if err != nil {
				writeErr.Store(err)
				return
			}
			writes.Add(1)
		}
	}()
	stopWrites := func() {
		close(stop)
		wg.Wait()
		if err := writeErr.Load(); err != nil {
			t.Fatalf("app writes: %v", err)
		}
	}

	same := func() (bool, string) { return sameModels(redistest.ServerModel(t, src), redistest.ClusterModel(t, rc)) }
	precheck := func() bool {
		masters, err := rc.Masters()
		if err != nil {
			t.Fatal(err)
		}
		a, _ := keyCount(t, src)
		b, pos := keyCount(t, masters...)
		return a == b-pos
	}
	logFile := t.TempDir() + "/follower.log"
	f := startChildFollowerURL(t, src.URL(0), rc.URL(), logFile)
	f.precheck = precheck
	// Let the follower copy and follow a while under the writes, then
	// kill it mid-stream.
	defer func() {
		if t.Failed() {
			log, _ := os.ReadFile(logFile)
			t.Logf("follower log:\n%s", log)
		}
	}()
	// Following, and with a durable position on every master: the
	// counter alone can pass 200 in the snapshot the follower imports
	// (on a loaded machine), before any floor is written, and a follower
	// killed then rightly starts over with a full resynchronisation.
	redistest.WaitFor(t, time.Minute, "the follower following, with a floor on every master", func() bool {
		c := rc.Client()
		defer c.Close()
		if n, _ := c.Get(ctx, "cr:counter").Int(); n <= 200 {
			return false
		}
		masters, err := rc.Masters()
		if err != nil {
			return false
		}
		for _, m := range masters {
			mc := m.Client(0)
			floors, err := mc.Keys(ctx, redissync.PositionKey+":floor:*").Result()
			mc.Close()
			if err != nil || len(floors) == 0 {
				return false
			}
		}
		return true
	})
	full0, partial0 := syncStats(t, src)
	f.kill()
	n := writes.Load()
	redistest.WaitFor(t, time.Minute, "app writes while the follower is down", func() bool { return writes.Load() >= n+300 || writeErr.Load() != nil })
	f = startChildFollowerURL(t, src.URL(0), rc.URL(), logFile)
	f.precheck = precheck
	redistest.WaitFor(t, time.Minute, "the resumed follower applying new writes", func() bool {
		c := rc.Client()
		defer c.Close()
		v, _ := c.Get(ctx, "cr:counter").Int64()
		return v > n+300
	})
	stopWrites()
	waitSame(t, same, f, "after kill -9 and resume")
	full, partial := syncStats(t, src)
	if full != full0 || partial != partial0+1 {
		t.Errorf("sync_full %d→%d, sync_partial_ok %d→%d: want one partial and no full resynchronisation", full0, full, partial0, partial)
	}
	if log, _ := os.ReadFile(logFile); !strings.Contains(string(log), "resuming from the follow position stored on the target") {
		t.Errorf("the second follower did not resume from the stored position:\n%s", log)
	}
	// One floor per master; slot positions only on the master of their
	// slot (the cluster would refuse them anywhere else).
	masters, err := rc.Masters()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range masters {
		c := m.Client(0)
		floors, err := c.Keys(ctx, redissync.PositionKey+":floor:*").Result()
		c.Close()
		if err != nil || len(floors) != 1 {
			t.Errorf("master %s holds floor keys %v (%v), want exactly one", m.Addr(), floors, err)
		}
	}
	t.Logf("%d application writes; follower killed once", writes.Load())
}
