package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// TestRedisErrorPasswordReadAsHostOrDatabase: a '/', '#' or '?' in a
// password that is otherwise digits parses without error, into the wrong
// port, database or option ("redis://:1234/5678@host" is port 1234,
// database "5678@host"), and the messages that followed quoted those
// pieces. The raw password is checked first: one line, the fix, no piece.
func TestRedisErrorPasswordReadAsHostOrDatabase(t *testing.T) {
	for _, pw := range []string{"73914/2865", "73914#2865", "73914?2865"} {
		for _, role := range []string{"source", "target"} {
			url := "redis://h:" + pw + "@127.0.0.1:6379/0"
			args := []string{"redis", "verify", "--source", "redis://127.0.0.1:6379/0", "--target", "redis://127.0.0.1:6379/0"}
			if role == "source" {
				args[3] = url
			} else {
				args[5] = url
			}
			r := runRedisCLI(t, args...)
			errorLine(t, r, []string{pw}, role+" Redis URL", "percent-encode the password", "/ as %2F, ? as %3F, # as %23")
			assertNoFragment(t, r.all(), strings.NewReplacer("/", "", "#", "", "?", "").Replace(pw))
		}
	}
}

// TestRedisErrorTLSURLAgainstPlainPort: rediss:// to a port without TLS
// is explained within one dial timeout, not after the client's five dial
// attempts (25 s).
func TestRedisErrorTLSURLAgainstPlainPort(t *testing.T) {
	srv := startRedis(t, testenv.RedisOptions{Password: redisCanary})
	start := time.Now()
	r := runRedisCLI(t, "redis", "sync", "--source", fmt.Sprintf("rediss://:%s@%s/0", redisCanary, srv.Addr()), "--tls-skip-verify",
		"--target", srv.URL(0), "--metrics-addr", "")
	errorLine(t, r, []string{redisCanary}, "source Redis "+srv.Addr(), "does not seem to speak TLS", "use redis://")
	assertNoFragment(t, r.all(), redisCanary)
	if took := time.Since(start); took > 20*time.Second {
		t.Errorf("the mismatch took %s to be reported; one dial timeout is 5 s", took.Round(time.Second))
	}
}
