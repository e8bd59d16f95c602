package e2e

import (
	"context"
	"math/rand/v2"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"replicator/internal/demoapp"
	"replicator/internal/testenv"
)

// killLoopSeed fixes the 20 moments; a failure names it so the run can be
// repeated exactly.
const killLoopSeed = 20261124

// TestRunKill9AtTwentyMoments kills the daemon with -9 at 20 moments drawn
// from a seeded generator, spread over the copy (short delays from the
// start; each restart resumes the copy or starts it over) and the stream
// (longer delays from the end of the copy), while the app
// writes; after the last restart every table is identical to the source.
func TestRunKill9AtTwentyMoments(t *testing.T) {
	src, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	ctx := context.Background()
	sdb, tdb := src.NewDatabase(t), dst.NewDatabase(t)
	if err := demoapp.Seed(ctx, src.URL(sdb), demoapp.Size{Users: 2000, Products: 30, Events: 10000, Documents: 10}); err != nil {
		t.Fatal(err)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan struct{})
	var st demoapp.Stats
	go func() { defer close(loadDone); demoapp.Load(loadCtx, src.URL(sdb), 200, &st) }()

	rng := rand.New(rand.NewPCG(killLoopSeed, 1))
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "run", "--source", src.URL(sdb), "--target", dst.URL(tdb), "--replica-identity-full",
			"--jobs", "2", "--metrics-addr", "", "--log-format", "json", "--log-level", "warn", "--chunk-mb", "1")
		cmd.Stdout, cmd.Stderr = &prefixWriter{t: t}, &prefixWriter{t: t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	tconn := dst.Connect(t, tdb)
	phases := map[string]int{}
	for i := 0; i < 20; i++ {
		delay := time.Duration(50+rng.IntN(400)) * time.Millisecond // during the copy
		if i >= 8 {
			delay = time.Duration(300+rng.IntN(1500)) * time.Millisecond // during the stream
		}
		run := start()
		if i >= 8 {
			// The stream's moments count from the end of the copy, however
			// long a loaded machine makes the copy (a killed copy resumes
			// with the chunks it had).
			waitFor(t, 120*time.Second, "the snapshot to finish", func() bool { return snapshotStatus(tconn) == "done" })
		}
		time.Sleep(delay)
		phases[snapshotStatus(tconn)]++
		run.Process.Signal(syscall.SIGKILL)
		run.Wait()
	}
	t.Logf("seed %d: killed at 20 moments, by snapshot status at the kill: %v", killLoopSeed, phases)
	if phases["done"] == 0 || phases["done"] == 20 {
		t.Fatalf("seed %d: the kills did not span both the copy and the stream: %v", killLoopSeed, phases)
	}

	run := start()
	waitFor(t, 120*time.Second, "the snapshot to finish", func() bool { return snapshotStatus(tconn) == "done" })
	stopLoad()
	<-loadDone
	sconn := src.Connect(t, sdb)
	var end string
	sconn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end)
	waitFor(t, 60*time.Second, "the target to apply "+end, func() bool {
		var ok bool
		tconn.QueryRow(ctx, "SELECT coalesce(applied_lsn >= $1::pg_lsn, false) FROM replicator.state", end).Scan(&ok)
		return ok
	})
	run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		t.Fatalf("run did not stop cleanly on SIGTERM: %v", err)
	}
	for _, tbl := range []string{"users", "products", "orders", "order_items", "events", "audit_log", "documents", "schema_migrations"} {
		if a, b := checksum(t, sconn, tbl), checksum(t, tconn, tbl); a != b {
			t.Errorf("seed %d: table %s differs after 20 kills: source %s, target %s", killLoopSeed, tbl, a, b)
		}
	}
}
