package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"replicator/internal/redistest"
	"replicator/internal/testenv"
)

func startRedis(t *testing.T, opts testenv.RedisOptions) *testenv.Redis {
	t.Helper()
	r, err := testenv.StartRedis(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// captureStderr runs fn and returns what it wrote to stderr.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, _ := os.Pipe()
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	fn()
	w.Close()
	os.Stderr = old
	return <-done
}

// The redis commands end to end: sync from a file and by PSYNC, verify
// with exit 0 then 1, and a bad password is exit 2 without the password.
func TestRedisSyncAndVerifyCLI(t *testing.T) {
	src := startRedis(t, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}})
	dst := startRedis(t, testenv.RedisOptions{Password: "tgt-pass-123"})
	ctx := context.Background()
	c := src.Client(0)
	defer c.Close()
	p := c.Pipeline()
	for i := 0; i < 100; i++ {
		p.Set(ctx, "k"+string(rune('a'+i%26))+strings.Repeat("x", i), i, 0)
	}
	p.HSet(ctx, "h", "f", "v")
	p.Save(ctx)
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	rdb := filepath.Join(t.TempDir(), "dump.rdb")
	b, err := os.ReadFile(filepath.Join(src.Dir, "dump.rdb"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rdb, b, 0o600); err != nil {
		t.Fatal(err)
	}

	if code := run([]string{"redis", "sync", "--rdb", rdb, "--target", dst.URL(0), "--metrics-addr", "", "--log-format", "json"}); code != exitOK {
		t.Fatalf("redis sync --rdb exit %d", code)
	}
	// redis-server's own digest agrees with `redis verify` below.
	if ds, dd := redistest.Digest(t, src), redistest.Digest(t, dst); ds != dd {
		t.Errorf("after redis sync --rdb DEBUG DIGEST differs: source %s target %s", ds, dd)
	}
	if code := run([]string{"redis", "verify", "--source", src.URL(0), "--target", dst.URL(0)}); code != exitOK {
		t.Fatalf("redis verify after sync: exit %d", code)
	}
	d := dst.Client(0)
	if err := d.Set(ctx, "h", "different", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if code := run([]string{"redis", "verify", "--source", src.URL(0), "--target", dst.URL(0), "--format", "json"}); code != exitDifferences {
		t.Fatalf("redis verify with a difference: exit %d, want 1", code)
	}
	if code := run([]string{"redis", "sync", "--source", src.URL(0), "--target", dst.URL(0), "--mode", "psync", "--metrics-addr", "", "--log-format", "json"}); code != exitOK {
		t.Fatalf("redis sync by PSYNC exit %d", code)
	}
	if ds, dd := redistest.Digest(t, src), redistest.Digest(t, dst); ds != dd {
		t.Errorf("after redis sync by PSYNC DEBUG DIGEST differs: source %s target %s", ds, dd)
	}
	if code := run([]string{"redis", "verify", "--source", src.URL(0), "--target", dst.URL(0)}); code != exitOK {
		t.Fatalf("redis verify after PSYNC sync: exit %d", code)
	}

	bad := strings.Replace(dst.URL(0), "tgt-pass-123", "wrong-secret-pw", 1)
	var code int
	out := captureStderr(t, func() {
		code = run([]string{"redis", "sync", "--rdb", rdb, "--target", bad, "--metrics-addr", "", "--log-format", "json"})
	})
	if code != exitError {
		t.Errorf("bad target password: exit %d, want 2", code)
	}
	if strings.Contains(out, "wrong-secret-pw") || !strings.Contains(out, "target Redis") {
		t.Errorf("error output leaks the password or does not name the target:\n%s", out)
	}
}

// TestCLIHelperProcess is not a test: it runs the CLI in a child process
// so a test can kill -9 it.
func TestCLIHelperProcess(t *testing.T) {
	args := os.Getenv("REPLICATOR_CLI_ARGS")
	if args == "" {
		t.Skip("helper process only")
	}
	os.Exit(run(strings.Split(args, "\x1f")))
}

// An importer killed with SIGKILL in the middle of a sync leaves a
// partial target; running it again makes the target identical.
func TestRedisSyncKilledMidwayThenRerun(t *testing.T) {
	src := startRedis(t, testenv.RedisOptions{Args: []string{"--repl-diskless-sync-delay", "0"}})
	dst := startRedis(t, testenv.RedisOptions{})
	ctx := context.Background()
	c := src.Client(0)
	defer c.Close()
	for b := 0; b < 20; b++ {
		p := c.Pipeline()
		for i := 0; i < 10000; i++ {
			n := b*10000 + i
			p.Set(ctx, "key:"+strconv.Itoa(n), strings.Repeat("v", n%200), 0)
			if n%100 == 0 {
				p.RPush(ctx, "list:"+strconv.Itoa(n), n, n+1, n+2)
			}
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"redis", "sync", "--source", src.URL(0), "--target", dst.URL(0), "--metrics-addr", "", "--log-format", "json", "--connections", "1"}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestCLIHelperProcess$")
	cmd.Env = append(os.Environ(), "REPLICATOR_CLI_ARGS="+strings.Join(args, "\x1f"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := dst.Client(0)
	defer d.Close()
	for deadline := time.Now().Add(60 * time.Second); d.DBSize(ctx).Val() < 5000; {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the importer wrote nothing")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // the error is the kill
	partial, err := d.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	total, err := c.DBSize(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target had %d of %d keys when the importer was killed", partial, total)
	if partial >= total {
		t.Fatalf("the importer had copied all %d keys before it was killed: the rerun would prove nothing", total)
	}
	if code := run(args[:len(args)-2]); code != exitOK {
		t.Fatalf("rerun exit %d", code)
	}
	if ds, dd := redistest.Digest(t, src), redistest.Digest(t, dst); ds != dd {
		t.Errorf("after the rerun DEBUG DIGEST differs: source %s target %s", ds, dd)
	}
	if code := run([]string{"redis", "verify", "--source", src.URL(0), "--target", dst.URL(0)}); code != exitOK {
		t.Errorf("redis verify after the rerun: exit %d", code)
	}
}
