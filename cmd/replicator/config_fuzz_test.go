package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfig feeds arbitrary bytes as the --config file: the command line
// must either parse or fail with an error, never panic.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"source: postgres://a:b@h/db\njobs: 8\n",
		"redis:\n  sync:\n    mode: scan\n",
		"jobs: [1, 2]\n",
		"jobs: {a: 1}\n",
		"source: [unclosed\n",
		"- a\n- b\n",
		"",
		"\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var c cli
		p, err := newParser(&c, nil)
		if err != nil {
			t.Fatal(err)
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					if _, ok := r.(exitPanic); !ok {
						t.Fatalf("config %q: panic %v", data, r)
					}
				}
			}()
			p.Parse([]string{"snapshot", "--config", path})
		}()
	})
}
