package snapshot

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/state"
)

// These tests run the built `replicator snapshot` command as users do,
// which is the only way to kill -9 it mid-copy.

var (
	buildOnce sync.Once
	binDir    string
	binErr    error
)

func replicatorBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "replicator-bin-")
		if binErr != nil {
			return
		}
		binErr = testenv.BuildReplicator(filepath.Join(binDir, "replicator"))
	})
	if binErr != nil {
		t.Fatalf("build replicator: %v", binErr)
	}
	return filepath.Join(binDir, "replicator")
}

func snapshotCmd(t *testing.T, args ...string) *exec.Cmd {
	cmd := exec.Command(replicatorBin(t), append([]string{"snapshot", "--metrics-addr", "", "--log-format", "json"}, args...)...)
	// TMPDIR: a killed run cannot remove its schema dump; the test does.
	cmd.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL=", "REPLICATOR_TARGET_URL=", "TMPDIR="+t.TempDir())
	return cmd
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// A wrong password exits 2 with a message naming the side and the fix, and
// neither password is printed.
func TestCLIBadPasswordExit2(t *testing.T) {
	src, dst, _ := pair(t)
	bad := pg.URLAs("postgres", "Wr0ng-pass-Word", src)
	out, err := snapshotCmd(t, "--source", bad, "--target", pg.URL(dst)).CombinedOutput()
	if code := exitCode(err); code != 2 {
		t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
	}
	mustContain(t, string(out), "source", "password authentication failed", "check the user")
	for _, pw := range []string{"Wr0ng-pass-Word", testenv.Password} {
		if strings.Contains(string(out), pw) {
			t.Errorf("output holds a password:\n%s", out)
		}
	}
}

// A preflight refusal through the CLI: exit 2, one line per problem.
func TestCLIPreflightRefusalExit2(t *testing.T) {
	src, dst, _ := pair(t)
	pg.Exec(t, src, `CREATE TABLE "No Key" (a int)`)
	out, err := snapshotCmd(t, "--source", pg.URL(src), "--target", pg.URL(dst), "--capture", "logical").CombinedOutput()
	if code := exitCode(err); code != 2 {
		t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
	}
	var line string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, `"public"."No Key"`) {
			line = l
		}
	}
	mustContain(t, line, "primary key", "--replica-identity-full")
	if strings.Contains(string(out), testenv.Password) {
		t.Errorf("output holds the password:\n%s", out)
	}
}

// kill -9 in the middle of the copy, then run again: the second run says
// it resumes (the chunked copy, the default) or starts over
// (--one-snapshot), and the target ends identical to the source with no
// duplicate row and every index built.
func TestCLIKill9ThenRerun(t *testing.T) {
	// The chunked copy is killed once a seeded number of its chunks are
	// committed (the seed is logged, to replay a failure).
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	at := 0 // chosen once the plan is known
	afterChunks := func(conn *pgx.Conn) bool {
		var total, done int
		if conn.QueryRow(context.Background(), `SELECT count(*), count(snapshot) FROM replicator.chunks`).Scan(&total, &done) != nil || total < 2 {
			return false
		}
		if at == 0 {
			at = 1 + rng.IntN(total-1)
			t.Logf("killing once %d of %d chunks are done", at, total)
		}
		return done >= at
	}
	t.Run("chunked", func(t *testing.T) {
		kill9ThenRerun(t, nil, afterChunks, "resuming:", "resumed an interrupted run")
	})
	t.Run("one snapshot", func(t *testing.T) {
		kill9ThenRerun(t, []string{"--one-snapshot"}, nil, "starting over cleanly", "started over after an interrupted run")
	})
}

// kill9ThenRerun kills the first run once killNow says so (default: once
// some rows of big are on the target, not all).
func kill9ThenRerun(t *testing.T, mode []string, killNow func(*pgx.Conn) bool, says ...string) {
	src, dst, _ := pair(t)
	pg.Exec(t, src, `
		CREATE TABLE big (id bigserial PRIMARY KEY, payload text, ref int);
		INSERT INTO big (payload, ref) SELECT repeat(md5(i::text), 8), i % 7 FROM generate_series(1, 150000) i;
		CREATE TABLE small (id int PRIMARY KEY, big_id bigint REFERENCES big(id));
		INSERT INTO small SELECT i, i FROM generate_series(1, 1000) i;
		CREATE INDEX big_ref ON big (ref);`)
	want := tableSums(t, src)
	// The default slot name is what the command uses; this test owns the
	// cluster's "replicator" slot while it runs.
	args := append([]string{"--source", pg.URL(src), "--target", pg.URL(dst), "--jobs", "2", "--chunk-mb", "1"}, mode...)

	var stderr bytes.Buffer
	first := snapshotCmd(t, args...)
	first.Stderr = &stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	// Kill once some chunks are committed on the target but not all.
	conn := pg.Connect(t, dst)
	deadline := time.Now().Add(60 * time.Second)
	killed := false
	for !killed && time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("the first run ended (%v) before it could be killed; stderr:\n%s", err, stderr.String())
		default:
		}
		var n int
		if killNow != nil && killNow(conn) {
			first.Process.Signal(syscall.SIGKILL)
			killed = true
		} else if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM big`).Scan(&n); killNow == nil && err == nil && n > 0 && n < 150000 {
			first.Process.Signal(syscall.SIGKILL)
			killed = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !killed {
		t.Fatalf("never saw a partial copy to kill; stderr:\n%s", stderr.String())
	}
	<-exited
	st, err := state.Load(context.Background(), conn)
	if err != nil || st.SnapshotStatus != state.SnapshotCopying {
		t.Fatalf("after kill -9 the state is %+v, %v; want copying", st, err)
	}

	out, err := snapshotCmd(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	mustContain(t, string(out), says...)
	compareSums(t, want, tableSums(t, dst))
	st, err = state.Load(context.Background(), conn)
	if err != nil || st.SnapshotStatus != state.SnapshotDone {
		t.Fatalf("after the rerun the state is %+v, %v; want done", st, err)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_indexes WHERE indexname IN ('big_pkey', 'big_ref', 'small_pkey')`); n != "3" {
		t.Errorf("target has %s of the 3 indexes", n)
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = 'replicator'`); n != "1" {
		t.Errorf("source has %s slots named replicator, want exactly 1", n)
	}
}
