package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// fragments3 are every 3-character piece of a password: none may appear
// in any output.
func fragments3(pw string) []string {
	var out []string
	for i := 0; i+3 <= len(pw); i++ {
		out = append(out, pw[i:i+3])
	}
	return out
}

// TestOperatorMessages: each message of a mistake at the command line
// names the thing and the fix, exits 2 and shows no fragment of a password.
func TestOperatorMessages(t *testing.T) {
	pg := postgresCluster(t)
	db := pg.NewDatabase(t)
	good := pg.URL(db)
	host := strings.SplitN(strings.SplitN(good, "@", 2)[1], "/", 2)[0] // host:port
	const badPw = "Qz9@Xk7/Vw"
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	missingCA := filepath.Join(t.TempDir(), "global-bundle.pem")

	cases := []struct {
		name    string
		args    []string
		secrets []string
		wants   []string
	}{
		{"password with unencoded reserved characters",
			[]string{"status", "--target", "postgres://postgres:" + badPw + "@" + host + "/" + db + "?sslmode=disable"},
			fragments3(badPw), []string{"target", "percent-encode", "%40", "%2F"}},
		{"missing CA file",
			[]string{"status", "--target", strings.Replace(good, "sslmode=disable", "sslmode=verify-full&sslrootcert="+missingCA, 1)},
			[]string{testenv.Password}, []string{"target", "sslrootcert", missingCA, "does not exist", pgutil.RDSCABundleURL}},
		{"daemon with a busy metrics port",
			[]string{"stream", "--source", good, "--target", good, "--metrics-addr", busy.Addr().String()},
			[]string{testenv.Password}, []string{busy.Addr().String(), "--metrics-addr"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, 60*time.Second, c.args...)
			t.Logf("%s", errorLine(t, r, c.secrets, c.wants...))
		})
	}
}

// TestOneShotBusyMetricsPort: a one-shot command warns that the metrics
// port is busy and does its work anyway.
func TestOneShotBusyMetricsPort(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)`)
	pg.Exec(t, dst, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)`)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	r := runCLI(t, 60*time.Second, "verify", "--source", pg.URL(src), "--target", pg.URL(dst),
		"--metrics-addr", busy.Addr().String(), "--log-format", "console")
	if r.code != exitOK {
		t.Fatalf("verify with a busy metrics port: exit %d, want 0:\n%s", r.code, r.all())
	}
	if !strings.Contains(r.stderr, "metrics endpoint not served") || !strings.Contains(r.stderr, "--metrics-addr") {
		t.Errorf("no warning naming the busy port and the flag:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, "t") {
		t.Errorf("no report:\n%s", r.stdout)
	}
}

// TestSecondStreamRefused: a second stream on a target that a stream
// already feeds exits 2 naming the running one (pid, host, since), and the
// first keeps running.
func TestSecondStreamRefused(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')`)
	srcURL, dstURL := pg.URL(src), pg.URL(dst)
	if r := runCLI(t, 2*time.Minute, "snapshot", "--source", srcURL, "--target", dstURL, "--capture", "trigger", "--metrics-addr", "", "--log-format", "json"); r.code != exitOK {
		t.Fatalf("snapshot: exit %d\n%s", r.code, r.all())
	}
	first := startCLI(t, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")
	waitRow(t, pg, dst, `SELECT least(count(*), 1) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, first)
	// The lock is taken, then its holder recorded: wait for the record.
	waitRow(t, pg, dst, fmt.Sprintf(`SELECT count(*) FROM replicator.stream_owner WHERE pid = %d`, first.cmd.Process.Pid), first)

	r := runCLI(t, 60*time.Second, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--log-format", "json")
	host, _ := os.Hostname()
	line := errorLine(t, r, []string{testenv.Password}, "another stream is running",
		fmt.Sprintf("pid %d", first.cmd.Process.Pid), "host "+host, "since ", "stop it first")
	t.Logf("%s", line)

	pg.Exec(t, src, `INSERT INTO items VALUES (2, 'b')`)
	waitRow(t, pg, dst, `SELECT count(*) FROM items WHERE id = 2`, first)
	first.stop(t)
}

// TestSnapshotInterrupted: SIGINT during snapshot is reported as an
// interruption, not a network failure, listing what it left (the
// publication on the source, the bookkeeping on the target) with the next
// command, which works.
func TestSnapshotInterrupted(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')`)
	srcURL, dstURL := pg.URL(src), pg.URL(dst)
	pub := state.DefaultPublication // cluster-wide names: removed by the cleanup below

	// An open writing transaction holds the run where the slot waits for
	// running transactions to end: the interruption lands mid-run,
	// whatever the machine's speed.
	ctx := context.Background()
	blocker := pg.Connect(t, src)
	if _, err := blocker.Exec(ctx, `BEGIN; INSERT INTO items VALUES (2, 'b')`); err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)

	snap := startCLI(t, "snapshot", "--source", srcURL, "--target", dstURL, "--capture", "logical", "--metrics-addr", "", "--log-format", "json")
	waitRow(t, pg, src, `SELECT least(count(*), 1) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`, snap)
	snap.cmd.Process.Signal(os.Interrupt)
	select {
	case <-snap.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("snapshot did not end within 30s of SIGINT:\n%s", snap.stderr.String())
	}
	r := cliResult{code: snap.cmd.ProcessState.ExitCode(), stdout: snap.stdout.String(), stderr: snap.stderr.String()}
	line := errorLine(t, r, []string{testenv.Password}, "snapshot interrupted", "publication "+pub+" on the source",
		"schema replicator on the target", "replicator snapshot", "replicator cleanup")
	t.Logf("%s", line)
	if strings.Contains(line, "connection was lost") {
		t.Errorf("interruption reported as a lost connection: %s", line)
	}
	blocker.Exec(ctx, `ROLLBACK`)
	conn := pg.Connect(t, src)
	defer conn.Close(ctx)
	count := func(q string, args ...any) int {
		var n int
		if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM pg_publication WHERE pubname = $1`, pub); n != 1 {
		t.Fatalf("the report lists publication %s, but the source has %d", pub, n)
	}
	if strings.Contains(line, "replication slot") != (count(`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, state.DefaultSlot) == 1) {
		t.Errorf("the report's slot does not match the source's pg_replication_slots: %s", line)
	}

	// The next command it names removes what was left.
	if r := runCLI(t, 60*time.Second, "cleanup", "--source", srcURL, "--target", dstURL, "--yes", "--log-format", "json"); r.code != exitOK {
		t.Fatalf("cleanup: exit %d\n%s", r.code, r.all())
	}
	if n := count(`SELECT count(*) FROM pg_publication WHERE pubname = $1`, pub); n != 0 {
		t.Errorf("after cleanup, publication %s remains", pub)
	}
}

// TestAuditBlueprintCLI: audit in markdown carries the report header, the
// sizing, the tfvars (also written to --tfvars FILE) and the Procfile
// mapping, and no password.
func TestAuditBlueprintCLI(t *testing.T) {
	pg := postgresCluster(t)
	db := pg.NewDatabase(t)
	pg.Exec(t, db, `CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 100)`)
	dir := t.TempDir()
	procfile, tfvars := filepath.Join(dir, "Procfile"), filepath.Join(dir, "terraform.tfvars")
	os.WriteFile(procfile, []byte("web: bundle exec puma\nworker: bundle exec sidekiq\n"), 0o600)
	r := runCLI(t, 60*time.Second, "audit", "--source", pg.URL(db), "--format", "markdown", "--procfile", procfile, "--tfvars", tfvars)
	if r.code != exitOK {
		t.Fatalf("audit: exit %d\n%s", r.code, r.all())
	}
	for _, want := range []string{"## Migration audit", "| Tool | replicator ", "| Source | `127.0.0.1:", "/" + db + "` |", "| Started |", "| Ended |",
		"| Duration |", "| Position |", "| Source fenced |", "## Sizing suggestion", "RDS class db.m6g.large", "## terraform.tfvars", "| web | `bundle exec puma` |"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("audit markdown lacks %q:\n%s", want, r.stdout)
		}
	}
	if b, err := os.ReadFile(tfvars); err != nil || !strings.Contains(string(b), "replicator_config") {
		t.Errorf("--tfvars file: %v\n%s", err, b)
	}
	if strings.Contains(r.all(), testenv.Password) {
		t.Errorf("audit output shows the password")
	}
}

// TestSnapshotInterruptedTriggerMode: in trigger mode the report names the
// capture triggers it left (as many as the source has) and the changelog
// schema.
func TestSnapshotInterruptedTriggerMode(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE aa (id int PRIMARY KEY); CREATE TABLE bb (id int PRIMARY KEY); CREATE TABLE zz (id int PRIMARY KEY)`)
	ctx := context.Background()
	// A writer's open transaction on zz holds back its trigger: the run is
	// interrupted while installing.
	blocker := pg.Connect(t, src)
	if _, err := blocker.Exec(ctx, `BEGIN; INSERT INTO zz VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	defer blocker.Close(ctx)
	snap := startCLI(t, "snapshot", "--source", pg.URL(src), "--target", pg.URL(dst), "--capture", "trigger", "--metrics-addr", "", "--log-format", "json")
	waitRow(t, pg, src, `SELECT least(count(*), 1) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`, snap)
	snap.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-snap.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("snapshot did not end within 30s of SIGTERM:\n%s", snap.stderr.String())
	}
	blocker.Exec(ctx, `ROLLBACK`)
	r := cliResult{code: snap.cmd.ProcessState.ExitCode(), stdout: snap.stdout.String(), stderr: snap.stderr.String()}
	line := errorLine(t, r, []string{testenv.Password}, "snapshot interrupted", "schema replicator on the source", "replicator cleanup")
	t.Logf("%s", line)
	conn := pg.Connect(t, src)
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = ANY ($1)`, trigger.TriggerNames()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 && !strings.Contains(line, fmt.Sprintf("%d capture triggers", n)) || n == 0 && strings.Contains(line, "capture triggers") {
		t.Errorf("the source has %d capture triggers; the report says: %s", n, line)
	}
	if r := runCLI(t, 60*time.Second, "cleanup", "--source", pg.URL(src), "--target", pg.URL(dst), "--yes", "--log-format", "json"); r.code != exitOK {
		t.Fatalf("cleanup: exit %d\n%s", r.code, r.all())
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = ANY ($1)`, trigger.TriggerNames()).Scan(&n); err != nil || n != 0 {
		t.Errorf("after cleanup, %d capture triggers remain (%v)", n, err)
	}
}
