package report

import (
	"strings"
	"testing"
	"time"
)

// The header names version, each side without credentials, start, end,
// duration, position and fence state.
func TestHeaderMarkdown(t *testing.T) {
	start := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	h := Header{Title: "Data verification: identical", Version: "v1.2.3",
		Sides: []Side{SideOf("source", "postgres://app:Sekr1tPw@heroku.example.com:5432/shop?sslmode=require"),
			SideOf("target", "host=rds.example.com user=app password=Sekr1tPw dbname=shop"),
			SideOf("redis source", "rediss://:Sekr1tPw@cache.example.com:6380")},
		Started: start, Ended: start.Add(90 * time.Second), Position: "source LSN 0/2A",
		Fenced: Fence{Known: true, Fenced: true, Detail: "since 2026-12-03T07:59:00Z, readonly"}}
	var b strings.Builder
	if err := h.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{"## Data verification: identical", "| Tool | replicator v1.2.3 |",
		"| Source | `heroku.example.com:5432/shop` |", "| Target | `rds.example.com/shop` |",
		"| Redis source | `cache.example.com:6380/0` |", "| Started | 2026-12-03T08:00:00Z |",
		"| Ended | 2026-12-03T08:01:30Z |", "| Duration | 1m30s |", "| Position | source LSN 0/2A |",
		"| Source fenced | yes (since 2026-12-03T07:59:00Z, readonly) |"} {
		if !strings.Contains(md, want) {
			t.Errorf("header lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{"Sek", "ekr", "kr1", "r1t", "1tP", "tPw", "app"} {
		if strings.Contains(md, f) {
			t.Errorf("header shows %q of the credentials:\n%s", f, md)
		}
	}
}
