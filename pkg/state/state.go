package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/position"
)

// Schema is the name of the bookkeeping schema on the target (and, for
// trigger capture, on the source).
const Schema = "replicator"

// ErrNoMigration is returned by Load when the target holds no migration
// state yet (no snapshot was started against it).
var ErrNoMigration = errors.New("the target holds no replicator state: run `replicator snapshot` (or `replicator run`) first")

// Default names of what the snapshot creates on the source for logical
// capture. The publication is FOR ALL TABLES with the default
// publish_via_partition_root = false, so changes of partitioned tables
// arrive for their leaf partitions.
const (
	DefaultSlot        = "replicator"
	DefaultPublication = "replicator"
)

// Capture modes.
const (
	CaptureLogical = "logical"
	CaptureTrigger = "trigger"
)

// Snapshot statuses, in order.
const (
	SnapshotCopying = "copying" // schema created, data being copied
	SnapshotDone    = "done"    // data, indexes, constraints and sequences in place
)

// State is the single row of replicator.state.
type State struct {
	Capture        string
	SlotName       string // logical: replication slot on the source
	Publication    string // logical: publication on the source
	ConsistentLSN  string // logical: where the stream starts (pg_lsn text)
	SnapshotXmin   string // trigger: pg_current_snapshot() of the copy
	SnapshotStatus string
	// Applied is the source position of the last source transaction
	// applied to the target: for logical capture the end LSN of its commit
	// (the zero Position before the first), for trigger capture its
	// changelog batch id (batch 0, the copy's tick, before the first).
	Applied           position.Position
	AppliedCommitTime time.Time // source commit time of the last applied transaction
	AppliedAt         time.Time // when it was applied
	LastError         string
	StartedAt         time.Time
	UpdatedAt         time.Time
}

// DB is what this package needs of a connection or transaction.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

const ddl = `
CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.state (
	id                  int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
	capture             text NOT NULL,
	slot_name           text,
	publication         text,
	consistent_lsn      pg_lsn,
	snapshot_xmin       text,
	snapshot_status     text NOT NULL,
	applied_lsn         pg_lsn,
	applied_batch       bigint NOT NULL DEFAULT 0,
	applied_commit_time timestamptz,
	applied_at          timestamptz,
	last_error          text,
	started_at          timestamptz NOT NULL DEFAULT now(),
	updated_at          timestamptz NOT NULL DEFAULT now()
);`

// EnsureSchema creates schema replicator and its state table when missing.
// It may be repeated.
func EnsureSchema(ctx context.Context, db DB) error {
	if _, err := db.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create schema replicator on the target: %w", err)
	}
	return nil
}

// Load reads the state row; ErrNoMigration when there is none.
func Load(ctx context.Context, db DB) (*State, error) {
	var s State
	var slot, pub, clsn, xmin, lastErr *string
	var act, aat *time.Time
	var alsn position.Position
	batch := position.Batch(0)
	err := db.QueryRow(ctx, `SELECT capture, slot_name, publication, consistent_lsn::text, snapshot_xmin,
		snapshot_status, applied_lsn, applied_batch, applied_commit_time, applied_at, last_error,
		started_at, updated_at FROM replicator.state WHERE id = 1`).Scan(
		&s.Capture, &slot, &pub, &clsn, &xmin, &s.SnapshotStatus, &alsn, &batch, &act, &aat,
		&lastErr, &s.StartedAt, &s.UpdatedAt)
	var pgErr *pgconn.PgError
	if errors.Is(err, pgx.ErrNoRows) || (errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName)) {
		return nil, ErrNoMigration
	}
	if err != nil {
		return nil, fmt.Errorf("read replicator.state on the target: %w", err)
	}
	s.SlotName, s.Publication, s.ConsistentLSN = deref(slot), deref(pub), deref(clsn)
	s.SnapshotXmin, s.LastError = deref(xmin), deref(lastErr)
	// Each capture mode keeps its position in its own column; the other
	// one stays at its default.
	if s.Capture == CaptureTrigger {
		s.Applied = batch
	} else {
		s.Applied = alsn
	}
	if act != nil {
		s.AppliedCommitTime = *act
	}
	if aat != nil {
		s.AppliedAt = *aat
	}
	return &s, nil
}

// Begin records a new migration, replacing any earlier row. Call it in the
// transaction (or before the work) that starts the snapshot.
func Begin(ctx context.Context, db DB, s *State) error {
	if err := EnsureSchema(ctx, db); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `INSERT INTO replicator.state (id, capture, slot_name, publication, consistent_lsn,
		snapshot_xmin, snapshot_status) VALUES (1, $1, nullif($2,''), nullif($3,''), nullif($4,'')::pg_lsn, nullif($5,''), $6)
		ON CONFLICT (id) DO UPDATE SET capture = EXCLUDED.capture, slot_name = EXCLUDED.slot_name,
		publication = EXCLUDED.publication, consistent_lsn = EXCLUDED.consistent_lsn,
		snapshot_xmin = EXCLUDED.snapshot_xmin, snapshot_status = EXCLUDED.snapshot_status,
		applied_lsn = NULL, applied_batch = 0, applied_commit_time = NULL, applied_at = NULL,
		last_error = NULL, started_at = now(), updated_at = now()`,
		s.Capture, s.SlotName, s.Publication, s.ConsistentLSN, s.SnapshotXmin, s.SnapshotStatus)
	if err != nil {
		return fmt.Errorf("record migration state on the target: %w", err)
	}
	return nil
}

// SetSnapshotStatus moves the snapshot to status.
func SetSnapshotStatus(ctx context.Context, db DB, status string) error {
	_, err := db.Exec(ctx, `UPDATE replicator.state SET snapshot_status = $1, updated_at = now() WHERE id = 1`, status)
	if err != nil {
		return fmt.Errorf("record snapshot status %s on the target: %w", status, err)
	}
	return nil
}

// RecordApplied stores the position and commit time of the last applied
// source transaction: an LSN (logical capture) into applied_lsn, a
// changelog batch (trigger capture) into applied_batch. It must run in the
// same target transaction as the changes it covers.
func RecordApplied(ctx context.Context, tx DB, pos position.Position, commitTime time.Time) error {
	var column string
	switch pos.Kind() {
	case position.KindLSN:
		column = "applied_lsn"
	case position.KindBatch:
		column = "applied_batch"
	default:
		return fmt.Errorf("record applied position on the target: %s is not the position of a source transaction", pos)
	}
	_, err := tx.Exec(ctx, `UPDATE replicator.state SET `+column+` = $1, applied_commit_time = $2,
		applied_at = now(), updated_at = now(), last_error = NULL WHERE id = 1`, pos, commitTime)
	if err != nil {
		return fmt.Errorf("record applied position %s on the target: %w", pos, err)
	}
	return nil
}

// RecordError stores the last error (already free of credentials) so that
// `replicator status` can show it.
func RecordError(ctx context.Context, db DB, msg string) error {
	_, err := db.Exec(ctx, `UPDATE replicator.state SET last_error = $1, updated_at = now() WHERE id = 1`, msg)
	return err
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// Advisory locks (session level, on the target database) held by the
// replicator's long-running work, so that a second one refuses to start
// and cleanup can tell that work is still running.
const (
	// StreamLockKey is held by a stream for as long as it runs ("repl").
	StreamLockKey int64 = 0x7265706c
	// SnapshotLockKey is held by a snapshot for its whole run ("replicat").
	SnapshotLockKey int64 = 0x7265706c69636174
)

// LockHeld reports whether another session holds the advisory lock key
// in db's database. It reads pg_locks and takes nothing, so it cannot
// get in the way of the work that holds or is about to take the lock.
func LockHeld(ctx context.Context, db DB, key int64) (bool, error) {
	var held bool
	// pg_locks shows a bigint key as its high and low 32 bits in classid
	// and objid, with objsubid 1.
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
		WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted AND l.objsubid = 1
		AND l.classid::bigint = ($1::bigint >> 32) AND l.objid::bigint = ($1::bigint & 4294967295)
		AND l.pid <> pg_backend_pid())`, key).Scan(&held)
	if err != nil {
		return false, fmt.Errorf("target: read pg_locks: %w", err)
	}
	return held, nil
}
