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
	SourceLagBytes *int64    `json:"source_lag_bytes,omitempty"`
	Slot           *Slot     `json:"slot,omitempty"`
	LastError      string    `json:"last_error,omitempty"`
	StartedAt      time.Time `json:"started_at"`
	UpdatedAt      time.Time `json:"updated_at"`
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
		LastError: st.LastError, StartedAt: st.StartedAt, UpdatedAt: st.UpdatedAt}
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
	if source != nil && st.Capture == state.CaptureLogical {
		if err := s.readSource(ctx, source, st); err != nil {
			return nil, err
		}
	}
	return s, nil
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
	}
	return &p, nil
}

// WriteText writes the status for a person.
func (s *Status) WriteText(w io.Writer) {
	var b strings.Builder
	fmt.Fprintf(&b, "capture:         %s\n", s.Capture)
	fmt.Fprintf(&b, "snapshot:        %s", s.SnapshotStatus)
	if p := s.SnapshotTables; p != nil && p.ChunksTotal > 0 {
		fmt.Fprintf(&b, " (phase %s: %d/%d tables, %d/%d chunks, %d rows, %s copied of about %s)", p.Phase,
			p.TablesDone, p.TablesTotal, p.ChunksDone, p.ChunksTotal, p.Rows, units.Bytes(p.Bytes), units.Bytes(p.EstBytes))
	}
	b.WriteString("\n")
	switch {
	case s.AppliedLSN != "":
		fmt.Fprintf(&b, "applied up to:   %s\n", s.AppliedLSN)
	case s.AppliedBatch > 0:
		fmt.Fprintf(&b, "applied up to:   batch %d\n", s.AppliedBatch)
	default:
		fmt.Fprintf(&b, "applied up to:   nothing streamed yet (stream starts at %s)\n", orDash(s.ConsistentLSN))
	}
	if s.LastCommitTime != nil {
		fmt.Fprintf(&b, "last applied:    source commit of %s, position confirmed %s ago\n",
			s.LastCommitTime.UTC().Format(time.RFC3339), time.Since(*s.AppliedAt).Round(time.Second))
	}
	if s.SourceLagBytes != nil {
		fmt.Fprintf(&b, "lag:             %s of source WAL not yet applied, %.1f s\n", units.Bytes(*s.SourceLagBytes), *s.ApplyLagSeconds)
	} else {
		b.WriteString("lag:             pass --source to see lag in bytes and seconds\n")
	}
	if sl := s.Slot; sl != nil {
		fmt.Fprintf(&b, "source slot:     %s, active=%t, confirmed %s, retains %s of WAL (%s)\n",
			sl.Name, sl.Active, orDash(sl.ConfirmedFlushLSN), units.Bytes(sl.RetainedWALBytes), orDash(sl.WALStatus))
	}
	fmt.Fprintf(&b, "last error:      %s\n", orDash(s.LastError))
	fmt.Fprintf(&b, "started:         %s, updated %s\n", s.StartedAt.UTC().Format(time.RFC3339), s.UpdatedAt.UTC().Format(time.RFC3339))
	io.WriteString(w, b.String())
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
