package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"replicator/pkg/report"
)

// Report is the outcome of a verification.
type Report struct {
	Source     string        `json:"source"` // host:port/db, never credentials
	Target     string        `json:"target"`
	StartedAt  time.Time     `json:"started_at"`
	Duration   time.Duration `json:"-"`
	Seconds    float64       `json:"seconds"`
	Consistent string        `json:"consistency,omitempty"` // how a running stream was accounted for
	Position   string        `json:"position,omitempty"`    // the target's applied position when compared, for a person

	TablesChecked   int   `json:"tables_checked"`
	TablesIdentical int   `json:"tables_identical"`
	TablesDifferent int   `json:"tables_different"`
	SourceRows      int64 `json:"source_rows"`
	TargetRows      int64 `json:"target_rows"`
	RowsDiffering   int64 `json:"rows_differing"`
	SequencesBehind int   `json:"sequences_behind"`
	// Touched is set for an incremental run (Config.Touched): only the
	// rows the touched-row logs name were compared (RowsCompared of them),
	// and the tables in TablesWhole whole.
	Touched      bool  `json:"touched_only,omitempty"`
	RowsCompared int64 `json:"rows_compared,omitempty"`
	TablesWhole  int   `json:"tables_compared_whole,omitempty"`
	// InFlight are the rows Config.InFlightLogged set aside (at most
	// MaxRowsReported listed per table), by table.
	InFlight map[string][]RowDiff `json:"in_flight,omitempty"`

	// SequencesFinal is set once cutover has moved the target's
	// sequences: from then on a sequence behind is a difference; before,
	// the stream only keeps them close, and one behind is a warning that
	// does not decide the exit code. Materialized views that differ are
	// always warnings (see Warned).
	SequencesFinal bool `json:"sequences_final"`

	Tables    []TableResult    `json:"tables"`
	Sequences []SequenceResult `json:"sequences"`
	// LargeObjects is nil when --tables narrowed the comparison.
	LargeObjects      *LargeObjects   `json:"large_objects,omitempty"`
	MaterializedViews []MatViewResult `json:"materialized_views"`

	// Schema lists the differences in the definitions (columns, indexes,
	// constraints) of the tables on both sides, each with its fix; any
	// is a difference (schema.go). SchemaTables is how many tables were
	// compared so. SchemaObjects is how many of the source's types,
	// sequences, functions and views were compared (schemaobjects.go);
	// ObjectsSkipped says they were not, because --tables narrowed the
	// comparison.
	SchemaTables   int          `json:"schema_tables_compared"`
	SchemaObjects  int          `json:"schema_objects_compared"`
	ObjectsSkipped bool         `json:"schema_objects_skipped,omitempty"`
	Schema         []SchemaDiff `json:"schema_differences"`
}

// TableResult is one table's comparison.
type TableResult struct {
	Table      string `json:"table"` // schema.name as SQL needs it quoted
	Mode       string `json:"mode"`  // "key ranges", "hash buckets" or "multiset"
	Key        string `json:"key,omitempty"`
	SourceRows int64  `json:"source_rows"`
	TargetRows int64  `json:"target_rows"`
	Chunks     int    `json:"chunks"`
	Mismatched int    `json:"chunks_mismatched"`
	Identical  bool   `json:"identical"`
	// Problem is set when the table could not be compared row by row: it
	// exists on one side only.
	Problems        []string         `json:"problems,omitempty"`
	Differences     map[string]int64 `json:"differences,omitempty"` // by kind
	Rows            []RowDiff        `json:"rows,omitempty"`
	RowsNotListed   int64            `json:"rows_not_listed,omitempty"`
	SecondsChecking float64          `json:"seconds"`
	// RowsCompared is, in the incremental mode (Config.Touched), how many
	// logged keys were compared; Whole says the table was compared whole
	// instead (no key, truncated, or not tracked on both sides).
	RowsCompared int64 `json:"rows_compared,omitempty"`
	Whole        bool  `json:"compared_whole,omitempty"`
}

// SequenceResult is one sequence's position on both sides.
type SequenceResult struct {
	Sequence string `json:"sequence"`
	Source   *int64 `json:"source"`
	Target   *int64 `json:"target"`
	Behind   bool   `json:"behind"`
	Problem  string `json:"problem,omitempty"`
}

// InFlightRows counts the rows set aside as in flight (Config.InFlightLogged).
func (r *Report) InFlightRows() int {
	n := 0
	for _, d := range r.InFlight {
		n += len(d)
	}
	return n
}

// Different reports whether anything differs.
func (r *Report) Different() bool {
	if r.TablesDifferent > 0 || r.LargeObjects != nil && !r.LargeObjects.Identical || len(r.Schema) > 0 {
		return true
	}
	return r.SequencesFinal && r.SequencesBehind > 0
}

// Warned reports what differs without being a difference of the data:
// sequences behind before cutover (the stream only keeps them close), and
// materialized views, whose rows depend on when each side last refreshed
// them (cutover refreshes the target's from the final data, the source's
// may be older).
func (r *Report) Warned() bool {
	return !r.SequencesFinal && r.SequencesBehind > 0 || r.staleViews() > 0
}

func (r *Report) staleViews() int {
	n := 0
	for _, v := range r.MaterializedViews {
		if !v.Identical {
			n++
		}
	}
	return n
}

// differenceLines and warningLines name the objects besides tables that
// differ, each with what to do.
func (r *Report) differenceLines() []string {
	var out []string
	if r.SequencesFinal {
		out = r.sequenceLines()
	}
	if lo := r.LargeObjects; lo != nil && !lo.Identical {
		out = append(out, fmt.Sprintf("large objects: %d on source, %d on target, contents differ or missing: run the snapshot again, or copy them with lo_export/lo_import", lo.Source, lo.Target))
	}
	return out
}

func (r *Report) warningLines() []string {
	var out []string
	if !r.SequencesFinal {
		out = r.sequenceLines()
	}
	for _, v := range r.MaterializedViews {
		if !v.Identical {
			out = append(out, fmt.Sprintf("materialized view %s: %d rows on source, %d on target: %s", v.View, v.SourceRows, v.TargetRows, v.Problem))
		}
	}
	return out
}

func (r *Report) sequenceLines() []string {
	var out []string
	for _, s := range r.Sequences {
		if s.Behind {
			l := fmt.Sprintf("sequence %s: source %s, target %s", s.Sequence, seqValue(s.Source), seqValue(s.Target))
			if s.Problem != "" {
				l += " (" + s.Problem + ")"
			}
			out = append(out, l)
		}
	}
	return out
}

func (r *Report) objectSummary() string {
	s := fmt.Sprintf("%d checked, %d behind on target", len(r.Sequences), r.SequencesBehind)
	if r.SequencesBehind > 0 && !r.SequencesFinal {
		s += " (a warning: the stream keeps them close, cutover moves them)"
	}
	return s
}

func (r *Report) extrasSummary() []string {
	var out []string
	v := fmt.Sprintf("%d compared, %d differ", len(r.MaterializedViews), r.staleViews())
	if r.staleViews() > 0 {
		v += " (a warning: streams do not refresh them, cutover does)"
	}
	out = append(out, v)
	if lo := r.LargeObjects; lo != nil {
		verdict := "identical"
		if !lo.Identical {
			verdict = "DIFFERENT"
		}
		out = append(out, fmt.Sprintf("%d on source, %d on target, %s; %s", lo.Source, lo.Target, verdict, lo.Note))
	} else {
		out = append(out, "not compared (--tables)")
	}
	return out
}

func (r *Report) verdict() string {
	if r.Different() {
		return "DIFFERENCES FOUND"
	}
	return "IDENTICAL"
}

// WriteJSON writes the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	r.Seconds = r.Duration.Seconds()
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

func seqValue(v *int64) string {
	if v == nil {
		return "never used"
	}
	return fmt.Sprint(*v)
}

func (d RowDiff) describe() string {
	switch {
	case d.Row != "":
		s := fmt.Sprintf("%-18s %s", d.Kind, d.Row)
		if d.Count > 1 {
			s += fmt.Sprintf("  (×%d)", d.Count)
		}
		return s
	case d.Kind == Different:
		return fmt.Sprintf("%-18s %s  columns: %s", d.Kind, d.Key, strings.Join(d.Columns, ", "))
	default:
		return fmt.Sprintf("%-18s %s", d.Kind, d.Key)
	}
}

// WriteText writes the summary a person reads in five seconds, then the
// details.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "replicator verify: %s\n", r.verdict())
	fmt.Fprintf(&b, "  tables:    %d checked, %d identical, %d different\n", r.TablesChecked, r.TablesIdentical, r.TablesDifferent)
	fmt.Fprintf(&b, "  rows:      %s on source, %s on target, %s differing\n", num(r.SourceRows), num(r.TargetRows), num(r.RowsDiffering))
	if r.Touched {
		fmt.Fprintf(&b, "  only:      the %s rows written since the touched-row logs started (rows above are those read); %d tables compared whole\n",
			num(r.RowsCompared), r.TablesWhole)
	}
	fmt.Fprintf(&b, "  sequences: %s\n", r.objectSummary())
	fmt.Fprintf(&b, "  schema:    %s\n", r.schemaSummary())
	ex := r.extrasSummary()
	fmt.Fprintf(&b, "  mat views: %s\n  large obj: %s\n", ex[0], ex[1])
	fmt.Fprintf(&b, "  time:      %s\n", r.Duration.Round(time.Millisecond))
	fmt.Fprintf(&b, "  source:    %s\n  target:    %s\n", r.Source, r.Target)
	if r.Position != "" {
		fmt.Fprintf(&b, "  position:  %s\n", r.Position)
	}
	if r.Consistent != "" {
		fmt.Fprintf(&b, "  stream:    %s\n", r.Consistent)
	}
	if n := r.InFlightRows(); n > 0 {
		fmt.Fprintf(&b, "  in flight: %d rows still being written (named in the touched-row logs), compared again once writes stop\n", n)
	}
	if r.Different() {
		b.WriteString("\nDifferences:\n")
		for _, t := range r.Tables {
			if t.Identical {
				continue
			}
			fmt.Fprintf(&b, "  %s  (%s rows on source, %s on target)\n", t.Table, num(t.SourceRows), num(t.TargetRows))
			for _, p := range t.Problems {
				fmt.Fprintf(&b, "    %s\n", p)
			}
			for _, d := range t.Rows {
				fmt.Fprintf(&b, "    %s\n", d.describe())
			}
			if t.RowsNotListed > 0 {
				fmt.Fprintf(&b, "    ... and %s more differing rows\n", num(t.RowsNotListed))
			}
		}
		for _, l := range r.differenceLines() {
			fmt.Fprintf(&b, "  %s\n", l)
		}
		r.writeSchemaText(&b)
	}
	if r.Warned() {
		b.WriteString("\nWarnings (not differences of the data):\n")
		for _, l := range r.warningLines() {
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	b.WriteString("\nTables:\n")
	for _, t := range r.Tables {
		verdict := "identical"
		if !t.Identical {
			verdict = "DIFFERENT"
		}
		fmt.Fprintf(&b, "  %-9s %-40s %13s rows  %-12s %d chunks, %d mismatched, %.1fs\n",
			verdict, t.Table, num(t.SourceRows), t.Mode, t.Chunks, t.Mismatched, t.SecondsChecking)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mdEscape keeps table cells intact.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}

// WriteMarkdown writes the report for a change ticket, under the common
// report header h (version and fence state from the caller; title, sides,
// times and position are filled in here).
func (r *Report) WriteMarkdown(w io.Writer, h report.Header) error {
	var b strings.Builder
	h.Title = "Data verification: " + r.verdict()
	h.Sides = []report.Side{{Name: "source", Host: r.Source}, {Name: "target", Host: r.Target}}
	h.Started, h.Ended, h.Position = r.StartedAt, r.StartedAt.Add(r.Duration), r.Position
	if err := h.WriteMarkdown(&b); err != nil {
		return err
	}
	fmt.Fprintf(&b, "| Tables | %d checked, %d identical, %d different |\n", r.TablesChecked, r.TablesIdentical, r.TablesDifferent)
	fmt.Fprintf(&b, "| Rows | %d on source, %d on target, %d differing |\n", r.SourceRows, r.TargetRows, r.RowsDiffering)
	fmt.Fprintf(&b, "| Sequences | %s |\n", mdEscape(r.objectSummary()))
	fmt.Fprintf(&b, "| Schema | %s |\n", mdEscape(r.schemaSummary()))
	ex := r.extrasSummary()
	fmt.Fprintf(&b, "| Materialized views | %s |\n| Large objects | %s |\n", mdEscape(ex[0]), mdEscape(ex[1]))
	if r.Consistent != "" {
		fmt.Fprintf(&b, "| Stream | %s |\n", mdEscape(r.Consistent))
	}
	if r.Different() && (r.TablesDifferent > 0 || len(r.differenceLines()) > 0) {
		b.WriteString("\n### Differences\n\n| Table | Difference | Row |\n|---|---|---|\n")
		for _, t := range r.Tables {
			for _, p := range t.Problems {
				fmt.Fprintf(&b, "| `%s` | %s | |\n", mdEscape(t.Table), mdEscape(p))
			}
			for _, d := range t.Rows {
				what, row := d.Kind, d.Key
				if d.Row != "" {
					row = d.Row
					if d.Count > 1 {
						what += fmt.Sprintf(" (×%d)", d.Count)
					}
				}
				if d.Kind == Different {
					what += ": " + strings.Join(d.Columns, ", ")
				}
				fmt.Fprintf(&b, "| `%s` | %s | `%s` |\n", mdEscape(t.Table), mdEscape(what), mdEscape(row))
			}
			if t.RowsNotListed > 0 {
				fmt.Fprintf(&b, "| `%s` | %d more differing rows | |\n", mdEscape(t.Table), t.RowsNotListed)
			}
		}
		for _, l := range r.differenceLines() {
			fmt.Fprintf(&b, "| | %s | |\n", mdEscape(l))
		}
	}
	r.writeSchemaMarkdown(&b)
	if r.Warned() {
		b.WriteString("\n### Warnings (not differences of the data)\n\n")
		for _, l := range r.warningLines() {
			fmt.Fprintf(&b, "- %s\n", mdEscape(l))
		}
	}
	b.WriteString("\n### Tables\n\n| Table | Result | Source rows | Target rows | Mode | Chunks mismatched |\n|---|---|---:|---:|---|---:|\n")
	for _, t := range r.Tables {
		verdict := "identical"
		if !t.Identical {
			verdict = "**different**"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %d | %d | %s | %d of %d |\n", mdEscape(t.Table), verdict, t.SourceRows, t.TargetRows, t.Mode, t.Mismatched, t.Chunks)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// num writes a count with thousands separators: 5,000,000.
func num(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
