package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"replicator/pkg/units"
	"sort"
	"strings"
)

// Report is everything one `replicator audit` found.
type Report struct {
	Postgres    *PostgresReport `json:"postgres,omitempty"`
	Redis       *RedisReport    `json:"redis,omitempty"`
	SSMCommands []string        `json:"ssm_commands,omitempty"`
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
	if md {
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
			if md {
				fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", mdCell(t.Name), t.Rows, units.Bytes(t.Bytes), pk)
			} else {
				fmt.Fprintf(&b, "  %-40s %12d rows %10s  pk: %s\n", oneLine.Replace(t.Name), t.Rows, units.Bytes(t.Bytes), pk)
			}
		}
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
		for _, k := range rr.BiggestKeys {
			item("big key db%d %q (%s): %s", k.DB, k.Key, k.Type, units.Bytes(k.Bytes))
		}
		item("%s", rr.CaptureNote)
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
