package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// TestSecondRunRefusedWhileSnapshotting: while a run is still copying, a
// second run and a stream against the same target exit 2 naming the first
// (pid, host, since); the first then finishes its copy and streams.
func TestSecondRunRefusedWhileSnapshotting(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE aa (id int PRIMARY KEY); CREATE TABLE zz (id int PRIMARY KEY)`)
	srcURL, dstURL := pg.URL(src), pg.URL(dst)
	ctx := context.Background()
	// A writer's open transaction on zz holds back its capture trigger:
	// the first run stays in its snapshot until it ends.
	blocker := pg.Connect(t, src)
	if _, err := blocker.Exec(ctx, `BEGIN; INSERT INTO zz VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	first := startCLI(t, "run", "--source", srcURL, "--target", dstURL, "--capture", "trigger", "--metrics-addr", "", "--log-format", "json")
	waitRow(t, pg, src, `SELECT least(count(*), 1) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`, first)

	host, _ := os.Hostname()
	for _, args := range [][]string{{"run", "--capture", "trigger"}, {"stream"}} {
		cmd := args[0]
		r := runCLI(t, 60*time.Second, append(args, "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")...)
		line := errorLine(t, r, []string{testenv.Password}, "another stream is running",
			fmt.Sprintf("pid %d", first.cmd.Process.Pid), "host "+host, "since ", "stop it first")
		t.Logf("second %s: %s", cmd, line)
	}

	if _, err := blocker.Exec(ctx, `ROLLBACK`); err != nil {
		t.Fatal(err)
	}
	waitRow(t, pg, dst, `SELECT count(*) FROM replicator.state WHERE snapshot_status = 'done'`, first)
	pg.Exec(t, src, `INSERT INTO aa VALUES (7)`)
	waitRow(t, pg, dst, `SELECT count(*) FROM aa WHERE id = 7`, first)
	first.stop(t)
}
