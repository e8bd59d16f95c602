package main

import (
	"runtime/debug"
	"strings"
)

// version is the release, set at build time with
// -ldflags "-X main.version=v1.2.3"; empty for a development build.
var version string

// versionString is what --version and the reports print: the release (or
// "dev"), the commit it was built from and whether the tree had changes.
func versionString() string {
	v := version
	if v == "" {
		v = "dev"
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "replicator " + v
	}
	var rev, when string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	parts := []string{"replicator " + v}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "+changes"
		}
		parts = append(parts, "commit "+rev)
	}
	if when != "" {
		parts = append(parts, when)
	}
	parts = append(parts, info.GoVersion)
	return strings.Join(parts, ", ")
}
