package state

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// PendingFKsDDL creates replicator.pending_fks: the foreign keys a chunked
// copy created NOT VALID (pkg/snapshot) and not validated yet.
const PendingFKsDDL = `CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.pending_fks (
	table_name text NOT NULL,
	constraint_name text NOT NULL,
	last_error text,
	tried_at timestamptz,
	PRIMARY KEY (table_name, constraint_name)
)`

// ForeignKey is one foreign key the copy created NOT VALID, as SQL names
// it: Table qualified and quoted, Name quoted.
type ForeignKey struct {
	Table, Name string
	// LastError is why the last VALIDATE failed; "" before any try.
	LastError string
}

func (k ForeignKey) String() string { return k.Name + " on " + k.Table }

// PendingForeignKeys lists the foreign keys a chunked copy created NOT
// VALID and that are not validated yet; none when there are none or the
// target holds no such record.
func PendingForeignKeys(ctx context.Context, target *pgx.Conn) ([]ForeignKey, error) {
	var exists bool
	if err := target.QueryRow(ctx, `SELECT to_regclass('replicator.pending_fks') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return nil, err
	}
	rows, err := target.Query(ctx, `SELECT table_name, constraint_name, coalesce(last_error, '') FROM replicator.pending_fks ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("read replicator.pending_fks on the target: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (k ForeignKey, err error) {
		return k, r.Scan(&k.Table, &k.Name, &k.LastError)
	})
	if err != nil {
		return nil, fmt.Errorf("read replicator.pending_fks on the target: %w", err)
	}
	return keys, nil
}
