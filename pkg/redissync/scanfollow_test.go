package redissync_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

func logged(logs *observer.ObservedLogs, msg string) bool {
	for _, e := range logs.All() {
		if strings.Contains(e.Message, msg) {
			return true
		}
	}
	return false
}

// A source without PSYNC is copied by parallel SCAN + DUMP while it is
// written to, and followed by keyspace notifications: the target ends
// identical (DEBUG DIGEST and key by key), including the keys changed
// during the SCAN. When the subscription is cut and events are lost
// (writes and deletes made while the follower cannot reach the source),
// the follower notices the re-subscription, says so, re-scans, deletes
// what the source lost, and ends identical again.
func TestFollowSCANUnderWrites(t *testing.T) {
	s := startExtra(t, "--rename-command", "PSYNC", "", "--rename-command", "SYNC", "")
	ctx := context.Background()
	c := s.Client(0)
	defer c.Close()
	p := c.Pipeline()
	for i := 0; i < 5000; i++ {
		p.Set(ctx, fmt.Sprintf("k%d", i), strings.Repeat("x", i%100), 0)
		if i%100 == 0 {
			p.RPush(ctx, fmt.Sprintf("list%d", i), i, i+1)
			p.HSet(ctx, fmt.Sprintf("hash%d", i), "f", i)
		}
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	redistest.FlushAll(t, dst)
	px, err := testenv.StartProxy(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	core, logs := observer.New(zap.InfoLevel)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(runCtx, redissync.SyncConfig{Source: &redis.Options{Addr: px.Addr(), Password: "src-pass"}, Mode: "auto", Follow: true,
			ScanConnections: 4, Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.New(core))
		done <- err
	}()
	// Writes from before the SCAN until after it.
	writes := func(round, n int) {
		t.Helper()
		c1 := s.Client(1)
		defer c1.Close()
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("k%d", (i*7919+round)%5000)
			var err error
			switch i % 5 {
			case 0:
				err = c.Incr(ctx, fmt.Sprintf("counter%d", i%13)).Err()
			case 1:
				err = c.Del(ctx, k).Err()
			case 2:
				err = c.RPush(ctx, fmt.Sprintf("list%d", (i%50)*100), round).Err()
			case 3:
				err = c.Expire(ctx, k, time.Hour).Err()
			default:
				err = c1.Set(ctx, fmt.Sprintf("db1:%d", i), round, 0).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for !logged(logs, "snapshot by SCAN imported") {
		writes(0, 200)
		select {
		case err := <-done:
			t.Fatalf("the sync ended: %v", err)
		default:
		}
	}
	writes(1, 1000)
	waitSame := func(what string) {
		t.Helper()
		redistest.WaitFor(t, 60*time.Second, what, func() bool { return redistest.Digest(t, s) == redistest.Digest(t, dst) })
		redistest.AssertIdentical(t, s, dst)
	}
	waitSame("identical after the SCAN and live writes")
	if !logged(logs, "falling back to SCAN") {
		t.Errorf("no log line saying the source refused PSYNC")
	}

	// Lose events: the follower cannot reach the source while it changes.
	px.SetDown(true)
	px.Cut()
	writes(2, 1000)
	for i := 0; i < 50; i++ {
		if err := c.Del(ctx, fmt.Sprintf("k%d", 2500+i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	px.SetDown(false)
	redistest.WaitFor(t, 60*time.Second, "the follower noticing the lost events", func() bool { return logged(logs, "re-scanning the whole source") })
	waitSame("identical after the lost events were repaired")
	for _, e := range logs.All() {
		if strings.Contains(e.Message, "re-scanning") && !strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), "lost") {
			t.Errorf("re-scan log line without the reason: %v", e.ContextMap())
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}
