package trigger_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"replicator/pkg/apply"
	"replicator/pkg/position"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

// Trigger capture wired as `replicator stream` wires it: trigger.Source
// feeding pkg/apply, which records each batch's position in the target's
// replicator.state in the transaction that applies it. The stream is
// stopped while the application writes and started again from the
// target's position; the target ends equal to the source, the last batch
// is recorded with its tick time, and the changelog can be purged empty.
func TestStreamWithTargetState(t *testing.T) {
	ctx := context.Background()
	s := newSource(t, src)
	s.exec(t, awkwardDDL)
	targetDB := src.NewDatabase(t)
	src.Exec(t, targetDB, awkwardDDL)
	target := src.Connect(t, targetDB)
	tables := install(t, s)

	cp, err := trigger.StartCapturePoint(ctx, s.url, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st := cp.State()
	st.SnapshotStatus = state.SnapshotCopying
	if err := state.Begin(ctx, target, &st); err != nil {
		t.Fatal(err)
	}
	copySnapshot(t, s, cp.SnapshotName, target, tables)
	cp.Release(ctx)
	if err := state.SetSnapshotStatus(ctx, target, state.SnapshotDone); err != nil {
		t.Fatal(err)
	}

	var nextID atomic.Int64
	nextID.Store(1)
	w := &writer{s: s, nextID: &nextID, errs: make(chan error, 4)}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go w.run(ctx, 7, stop, &wg)
	go w.run(ctx, 8, stop, &wg)
	stopWriters := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopWriters()

	reg := prometheus.NewRegistry()
	am, err := apply.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := trigger.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := apply.StreamConfig{SourceURL: s.url, TargetURL: src.URL(targetDB), Trigger: testConfig(),
		Capture: wal.Config{SpillDir: t.TempDir()}, MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second,
		Metrics: am, TriggerMetrics: tm}
	applied := func() (*state.State, float64) {
		st, err := state.Load(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		return st, counterSum(t, reg, "replicator_applied_changes_total")
	}
	// Each run is a new process as far as the target knows: it starts
	// from the target's state and stops as SIGTERM stops it, once until
	// holds.
	runUntil := func(what string, until func(st *state.State, changes float64) bool) {
		t.Helper()
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- apply.Stream(rctx, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))) }()
		stopped := func() error { cancel(); return <-done }
		deadline := time.Now().Add(60 * time.Second)
		for {
			if st, n := applied(); until(st, n) {
				break
			}
			select {
			case err := <-done:
				t.Fatalf("waiting for %s: the stream ended: %v", what, err)
			case err := <-w.errs:
				stopped()
				t.Fatalf("application write failed: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				stopped()
				st, n := applied()
				t.Fatalf("waiting for %s: applied batch %d, %.0f changes after 60s", what, st.Applied.ID(), n)
			}
		}
		if err := stopped(); err != nil {
			t.Fatalf("the stream stopped with %v", err)
		}
	}

	// Stopped while the application writes…
	runUntil("a few batches", func(st *state.State, n float64) bool { return st.Applied.ID() >= 5 && n >= 250 })
	first, _ := applied()
	// …and resumed from the target's position.
	runUntil("more batches after the restart", func(st *state.State, n float64) bool {
		return st.Applied.ID() >= first.Applied.ID()+5 && n >= 500
	})
	stopWriters()
	select {
	case err := <-w.errs:
		t.Fatalf("application write failed: %v", err)
	default:
	}
	capt, err := trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	last, err := capt.Tick(ctx)
	capt.Close()
	if err != nil {
		t.Fatal(err)
	}
	runUntil("the last tick's batch", func(st *state.State, _ float64) bool { return st.Applied.ID() >= last })

	final, changes := applied()
	if final.Applied.Kind() != position.KindBatch || final.AppliedCommitTime.IsZero() || final.LastError != "" {
		t.Fatalf("target state: applied %v, commit time %s, error %q", final.Applied, final.AppliedCommitTime, final.LastError)
	}
	srcConn := s.connect(t)
	compareTables(t, srcConn, target, compared)
	// The stream was stopped right after its last commit, maybe before
	// its purger ran; purging up to the recorded batch empties the
	// changelog.
	capt, err = trigger.New(ctx, s.url, testConfig(), zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer capt.Close()
	if _, err := capt.Purge(ctx, final.Applied.ID()); err != nil {
		t.Fatal(err)
	}
	var left int64
	if err := srcConn.QueryRow(ctx, `SELECT count(*) FROM replicator.changelog`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d changelog rows left after purging batch %d", left, final.Applied.ID())
	}
	t.Logf("%.0f changes applied over %d batches", changes, final.Applied.ID())
}

// counterSum adds up every series of a counter.
func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
