package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Flags win over environment variables, which win over the config file;
// keys nested under a command apply to that command.
func TestConfigPrecedence(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "replicator.yaml")
	os.WriteFile(cfg, []byte("source: postgres://file/src\ntarget: postgres://file/dst\njobs: 8\nredis:\n  sync:\n    mode: scan\n"), 0o600)
	t.Setenv("REPLICATOR_TARGET_URL", "postgres://env/dst")

	var c cli
	p, err := newParser(&c)
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
	p2, _ := newParser(&c2)
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
