package redisverify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"replicator/pkg/report"
)

// Write renders the report as text, json or markdown.
func (r *Report) Write(w io.Writer, format string) error { return r.write(w, format, nil) }

// WriteWithHeader is Write with the common report header (pkg/report)
// heading the text and markdown forms: the caller gives the version, the
// sides and the fence state in h; the title, times and what was compared
// come from the report.
func (r *Report) WriteWithHeader(w io.Writer, format string, h report.Header) error {
	return r.write(w, format, &h)
}

func (r *Report) write(w io.Writer, format string, given *report.Header) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			*Report
			Identical bool `json:"identical"`
		}{r, r.Identical()})
	case "markdown":
		var b strings.Builder
		if h, ok := r.header(given); ok {
			if err := h.WriteMarkdown(&b); err != nil {
				return err
			}
			b.WriteString("\n")
		} else {
			fmt.Fprintf(&b, "# Redis verification: %s\n\n", r.verdict())
		}
		fmt.Fprintf(&b, "| db | source keys | target keys |\n| --- | ---: | ---: |\n")
		for _, d := range r.Databases {
			fmt.Fprintf(&b, "| %d | %d | %d |\n", d.DB, d.Source, d.Target)
		}
		fmt.Fprintf(&b, "\nKeys checked: %d%s. Differences: %d.\n", r.Checked, r.sampledNote(), r.DiffCount)
		if len(r.Differences) > 0 {
			fmt.Fprintf(&b, "\n| db | key | difference | source | target |\n| --- | --- | --- | --- | --- |\n")
			for _, d := range r.Differences {
				fmt.Fprintf(&b, "| %d | `%s` | %s | %s | %s |\n", d.DB, mdEscape(d.Key), d.Kind, mdEscape(d.Source), mdEscape(d.Target))
			}
		}
		_, err := io.WriteString(w, b.String())
		return err
	case "text", "":
		var b strings.Builder
		if h, ok := r.header(given); ok {
			if err := h.WriteText(&b); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(&b, "Redis verification: %s\n", r.verdict())
		}
		for _, d := range r.Databases {
			mark := "ok"
			if d.Source != d.Target {
				mark = "COUNT DIFFERS"
			}
			fmt.Fprintf(&b, "  db%-3d source %10d keys  target %10d keys  %s\n", d.DB, d.Source, d.Target, mark)
		}
		fmt.Fprintf(&b, "  function libraries: source %d, target %d\n", r.Libraries.Source, r.Libraries.Target)
		fmt.Fprintf(&b, "Keys checked: %d%s; differences: %d (in %s)\n", r.Checked, r.sampledNote(), r.DiffCount, r.Duration)
		for _, d := range r.Differences {
			if d.DB < 0 {
				fmt.Fprintf(&b, "  %s %q", d.Kind, d.Key)
			} else {
				fmt.Fprintf(&b, "  db%d %q: %s", d.DB, d.Key, d.Kind)
			}
			if d.Source != "" || d.Target != "" {
				fmt.Fprintf(&b, " (source %s, target %s)", orDash(d.Source), orDash(d.Target))
			}
			b.WriteString("\n")
		}
		if int64(len(r.Differences)) < r.DiffCount {
			fmt.Fprintf(&b, "  ... and %d more\n", r.DiffCount-int64(len(r.Differences)))
		}
		_, err := io.WriteString(w, b.String())
		return err
	}
	return fmt.Errorf("report format %q: use text, json or markdown", format)
}

// header completes the caller's header with the report's title, times
// and scope; false when the caller gave none.
func (r *Report) header(given *report.Header) (report.Header, bool) {
	if given == nil {
		return report.Header{}, false
	}
	h := *given
	h.Title = "Redis verification: " + r.verdict()
	h.Started = r.Started
	if d, err := time.ParseDuration(r.Duration); err == nil && !r.Started.IsZero() {
		h.Ended = r.Started.Add(d)
	}
	if h.Compared == "" {
		h.Compared = r.compared()
	}
	return h, true
}

// compared says what the comparison covered.
func (r *Report) compared() string {
	keys := "every key"
	if r.Sampled {
		keys = "a random sample of keys"
	}
	return fmt.Sprintf("%s of %d database(s) (%d keys checked: type, value digest computed client-side, TTL), and the function libraries", keys, len(r.Databases), r.Checked)
}

func (r *Report) verdict() string {
	if r.Identical() {
		return "IDENTICAL"
	}
	return "DIFFERENCES FOUND"
}

func (r *Report) sampledNote() string {
	if r.Sampled {
		return " (random sample)"
	}
	return ""
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
