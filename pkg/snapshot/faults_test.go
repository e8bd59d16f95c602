package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
	"replicator/pkg/state"
)

// via returns rawURL rewritten to go through the proxy px.
func via(t *testing.T, px *testenv.Proxy, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = px.Addr()
	return u.String()
}

// In the middle of the copy (through a TCP proxy, throttled so the copy
// takes a while) the source's connections are cut, or the target's, or the
// server (both sides here) is restarted in fast or immediate mode: the run
// stops with a clear error and exit 2, the state says the copy did not
// finish, and a rerun starts over and ends identical, with no duplicate row.
func TestCLIConnectionCutMidCopyThenRerun(t *testing.T) {
	for _, fault := range []string{"source", "target", "restart fast", "restart immediate"} {
		t.Run(fault, func(t *testing.T) { connectionCutMidCopy(t, fault, false) })
	}
	t.Run("restart immediate, one snapshot", func(t *testing.T) { connectionCutMidCopy(t, "restart immediate", true) })
}

func connectionCutMidCopy(t *testing.T, side string, oneSnapshot bool) {
	src, dst, _ := pair(t)
	pg.Exec(t, src, `
		CREATE TABLE big (id bigserial PRIMARY KEY, payload text);
		INSERT INTO big (payload) SELECT repeat(md5(i::text), 4) FROM generate_series(1, 20000) i;
		CREATE TABLE nokey (k int, v text);
		INSERT INTO nokey SELECT i % 10, 'same' FROM generate_series(1, 2000) i;`)
	px, err := testenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetBandwidth(512 << 10)
	srcURL, dstURL := pg.URL(src), pg.URL(dst)
	if side == "target" {
		dstURL = via(t, px, dstURL)
	} else {
		srcURL = via(t, px, srcURL)
	}
	args := []string{"--source", srcURL, "--target", dstURL, "--jobs", "2", "--chunk-mb", "1", "--replica-identity-full"}
	if oneSnapshot {
		args = append(args, "--one-snapshot")
	}

	var stderr bytes.Buffer
	first := snapshotCmd(t, args...)
	first.Stderr = &stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	conn := pg.Connect(t, dst)
	deadline := time.Now().Add(60 * time.Second)
	cut := false
	for !cut && time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("the first run ended (%v) before its connections could be cut; stderr:\n%s", err, stderr.String())
		default:
		}
		// Rows committed by a finished chunk, or a COPY in progress.
		var copying bool
		if err := conn.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_stat_progress_copy p
			JOIN pg_database d ON d.oid = p.datid WHERE d.datname = $1 AND p.tuples_processed > 0)`, dst).Scan(&copying); err == nil && copying {
			switch side {
			case "restart fast":
				restartServer(t, testenv.Fast)
			case "restart immediate":
				restartServer(t, testenv.Immediate)
			default:
				px.Cut()
			}
			cut = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !cut {
		t.Fatalf("never saw a copy in progress to cut; stderr:\n%s", stderr.String())
	}
	var runErr error
	select {
	case runErr = <-exited:
	case <-time.After(60 * time.Second):
		first.Process.Kill()
		t.Fatalf("the run did not stop within 60s after its connections were cut; stderr:\n%s", stderr.String())
	}
	out := stderr.String()
	if code := exitCode(runErr); code != 2 {
		t.Fatalf("exit code %d after the cut, want 2; stderr:\n%s", code, out)
	}
	last := lastLine(out)
	mustContain(t, last, "replicator: ", "connection was lost", "rerun `replicator snapshot`")
	if !strings.HasPrefix(side, "restart") {
		mustContain(t, last, side)
	}
	conn = pg.Connect(t, dst) // the first one did not live through a restart
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("stderr shows a panic or stack trace:\n%s", out)
	}
	if strings.Contains(out, testenv.Password) {
		t.Errorf("stderr holds the password:\n%s", out)
	}
	t.Logf("error after the cut: %s", last)
	st, err := state.Load(context.Background(), conn)
	if err != nil || st.SnapshotStatus == state.SnapshotDone {
		t.Fatalf("after the cut the state is %+v, %v; want not done", st, err)
	}

	// The rerun (the network is back) starts over and ends identical.
	px.SetBandwidth(0)
	rerun, err := snapshotCmd(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, rerun)
	}
	if oneSnapshot {
		mustContain(t, string(rerun), "started over after an interrupted run")
	} else if !strings.Contains(string(rerun), "resumed an interrupted run") && !strings.Contains(string(rerun), "started over after an interrupted run") {
		// A cut before the chunks were planned starts over, saying why.
		t.Errorf("the rerun says neither that it resumed nor that it started over:\n%s", rerun)
	}
	// Computed now, not before the fault: crash recovery moves a source
	// sequence ahead (PostgreSQL logs sequence values in advance).
	compareSums(t, tableSums(t, src), tableSums(t, dst))
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'replicator'`); n != "1" {
		t.Errorf("source has %s slots named replicator, want exactly 1", n)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// restartServer restarts the package's cluster in mode; after an
// immediate stop the old backends may hold shared memory for a moment.
func restartServer(t *testing.T, mode testenv.StopMode) {
	t.Helper()
	if err := pg.Stop(mode); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = pg.Start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("restart the test cluster: %v", err)
}
