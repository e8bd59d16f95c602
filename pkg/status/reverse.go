package status

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReverseStatus is the fallback window's reverse stream (pkg/cutover
// reverse.go): the target's changes applied to the source. Its state lives
// in replicator.state on the source, its capture in schema replicator on
// the target, so it is known only with a source connection.
type ReverseStatus struct {
	AppliedBatch int64      `json:"applied_batch"`
	AppliedAt    *time.Time `json:"applied_at,omitempty"`
	// BatchesBehind are the target's closed batches the source has not
	// applied; LagSeconds is 0 when nothing the applied batch's tick does
	// not see waits in the target's changelog, else that tick's age.
	BatchesBehind int64   `json:"batches_behind"`
	LagSeconds    float64 `json:"lag_seconds"`
	// Running: a reverse stream holds its lock on the source now.
	Running   bool   `json:"running"`
	LastError string `json:"last_error,omitempty"`
}

// readDirection sets Direction from the cutover's records on the target:
// "reverse" once the cutover installed capture on the target (step
// reverse), "forward" otherwise, also after a rollback. With a source
// connection it reads the reverse stream's position and lag.
func (s *Status) readDirection(ctx context.Context, target, source *pgx.Conn) error {
	s.Direction = "forward"
	var steps []string
	rows, err := target.Query(ctx, `SELECT step FROM replicator.cutover WHERE step IN ('reverse', 'rollback') AND status = 'done'`)
	if err == nil {
		steps, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil {
		return nil // no cutover has run: no table
	}
	for _, st := range steps {
		switch st {
		case "reverse":
			s.Direction = "reverse"
		case "rollback":
			s.RolledBack = true
		}
	}
	if s.Direction != "reverse" || source == nil {
		return nil
	}
	r := &ReverseStatus{}
	var lastErr *string
	if err := source.QueryRow(ctx, `SELECT applied_batch, applied_at, last_error FROM replicator.state WHERE id = 1`).Scan(&r.AppliedBatch, &r.AppliedAt, &lastErr); err != nil {
		return fmt.Errorf("source: read the reverse stream's replicator.state: %w", err)
	}
	if lastErr != nil {
		r.LastError = *lastErr
	}
	if err := source.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted AND l.objsubid = 1
		AND l.classid::bigint = (x'7265706c'::bigint >> 32) AND l.objid::bigint = (x'7265706c'::bigint & 4294967295))`).Scan(&r.Running); err != nil {
		return fmt.Errorf("source: read pg_locks: %w", err)
	}
	var pending bool
	var age *float64
	if err := target.QueryRow(ctx, `SELECT greatest(coalesce((SELECT max(id) FROM replicator.ticks), 0) - $1, 0),
			EXISTS (SELECT 1 FROM replicator.changelog c WHERE NOT pg_visible_in_snapshot(c.txid, (SELECT snap FROM replicator.ticks WHERE id = $1))),
			(SELECT greatest(extract(epoch FROM now() - at), 0)::float8 FROM replicator.ticks WHERE id = $1)`,
		r.AppliedBatch).Scan(&r.BatchesBehind, &pending, &age); err != nil {
		return fmt.Errorf("target: read the reverse capture's replicator.ticks and replicator.changelog: %w", err)
	}
	if (pending || r.BatchesBehind > 1) && age != nil {
		r.LagSeconds = *age
	}
	s.Reverse = r
	return nil
}

// directionLine is the text of the direction line.
func (s *Status) directionLine() string {
	var b strings.Builder
	switch s.Direction {
	case "reverse":
		b.WriteString("reverse (target → source: the fallback window; `replicator reverse` carries the app's writes on the target back; `replicator cutover --rollback` falls back)")
		if r := s.Reverse; r != nil {
			run := "running"
			if !r.Running {
				run = "NOT running: start `replicator reverse`"
			}
			fmt.Fprintf(&b, "\nreverse stream:  %s; applied target batch %d; lag %.1f s, %d batches behind", run, r.AppliedBatch, r.LagSeconds, r.BatchesBehind)
			if r.LastError != "" {
				b.WriteString("; last error: " + r.LastError)
			}
		}
	default:
		b.WriteString(s.Direction + " (source → target)")
		if s.RolledBack {
			b.WriteString("; rolled back by `cutover --rollback`: the source is the primary again and the target is fenced")
		}
	}
	return b.String()
}
