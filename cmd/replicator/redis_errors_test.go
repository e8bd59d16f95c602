package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// The Redis connection mistakes users make, each run through the binary:
// exit 2, one line naming the problem and the fix, no library log line,
// and not even a fragment of the password.

// redisCanary is the password used in these URLs; fragment checks look
// for every 4-character piece of it.
const redisCanary = "Qz7Kp9Wm2Xv4"

func assertNoFragment(t *testing.T, out, pw string) {
	t.Helper()
	for i := 0; i+4 <= len(pw); i++ {
		if strings.Contains(out, pw[i:i+4]) {
			t.Errorf("output shows %q, a piece of the password:\n%s", pw[i:i+4], out)
		}
	}
	if strings.Contains(out, "redis: 20") || strings.Contains(out, "pool.go") {
		t.Errorf("a go-redis log line leaked into the output:\n%s", out)
	}
}

// runRedisCLI is runCLI without the URL variables set at all: an empty
// REPLICATOR_REDIS_SOURCE_URL counts as a source, which --rdb excludes.
func runRedisCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "REPLICATOR_") {
			cmd.Env = append(cmd.Env, e)
		}
	}
	cmd.Env = append(cmd.Env, "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("replicator %s did not end within a minute; stderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func rdbFixture() string {
	return filepath.Join("..", "..", "..", "shared", "fixtures", "redis-rdb", "encodings.rdb")
}

// TestRedisErrorWrongPasswordHerokuUser: Heroku's legacy "h:" user meets a
// Redis 6+ server; the message names the user part and how to drop it.
func TestRedisErrorWrongPasswordHerokuUser(t *testing.T) {
	srv := startRedis(t, testenv.RedisOptions{Password: "the-real-one"})
	url := fmt.Sprintf("redis://h:%s@%s/0", redisCanary, srv.Addr())
	for _, args := range [][]string{
		{"redis", "sync", "--rdb", rdbFixture(), "--target", url, "--metrics-addr", ""},
		{"redis", "verify", "--source", url, "--target", srv.URL(0)},
		{"redis", "sync", "--source", url, "--target", srv.URL(0), "--metrics-addr", ""},
	} {
		r := runRedisCLI(t, args...)
		errorLine(t, r, []string{redisCanary}, `user "h"`, `drop the "h"`, "check the password")
		assertNoFragment(t, r.all(), redisCanary)
	}
	r := runRedisCLI(t, "redis", "sync", "--rdb", rdbFixture(), "--target", fmt.Sprintf("redis://:%s@%s/0", redisCanary, srv.Addr()), "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "password was refused", "user default")
	assertNoFragment(t, r.all(), redisCanary)
}

// TestRedisErrorPlainURLAgainstTLS: redis:// to a port that speaks only
// TLS hints at rediss://.
func TestRedisErrorPlainURLAgainstTLS(t *testing.T) {
	ca := newCA(t, "replicator redis error test CA")
	certPEM, keyPEM := ca.serverCert(t)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "r.crt"), filepath.Join(dir, "r.key"), filepath.Join(dir, "ca.pem")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o600)
	os.WriteFile(caFile, ca.pem, 0o644)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	startRedis(t, testenv.RedisOptions{Args: []string{"--tls-port", fmt.Sprint(port),
		"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile, "--tls-auth-clients", "no"}})
	r := runRedisCLI(t, "redis", "sync", "--rdb", rdbFixture(), "--target", fmt.Sprintf("redis://:%s@127.0.0.1:%d/0", redisCanary, port), "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "requires TLS", "use rediss://")
	assertNoFragment(t, r.all(), redisCanary)
	// (rediss:// to a plain port: TestRedisErrorTLSURLAgainstPlainPort.)
}

// TestRedisErrorConnectionRefused: nothing listens on the port.
func TestRedisErrorConnectionRefused(t *testing.T) {
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r := runRedisCLI(t, "redis", "sync", "--rdb", rdbFixture(), "--target", fmt.Sprintf("redis://:%s@127.0.0.1:%d/0", redisCanary, port), "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "connection refused", fmt.Sprintf("127.0.0.1:%d", port), "check the host and port")
	assertNoFragment(t, r.all(), redisCanary)
}

// TestRedisErrorCAFile: a missing CA file and one that cannot be read
// each get their own message.
func TestRedisErrorCAFile(t *testing.T) {
	url := fmt.Sprintf("rediss://:%s@127.0.0.1:6379/0", redisCanary)
	missing := filepath.Join(t.TempDir(), "no-such-ca.pem")
	r := runRedisCLI(t, "redis", "sync", "--rdb", rdbFixture(), "--target", url, "--tls-ca", missing, "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "--tls-ca "+missing, "no such file", "PEM CA bundle")
	assertNoFragment(t, r.all(), redisCanary)
	dir := t.TempDir() // a directory: present, not readable as a file
	r = runRedisCLI(t, "redis", "verify", "--source", url, "--target", url, "--tls-ca", dir)
	errorLine(t, r, []string{redisCanary}, "--tls-ca "+dir, "cannot be read", "readable PEM file")
	assertNoFragment(t, r.all(), redisCanary)
}

// TestRedisErrorURLWithUnescapedPassword: the URL parser quotes the text
// around a mistake, often a piece of the password; we do not.
func TestRedisErrorURLWithUnescapedPassword(t *testing.T) {
	for _, pw := range []string{"Qz7K/p9Wm2Xv4", "Qz7K#p9Wm2Xv4", "Qz7K?p9Wm2Xv4", "Qz7K%zzWm2Xv4"} {
		r := runRedisCLI(t, "redis", "sync", "--rdb", rdbFixture(), "--target", "redis://h:"+pw+"@127.0.0.1:6379/0", "--metrics-addr", "")
		errorLine(t, r, []string{pw}, "target Redis URL", "percent-encode")
		assertNoFragment(t, r.all(), strings.NewReplacer("/", "", "#", "", "?", "", "%zz", "").Replace(pw))
	}
}

// TestRedisSyncRefusalsCLI: what Redis would refuse is refused with exit 2
// and the flag that decides otherwise; with that flag the file loads.
func TestRedisSyncRefusalsCLI(t *testing.T) {
	dst := startRedis(t, testenv.RedisOptions{Password: redisCanary})
	fixture := func(name string) string {
		return filepath.Join("..", "..", "..", "shared", "fixtures", "redis-rdb", name)
	}
	r := runRedisCLI(t, "redis", "sync", "--rdb", fixture("duplicate-keys.rdb"), "--target", dst.URL(0), "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "12 key records", "Nothing was written", "--duplicate-keys last")
	r = runRedisCLI(t, "redis", "sync", "--rdb", fixture("duplicate-keys.rdb"), "--target", dst.URL(0), "--metrics-addr", "", "--duplicate-keys", "last", "--log-format", "json")
	if r.code != 0 || !strings.Contains(r.stderr, `"duplicate_keys":12`) {
		t.Errorf("--duplicate-keys last: exit %d, want 0 and the count logged:\n%s", r.code, r.all())
	}
	r = runRedisCLI(t, "redis", "sync", "--rdb", fixture("hash_with_hfe.rdb"), "--target", dst.URL(0), "--metrics-addr", "", "--flush-target")
	errorLine(t, r, []string{redisCanary}, `"hash-hfe"`, "HPEXPIREAT", "--hash-field-ttl drop")
	r = runRedisCLI(t, "redis", "sync", "--rdb", fixture("hash_with_hfe.rdb"), "--target", dst.URL(0), "--metrics-addr", "", "--hash-field-ttl", "drop", "--log-format", "json")
	if r.code != 0 || !strings.Contains(r.stderr, "hash field TTLs dropped") || !strings.Contains(r.stderr, `"fields":3`) {
		t.Errorf("--hash-field-ttl drop: exit %d, want 0 and the 3 dropped TTLs reported:\n%s", r.code, r.all())
	}
	assertNoFragment(t, r.all(), redisCanary)
}
