package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"replicator/pkg/report"
)

// Report formats (Config.ReportFormat).
const (
	ReportText     = "text"
	ReportMarkdown = "markdown"
)

// writeReport writes the run for the change ticket to cfg.Report: the
// pkg/report header (tool version, both sides without credentials, start
// and end, the position drained to, whether the source is fenced now),
// every step's line, the write freeze and the outcome.
func (r *runner) writeReport(ctx context.Context, started time.Time, runErr error) error {
	if r.cfg.Report == nil {
		return nil
	}
	outcome := "switch ready"
	switch {
	case errors.Is(runErr, ErrDifferences):
		outcome = "differences found, do not switch"
	case runErr != nil:
		outcome = "stopped"
	case r.cfg.DryRun:
		outcome = "dry run, nothing changed"
	case !r.fenced:
		outcome = "not fenced, nothing final"
	}
	h := report.Header{Title: "Cutover: " + outcome, Version: r.cfg.Version,
		Sides:   []report.Side{report.SideOf("source", r.cfg.SourceURL), report.SideOf("target", r.cfg.TargetURL)},
		Started: started, Ended: time.Now(), Position: r.position, Fenced: report.FenceState(ctx, r.tgt)}
	if r.cfg.RedisSource != nil {
		h.Sides = append(h.Sides, report.Side{Name: "redis source", Host: r.cfg.RedisSource.Addr, Database: fmt.Sprint(r.cfg.RedisSource.DB)},
			report.Side{Name: "redis target", Host: r.cfg.RedisTargetOptions.Addr, Database: fmt.Sprint(r.cfg.RedisTargetOptions.DB)})
	}
	w := r.cfg.Report
	var err error
	if r.cfg.ReportFormat == ReportMarkdown {
		if err = h.WriteMarkdown(w); err != nil {
			return err
		}
		if r.freezeLine != "" {
			report.WriteRow(w, "Write freeze", strings.TrimPrefix(r.freezeLine, "write freeze: "))
		}
		if runErr != nil {
			report.WriteRow(w, "Stopped by", runErr.Error())
		}
		fmt.Fprintf(w, "\n### Steps\n\n")
		for _, l := range r.lines {
			fmt.Fprintf(w, "- %s\n", strings.ReplaceAll(l, "\n", " "))
		}
		return nil
	}
	fmt.Fprintf(w, "%s\n", h.Title)
	fmt.Fprintf(w, "tool: replicator %s\n", orDash(h.Version))
	for _, s := range h.Sides {
		fmt.Fprintf(w, "%s: %s/%s\n", s.Name, s.Host, s.Database)
	}
	fmt.Fprintf(w, "started: %s\nended: %s\nduration: %s\nposition: %s\nsource fenced: %s\n",
		h.Started.UTC().Format(time.RFC3339), h.Ended.UTC().Format(time.RFC3339), h.Duration().Round(time.Millisecond), orDash(h.Position), h.Fenced)
	if r.freezeLine != "" {
		fmt.Fprintln(w, r.freezeLine)
	}
	if runErr != nil {
		fmt.Fprintf(w, "stopped by: %v\n", runErr)
	}
	fmt.Fprintln(w)
	for _, l := range r.lines {
		fmt.Fprintln(w, l)
	}
	_, err = fmt.Fprintln(w)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
