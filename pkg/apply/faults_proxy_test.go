package apply

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"replicator/internal/testenv"
)

// proxied starts a fault proxy in front of pg and returns it with rawURL
// rewritten to go through it.
func proxied(t *testing.T, pg *testenv.Postgres, rawURL string) (*testenv.Proxy, string) {
	t.Helper()
	px, err := testenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = px.Addr()
	return px, u.String()
}

// bigTxn commits one source transaction of n rows in two tables (a keyed
// one and the no-key, FULL identity one, with duplicates) and returns the
// source's WAL position after its commit.
func bigTxn(t *testing.T, p *pair, n int) pglogrepl.LSN {
	t.Helper()
	srcPG.Exec(t, p.src, fmt.Sprintf(`BEGIN;
		INSERT INTO ledger (amount, note) SELECT g, repeat('b', 200) FROM generate_series(1, %d) g;
		INSERT INTO log_nopk SELECT g %% 3, 'dup' FROM generate_series(1, %d) g;
		COMMIT`, n, n/4))
	return p.sourceLSN(t)
}

// applyingOnTarget reports whether a session on the target database has
// had a write transaction open for at least d: the applier in the middle
// of a batch.
func applyingOnTarget(t *testing.T, p *pair, d time.Duration) bool {
	t.Helper()
	var n int
	c := targetCluster(t).Connect(t, p.dst)
	defer c.Close(context.Background())
	if err := c.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL
		AND xact_start <= now() - $1::interval`, d.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// sending reports whether the source's walsender for the stream's slot
// has sent past end, or is blocked writing to the stream's connection:
// either way the transaction ending before end is on its way.
func sending(t *testing.T, p *pair, end pglogrepl.LSN) bool {
	t.Helper()
	c := srcPG.Connect(t, "postgres")
	defer c.Close(context.Background())
	var sent *string
	var wait *string
	err := c.QueryRow(context.Background(), `SELECT r.sent_lsn::text, a.wait_event FROM pg_replication_slots s
		JOIN pg_stat_replication r ON r.pid = s.active_pid JOIN pg_stat_activity a ON a.pid = s.active_pid
		WHERE s.slot_name = $1`, p.slot).Scan(&sent, &wait)
	if err != nil {
		return false // not streaming at the moment
	}
	if wait != nil && *wait == "WalSenderWriteData" {
		return true
	}
	if sent == nil {
		return false
	}
	l, err := pglogrepl.ParseLSN(*sent)
	return err == nil && l >= end
}

// TestStreamSurvivesConnectionCuts runs the stream with a TCP proxy in front
// of each database while the source is written to, and cuts its
// connections: the source's mid-transaction (a large transaction half
// received), the target's mid-batch (a target transaction open), and a
// partition of the target that refuses connections for a while. The stream
// reconnects by itself with logged backoff and ends identical, nothing
// lost and nothing doubled (the no-key table holds duplicate rows, so a
// replayed insert would show in its checksum).
func TestStreamSurvivesConnectionCuts(t *testing.T) {
	p := snapshotPair(t, faultDDL, faultSetup)
	srcProxy, srcURL := proxied(t, srcPG, p.srcURL)
	dstProxy, dstURL := proxied(t, targetCluster(t), p.dstURL)
	cfg := p.config(t)
	cfg.SourceURL, cfg.TargetURL = srcURL, dstURL
	cfg.Apply.MaxChanges = 100000 // a large source transaction is one target batch

	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Core()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Stream(ctx, cfg, log) }()
	w := startWriter(t, p.srcURL)
	defer w.finish()
	var checks, violations atomic.Int64
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); watchFlush(watchCtx, t, p, &checks, &violations) }()
	defer func() { stopWatch(); <-watched }()
	began := time.Now()
	from := p.appliedLSN(t)
	waitUntil(t, 30*time.Second, "the stream to apply the writer's transactions", done, func() bool { return p.appliedLSN(t) > from })

	// 1. Source side, mid-transaction: throttle the replication connection
	// so a large transaction takes seconds to arrive, and cut it while it
	// is on its way: the source has sent it (or is blocked sending it into
	// the throttled proxy), the target has not applied it.
	srcProxy.SetBandwidth(64 << 10)
	commit := bigTxn(t, p, 6000)
	waitUntil(t, 30*time.Second, "the source to send the large transaction", done, func() bool { return sending(t, p, commit) })
	if applied := p.appliedLSN(t); applied >= commit {
		t.Fatalf("the large transaction was applied (%s >= %s) before the cut: throttle harder", applied, commit)
	}
	srcBefore := srcProxy.Accepted()
	srcProxy.Cut()
	srcProxy.SetBandwidth(0)
	waitUntil(t, 30*time.Second, "the stream to apply the large transaction after the source cut", done, func() bool {
		return p.appliedLSN(t) >= commit
	})
	if srcProxy.Accepted() <= srcBefore {
		t.Error("the stream did not reconnect to the source through the proxy")
	}

	t.Logf("source cut done at %s", time.Since(began))
	// 2. Target side, mid-batch: throttle the target connection, wait until
	// the applier has a target transaction open, and cut it.
	dstProxy.SetBandwidth(64 << 10)
	commit = bigTxn(t, p, 6000)
	// A group of small transactions commits in a few milliseconds even
	// throttled; one open for a second is a large one, mid-batch.
	waitUntil(t, 30*time.Second, "the applier to be in the middle of a large target transaction", done, func() bool {
		return applyingOnTarget(t, p, time.Second)
	})
	if applied := p.appliedLSN(t); applied >= commit {
		t.Fatalf("the large transaction was applied (%s >= %s) before the cut", applied, commit)
	}
	dstBefore := dstProxy.Accepted()
	dstProxy.Cut()
	dstProxy.SetBandwidth(0)
	waitUntil(t, 30*time.Second, "the stream to apply the large transaction after the target cut", done, func() bool {
		return p.appliedLSN(t) >= commit
	})
	if dstProxy.Accepted() <= dstBefore {
		t.Error("the stream did not reconnect to the target through the proxy")
	}

	t.Logf("target cut done at %s", time.Since(began))
	if n := w.finish(); n < 20 {
		t.Fatalf("the writer committed only %d transactions", n)
	}

	// 3. A partition: the target refuses connections for a while; the
	// stream keeps retrying with growing waits. The partition lasts until
	// a retry waited clearly longer than the first (past its jitter).
	reconnects := func() []time.Duration {
		var waits []time.Duration
		for _, e := range logs.FilterMessage("stream interrupted; reconnecting").All() {
			if d, ok := e.ContextMap()["retry_in"].(time.Duration); ok {
				waits = append(waits, d)
			}
		}
		return waits
	}
	grown := cfg.MinBackoff * 7 / 5
	before := len(reconnects())
	dstProxy.SetDown(true)
	waitUntil(t, 30*time.Second, "the stream to retry with a growing wait during the partition", done, func() bool {
		for _, d := range reconnects()[before:] {
			if d > grown {
				return true
			}
		}
		return false
	})
	dstProxy.SetDown(false)
	want := p.sourceLSN(t)
	waitUntil(t, 60*time.Second, "the stream to catch up", done, func() bool { return p.appliedLSN(t) >= want })
	stopWatch()
	<-watched
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stream: %v", err)
	}
	t.Logf("caught up at %s", time.Since(began))
	p.assertIdentical(t)
	if n := violations.Load(); n > 0 {
		t.Errorf("the slot confirmed more than the target had committed %d times (of %d samples)", n, checks.Load())
	}

	// Each interruption is logged with the stage and the wait before the
	// next attempt; the waits grow during the partition.
	var retries []string
	for _, e := range logs.FilterMessage("stream interrupted; reconnecting").All() {
		retries = append(retries, fmt.Sprintf("%v after %v", e.ContextMap()["stage"], e.ContextMap()["retry_in"]))
	}
	t.Logf("reconnects: %s", strings.Join(retries, ", "))
	if len(retries) < 3 {
		t.Errorf("%d logged reconnects, want at least one per cut and several during the partition", len(retries))
	}
	for _, d := range reconnects() {
		if d < cfg.MinBackoff || d > cfg.MaxBackoff {
			t.Errorf("a reconnect waited %s, outside [%s, %s]", d, cfg.MinBackoff, cfg.MaxBackoff)
		}
	}
}

// waitUntil polls cond until it holds, failing the test after timeout or
// when the stream ended.
func waitUntil(t *testing.T, timeout time.Duration, what string, done chan error, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("waiting for %s: the stream ended: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
