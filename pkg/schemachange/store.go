package schemachange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// What is kept on the target, in schema replicator: the catalog the target
// reflects (one row), and one row per schema change seen, with what was
// done about it (for `replicator status`).
const storeDDL = `CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.schema_catalog (
	one bool PRIMARY KEY DEFAULT true CHECK (one),
	catalog jsonb NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS replicator.schema_changes (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	action text NOT NULL,
	change text NOT NULL
)`

// Actions recorded, and the label values of replicator_schema_changes_total.
const (
	ActionApplied  = "applied"  // applied to the target by the stream
	ActionMatched  = "matched"  // the target already had it (made there by hand)
	ActionStopped  = "stopped"  // stopped the stream
	ActionBuilding = "building" // an index build started in the background
)

func loadStored(ctx context.Context, conn *pgx.Conn) (*Catalog, error) {
	if _, err := conn.Exec(ctx, storeDDL); err != nil {
		return nil, fmt.Errorf("target: create replicator.schema_catalog: %w", err)
	}
	var raw []byte
	err := conn.QueryRow(ctx, `SELECT catalog FROM replicator.schema_catalog`).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("target: read replicator.schema_catalog: %w", err)
	}
	c := &Catalog{}
	if err := json.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("target: replicator.schema_catalog does not decode (%v): delete its row and restart the stream", err)
	}
	if c.Tables == nil {
		c.Tables = map[uint32]*Table{}
	}
	return c, nil
}

func saveStored(ctx context.Context, tx pgx.Tx, c *Catalog) error {
	raw, err := json.Marshal(c)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO replicator.schema_catalog (catalog) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET catalog = EXCLUDED.catalog, updated_at = now()`, raw)
	if err != nil {
		return fmt.Errorf("target: record the schema catalog: %w", err)
	}
	return nil
}

func recordChange(ctx context.Context, tx pgx.Tx, action string, c Change) error {
	if _, err := tx.Exec(ctx, `INSERT INTO replicator.schema_changes (action, change) VALUES ($1, $2)`, action, c.String()); err != nil {
		return fmt.Errorf("target: record the schema change: %w", err)
	}
	return nil
}

// Summary is what `replicator status` shows of schema changes.
type Summary struct {
	Seen, Applied, Stopped int64
	Last                   string // the last change and what was done, e.g. "applied: column public.users.email was added …"
	LastAt                 time.Time
}

// ReadSummary reads the schema changes recorded on the target; the zero
// Summary when none was.
func ReadSummary(ctx context.Context, conn *pgx.Conn) (Summary, error) {
	var s Summary
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('replicator.schema_changes') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return s, err
	}
	err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE action IN ('applied', 'matched')),
			count(*) FILTER (WHERE action = 'stopped') FROM replicator.schema_changes WHERE action <> 'building'`).Scan(&s.Seen, &s.Applied, &s.Stopped)
	if err != nil {
		return s, fmt.Errorf("target: read replicator.schema_changes: %w", err)
	}
	err = conn.QueryRow(ctx, `SELECT action || ': ' || change, at FROM replicator.schema_changes ORDER BY id DESC LIMIT 1`).Scan(&s.Last, &s.LastAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	return s, err
}
