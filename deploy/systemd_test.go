package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	unitFile      = "systemd/replicator.service"
	redisUnitFile = "systemd/replicator-redis.service"
	helperFile    = "systemd/replicator-env-from-ssm"

	// Where the Terraform user data installs them; the unit names these.
	installedBinary = "/usr/local/bin/replicator"
	installedHelper = "/usr/local/libexec/replicator/replicator-env-from-ssm"
)

// unit is one of the shipped units and what it must run.
type unit struct {
	file      string
	execStart string // the command line up to the flags the user may change
	name      string // the runtime and state directory name
}

var units = []unit{
	{unitFile, installedBinary + " run ", "replicator"},
	{redisUnitFile, installedBinary + " redis sync --follow ", "replicator-redis"},
}

// verifiableUnit writes a copy of the unit whose ExecStart runs /bin/true
// and whose ExecStartPre runs the helper from this checkout:
// systemd-analyze verify checks that every command exists, and the
// replicator binary is not installed on a test machine. Everything else is
// verified as shipped.
func verifiableUnit(t *testing.T, u unit) string {
	t.Helper()
	b, err := os.ReadFile(u.file)
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	helper, err := filepath.Abs(helperFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ from, to string }{
		{"ExecStart=" + u.execStart, "ExecStart=/bin/true "},
		{"ExecStartPre=" + installedHelper + " ", "ExecStartPre=" + helper + " "},
	} {
		if n := strings.Count(unit, r.from); n != 1 {
			t.Fatalf("%s: expected one %q line, found %d: the Terraform user data installs there", u.file, r.from, n)
		}
		unit = strings.Replace(unit, r.from, r.to, 1)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(u.file))
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSystemdUnitVerifies(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "systemd")
	for _, u := range units {
		path := verifiableUnit(t, u)
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", u.file, err, out)
		}
		// Warnings (an unknown or misspelt key is only a warning) fail
		// too: systemd would ignore that line on the instance.
		if s := strings.TrimSpace(string(out)); s != "" {
			t.Fatalf("systemd-analyze verify %s printed warnings:\n%s", u.file, s)
		}
	}
}

// The sandbox keeps systemd's exposure score low: 2.0 ("OK") at most, on
// systemd's scale of 0 (locked down) to 10 (unprotected). The threshold is
// given in tenths.
func TestSystemdUnitIsSandboxed(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "systemd")
	for _, u := range units {
		path := verifiableUnit(t, u)
		out, err := exec.Command(analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", path).CombinedOutput()
		overall := regexp.MustCompile(`Overall exposure level for \S+: [0-9.]+ \S+`).FindString(string(out))
		if err != nil {
			t.Fatalf("systemd-analyze security %s: exposure above 2.0 (%s): %v\n%s", u.file, overall, err, out)
		}
		if overall == "" {
			t.Fatalf("systemd-analyze security %s printed no overall exposure:\n%s", u.file, out)
		}
		t.Log(overall)
	}
}

// unitSettings reads Key=Value lines of the [Service] section (the last
// value of a key wins, as in systemd).
func unitSettings(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			if k, v, ok := strings.Cut(line, "="); ok {
				settings[k] = v
			}
		}
	}
	return settings
}

// What the sidecar relies on beyond what verify checks: restart on
// failure, a stop long enough to drain the batch in flight, an
// unprivileged user, secrets read from SSM before start.
func TestSystemdUnitContract(t *testing.T) {
	for _, u := range units {
		s := unitSettings(t, u.file)
		want := map[string]string{
			"Restart":                 "on-failure",
			"KillSignal":              "SIGTERM",
			"DynamicUser":             "yes",
			"User":                    "replicator",
			"NoNewPrivileges":         "yes",
			"ProtectSystem":           "strict",
			"CapabilityBoundingSet":   "",
			"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
			"StateDirectory":          u.name,
			"RuntimeDirectory":        u.name,
			"ExecStartPre":            installedHelper + " %t/" + u.name + "/env",
			"EnvironmentFile":         "-%t/" + u.name + "/env",
		}
		for k, v := range want {
			if got, ok := s[k]; !ok || got != v {
				t.Errorf("%s: %s=%q, want %q", u.file, k, got, v)
			}
		}
		if !strings.HasPrefix(s["ExecStart"], u.execStart) {
			t.Errorf("%s: ExecStart=%q, want `%s...`", u.file, s["ExecStart"], u.execStart)
		}
		if !strings.Contains(s["ExecStart"], "--config /etc/replicator/replicator.yaml") {
			t.Errorf("%s: ExecStart=%q does not read /etc/replicator/replicator.yaml, which the user data writes", u.file, s["ExecStart"])
		}
		stop, err := time.ParseDuration(strings.ReplaceAll(s["TimeoutStopSec"], "min", "m"))
		if err != nil || stop < time.Minute {
			t.Errorf("%s: TimeoutStopSec=%q: give the replicator at least a minute to finish and acknowledge its batch", u.file, s["TimeoutStopSec"])
		}
		if s["MemoryMax"] == "" {
			t.Errorf("%s: no MemoryMax=", u.file)
		}
	}
}
