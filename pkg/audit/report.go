package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"replicator/pkg/report"
	"replicator/pkg/units"
)

// Report is everything one `replicator audit` found.
type Report struct {
	Postgres    *PostgresReport `json:"postgres,omitempty"`
	Redis       *RedisReport    `json:"redis,omitempty"`
	SSMCommands []string        `json:"ssm_commands,omitempty"`
	Sizing      *Sizing         `json:"sizing,omitempty"`
	TFVars      string          `json:"terraform_tfvars,omitempty"`
	Processes   []Process       `json:"procfile,omitempty"`
	// Header heads the markdown report (version, sides, times); nil:
	// a plain title.
	Header *report.Header `json:"-"`
}

// Write renders the report as text, json or markdown.
func (r *Report) Write(w io.Writer, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case "markdown":
		_, err := io.WriteString(w, r.render(true))
		return err
	default:
		_, err := io.WriteString(w, r.render(false))
		return err
	}
}

func (r *Report) render(md bool) string {
	var b strings.Builder
	h := func(s string) {
		if md {
			fmt.Fprintf(&b, "\n## %s\n\n", s)
		} else {
			fmt.Fprintf(&b, "\n%s\n%s\n", s, strings.Repeat("=", len(s)))
		}
	}
	item := func(format string, args ...any) {
		if md {
			b.WriteString("- ")
		} else {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, format+"\n", args...)
	}
	if md && r.Header != nil {
		hd := *r.Header
		if hd.Title == "" {
			hd.Title = "Migration audit"
		}
		hd.WriteMarkdown(&b)
	} else if md {
		b.WriteString("# Migration audit\n")
	}
	if p := r.Postgres; p != nil {
		h("Postgres source")
		item("version %s, database %s, %s on disk", p.Version, p.Database, units.Bytes(p.SizeBytes))
		item("capture: %s (%s)", p.Capture.Mode, p.Capture.Reason)
		item("estimated copy time: %s at %.0f MB/s (rate measured by bench/snapshot; real hosts differ)", p.EstimatedCopy, p.CopyRateMBps)
		item("%d tables, %d sequences, %d large objects%s", len(p.Tables), p.Sequences, p.LargeObjects,
			map[bool]string{true: " (the snapshot copies large objects, but later changes to them are not carried by logical decoding or triggers: verify compares them by count and checksum; rewrite changed ones after cutover)", false: ""}[p.LargeObjects > 0])
		if len(p.NoReplicaKey) > 0 {
			item("ATTENTION %d tables without primary key or replica identity (UPDATE/DELETE would fail under a publication): %s; fix: add primary keys, or let snapshot set REPLICA IDENTITY FULL with --replica-identity-full",
				len(p.NoReplicaKey), names(p.NoReplicaKey))
		}
		if len(p.Unlogged) > 0 {
			item("ATTENTION unlogged tables (copied by the snapshot, but their changes are not streamed): %s", names(p.Unlogged))
		}
		if len(p.DatabaseSettings) > 0 {
			item("database settings (ALTER DATABASE … SET), carried to the target database by the snapshot: %s", names(p.DatabaseSettings))
		}
		if len(p.RoleSettings) > 0 {
			item("ATTENTION settings of roles in this database (ALTER ROLE … IN DATABASE … SET), not carried (the target's roles are its own): %s; fix: set them on the target for the roles that exist there, before cutover",
				names(p.RoleSettings))
		}
		for _, e := range p.Extensions {
			if !e.OnRDS {
				item("ATTENTION extension %s %s: %s", e.Name, e.Version, e.Remediation)
			}
		}
		for _, t := range p.LongTransactions {
			item("ATTENTION long-running transaction pid %d (user %s, %s, %s): it holds back the snapshot and vacuum; end it before the copy", t.PID, t.User, t.Age, t.State)
		}
		h("Largest tables")
		if md {
			b.WriteString("| table | rows (estimate) | size | primary key |\n|---|---:|---:|---|\n")
		}
		for i, t := range p.Tables {
			if i == 20 {
				item("… and %d more", len(p.Tables)-20)
				break
			}
			pk := map[bool]string{true: "yes", false: "NO"}[t.HasPrimaryKey]
			if t.Partitioned {
				pk += " (partitioned)"
			}
			rows := fmt.Sprint(t.Rows)
			if t.RowsSource != "" && t.RowsSource != "statistics" {
				rows += " (" + t.RowsSource + ")"
			}
			if md {
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdCell(t.Name), rows, units.Bytes(t.Bytes), pk)
			} else {
				fmt.Fprintf(&b, "  %-40s %12s rows %10s  pk: %s\n", oneLine.Replace(t.Name), rows, units.Bytes(t.Bytes), pk)
			}
		}
	}
	if p := r.Postgres; p != nil {
		r.renderObjects(h, item)
	}
	if rr := r.Redis; rr != nil {
		h("Redis source")
		item("version %s, %s used%s", rr.Version, units.Bytes(rr.UsedMemory), map[bool]string{true: fmt.Sprintf(" of %s (%s)", units.Bytes(rr.MaxMemory), rr.EvictionPolicy), false: ""}[rr.MaxMemory > 0])
		for _, d := range rr.Keyspace {
			item("db%d: %d keys, %d with a TTL", d.DB, d.Keys, d.Expires)
		}
		var mix []string
		for t, n := range rr.TypeMix {
			mix = append(mix, fmt.Sprintf("%s %d", t, n))
		}
		item("type mix of %d sampled keys: %s", rr.SampledKeys, strings.Join(sortedStrings(mix), ", "))
		item("persistence: %s", orNone(rr.Persistence))
		big := 0
		for _, k := range rr.BiggestKeys {
			if k.Bytes >= BigKeyBytes {
				item("big key db%d %q (%s): %s by MEMORY USAGE", k.DB, k.Key, k.Type, units.Bytes(k.Bytes))
				big++
			}
		}
		if big == 0 {
			largest := "none sampled"
			if len(rr.BiggestKeys) > 0 {
				k := rr.BiggestKeys[0]
				largest = fmt.Sprintf("db%d %q (%s) at %s", k.DB, k.Key, k.Type, units.Bytes(k.Bytes))
			}
			item("no big keys (none of %d sampled keys uses %s or more by MEMORY USAGE; the largest is %s)", rr.SampledKeys, units.Bytes(BigKeyBytes), largest)
		}
		item("%s", rr.CaptureNote)
	}
	if sz := r.Sizing; sz != nil && len(sz.Reasons) > 0 {
		h("Sizing suggestion")
		for _, why := range sz.Reasons {
			item("%s", why)
		}
	}
	if r.TFVars != "" {
		h("terraform.tfvars for deploy/terraform")
		code(&b, md, r.TFVars, "hcl")
	}
	if len(r.Processes) > 0 {
		h("Heroku processes on AWS")
		if md {
			b.WriteString("| process | command | on AWS |\n|---|---|---|\n")
			for _, p := range r.Processes {
				fmt.Fprintf(&b, "| %s | `%s` | %s |\n", report.Escape(p.Type), report.Escape(p.Command), report.Escape(p.AWS))
			}
		} else {
			for _, p := range r.Processes {
				item("%s (%s): %s", p.Type, p.Command, p.AWS)
			}
		}
		item("%s", SchedulerNote)
	}
	if len(r.SSMCommands) > 0 {
		h("Moving Heroku config vars to SSM (no value is printed)")
		if md {
			b.WriteString("```sh\n")
		}
		for _, c := range r.SSMCommands {
			b.WriteString(c + "\n")
		}
		if md {
			b.WriteString("```\n")
		}
	}
	return strings.TrimLeft(b.String(), "\n")
}

// oneLine shows a name on one line: a newline or a carriage return inside
// a (quoted) identifier would end a list item or a table row of the
// report.
var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// names joins names for one line of the report.
func names(ns []string) string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = oneLine.Replace(n)
	}
	return strings.Join(out, ", ")
}

// mdCell keeps a markdown table cell intact.
func mdCell(s string) string {
	return strings.ReplaceAll(oneLine.Replace(s), "|", `\|`)
}

func sortedStrings(s []string) []string {
	sort.Strings(s)
	return s
}

// renderObjects writes the Postgres sections after the tables: extensions,
// sequences, objects that need a decision, roles, connections.
func (r *Report) renderObjects(h func(string), item func(string, ...any)) {
	p := r.Postgres
	h("Extensions")
	if len(p.Extensions) == 0 {
		item("none")
	}
	for _, e := range p.Extensions {
		item("%s %s: %s", e.Name, e.Version, e.RDSNote)
	}
	h("Sequences")
	var standalone []string
	for _, s := range p.SequenceList {
		if s.OwnedBy == "" {
			standalone = append(standalone, s.Name)
		}
	}
	item("%d sequences, %d owned by a column, %d standalone; cutover moves them all forward", len(p.SequenceList), len(p.SequenceList)-len(standalone), len(standalone))
	if len(standalone) > 0 {
		item("standalone (owned by no column, used by name): %s", strings.Join(standalone, ", "))
	}
	h("Objects that need a decision")
	list := func(what string, names []string, fix string) {
		if len(names) == 0 {
			item("%s: none", what)
			return
		}
		item("%s (%d): %s; %s", what, len(names), strings.Join(names, ", "), fix)
	}
	lo := []string{}
	if p.LargeObjects > 0 {
		lo = append(lo, fmt.Sprintf("%d in pg_largeobject", p.LargeObjects))
	}
	list("large objects", lo, "neither copied nor streamed: move them with pg_dump --large-objects, or into bytea columns")
	list("unlogged tables", p.Unlogged, "copied, but their changes are not streamed")
	list("triggers", p.Objects.Triggers, "recreated on the target, and kept from firing by the apply (session_replication_role = replica)")
	list("foreign tables", p.Objects.ForeignTables, "hold no data here: create the foreign server and user mapping on RDS (postgres_fdw is offered)")
	list("materialized views", p.Objects.MaterializedViews, "created on the target and refreshed after the copy; REFRESH them after cutover")
	list("generated columns", p.Objects.GeneratedColumns, "computed by the target, never written by the copy or the stream")
	h("Roles and grants RDS will not have")
	if len(p.Roles) == 0 {
		item("none: every object is owned by and granted to the connecting role")
	}
	for _, ro := range p.Roles {
		item("role %s: owns %d relations, holds %d table privileges; create it on RDS (CREATE ROLE) before the snapshot, or its grants are lost", ro.Name, ro.Owns, ro.Grants)
	}
	h("Connections")
	var states []string
	for s, n := range p.Connections.ByState {
		states = append(states, fmt.Sprintf("%s %d", s, n))
	}
	item("%d of max_connections %d in use (%s)", p.Connections.Total, p.Connections.Max, strings.Join(sortedStrings(states), ", "))
	for _, t := range p.Connections.Oldest {
		item("open transaction pid %d (user %s, %s, %s)", t.PID, t.User, t.Age, t.State)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// code writes a block of text verbatim: fenced in markdown, indented in
// text.
func code(b *strings.Builder, md bool, text, lang string) {
	if md {
		b.WriteString("```" + lang + "\n" + text + "```\n")
		return
	}
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
}
