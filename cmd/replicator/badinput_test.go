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

// These tests run the built binary, as users do: what matters is what it
// prints and its exit code.

var (
	cliBin string            // the built replicator
	cliPG  *testenv.Postgres // started on first use by postgresCluster
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	if os.Getenv("REPLICATOR_CLI_ARGS") != "" {
		return m.Run() // a helper process of cmd_redis_test.go: it runs the CLI in-process
	}
	dir, err := os.MkdirTemp("", "replicator-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	cliBin = filepath.Join(dir, "replicator")
	if err := testenv.BuildReplicator(cliBin); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		return 1
	}
	defer func() {
		if cliPG != nil {
			cliPG.Close()
		}
	}()
	return m.Run()
}

// postgresCluster is the package's shared PostgreSQL cluster, started on
// first use (the tests without a database do not wait for it).
func postgresCluster(t *testing.T) *testenv.Postgres {
	t.Helper()
	if cliPG == nil {
		pg, err := testenv.StartPostgres(testenv.PostgresOptions{})
		if err != nil {
			t.Fatalf("cannot start a PostgreSQL test server: %v", err)
		}
		cliPG = pg
	}
	return cliPG
}

// cliResult is one run of the binary.
type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) all() string { return r.stdout + r.stderr }

// runCLI runs the binary with args and a clean environment for the URL
// variables, and waits at most timeout.
func runCLI(t *testing.T, timeout time.Duration, args ...string) cliResult {
	t.Helper()
	cmd := exec.Command(cliBin, args...)
	cmd.Env = append(os.Environ(), "REPLICATOR_SOURCE_URL=", "REPLICATOR_TARGET_URL=",
		"REPLICATOR_REDIS_SOURCE_URL=", "REPLICATOR_REDIS_TARGET_URL=", "TMPDIR="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("replicator %s did not end within %s; stderr:\n%s", strings.Join(args, " "), timeout, stderr.String())
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

// errorLine checks the run is a clean failure (exit 2, no panic or stack
// trace, none of the secrets anywhere in the output) and returns its one
// error line, which must name each of wants.
func errorLine(t *testing.T, r cliResult, secrets []string, wants ...string) string {
	t.Helper()
	if r.code != exitError {
		t.Errorf("exit code %d, want %d; output:\n%s", r.code, exitError, r.all())
	}
	for _, bad := range []string{"panic", "goroutine ", ".go:", "runtime."} {
		if strings.Contains(r.all(), bad) {
			t.Errorf("output shows %q (a panic or stack trace):\n%s", bad, r.all())
		}
	}
	for _, s := range secrets {
		if strings.Contains(r.all(), s) {
			t.Errorf("output shows the password %q:\n%s", s, r.all())
		}
	}
	// The error is the line starting "replicator: "; a preflight refusal
	// adds one line per problem under it, and a usage error a hint.
	var lines []string
	block := ""
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "replicator: ") {
			lines = append(lines, l)
		}
		if len(lines) > 0 && !strings.HasPrefix(l, "{") {
			block += l + "\n"
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d error lines on stderr, want one:\n%s", len(lines), r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(block, w) {
			t.Errorf("error does not name %q:\n%s", w, block)
		}
	}
	return strings.TrimSpace(block)
}

const wrongPassword = "Wr0ng-Pass-Canary"

// TestBadInput runs each mistake a user can make at the command line and
// checks it ends with exit 2 and one line that names the problem and the
// fix, without a stack trace and without the password.
func TestBadInput(t *testing.T) {
	pg := postgresCluster(t)
	src := pg.NewDatabase(t)
	dst := pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a');
		CREATE ROLE app LOGIN PASSWORD 'App-Pw-Canary-77';
		GRANT ALL ON SCHEMA public TO app; ALTER TABLE items OWNER TO app;`)
	t.Cleanup(func() {
		pg.Exec(t, src, `DROP OWNED BY app`)
		pg.Exec(t, "postgres", `DROP ROLE app`)
	})
	srcURL, dstURL := pg.URL(src), pg.URL(dst)
	secrets := []string{testenv.Password, wrongPassword, "App-Pw-Canary-77"}
	tmp := t.TempDir()
	badYAML := filepath.Join(tmp, "bad.yaml")
	os.WriteFile(badYAML, []byte("source: [unclosed\ntarget: x\n"), 0o600)
	notMap := filepath.Join(tmp, "list.yaml")
	os.WriteFile(notMap, []byte("- source\n- target\n"), 0o600)

	cases := []struct {
		name  string
		args  []string
		wants []string
	}{
		{"wrong password", []string{"stream", "--source", srcURL, "--target", pg.URLAs("postgres", wrongPassword, dst), "--metrics-addr", ""},
			[]string{"target", "password authentication failed", "check the user"}},
		{"unknown host", []string{"snapshot", "--source", "postgres://postgres:" + wrongPassword + "@no-such-host.invalid:5432/app", "--target", dstURL, "--metrics-addr", ""},
			[]string{"source", "unknown host no-such-host.invalid", "check the host name"}},
		{"wrong database", []string{"verify", "--source", srcURL, "--target", pg.URL("no_such_db")},
			[]string{"target", `database "no_such_db" does not exist`, "create the database or correct its name"}},
		{"TLS required, server without TLS", []string{"status", "--target", strings.Replace(dstURL, "sslmode=disable", "sslmode=require", 1)},
			[]string{"target", "TLS", "sslmode"}},
		{"no privileges for logical capture", []string{"snapshot", "--source", pg.URLAs("app", "App-Pw-Canary-77", src), "--target", dstURL, "--capture", "logical", "--metrics-addr", ""},
			[]string{`"app"`, "REPLICATION", "ALTER ROLE"}},
		{"malformed config file", []string{"snapshot", "--config", badYAML},
			[]string{"config", "YAML", "source: postgres://"}},
		{"config file not a map", []string{"snapshot", "--config", notMap},
			[]string{"config", "map of flag names"}},
		{"missing config file", []string{"snapshot", "--config", filepath.Join(tmp, "nope.yaml")},
			[]string{"nope.yaml"}},
		{"non-numeric flag", []string{"snapshot", "--source", srcURL, "--target", dstURL, "--jobs", "many"},
			[]string{"--jobs", "many"}},
		{"non-duration flag", []string{"verify", "--source", srcURL, "--target", dstURL, "--wait-timeout", "soon"},
			[]string{"--wait-timeout", "soon"}},
		{"no source", []string{"snapshot", "--target", dstURL, "--metrics-addr", ""},
			[]string{"source", "--source"}},
		{"join with no chunked copy", []string{"snapshot", "--join", "--source", srcURL, "--target", dstURL, "--metrics-addr", ""},
			[]string{"no chunked copy to join", "replicator snapshot"}},
		{"one snapshot and chunked", []string{"snapshot", "--one-snapshot", "--chunked", "--source", srcURL, "--target", dstURL, "--metrics-addr", ""},
			[]string{"--one-snapshot and --chunked contradict", "leave out --chunked"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, 60*time.Second, c.args...)
			line := errorLine(t, r, secrets, c.wants...)
			t.Logf("%s", line)
		})
	}
}

// TestSourceIsStandby points the commands that need a primary at a hot
// standby (pg_basebackup -R of the test cluster): a clear error, exit 2.
func TestSourceIsStandby(t *testing.T) {
	pg := postgresCluster(t)
	src := pg.NewDatabase(t)
	dst := pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items VALUES (1, 'a')`)
	standby, err := pg.StartStandby()
	if err != nil {
		t.Fatal(err)
	}
	defer standby.Close()
	r := runCLI(t, 60*time.Second, "snapshot", "--source", standby.URL(src), "--target", pg.URL(dst), "--metrics-addr", "")
	line := errorLine(t, r, []string{testenv.Password}, "source", "standby", "primary")
	t.Logf("%s", line)
}
