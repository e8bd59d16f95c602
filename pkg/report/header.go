package report

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Side is one server a report looked at.
type Side struct {
	Name     string // "source", "target", "redis source", ...
	Host     string // host:port, never credentials
	Database string // database name, or Redis db number; "" when none
}

// SideOf describes a postgres://, redis:// or rediss:// URL for a report:
// host:port and database only, never user or password. A string that is
// not a URL (libpq keyword/value) gives its host= and dbname= values.
func SideOf(name, connString string) Side {
	s := Side{Name: name}
	if u, err := url.Parse(connString); err == nil && u.Scheme != "" && u.Host != "" {
		s.Host = u.Host
		s.Database = strings.TrimPrefix(u.Path, "/")
		if s.Database == "" && strings.HasPrefix(u.Scheme, "redis") {
			s.Database = "0"
		}
		return s
	}
	for _, f := range strings.Fields(connString) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "host":
			s.Host = v
		case "dbname":
			s.Database = v
		}
	}
	if s.Host == "" {
		s.Host = "(not a URL)"
	}
	return s
}

// Fence is whether the source was fenced (writes refused) when the report
// was made.
type Fence struct {
	Known  bool
	Fenced bool
	Detail string // e.g. "since 2026-12-03T08:00:00Z (readonly)", or why unknown
}

func (f Fence) String() string {
	switch {
	case !f.Known:
		return "unknown" + paren(f.Detail)
	case f.Fenced:
		return "yes" + paren(f.Detail)
	}
	return "no" + paren(f.Detail)
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

// FenceState reads the fence record that `replicator cutover --fence`
// keeps in replicator.cutover on the target. No table or no row: not
// fenced. An error reading it makes the state unknown, with the reason.
func FenceState(ctx context.Context, target *pgx.Conn) Fence {
	var exists bool
	if err := target.QueryRow(ctx, `SELECT to_regclass('replicator.cutover') IS NOT NULL`).Scan(&exists); err != nil {
		return Fence{Detail: "cannot read replicator.cutover on the target"}
	}
	if !exists {
		return Fence{Known: true, Detail: "no cutover recorded on the target"}
	}
	var status, method string
	var at time.Time
	err := target.QueryRow(ctx, `SELECT status, coalesce(detail->>'method', ''), updated_at FROM replicator.cutover WHERE step = 'fence'`).Scan(&status, &method, &at)
	switch {
	case err == pgx.ErrNoRows:
		return Fence{Known: true, Detail: "no fence recorded on the target"}
	case err != nil:
		return Fence{Detail: "cannot read the fence record in replicator.cutover on the target"}
	}
	d := "since " + at.UTC().Format(time.RFC3339)
	if method != "" {
		d += ", " + method
	}
	if status != "done" {
		d += ", fence " + status + " but not finished"
	}
	return Fence{Known: true, Fenced: true, Detail: d}
}

// Header is the common head of a markdown report.
type Header struct {
	Title    string // e.g. "Data verification: identical"
	Version  string // the tool's version string (cmd passes it in)
	Sides    []Side
	Started  time.Time
	Ended    time.Time
	Position string // the position compared or shown, e.g. "source LSN 0/2A"; "" when none applies
	// Compared says what the report looked at, e.g. "every key of 2
	// databases"; "" for no such line.
	Compared string
	Fenced   Fence
}

// tool is "replicator" and the version, once: the cmd's version string
// may start with the name already.
func (h Header) tool() string {
	if strings.HasPrefix(h.Version, "replicator ") {
		return h.Version
	}
	return "replicator " + orDash(h.Version)
}

// Duration is Ended minus Started (0 when either is unset).
func (h Header) Duration() time.Duration {
	if h.Started.IsZero() || h.Ended.IsZero() {
		return 0
	}
	return h.Ended.Sub(h.Started)
}

// WriteMarkdown writes the title and a two-column table of the header's
// fields; the report's own rows may follow in the same table with
// WriteRow, or the report may start its own sections.
func (h Header) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n| | |\n|---|---|\n", Escape(h.Title))
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("Tool", Escape(h.tool()))
	for _, s := range h.Sides {
		where := s.Host
		if s.Database != "" {
			where += "/" + s.Database
		}
		row(capitalize(s.Name), "`"+Escape(where)+"`")
	}
	row("Started", timeOrDash(h.Started))
	row("Ended", timeOrDash(h.Ended))
	row("Duration", h.Duration().Round(time.Millisecond).String())
	row("Position", Escape(orDash(h.Position)))
	if h.Compared != "" {
		row("Compared", Escape(h.Compared))
	}
	row("Source fenced", Escape(h.Fenced.String()))
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteText writes the same fields for a terminal: the title, then one
// indented "name: value" line each.
func (h Header) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n", h.Title)
	row := func(k, v string) { fmt.Fprintf(&b, "  %-14s %s\n", k+":", v) }
	row("tool", h.tool())
	for _, s := range h.Sides {
		where := s.Host
		if s.Database != "" {
			where += "/" + s.Database
		}
		row(s.Name, where)
	}
	row("started", timeOrDash(h.Started))
	row("ended", timeOrDash(h.Ended))
	row("duration", h.Duration().Round(time.Millisecond).String())
	row("position", orDash(h.Position))
	if h.Compared != "" {
		row("compared", h.Compared)
	}
	row("source fenced", h.Fenced.String())
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteRow writes one more row of the header's table.
func WriteRow(w io.Writer, key, value string) error {
	_, err := fmt.Fprintf(w, "| %s | %s |\n", Escape(key), Escape(value))
	return err
}

// Escape makes s safe inside a markdown table cell.
func Escape(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.ReplaceAll(s, "\n", " ")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
