package redissync_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
	"replicator/pkg/redisverify"
)

func sourceOptions() *redis.Options {
	o, _ := redis.ParseURL(srv.URL(0))
	return o
}

func setConfig(t *testing.T, kv ...string) {
	t.Helper()
	c := srv.Client(0)
	defer c.Close()
	for i := 0; i < len(kv); i += 2 {
		if err := c.ConfigSet(context.Background(), kv[i], kv[i+1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSyncPSYNC(t *testing.T) {
	for _, diskless := range []string{"no", "yes"} {
		t.Run("diskless="+diskless, func(t *testing.T) {
			redistest.LoadInto(t, srv, "")
			setConfig(t, "repl-diskless-sync", diskless, "repl-diskless-sync-delay", "0")
			redistest.FillEverything(t, srv)
			redistest.FlushAll(t, dst)
			dc := dst.Client(0)
			if err := dc.Do(context.Background(), "FUNCTION", "FLUSH").Err(); err != nil {
				t.Fatal(err)
			}
			sc := srv.Client(0)
			if err := sc.Do(context.Background(), "FUNCTION", "LOAD", "REPLACE", "#!lua name=synclib\nredis.register_function('one', function() return 1 end)").Err(); err != nil {
				t.Fatal(err)
			}
			sc.Close()
			m := newMetrics(t)
			st, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: sourceOptions(), Mode: "psync",
				Writer: redissync.WriterConfig{Target: targetOptions(dst)}, Metrics: m}, zaptest.NewLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if st.Keys < 30 {
				t.Fatalf("only %d keys imported", st.Keys)
			}
			checkKeysCounted(t, m, st)
			redistest.AssertIdentical(t, srv, dst)
			if n, err := dc.Do(context.Background(), "FCALL", "one", 0).Int(); err != nil || n != 1 {
				t.Errorf("function library not carried: FCALL one = %v, %v", n, err)
			}
			dc.Close()
		})
	}
}

func TestSyncSCAN(t *testing.T) {
	redistest.LoadInto(t, srv, "")
	redistest.FillEverything(t, srv)
	redistest.FlushAll(t, dst)
	for _, v := range []struct {
		version int
		big     int64
	}{
		{0, 0},
		{9, 0},    // listpack encodings must go native
		{0, 4096}, // keys above 4 KiB are read in pages, never DUMPed
	} {
		m := newMetrics(t)
		st, err := redissync.Sync(context.Background(), redissync.SyncConfig{Source: sourceOptions(), Mode: "scan", BigKeyBytes: v.big,
			Writer: redissync.WriterConfig{Target: targetOptions(dst), TargetRDBVersion: v.version}, Metrics: m}, zaptest.NewLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		checkKeysCounted(t, m, st)
		if v.big > 0 && st.Native == 0 {
			t.Error("no key was copied in pieces")
		}
		redistest.AssertIdentical(t, srv, dst)
	}
}

// waitIdentical waits for the target to converge (no timing is asserted:
// the deadline only stops a broken follower from hanging the suite).
func waitIdentical(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if redistest.Digest(t, srv) == redistest.Digest(t, dst) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	redistest.AssertIdentical(t, srv, dst)
}

// writeChurn runs the kinds of writes a live app does, including ones that
// touch several keys or run as one transaction.
func writeChurn(t *testing.T, round int) {
	t.Helper()
	ctx := context.Background()
	c := srv.Client(0)
	defer c.Close()
	must := func(err error) {
		t.Helper()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
	}
	for i := 0; i < 200; i++ {
		must(c.Set(ctx, fmt.Sprintf("churn:%d:%d", round, i), i, 0).Err())
		must(c.HSet(ctx, "churn:hash", fmt.Sprint(i), round).Err())
		must(c.RPush(ctx, fmt.Sprintf("churn:list:%d", round), i).Err())
	}
	must(c.Del(ctx, "db0:str", fmt.Sprintf("churn:%d:5", round)).Err())
	must(c.Expire(ctx, "db0:int", time.Hour).Err())
	must(c.Rename(ctx, fmt.Sprintf("churn:%d:7", round), fmt.Sprintf("churn:renamed:%d", round)).Err())
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Incr(ctx, "churn:counter")
		p.SAdd(ctx, "churn:set", round, "x")
		p.ZAdd(ctx, "churn:zset", redis.Z{Score: float64(round), Member: "m"})
		return nil
	})
	must(err)
	must(c.Eval(ctx, "redis.call('SET', KEYS[1], ARGV[1]); redis.call('LPUSH', KEYS[2], ARGV[1]); return 1", []string{"churn:lua", "churn:lualist"}, round).Err())
	must(c.XAdd(ctx, &redis.XAddArgs{Stream: "db0:stream", Values: []any{"round", round}}).Err())
	c2 := srv.Client(2)
	must(c2.FlushDB(ctx).Err())
	must(c2.Set(ctx, "after-flush", round, 0).Err())
	c2.Close()
}

func TestFollow(t *testing.T) {
	redistest.LoadInto(t, srv, "")
	setConfig(t, "repl-diskless-sync", "no")
	redistest.FillEverything(t, srv)
	redistest.FlushAll(t, dst)
	m := newMetrics(t)
	ctx, cancel := context.WithCancel(context.Background())
	// Writes run while the snapshot is taken and loaded, and after.
	writes := make(chan error, 1)
	go func() { writes <- concurrentWrites(800) }()
	type result struct {
		st  redissync.LoadStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptions(), Mode: "auto", Follow: true,
			Writer: redissync.WriterConfig{Target: targetOptions(dst)}, Metrics: m}, zaptest.NewLogger(t))
		done <- result{st, err}
	}()
	if err := <-writes; err != nil {
		t.Fatal(err)
	}
	waitIdentical(t)
	writeChurn(t, 1)
	waitIdentical(t)

	// Drop the replication link: the follower resumes with PSYNC from
	// its offset and nothing is lost or applied twice.
	c := srv.Client(0)
	if err := c.Do(context.Background(), "CLIENT", "KILL", "TYPE", "replica").Err(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	writeChurn(t, 2)
	waitIdentical(t)
	if n := testutil.ToFloat64(m.Reconnects); n < 1 {
		t.Errorf("reconnects metric = %v after the link was killed", n)
	}

	// The source restarts empty with a new replication ID: the follower
	// cannot resume, resynchronises in full (flushing the target) and
	// carries on.
	if err := srv.Restart(testenv.Fast); err != nil {
		t.Fatal(err)
	}
	writeChurn(t, 3)
	waitIdentical(t)
	if n := testutil.ToFloat64(m.Reconnects); n < 2 {
		t.Errorf("reconnects metric = %v after the link was killed and the source restarted", n)
	}

	// Caught up, the applied offset is the source's own replication
	// offset and nothing is waiting to be applied.
	offset := masterOffset(t, srv)
	redistest.WaitFor(t, 30*time.Second, fmt.Sprintf("applied offset metric at the source's offset %d", offset), func() bool {
		return testutil.ToFloat64(m.FollowOffset) >= float64(offset)
	})
	redistest.WaitFor(t, 30*time.Second, "follow lag metric at 0", func() bool { return testutil.ToFloat64(m.FollowLagBytes) == 0 })

	// The independent client-side comparison agrees.
	rep, err := redisverify.Run(context.Background(), redisverify.Config{Source: sourceOptions(), Target: targetOptions(dst)}, zaptest.NewLogger(t))
	if err != nil || !rep.Identical() {
		t.Errorf("redis verify after follow: %v, %+v", err, rep)
	}
	cancel()
	res := <-done
	if res.err != nil {
		t.Fatalf("follow ended with %v", res.err)
	}
	// The keys metric counts the first snapshot's keys and those of the
	// full resynchronisation after the restart.
	if keys := testutil.ToFloat64(m.KeysImported); res.st.Keys < 30 || keys < float64(res.st.Keys) {
		t.Errorf("keys imported metric %v, the first snapshot alone wrote %d keys", keys, res.st.Keys)
	}
}

// TestRerunAfterInterruptedSync stops an import half way, as a kill would,
// then reruns it: the target ends identical.
func TestRerunAfterInterruptedSync(t *testing.T) {
	redistest.LoadInto(t, srv, "")
	redistest.FillEverything(t, srv)
	ctx := context.Background()
	c := srv.Client(0)
	p := c.Pipeline()
	for i := 0; i < 20000; i++ {
		p.Set(ctx, fmt.Sprintf("bulk:%d", i), i, 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	redistest.FlushAll(t, dst)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Cancel once part of the keys arrived, or give up when the first run
	// has ended anyway.
	ended := make(chan struct{})
	go func() {
		tc := dst.Client(0)
		defer tc.Close()
		for tc.DBSize(ctx).Val() < 2000 {
			select {
			case <-ended:
				return
			case <-time.After(time.Millisecond):
			}
		}
		cancel()
	}()
	_, err := redissync.Sync(cctx, redissync.SyncConfig{Source: sourceOptions(), Mode: "psync", Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
	close(ended)
	if err == nil {
		t.Fatal("the first run finished before it was interrupted: the rerun would prove nothing")
	}
	// Meanwhile the source deleted keys the first run may have copied:
	// with FlushTarget the rerun does not keep them.
	c = srv.Client(0)
	p = c.Pipeline()
	for i := 0; i < 20000; i += 2 {
		p.Del(ctx, fmt.Sprintf("bulk:%d", i))
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptions(), Mode: "psync", FlushTarget: true, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	redistest.AssertIdentical(t, srv, dst)
}

// TestFollowAfterDisklessTransfer: after a $EOF:<mark> transfer the
// command stream starts right after the mark, in the same buffer.
func TestFollowAfterDisklessTransfer(t *testing.T) {
	redistest.LoadInto(t, srv, "")
	setConfig(t, "repl-diskless-sync", "yes")
	redistest.FillEverything(t, srv)
	redistest.FlushAll(t, dst)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(ctx, redissync.SyncConfig{Source: sourceOptions(), Mode: "psync", Follow: true,
			Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zaptest.NewLogger(t))
		done <- err
	}()
	waitIdentical(t)
	writeChurn(t, 1)
	waitIdentical(t)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// concurrentWrites runs n rounds of mixed writes (no *testing.T: it runs
// on its own goroutine).
func concurrentWrites(n int) error {
	ctx := context.Background()
	c := srv.Client(0)
	defer c.Close()
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("conc:%d", i%50)
		p := c.TxPipeline()
		p.Incr(ctx, k)
		p.HIncrBy(ctx, "conc:hash", k, 1)
		if _, err := p.Exec(ctx); err != nil {
			return err
		}
		switch i % 5 {
		case 0:
			c.Del(ctx, fmt.Sprintf("conc:%d", (i+25)%50))
		case 1:
			c.Expire(ctx, k, time.Hour)
		case 2:
			c.Rename(ctx, k, k+":r")
		case 3:
			if err := c.Eval(ctx, "return redis.call('RPUSH', KEYS[1], ARGV[1])", []string{"conc:list"}, i).Err(); err != nil {
				return err
			}
		case 4:
			c.ZIncrBy(ctx, "conc:zset", 1, k)
		}
	}
	return nil
}
