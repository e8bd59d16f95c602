package apply

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"replicator/internal/testenv"
)

const pgbenchDDL = `
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
`

const pgbenchSetup = `
INSERT INTO pgbench_branches SELECT g, 0, '' FROM generate_series(1, 4) g;
INSERT INTO pgbench_tellers SELECT g, 1 + (g - 1) / 10, 0, '' FROM generate_series(1, 40) g;
INSERT INTO pgbench_accounts SELECT g, 1 + (g - 1) / 100000, 0, '' FROM generate_series(1, 400000) g;
`

// BenchmarkCatchUp times how long the stream and a native subscription
// take to apply the same backlog of pgbench transactions (one run; b.N is
// ignored). go test ./pkg/apply -run XXX -bench CatchUp -benchtime 1x
func BenchmarkCatchUp(b *testing.B) {
	const txns = 20000
	p := snapshotPair(b, pgbenchDDL, pgbenchSetup)
	dst := targetCluster(b)
	// The native subscriber's database: same schema and rows, its own slot
	// created now, before the backlog.
	native := dst.NewDatabase(b)
	bin, _ := testenv.PostgresBinDir()
	dump := exec.Command("sh", "-c", fmt.Sprintf("%s --no-publications --no-subscriptions '%s' | %s -q '%s'",
		filepath.Join(bin, "pg_dump"), p.srcURL, filepath.Join(bin, "psql"), dst.URL(native)))
	if out, err := dump.CombinedOutput(); err != nil {
		b.Fatalf("copy for the native subscriber: %v %s", err, out)
	}
	dst.Exec(b, native, fmt.Sprintf(`CREATE SUBSCRIPTION native_%s CONNECTION '%s' PUBLICATION replicator
		WITH (copy_data = false, enabled = false)`, native, p.srcURL))
	b.Cleanup(func() {
		c := dst.Connect(b, native)
		c.Exec(context.Background(), fmt.Sprintf("DROP SUBSCRIPTION native_%s", native))
	})

	pgbench := exec.Command(filepath.Join(bin, "pgbench"), "-n", "-c", "4", "-t", fmt.Sprint(txns/4), "-b", "tpcb-like", p.srcURL)
	if out, err := pgbench.CombinedOutput(); err != nil {
		b.Fatalf("pgbench: %v %s", err, out)
	}
	want := p.sourceLSN(b)
	b.ResetTimer()

	cfg := p.config(b)
	begin := time.Now()
	r := p.start(b, cfg)
	waitSlot(b, p, p.slot, want)
	ours := time.Since(begin)
	r.stop(b)

	begin = time.Now()
	dst.Exec(b, native, fmt.Sprintf("ALTER SUBSCRIPTION native_%s ENABLE", native))
	waitSlot(b, p, "native_"+native, want)
	theirs := time.Since(begin)
	b.StopTimer()
	p.assertIdentical(b)
	b.ReportMetric(float64(txns)/ours.Seconds(), "stream_tps")
	b.ReportMetric(float64(txns)/theirs.Seconds(), "native_tps")
	b.Logf("backlog of %d pgbench transactions: stream %s (%.0f tps), native subscription %s (%.0f tps), ratio %.2f",
		txns, ours.Round(time.Millisecond), float64(txns)/ours.Seconds(), theirs.Round(time.Millisecond),
		float64(txns)/theirs.Seconds(), theirs.Seconds()/ours.Seconds())
}

// waitSlot waits until slot's confirmed flush position reaches want.
func waitSlot(t testing.TB, p *pair, slot string, want pglogrepl.LSN) {
	c := srcPG.Connect(t, p.src)
	defer c.Close(context.Background())
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		var s *string
		c.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&s)
		if s != nil {
			if l, _ := pglogrepl.ParseLSN(*s); l >= want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("slot %s did not reach %s", slot, want)
}

// BenchmarkSteadyLag runs pgbench at 1,000 tps for 10 s with the stream
// running and reports replicator_apply_lag_seconds as sampled every 100 ms
// (one run; b.N is ignored).
// go test ./pkg/apply -run XXX -bench SteadyLag -benchtime 1x
func BenchmarkSteadyLag(b *testing.B) {
	p := snapshotPair(b, pgbenchDDL, pgbenchSetup)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Stream(ctx, p.config(b), zap.NewNop(), reg) }()
	defer func() { cancel(); <-done }()
	bin, _ := testenv.PostgresBinDir()
	pgbench := exec.Command(filepath.Join(bin, "pgbench"), "-n", "-c", "4", "-R", "1000", "-T", "10", "-b", "tpcb-like", p.srcURL)
	if err := pgbench.Start(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	var samples []float64
	waited := make(chan error, 1)
	go func() { waited <- pgbench.Wait() }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case err := <-waited:
			if err != nil {
				b.Fatalf("pgbench: %v", err)
			}
			break loop
		case <-tick.C:
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if mf.GetName() == "replicator_apply_lag_seconds" {
					samples = append(samples, mf.GetMetric()[0].GetGauge().GetValue())
				}
			}
		}
	}
	b.StopTimer()
	slices.Sort(samples)
	if len(samples) == 0 {
		b.Fatal("no lag samples")
	}
	var sum float64
	for _, s := range samples {
		sum += s
	}
	p99 := samples[len(samples)*99/100]
	b.ReportMetric(sum/float64(len(samples)), "mean_lag_s")
	b.ReportMetric(samples[len(samples)-1], "max_lag_s")
	b.Logf("apply lag at 1000 tps over %d samples: mean %.3fs, p99 %.3fs, max %.3fs", len(samples),
		sum/float64(len(samples)), p99, samples[len(samples)-1])
}
