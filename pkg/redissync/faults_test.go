package redissync_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
	"replicator/pkg/redissync"
)

// The PSYNC connection is cut in the middle of the RDB transfer (through a
// throttled TCP proxy): the sync fails with an error that says the
// transfer was cut short, and a rerun makes the target identical.
func TestSyncConnectionCutMidRDBTransfer(t *testing.T) {
	s := startExtra(t)
	ctx := context.Background()
	c := s.Client(0)
	p := c.Pipeline()
	for i := 0; i < 20000; i++ {
		p.Set(ctx, fmt.Sprintf("bulk:%d", i), strings.Repeat("v", 64+i%64), 0)
		if i%500 == 0 {
			p.RPush(ctx, fmt.Sprintf("list:%d", i), i, i+1, i+2)
		}
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	redistest.FlushAll(t, dst)
	px, err := testenv.StartProxy(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetBandwidth(256 << 10)
	source := &redis.Options{Addr: px.Addr(), Password: "src-pass"}

	go func() {
		tc := dst.Client(0)
		defer tc.Close()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if tc.DBSize(ctx).Val() >= 1000 {
				break
			}
		}
		px.Cut()
	}()
	_, err = redissync.Sync(ctx, redissync.SyncConfig{Source: source, Mode: "psync", Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop())
	if err == nil {
		t.Fatal("the sync succeeded although its connection was cut mid-transfer")
	}
	t.Logf("error after the cut: %v", err)
	if !errors.Is(err, redissync.ErrTransferCut) {
		t.Errorf("error %v is not ErrTransferCut", err)
	}
	if !strings.Contains(err.Error(), "source") || !strings.Contains(strings.ToLower(err.Error()), "rerun") {
		t.Errorf("error %q does not name the source and say to rerun", err)
	}
	if strings.Contains(err.Error(), "src-pass") {
		t.Errorf("error shows the password: %v", err)
	}
	tc := dst.Client(0)
	partial := tc.DBSize(ctx).Val()
	tc.Close()
	if partial >= 20040 {
		t.Fatalf("the target has all %d keys: the cut came too late", partial)
	}

	px.SetBandwidth(0)
	if _, err := redissync.Sync(ctx, redissync.SyncConfig{Source: source, Mode: "psync", Writer: redissync.WriterConfig{Target: targetOptions(dst)}}, zap.NewNop()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	redistest.AssertIdentical(t, s, dst)
}

// The target's connections are cut in the middle of an import: the sync
// fails with an error that names the target, and a rerun makes the target
// identical.
func TestSyncTargetConnectionCutMidImport(t *testing.T) {
	s := startExtra(t)
	ctx := context.Background()
	c := s.Client(0)
	p := c.Pipeline()
	for i := 0; i < 20000; i++ {
		p.Set(ctx, fmt.Sprintf("bulk:%d", i), strings.Repeat("v", 64+i%64), 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	redistest.FlushAll(t, dst)
	px, err := testenv.StartProxy(dst.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetBandwidth(256 << 10)
	target := targetOptions(dst)
	target.Addr = px.Addr()
	source, _ := redis.ParseURL(s.URL(0))

	go func() {
		tc := dst.Client(0)
		defer tc.Close()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
			if tc.DBSize(ctx).Val() >= 1000 {
				break
			}
		}
		px.Cut()
	}()
	_, err = redissync.Sync(ctx, redissync.SyncConfig{Source: source, Mode: "psync", Writer: redissync.WriterConfig{Target: target}}, zap.NewNop())
	if err == nil {
		t.Fatal("the sync succeeded although its target connections were cut mid-import")
	}
	t.Logf("error after the cut: %v", err)
	if !strings.Contains(err.Error(), "target") || !errors.Is(err, redissync.ErrTransferCut) {
		t.Errorf("error %q does not name the target and say to rerun", err)
	}
	if strings.Contains(err.Error(), "target-secret") || strings.Contains(err.Error(), "src-pass") {
		t.Errorf("error shows a password: %v", err)
	}
	px.SetBandwidth(0)
	if _, err := redissync.Sync(ctx, redissync.SyncConfig{Source: source, Mode: "psync", Writer: redissync.WriterConfig{Target: target}}, zap.NewNop()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	redistest.AssertIdentical(t, s, dst)
}

// The replication link of a following sync is cut through the proxy: the
// follower reconnects by itself, resumes with PSYNC, and the target stays
// identical through writes made meanwhile.
func TestFollowSurvivesConnectionCut(t *testing.T) {
	s := startExtra(t)
	fillSmall(t, s)
	redistest.FlushAll(t, dst)
	px, err := testenv.StartProxy(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	source := &redis.Options{Addr: px.Addr(), Password: "src-pass"}
	ctx, cancel := context.WithCancel(context.Background())
	m := newMetrics(t)
	done := make(chan error, 1)
	go func() {
		_, err := redissync.Sync(ctx, redissync.SyncConfig{Source: source, Mode: "psync", Follow: true, Writer: redissync.WriterConfig{Target: targetOptions(dst)}, Metrics: m}, zap.NewNop())
		done <- err
	}()
	waitSame := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); redistest.Digest(t, s) != redistest.Digest(t, dst); time.Sleep(20 * time.Millisecond) {
			select {
			case err := <-done:
				t.Fatalf("%s: the follower ended: %v", what, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the target did not converge within 30s", what)
			}
		}
	}
	waitSame("after the initial copy")
	c := s.Client(0)
	defer c.Close()
	bg := context.Background()
	for round := 0; round < 3; round++ {
		accepted := px.Accepted()
		px.Cut()
		for i := 0; i < 100; i++ {
			if err := c.Incr(bg, fmt.Sprintf("cut:%d", i%10)).Err(); err != nil {
				t.Fatal(err)
			}
			if err := c.RPush(bg, "cut:list", round*100+i).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := c.Del(bg, fmt.Sprintf("k%d", round)).Result(); err != nil || n != 1 {
			t.Fatalf("DEL k%d: %d, %v", round, n, err)
		}
		waitSame(fmt.Sprintf("after cut %d", round+1))
		if px.Accepted() <= accepted {
			t.Errorf("cut %d: the follower did not reconnect through the proxy", round+1)
		}
	}
	// One drop per cut: the follower counted each and only those.
	if n := testutil.ToFloat64(m.Reconnects); n != 3 {
		t.Errorf("reconnects metric %v after 3 cuts", n)
	}
	redistest.AssertIdentical(t, s, dst)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("follow ended with %v", err)
	}
}
