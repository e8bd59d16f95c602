package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeAWS stands in for the aws CLI, which would need AWS: it answers
// `aws ssm get-parameter --name NAME ...` like the real CLI with
// --query Parameter.Value --output text (the value and a newline; exit 254
// and the service's error on stderr otherwise), from files in $FAKE_SSM_DIR
// named after the parameter with '/' replaced by '_'.
const fakeAWS = `#!/usr/bin/env bash
name=
while [ $# -gt 0 ]; do
  case $1 in --name) name=$2; shift ;; esac
  shift
done
if [ -n "${FAKE_SSM_DENY:-}" ]; then
  echo "An error occurred (AccessDeniedException) when calling the GetParameter operation: not authorized to perform: ssm:GetParameter on resource: $name" >&2
  exit 254
fi
f="$FAKE_SSM_DIR/$(printf %s "$name" | tr / _)"
if [ ! -f "$f" ]; then
  echo "An error occurred (ParameterNotFound) when calling the GetParameter operation: " >&2
  exit 254
fi
cat "$f"
echo
`

type helperRun struct {
	out    string // the environment file
	output string // what the helper printed
	err    error
}

// runHelper runs replicator-env-from-ssm against the fake SSM holding
// params (name -> value).
func runHelper(t *testing.T, params map[string]string, env ...string) helperRun {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	ssm := filepath.Join(dir, "ssm")
	for _, d := range []string{bin, ssm} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "aws"), []byte(fakeAWS), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, value := range params {
		if err := os.WriteFile(filepath.Join(ssm, strings.ReplaceAll(name, "/", "_")), []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "run", "env")
	if err := os.Mkdir(filepath.Dir(out), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(helperFile, out)
	cmd.Env = append([]string{"PATH=" + bin + ":/usr/bin:/bin", "FAKE_SSM_DIR=" + ssm}, env...)
	output, err := cmd.CombinedOutput()
	return helperRun{out: out, output: string(output), err: err}
}

// sourceEnvFile reads the file back the way systemd reads a double-quoted
// EnvironmentFile value, which is the POSIX shell's reading (backslash
// before \ " ` $), and returns the REPLICATOR_ variables.
func sourceEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	out, err := exec.Command("sh", "-c", `set -a; . "$1"; env -0`, "sh", path).Output()
	if err != nil {
		t.Fatalf("reading %s as an environment file: %v", path, err)
	}
	vars := map[string]string{}
	for _, kv := range strings.Split(string(out), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "REPLICATOR_") {
			vars[k] = v
		}
	}
	return vars
}

func TestSSMHelperWritesEnvironmentFile(t *testing.T) {
	// Passwords with every character that means something to systemd or
	// a shell: quotes, backslashes, dollars, backticks, spaces, '#', '%'.
	params := map[string]string{
		"/replicator/source-url":       `postgres://app:p"a'ss\w$rd` + "`x`" + `#1 %41@heroku-host:5432/app?sslmode=require`,
		"/replicator/target-url":       `postgres://app:$(echo injected)\\@rds-host:5432/app?sslmode=verify-full`,
		"/replicator/redis-source-url": `rediss://:s3cret;x@heroku-redis:21450`,
		"/replicator/redis-target-url": `rediss://:tok%en@cache:6379`,
	}
	r := runHelper(t, params)
	if r.err != nil {
		t.Fatalf("helper failed: %v\n%s", r.err, r.output)
	}
	info, err := os.Stat(r.out)
	if err != nil {
		t.Fatal(err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("environment file mode %o, want 600", mode)
	}
	got := sourceEnvFile(t, r.out)
	want := map[string]string{
		"REPLICATOR_SOURCE_URL":       params["/replicator/source-url"],
		"REPLICATOR_TARGET_URL":       params["/replicator/target-url"],
		"REPLICATOR_REDIS_SOURCE_URL": params["/replicator/redis-source-url"],
		"REPLICATOR_REDIS_TARGET_URL": params["/replicator/redis-target-url"],
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s read back as %q, want %q", k, got[k], v)
		}
	}
	for _, v := range params {
		if strings.Contains(r.output, v) {
			t.Errorf("helper printed a connection string: %s", r.output)
		}
	}
	if !strings.Contains(r.output, "wrote 4 connection string(s)") {
		t.Errorf("helper output does not say what it did: %q", r.output)
	}
	// No stray temporary file is left next to the environment file.
	entries, _ := os.ReadDir(filepath.Dir(r.out))
	if len(entries) != 1 {
		t.Errorf("runtime directory holds %d files, want only the environment file", len(entries))
	}
}

func TestSSMHelperRedisIsOptionalAndPrefixConfigurable(t *testing.T) {
	r := runHelper(t, map[string]string{
		"/replicator/prod/source-url": "postgres://a:b@src/db",
		"/replicator/prod/target-url": "postgres://a:b@dst/db",
	}, "REPLICATOR_SSM_PREFIX=/replicator/prod")
	if r.err != nil {
		t.Fatalf("helper failed: %v\n%s", r.err, r.output)
	}
	got := sourceEnvFile(t, r.out)
	if got["REPLICATOR_SOURCE_URL"] != "postgres://a:b@src/db" || got["REPLICATOR_TARGET_URL"] != "postgres://a:b@dst/db" {
		t.Errorf("read back %v", got)
	}
	if _, set := got["REPLICATOR_REDIS_SOURCE_URL"]; set {
		t.Errorf("REPLICATOR_REDIS_SOURCE_URL set without its parameter")
	}
}

func TestSSMHelperRefusesClearly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]string
		env    []string
		want   []string // in the error message
	}{
		{
			name:   "required parameter missing",
			params: map[string]string{"/replicator/source-url": "postgres://a:b@src/db"},
			want:   []string{"/replicator/target-url does not exist", "aws ssm put-parameter --type SecureString"},
		},
		{
			name:   "access denied",
			params: map[string]string{"/replicator/source-url": "x", "/replicator/target-url": "y"},
			env:    []string{"FAKE_SSM_DENY=1"},
			want:   []string{"reading SSM parameter /replicator/source-url failed", "AccessDeniedException"},
		},
		{
			name:   "value with a newline",
			params: map[string]string{"/replicator/source-url": "postgres://a:b@src/db\nX=1", "/replicator/target-url": "y"},
			want:   []string{"/replicator/source-url contains a control character"},
		},
		{
			name:   "relative prefix",
			params: map[string]string{},
			env:    []string{"REPLICATOR_SSM_PREFIX=replicator/"},
			want:   []string{"REPLICATOR_SSM_PREFIX must start with '/'"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runHelper(t, tc.params, tc.env...)
			if r.err == nil {
				t.Fatalf("helper succeeded, want a refusal; output:\n%s", r.output)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.output, w) {
					t.Errorf("error does not say %q:\n%s", w, r.output)
				}
			}
			if _, err := os.Stat(r.out); !os.IsNotExist(err) {
				t.Errorf("environment file written although the helper failed")
			}
			if strings.Count(strings.TrimSpace(r.output), "\n") > 0 {
				t.Errorf("error is not one line:\n%s", r.output)
			}
		})
	}
}
