package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Flags win over environment variables, which win over the config file;
// keys nested under a command apply to that command.
func TestConfigPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "replicator.yaml")
	os.WriteFile(cfg, []byte("source: postgres://file/src\ntarget: postgres://file/dst\njobs: 8\nredis:\n  sync:\n    mode: scan\n"), 0o600)
	t.Setenv("REPLICATOR_TARGET_URL", "postgres://env/dst")

	var c cli
	p, err := newParser(&c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"snapshot", "--config", cfg, "--jobs", "3"}); err != nil {
		t.Fatal(err)
	}
	if c.Snapshot.Source != "postgres://file/src" {
		t.Errorf("source = %q, want the config file's", c.Snapshot.Source)
	}
	if c.Snapshot.Target != "postgres://env/dst" {
		t.Errorf("target = %q, want the environment's", c.Snapshot.Target)
	}
	if c.Snapshot.Jobs != 3 {
		t.Errorf("jobs = %d, want the flag's 3", c.Snapshot.Jobs)
	}

	var c2 cli
	p2, _ := newParser(&c2, nil)
	if _, err := p2.Parse([]string{"redis", "sync", "--config", cfg, "--target", "redis://x"}); err != nil {
		t.Fatal(err)
	}
	if c2.Redis.Sync.Mode != "scan" {
		t.Errorf("redis sync mode = %q, want scan from the nested config key", c2.Redis.Sync.Mode)
	}
}

// Usage errors exit 2 and a malformed config file is named.
func TestUsageErrorsExit2(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("source: [unclosed\n"), 0o600)
	for _, args := range [][]string{
		{"snapshot", "--jobs", "many"},
		{"no-such-command"},
		{"snapshot", "--config", bad},
	} {
		if code := run(args); code != exitError {
			t.Errorf("run(%q) = %d, want %d", args, code, exitError)
		}
	}
}

// Heroku's own names: REPLICATOR_* first, then DATABASE_URL / REDIS_URL from
// the environment, then from a `heroku config -s` file, then the config file.
func TestHerokuNames(t *testing.T) {
	dir := t.TempDir()
	envFile := filepath.Join(dir, "heroku.env")
	os.WriteFile(envFile, []byte("# heroku config -s -a shop\nDATABASE_URL='postgres://file-user:p%40ss@heroku-file/db'\nREDIS_URL=rediss://:x@redis-file:6380\nexport SECRET_KEY_BASE='a'\\''b'\n"), 0o600)
	cfg := filepath.Join(dir, "replicator.yaml")
	os.WriteFile(cfg, []byte("source: postgres://yaml/src\n"), 0o600)
	for _, name := range []string{"REPLICATOR_SOURCE_URL", "DATABASE_URL", "REPLICATOR_REDIS_SOURCE_URL", "REDIS_URL"} {
		if v, ok := os.LookupEnv(name); ok {
			t.Setenv(name, v)
			os.Unsetenv(name)
		}
	}
	parse := func(t *testing.T, env *envSource, args ...string) *cli {
		t.Helper()
		var c cli
		p, err := newParser(&c, env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &c
	}
	vars, err := loadHerokuEnv(envFile)
	if err != nil {
		t.Fatal(err)
	}
	if vars["SECRET_KEY_BASE"] != "a'b" || vars["DATABASE_URL"] != "postgres://file-user:p%40ss@heroku-file/db" {
		t.Fatalf("env file values not unquoted as a shell would: %q", vars)
	}
	file := &envSource{file: vars}

	c := parse(t, file, "audit", "--config", cfg)
	if c.Audit.Source != vars["DATABASE_URL"] || c.Audit.RedisSource != vars["REDIS_URL"] {
		t.Errorf("with only --heroku-env: source %q, redis %q; want the file's", c.Audit.Source, c.Audit.RedisSource)
	}
	t.Setenv("DATABASE_URL", "postgres://env-database-url/db")
	if c := parse(t, file, "snapshot", "--config", cfg); c.Snapshot.Source != "postgres://env-database-url/db" {
		t.Errorf("DATABASE_URL in the environment: source %q, want it over the file", c.Snapshot.Source)
	}
	t.Setenv("REPLICATOR_SOURCE_URL", "postgres://replicator-env/db")
	if c := parse(t, file, "snapshot"); c.Snapshot.Source != "postgres://replicator-env/db" {
		t.Errorf("REPLICATOR_SOURCE_URL set: source %q, want it over DATABASE_URL", c.Snapshot.Source)
	}
	if c := parse(t, file, "snapshot", "--source", "postgres://flag/db"); c.Snapshot.Source != "postgres://flag/db" {
		t.Errorf("--source given: source %q, want the flag", c.Snapshot.Source)
	}
	os.Unsetenv("REPLICATOR_SOURCE_URL")
	os.Unsetenv("DATABASE_URL")
	if c := parse(t, nil, "snapshot", "--config", cfg); c.Snapshot.Source != "postgres://yaml/src" {
		t.Errorf("nothing but the config file: source %q, want the file's", c.Snapshot.Source)
	}

	bad := filepath.Join(dir, "bad.env")
	os.WriteFile(bad, []byte("DATABASE_URL='postgres://u:hunter2@h/db'\nthis line has no equals sign hunter2\n"), 0o600)
	_, err = loadHerokuEnv(bad)
	if err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("malformed env file: %v; want the line named and no value shown", err)
	}
	if code := run([]string{"status", "--heroku-env", bad}); code != exitError {
		t.Errorf("run with a malformed --heroku-env = %d, want %d", code, exitError)
	}
}

// A typo'd key in the config file is an error naming it and the nearest
// known key, not a setting silently not taken.
func TestUnknownConfigKey(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"sorce: postgres://x\n", `unknown key "sorce" (did you mean "source"?)`},
		{"redis:\n  sync:\n    mdoe: scan\n", `unknown key "redis.sync.mdoe" (did you mean "redis.sync.mode"?)`},
		{"snapshot:\n  zzzzzz: 1\n", `unknown key "snapshot.zzzzzz":`},
	} {
		cfg := filepath.Join(dir, "c.yaml")
		os.WriteFile(cfg, []byte(tc.yaml), 0o600)
		var c cli
		p, err := newParser(&c, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = p.Parse([]string{"snapshot", "--config", cfg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("config %q: error %v; want it to contain %s", tc.yaml, err, tc.want)
		}
	}
	// Keys of other commands, global flags and nested command maps are fine.
	cfg := filepath.Join(dir, "ok.yaml")
	os.WriteFile(cfg, []byte("source: postgres://a\njobs: 4\nlog-level: debug\nformat: json\nredis:\n  mode: scan\n  sync:\n    follow: true\ncutover:\n  max-lag: 5s\n"), 0o600)
	var c cli
	p, _ := newParser(&c, nil)
	if _, err := p.Parse([]string{"snapshot", "--config", cfg}); err != nil {
		t.Errorf("a config file of known keys was refused: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"source", "source", 0}, {"sorce", "source", 1}, {"mdoe", "mode", 1}, {"jobs", "job", 1}, {"abc", "xyz", 3}} {
		if got := editDistance(tc.a, tc.b); got != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.d)
		}
	}
}

// `replicator --version` and a bare `replicator` succeed and say something.
func TestVersionAndBareHelp(t *testing.T) {
	if v := versionString(); !strings.HasPrefix(v, "replicator ") || !strings.Contains(v, "go1.") {
		t.Errorf("version string %q does not name the release and the Go version", v)
	}
	for _, args := range [][]string{nil, {"--version"}} {
		if code := run(args); code != exitOK {
			t.Errorf("run(%q) = %d, want 0", args, code)
		}
	}
}
