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

// The text form carries the same fields, one line each, and no
// credentials; Compared is shown only when set.
func TestHeaderText(t *testing.T) {
	start := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	h := Header{Title: "Redis verification: IDENTICAL", Version: "v1.2.3",
		Sides:   []Side{SideOf("source", "rediss://:Sekr1tPw@cache.example.com:6380/2"), SideOf("target", "redis://default:Sekr1tPw@ec.example.com:6379")},
		Started: start, Ended: start.Add(2 * time.Second), Compared: "every key of 1 database",
		Fenced: Fence{Detail: "not known here"}}
	var b strings.Builder
	if err := h.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"Redis verification: IDENTICAL\n", "  tool:          replicator v1.2.3\n",
		"  source:        cache.example.com:6380/2\n", "  target:        ec.example.com:6379/0\n",
		"  started:       2026-12-03T08:00:00Z\n", "  ended:         2026-12-03T08:00:02Z\n", "  duration:      2s\n",
		"  position:      -\n", "  compared:      every key of 1 database\n", "  source fenced: unknown (not known here)\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("text header lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"Sek", "ekr", "kr1", "r1t", "1tP", "tPw", "default"} {
		if strings.Contains(out, f) {
			t.Errorf("text header shows %q of the credentials:\n%s", f, out)
		}
	}
	h.Version = "replicator dev, go1.26"
	b.Reset()
	h.WriteText(&b)
	if !strings.Contains(b.String(), "  tool:          replicator dev, go1.26\n") {
		t.Errorf("a version string with the name is shown with it twice:\n%s", b.String())
	}
	h.Compared = ""
	b.Reset()
	h.WriteMarkdown(&b)
	if strings.Contains(b.String(), "Compared") {
		t.Errorf("an empty Compared is shown:\n%s", b.String())
	}
}
