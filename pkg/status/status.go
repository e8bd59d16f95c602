package status

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/position"
	"replicator/pkg/report"
	"replicator/pkg/schemachange"
	"replicator/pkg/state"
	"replicator/pkg/units"
)

// Status is a point-in-time view of a migration.
type Status struct {
	Capture        string    `json:"capture"`
	SnapshotStatus string    `json:"snapshot_status"`
	SnapshotTables *Progress `json:"snapshot_progress,omitempty"`
	ConsistentLSN  string    `json:"consistent_lsn,omitempty"`
	AppliedLSN     string    `json:"applied_lsn,omitempty"`
	AppliedBatch   int64     `json:"applied_batch,omitempty"`
	// Applied is the applied position for a person ("source LSN 0/2A",
	// "changelog batch 7", "no position").
	Applied string `json:"applied"`
	// SnapshotPoint is where trigger capture starts, for a person: the
	// copy's source snapshot ("source xid 803, none in flight").
	SnapshotPoint string `json:"snapshot_point,omitempty"`
	// LastCommitTime is the source commit time of the last applied
	// transaction; AppliedAt when the target applied it.
	LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
	AppliedAt      *time.Time `json:"applied_at,omitempty"`
	// ApplyLagSeconds is 0 when the target has applied everything the
	// source has written (source lag under one WAL page), else the time
	// since the source committed the last transaction the target holds: the
	// oldest unapplied change is at most that old. Known only with a source
	// connection; an idle source confirmed by heartbeats is not lag.
	ApplyLagSeconds *float64 `json:"apply_lag_seconds,omitempty"`
	// SourceLagBytes is the source's current WAL position minus the applied
	// position (logical capture, only with a source connection).
	SourceLagBytes *int64 `json:"source_lag_bytes,omitempty"`
	// SourceLagChanges is the number of changelog rows on the source the
	// target has not applied yet (trigger capture, only with a source
	// connection).
	SourceLagChanges *int64 `json:"source_lag_changes,omitempty"`
	Slot             *Slot  `json:"slot,omitempty"`
	// Direction is where changes flow: "forward" (source → target) or,
	// once the cutover installed capture on the target, "reverse"
	// (target → source, the fallback window; Reverse has its position and
	// lag with a source connection). RolledBack: a rollback gave the
	// source back. Fence is the cutover's fence on the source as
	// replicator.cutover records it, nil when none.
	// PendingForeignKeys names the foreign keys a chunked copy created
	// NOT VALID that are not validated yet (the stream validates them
	// once caught up; cutover refuses while any is left).
	PendingForeignKeys []string       `json:"pending_foreign_keys,omitempty"`
	Direction          string         `json:"direction"`
	Reverse            *ReverseStatus `json:"reverse,omitempty"`
	RolledBack         bool           `json:"rolled_back,omitempty"`
	Fence              *FenceStatus   `json:"fence,omitempty"`
	// BatchesBehind is how many trigger-capture batches the source has
	// closed that the target has not applied (only with a source
	// connection).
	BatchesBehind *int64 `json:"batches_behind,omitempty"`
	// SchemaChanges counts the source's schema changes the stream saw
	// (pkg/schemachange), nil when it saw none.
	SchemaChanges *SchemaChanges `json:"schema_changes,omitempty"`
	LastError     string         `json:"last_error,omitempty"`
	StartedAt     time.Time      `json:"started_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
}

// SchemaChanges is what the stream did with the source's schema changes.
type SchemaChanges struct {
	Seen    int64     `json:"seen"`
	Applied int64     `json:"applied"`
	Stopped int64     `json:"stopped"`
	Last    string    `json:"last"`
	LastAt  time.Time `json:"last_at"`
}

// FenceStatus is the cutover's fence and write freeze.
type FenceStatus struct {
	Method        string   `json:"method"`
	Status        string   `json:"status"` // "started" or "done"
	FreezeSeconds *float64 `json:"freeze_seconds,omitempty"`
}

// Progress is the snapshot's progress as it records it on the target.
type Progress struct {
	Phase       string `json:"phase"`
	TablesDone  int64  `json:"tables_done"`
	TablesTotal int64  `json:"tables_total"`
	ChunksDone  int64  `json:"chunks_done"`
	ChunksTotal int64  `json:"chunks_total"`
	Rows        int64  `json:"rows"`
	Bytes       int64  `json:"bytes"`     // COPY text bytes copied
	EstBytes    int64  `json:"est_bytes"` // estimated table bytes on the source
	// BytesPerSecond is the chunked copy's rate over the last minute, by
	// every process that works on it; ETASeconds extrapolates it to the
	// bytes left. Both 0 when unknown (no chunk done in the last minute).
	BytesPerSecond float64 `json:"bytes_per_second,omitempty"`
	ETASeconds     float64 `json:"eta_seconds,omitempty"`
}

// rateText is ", 12.3 MB/s, ETA 4m10s" when the rate is known.
func (p *Progress) rateText() string {
	if p.BytesPerSecond <= 0 {
		return ""
	}
	return fmt.Sprintf(", %.1f MB/s, ETA %s", p.BytesPerSecond/1e6, (time.Duration(p.ETASeconds) * time.Second).String())
}

// Slot is the source replication slot as the source sees it.
type Slot struct {
	Name              string `json:"name"`
	Active            bool   `json:"active"`
	ConfirmedFlushLSN string `json:"confirmed_flush_lsn"`
	RetainedWALBytes  int64  `json:"retained_wal_bytes"`
	WALStatus         string `json:"wal_status"`
}

// Gather reads the status; source may be nil.
func Gather(ctx context.Context, target, source *pgx.Conn) (*Status, error) {
	st, err := state.Load(ctx, target)
	if err != nil {
		return nil, err
	}
	s := &Status{Capture: st.Capture, SnapshotStatus: st.SnapshotStatus, ConsistentLSN: st.ConsistentLSN,
		LastError: st.LastError, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt, Applied: st.Applied.String(),
		SnapshotPoint: SnapshotPoint(st.SnapshotXmin)}
	switch st.Applied.Kind() {
	case position.KindLSN:
		s.AppliedLSN = st.Applied.LSN().String()
	case position.KindBatch:
		s.AppliedBatch = st.Applied.ID()
	}
	if !st.AppliedCommitTime.IsZero() {
		ct, at := st.AppliedCommitTime, st.AppliedAt
		s.LastCommitTime, s.AppliedAt = &ct, &at
	}
	if p, err := snapshotProgress(ctx, target); err == nil {
		s.SnapshotTables = p
	}
	if err := s.readDirection(ctx, target, source); err != nil {
		return nil, err
	}
	fks, err := state.PendingForeignKeys(ctx, target)
	if err != nil {
		return nil, err
	}
	for _, k := range fks {
		line := k.String()
		if k.LastError != "" {
			line += " (last try: " + k.LastError + ")"
		}
		s.PendingForeignKeys = append(s.PendingForeignKeys, line)
	}
	if sc, err := schemachange.ReadSummary(ctx, target); err == nil && sc.Seen > 0 {
		s.SchemaChanges = &SchemaChanges{Seen: sc.Seen, Applied: sc.Applied, Stopped: sc.Stopped, Last: sc.Last, LastAt: sc.LastAt}
	}
	var f FenceStatus
	// replicator.cutover exists once a cutover ran (pkg/cutover record.go).
	if err := target.QueryRow(ctx, `SELECT coalesce(detail->>'method', ''), status,
		(SELECT (detail->>'seconds')::float8 FROM replicator.cutover WHERE step = 'freeze')
		FROM replicator.cutover WHERE step = 'fence'`).Scan(&f.Method, &f.Status, &f.FreezeSeconds); err == nil {
		s.Fence = &f
	}
	if source != nil && st.Capture == state.CaptureTrigger {
		var behind int64
		if err := source.QueryRow(ctx, `SELECT greatest(coalesce(max(id), 0) - $1, 0) FROM replicator.ticks`, st.Applied.ID()).Scan(&behind); err != nil {
			return nil, fmt.Errorf("source: read replicator.ticks: %w", err)
		}
		s.BatchesBehind = &behind
	}
	switch {
	case source == nil:
	case st.Capture == state.CaptureLogical:
		if err := s.readSource(ctx, source, st); err != nil {
			return nil, err
		}
	case st.Capture == state.CaptureTrigger:
		err := s.readTriggerSource(ctx, source, st)
		if errors.Is(err, errTickPurged) {
			// The stream applied the next batch and purged the tick
			// between the two reads: read its position again.
			if st, err = state.Load(ctx, target); err != nil {
				return nil, err
			}
			err = s.readTriggerSource(ctx, source, st)
		}
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// errTickPurged is a tick the stream purged, or a capture reset.
var errTickPurged = errors.New("the source's capture was reset; run `replicator snapshot` again")

// readTriggerSource measures trigger capture's lag on the source: the
// changelog rows not covered by the applied batch's closing tick, and the
// age of that tick. Everything committed before the tick is on the target,
// so when rows remain the oldest of them is at most that old; none
// remaining is no lag, however long ago the last tick was.
func (s *Status) readTriggerSource(ctx context.Context, source *pgx.Conn, st *state.State) error {
	tick := int64(0) // tick 0 is the copy's snapshot: nothing streamed yet
	if st.Applied.Kind() == position.KindBatch {
		tick = st.Applied.ID()
	}
	var pending int64
	var at time.Time
	err := source.QueryRow(ctx, `SELECT t.at, (SELECT count(*) FROM replicator.changelog c
			WHERE c.txid >= pg_snapshot_xmin(t.snap) AND NOT pg_visible_in_snapshot(c.txid, t.snap))
		FROM replicator.ticks t WHERE t.id = $1`, tick).Scan(&at, &pending)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("source: replicator.ticks has no tick %d, the one the target applied up to: %w", tick, errTickPurged)
	case err != nil:
		return fmt.Errorf("source: read trigger capture's changelog and ticks in schema replicator: %w", err)
	}
	s.SourceLagChanges = &pending
	secs := 0.0
	if pending > 0 {
		secs = max(time.Since(at).Seconds(), 0)
	}
	s.ApplyLagSeconds = &secs
	return nil
}

// SnapshotPoint renders a pg_snapshot text ("xmin:xmax:xip,...") for a
// person: "source xid 803, none in flight" or "source xid 805, 801 and
// 803 in flight". Anything else is returned as it is; "" stays "".
func SnapshotPoint(snap string) string {
	parts := strings.Split(snap, ":")
	if len(parts) != 3 {
		return snap
	}
	xmax := parts[1]
	if parts[2] == "" {
		return "source xid " + xmax + ", none in flight"
	}
	ids := strings.Split(parts[2], ",")
	list := ids[0]
	if len(ids) > 1 {
		list = strings.Join(ids[:len(ids)-1], ", ") + " and " + ids[len(ids)-1]
	}
	return "source xid " + xmax + ", " + list + " in flight"
}

func (s *Status) readSource(ctx context.Context, source *pgx.Conn, st *state.State) error {
	from := st.Applied
	if from.IsZero() && st.ConsistentLSN != "" {
		var err error
		if from, err = position.ParseLSN(st.ConsistentLSN); err != nil {
			return fmt.Errorf("target: replicator.state holds the consistent LSN %q: %w", st.ConsistentLSN, err)
		}
	}
	if !from.IsZero() {
		var lag int64
		if err := source.QueryRow(ctx, `SELECT greatest(pg_current_wal_lsn() - $1::pg_lsn, 0)::bigint`, from).Scan(&lag); err != nil {
			return fmt.Errorf("source: read WAL position: %w", err)
		}
		s.SourceLagBytes = &lag
		secs := 0.0
		if lag > 8192 && !st.AppliedCommitTime.IsZero() {
			secs = max(time.Since(st.AppliedCommitTime).Seconds(), 0)
		}
		s.ApplyLagSeconds = &secs
	}
	var sl Slot
	var flush, walStatus *string
	err := source.QueryRow(ctx, `SELECT slot_name, active, confirmed_flush_lsn::text,
		coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint, wal_status
		FROM pg_replication_slots WHERE slot_name = $1`, st.SlotName).Scan(&sl.Name, &sl.Active, &flush, &sl.RetainedWALBytes, &walStatus)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		s.Slot = &Slot{Name: st.SlotName, WALStatus: "missing"}
	case err != nil:
		return fmt.Errorf("source: read pg_replication_slots: %w", err)
	default:
		if flush != nil {
			sl.ConfirmedFlushLSN = *flush
		}
		if walStatus != nil {
			sl.WALStatus = *walStatus
		}
		s.Slot = &sl
	}
	return nil
}

// snapshotProgress reads the progress row the snapshot keeps on the
// target (pkg/snapshot record.go).
func snapshotProgress(ctx context.Context, target *pgx.Conn) (*Progress, error) {
	var p Progress
	err := target.QueryRow(ctx, `SELECT phase, tables_done, tables_total, chunks_done, chunks_total, rows, bytes, est_bytes
		FROM replicator.snapshot_progress`).Scan(&p.Phase, &p.TablesDone, &p.TablesTotal, &p.ChunksDone, &p.ChunksTotal,
		&p.Rows, &p.Bytes, &p.EstBytes)
	if err != nil {
		return nil, err
	}
	// A chunked copy's ledger counts the chunks of every process that
	// works on it (--join), not only those of the run writing the row.
	var ledger bool
	if err := target.QueryRow(ctx, `SELECT to_regclass('replicator.chunks') IS NOT NULL`).Scan(&ledger); err == nil && ledger {
		target.QueryRow(ctx, `SELECT count(*), count(snapshot), count(DISTINCT table_name),
			count(DISTINCT table_name) FILTER (WHERE done_tables.t IS NOT NULL)
			FROM replicator.chunks LEFT JOIN (SELECT table_name AS t FROM replicator.chunks GROUP BY 1
				HAVING count(*) = count(snapshot)) done_tables ON done_tables.t = table_name`).Scan(
			&p.ChunksTotal, &p.ChunksDone, &p.TablesTotal, &p.TablesDone)
		// The bytes of the chunks committed in the last minute, over the
		// part of that minute the copy ran.
		var recent, copied int64
		var secs float64
		if target.QueryRow(ctx, `SELECT coalesce(sum(bytes) FILTER (WHERE done_at > now() - interval '1 minute'), 0)::bigint,
			coalesce(sum(bytes), 0)::bigint,
			coalesce(extract(epoch FROM now() - greatest(min(done_at), now() - interval '1 minute')), 0)::float8
			FROM replicator.chunks WHERE done_at IS NOT NULL`).Scan(&recent, &copied, &secs) == nil && recent > 0 &&
			p.ChunksDone < p.ChunksTotal {
			// Within its first second a copy is measured over one second.
			p.BytesPerSecond = float64(recent) / max(secs, 1)
			p.ETASeconds = float64(max(p.EstBytes-copied, 0)) / p.BytesPerSecond
		}
	}
	return &p, nil
}

// WriteText writes the status for a person.
func (s *Status) WriteText(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "capture:         %s\n", s.Capture)
	fmt.Fprintf(&b, "direction:       %s\n", s.directionLine())
	if f := s.Fence; f != nil {
		fmt.Fprintf(&b, "fence:           the source is fenced (%s, %s)", f.Method, f.Status)
		if f.FreezeSeconds != nil {
			fmt.Fprintf(&b, "; write freeze %.1f s", *f.FreezeSeconds)
		}
		if s.Direction == "reverse" {
			b.WriteString("; fall back with `replicator cutover --rollback` (--unfence would lose the app's writes on the target)\n")
		} else {
			b.WriteString("; lift it with `replicator cutover --unfence`\n")
		}
	}
	fmt.Fprintf(&b, "snapshot:        %s", s.SnapshotStatus)
	if p := s.SnapshotTables; p != nil && p.ChunksTotal > 0 {
		fmt.Fprintf(&b, " (phase %s: %d/%d tables, %d/%d chunks, %d rows, %s copied of about %s%s)", p.Phase,
			p.TablesDone, p.TablesTotal, p.ChunksDone, p.ChunksTotal, p.Rows, units.Bytes(p.Bytes), units.Bytes(p.EstBytes), p.rateText())
	}
	b.WriteString("\n")
	switch {
	case s.AppliedLSN != "" || s.AppliedBatch > 0:
		fmt.Fprintf(&b, "applied up to:   %s\n", s.Applied)
	default:
		fmt.Fprintf(&b, "applied up to:   nothing streamed yet (stream starts at %s)\n", s.startPoint())
	}
	if s.LastCommitTime != nil {
		fmt.Fprintf(&b, "last applied:    source commit of %s, position confirmed %s ago\n",
			s.LastCommitTime.UTC().Format(time.RFC3339), time.Since(*s.AppliedAt).Round(time.Second))
	}
	fmt.Fprintf(&b, "lag:             %s\n", s.lag())
	if s.BatchesBehind != nil {
		fmt.Fprintf(&b, "batches behind:  %d trigger-capture batches not yet applied\n", *s.BatchesBehind)
	}
	if sl := s.Slot; sl != nil {
		fmt.Fprintf(&b, "source slot:     %s, active=%t, confirmed %s, retains %s of WAL (%s)\n",
			sl.Name, sl.Active, orDash(sl.ConfirmedFlushLSN), units.Bytes(sl.RetainedWALBytes), orDash(sl.WALStatus))
	}
	if sc := s.SchemaChanges; sc != nil {
		fmt.Fprintf(&b, "schema changes:  %d seen, %d applied, %d stopped the stream; last (%s): %s\n",
			sc.Seen, sc.Applied, sc.Stopped, sc.LastAt.UTC().Format(time.RFC3339), sc.Last)
	}
	if line := s.pendingFKsLine(); line != "" {
		fmt.Fprintf(&b, "foreign keys:    %s\n", line)
	}
	fmt.Fprintf(&b, "last error:      %s\n", orDash(s.LastError))
	fmt.Fprintf(&b, "started:         %s, updated %s\n", s.StartedAt.UTC().Format(time.RFC3339), s.UpdatedAt.UTC().Format(time.RFC3339))
	io.WriteString(w, b.String())
}

// WriteMarkdown writes the status for a change ticket: the common report
// header (h: version, sides, times, fence; its Position is set here to the
// applied position), then the status rows.
func (s *Status) WriteMarkdown(w io.Writer, h report.Header) error {
	if h.Title == "" {
		h.Title = "Migration status"
	}
	h.Position = s.Applied
	var b strings.Builder
	if err := h.WriteMarkdown(&b); err != nil {
		return err
	}
	snap := s.SnapshotStatus
	if p := s.SnapshotTables; p != nil && p.ChunksTotal > 0 {
		snap += fmt.Sprintf(" (phase %s: %d/%d tables, %d/%d chunks, %d rows, %s copied of about %s%s)", p.Phase,
			p.TablesDone, p.TablesTotal, p.ChunksDone, p.ChunksTotal, p.Rows, units.Bytes(p.Bytes), units.Bytes(p.EstBytes), p.rateText())
	}
	rows := [][2]string{{"Capture", orDash(s.Capture)}, {"Direction", strings.ReplaceAll(s.directionLine(), "\nreverse stream:  ", "; reverse stream: ")},
		{"Snapshot", orDash(snap)}, {"Stream starts at", s.startPoint()}, {"Lag", s.lag()}}
	if s.LastCommitTime != nil {
		rows = append(rows, [2]string{"Last applied", "source commit of " + s.LastCommitTime.UTC().Format(time.RFC3339)})
	}
	if sl := s.Slot; sl != nil {
		rows = append(rows, [2]string{"Source slot", fmt.Sprintf("%s, active=%t, confirmed %s, retains %s of WAL (%s)",
			sl.Name, sl.Active, orDash(sl.ConfirmedFlushLSN), units.Bytes(sl.RetainedWALBytes), orDash(sl.WALStatus))})
	}
	if line := s.pendingFKsLine(); line != "" {
		rows = append(rows, [2]string{"Foreign keys", line})
	}
	rows = append(rows, [2]string{"Last error", orDash(s.LastError)},
		[2]string{"Migration started", s.StartedAt.UTC().Format(time.RFC3339)}, [2]string{"Bookkeeping updated", s.UpdatedAt.UTC().Format(time.RFC3339)})
	for _, r := range rows {
		report.WriteRow(&b, r[0], r[1])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// startPoint is where the stream starts, for a person.
func (s *Status) startPoint() string {
	switch {
	case s.ConsistentLSN != "":
		return "source LSN " + s.ConsistentLSN
	case s.SnapshotPoint != "":
		return "the copy's snapshot, " + s.SnapshotPoint
	}
	return "-"
}

// lag is the lag line for a person.
func (s *Status) lag() string {
	switch {
	case s.SourceLagBytes != nil:
		return fmt.Sprintf("%s of source WAL not yet applied, %.1f s", units.Bytes(*s.SourceLagBytes), *s.ApplyLagSeconds)
	case s.SourceLagChanges != nil:
		return fmt.Sprintf("%d captured changes not yet applied, %.1f s", *s.SourceLagChanges, *s.ApplyLagSeconds)
	case s.Capture == "":
		return "- (no capture recorded on the target)"
	}
	return "pass --source to see it"
}

// pendingFKsLine says which foreign keys are not validated yet; "" when
// none.
func (s *Status) pendingFKsLine() string {
	if len(s.PendingForeignKeys) == 0 {
		return ""
	}
	return fmt.Sprintf("%d created NOT VALID by the chunked copy, not validated yet (the stream validates them once it has caught up; cutover refuses until then): %s",
		len(s.PendingForeignKeys), strings.Join(s.PendingForeignKeys, "; "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
