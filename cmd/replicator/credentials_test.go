package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
)

// passwordForms are the ways a password may be written out: as is, and
// escaped as in a URL's user info, path or query.
func passwordForms(pw string) []string {
	forms := []string{pw, url.QueryEscape(pw), url.PathEscape(pw), strings.TrimPrefix(url.UserPassword("u", pw).String(), "u:")}
	var out []string
	seen := map[string]bool{}
	for _, f := range forms {
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	return out
}

// assertNoPasswords fails when any form of any password is in text.
func assertNoPasswords(t *testing.T, what, text string, passwords ...string) {
	t.Helper()
	for _, pw := range passwords {
		for _, f := range passwordForms(pw) {
			if i := strings.Index(text, f); i >= 0 {
				lo, hi := max(0, i-120), min(len(text), i+len(f)+40)
				t.Errorf("%s shows a password (%q): ...%s...", what, f, text[lo:hi])
			}
		}
	}
}

func scrapeMetrics(t *testing.T, addr string) string {
	t.Helper()
	var last error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	t.Fatalf("scrape %s: %v", addr, last)
	return ""
}

func freeAddr(t *testing.T) string {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// background is a long-running command (stream, redis sync --follow).
type background struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
}

func startCLI(t *testing.T, args ...string) *background {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	cmd.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL=", "REPLICATOR_TARGET_URL=",
		"REPLICATOR_REDIS_SOURCE_URL=", "REPLICATOR_REDIS_TARGET_URL=", "TMPDIR="+t.TempDir())
	b := &background{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.stdout, b.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(b.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-b.done })
	return b
}

// stop sends SIGTERM and waits for a clean exit 0.
func (b *background) stop(t *testing.T) {
	t.Helper()
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of SIGTERM; stderr:\n%s", b.cmd.Args[1], b.stderr.String())
	}
	if code := b.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("%s exit %d after SIGTERM; stderr:\n%s", b.cmd.Args[1], code, b.stderr.String())
	}
}

// TestNoPasswordsInAnyOutput runs snapshot, stream (interrupted once so it
// logs a reconnect), verify with a report file, status and audit, all with
// passwords in the URLs and debug logging, and greps everything they
// wrote (stdout, stderr and JSON logs, the report, a /metrics scrape and
// the error kept in the target's state) for the passwords.
func TestNoPasswordsInAnyOutput(t *testing.T) {
	pg := postgresCluster(t)
	// URL-special characters in one password: its escaped forms are
	// searched for too.
	srcPw, dstPw := "Src@Pw:Canary/1%x", "Dst-Pw-Canary-2"
	pg.Exec(t, "postgres", fmt.Sprintf(`CREATE ROLE mover LOGIN SUPERUSER PASSWORD '%s'; CREATE ROLE landing LOGIN SUPERUSER PASSWORD '%s'`, srcPw, dstPw))
	t.Cleanup(func() { pg.Exec(t, "postgres", `DROP ROLE IF EXISTS mover; DROP ROLE IF EXISTS landing`) })
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'v' FROM generate_series(1, 500) g;
		CREATE TABLE nokey (k int, v text); INSERT INTO nokey SELECT g % 5, 'same' FROM generate_series(1, 50) g`)
	srcURL, dstURL := pg.URLAs("mover", srcPw, src), pg.URLAs("landing", dstPw, dst)
	var all strings.Builder
	began := time.Now()
	record := func(name string, r cliResult) {
		t.Logf("%s done at %s", name, time.Since(began))
		fmt.Fprintf(&all, "== %s (exit %d)\n%s\n", name, r.code, r.all())
	}
	common := []string{"--log-format", "json", "--log-level", "debug"}

	r := runCLI(t, 2*time.Minute, append([]string{"snapshot", "--source", srcURL, "--target", dstURL, "--metrics-addr", "", "--replica-identity-full"}, common...)...)
	record("snapshot", r)
	if r.code != 0 {
		t.Fatalf("snapshot exit %d:\n%s", r.code, r.all())
	}

	metricsAddr := freeAddr(t)
	stream := startCLI(t, append([]string{"stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", metricsAddr}, common...)...)
	pg.Exec(t, src, `INSERT INTO items VALUES (1001, 'streamed'); INSERT INTO nokey VALUES (1, 'same')`)
	waitRow(t, pg, dst, `SELECT count(*) FROM items WHERE id = 1001`, stream)
	// Interrupt the stream so it logs an error and a reconnect.
	pg.Exec(t, "postgres", `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mover' AND backend_type = 'walsender'`)
	pg.Exec(t, src, `INSERT INTO items VALUES (1002, 'after the reconnect')`)
	waitRow(t, pg, dst, `SELECT count(*) FROM items WHERE id = 1002`, stream)
	metrics := scrapeMetrics(t, metricsAddr)
	stream.stop(t)
	t.Logf("stream done at %s", time.Since(began))
	fmt.Fprintf(&all, "== stream\n%s%s\n== metrics\n%s\n", stream.stdout.String(), stream.stderr.String(), metrics)
	if !strings.Contains(stream.stderr.String(), "reconnecting") {
		t.Errorf("the stream did not log a reconnect after its walsender was terminated:\n%s", stream.stderr.String())
	}

	report := filepath.Join(t.TempDir(), "verify.json")
	r = runCLI(t, 2*time.Minute, append([]string{"verify", "--source", srcURL, "--target", dstURL, "--format", "json", "--out", report,
		"--wait-timeout", "1s"}, common...)...)
	record("verify", r)
	if r.code != 0 {
		t.Errorf("verify exit %d:\n%s", r.code, r.all())
	}
	rep, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("verify report: %v", err)
	}
	fmt.Fprintf(&all, "== verify report\n%s\n", rep)

	for _, args := range [][]string{
		{"status", "--source", srcURL, "--target", dstURL, "--format", "json"},
		{"status", "--target", dstURL},
		{"audit", "--source", srcURL, "--format", "json"},
		{"audit", "--source", srcURL, "--format", "markdown"},
	} {
		r := runCLI(t, time.Minute, append(args, common...)...)
		record(strings.Join(args[:1], " "), r)
		if r.code != 0 {
			t.Errorf("%s exit %d:\n%s", args[0], r.code, r.all())
		}
	}
	var lastError string
	pg.Connect(t, dst).QueryRow(context.Background(), `SELECT coalesce(last_error, '') FROM replicator.state`).Scan(&lastError)
	fmt.Fprintf(&all, "== state last_error\n%s\n", lastError)

	// The runs did happen: the output is not empty for a trivial reason.
	for _, want := range []string{"snapshot done", `"level":"debug"`, "replicator_source_lag_bytes", `"identical"`, "items"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("the combined output lacks %q", want)
		}
	}
	assertNoPasswords(t, "the combined output", all.String(), srcPw, dstPw)
	if t.Failed() {
		t.Logf("combined output:\n%s", all.String())
	}
}

// waitRow waits until query (a count) is 1 on db, or the stream exits.
func waitRow(t *testing.T, pg *testenv.Postgres, db, query string, b *background) {
	t.Helper()
	conn := pg.Connect(t, db)
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil && err != pgx.ErrNoRows {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		select {
		case <-b.done:
			t.Fatalf("the stream exited; stderr:\n%s", b.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not 1 after 60s; stream stderr:\n%s", query, b.stderr.String())
		}
	}
}

// TestNoRedisPasswordsInAnyOutput does the same for redis sync (with
// --follow and a metrics scrape) and redis verify against requirepass
// servers.
func TestNoRedisPasswordsInAnyOutput(t *testing.T) {
	srcPw, dstPw := "Redis@Src:Canary/9", "Redis-Dst-Canary-8"
	src := startRedis(t, testenv.RedisOptions{Password: srcPw, Args: []string{"--repl-diskless-sync-delay", "0"}})
	dst := startRedis(t, testenv.RedisOptions{Password: dstPw})
	ctx := context.Background()
	c := src.Client(0)
	defer c.Close()
	for i := 0; i < 200; i++ {
		c.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	srcURL := "redis://" + url.UserPassword("", srcPw).String() + "@" + src.Addr() + "/0"
	dstURL := "redis://" + url.UserPassword("", dstPw).String() + "@" + dst.Addr() + "/0"
	var all strings.Builder
	common := []string{"--log-format", "json", "--log-level", "debug"}

	metricsAddr := freeAddr(t)
	sync := startCLI(t, append([]string{"redis", "sync", "--source", srcURL, "--target", dstURL, "--follow", "--metrics-addr", metricsAddr}, common...)...)
	c.Set(ctx, "live", "1", 0)
	d := dst.Client(0)
	defer d.Close()
	for deadline := time.Now().Add(30 * time.Second); d.Get(ctx, "live").Val() != "1"; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the follower did not apply a live write; stderr:\n%s", sync.stderr.String())
		}
	}
	metrics := scrapeMetrics(t, metricsAddr)
	sync.stop(t)
	fmt.Fprintf(&all, "== redis sync\n%s%s\n== metrics\n%s\n", sync.stdout.String(), sync.stderr.String(), metrics)

	report := filepath.Join(t.TempDir(), "redis-verify.json")
	r := runCLI(t, time.Minute, append([]string{"redis", "verify", "--source", srcURL, "--target", dstURL, "--format", "json", "--out", report}, common...)...)
	fmt.Fprintf(&all, "== redis verify (exit %d)\n%s\n", r.code, r.all())
	if r.code != 0 {
		t.Errorf("redis verify exit %d:\n%s", r.code, r.all())
	}
	rep, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	all.Write(rep)
	// A wrong password for each side, too.
	for _, args := range [][]string{
		{"redis", "verify", "--source", strings.Replace(srcURL, url.UserPassword("", srcPw).String(), url.UserPassword("", "Wrong@Canary:3").String(), 1), "--target", dstURL},
		{"redis", "sync", "--source", srcURL, "--target", strings.Replace(dstURL, dstPw, "Wrong-Canary-4", 1), "--metrics-addr", ""},
	} {
		r := runCLI(t, time.Minute, append(args, common...)...)
		fmt.Fprintf(&all, "== %s (exit %d)\n%s\n", args[1], r.code, r.all())
		if r.code != exitError {
			t.Errorf("%s with a wrong password: exit %d, want 2:\n%s", args[1], r.code, r.all())
		}
	}
	if !strings.Contains(all.String(), "replicator_") || !bytes.Contains(rep, []byte("k1")) && !strings.Contains(string(rep), "identical") {
		t.Errorf("the output looks empty:\n%s", all.String())
	}
	assertNoPasswords(t, "the combined output", all.String(), srcPw, dstPw, "Wrong@Canary:3", "Wrong-Canary-4")
	if t.Failed() {
		t.Logf("combined output:\n%s", all.String())
	}
}

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
