package snapshot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// ErrCaptureUnavailable is returned when the chosen change capture cannot
// be set up in this version or on this source.
var ErrCaptureUnavailable = errors.New("change capture not available")

// CapturePoint is where change capture begins: the name of a snapshot
// exported by the source, whose data the copy reads, and the bookkeeping
// that tells the stream where the changes after that snapshot start.
type CapturePoint struct {
	SnapshotName string
	// State holds Capture and the position fields (SlotName, Publication,
	// ConsistentLSN for logical; SnapshotXmin for trigger capture).
	State state.State
}

// Capture creates the point where change capture begins, on the source.
//
// Contract: Start is called once; it returns a snapshot that stays
// importable (SET TRANSACTION SNAPSHOT) until Release is called, and whose
// visible rows are exactly those that precede the first change the stream
// will deliver: no gap and no duplicate. Release may be called more than
// once and after a failed Start. Close stops what Start left running for
// the rest of the run (trigger capture's ticker), when the run ends; it
// returns once that has stopped, may be repeated, and is a no-op when
// nothing runs. Reset removes what an interrupted earlier run left on the
// source so that Start can run again; it may be repeated.
type Capture interface {
	Reset(ctx context.Context) error
	Start(ctx context.Context) (*CapturePoint, error)
	Release(ctx context.Context) error
	Close()
}

// logicalCapture is a pgoutput slot created over the replication protocol
// with an exported snapshot, plus a FOR ALL TABLES publication.
type logicalCapture struct {
	sourceURL   string
	slot        string
	publication string
	log         *zap.Logger
	repl        *pgconn.PgConn
}

// Reset drops the slot an interrupted run left behind. A killed run's
// walsender may still hold it for a moment; it is ended first (the slot is
// ours: the target's state row names it).
func (c *logicalCapture) Reset(ctx context.Context) error {
	conn, err := connect(ctx, c.sourceURL, "source", nil)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	for attempt := 0; attempt < 50; attempt++ {
		var exists bool
		var pid *int32
		err := conn.QueryRow(ctx, `SELECT true, active_pid FROM pg_replication_slots WHERE slot_name = $1`, c.slot).Scan(&exists, &pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up slot %s on the source: %w", c.slot, err)
		}
		if pid != nil {
			conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *pid)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, c.slot); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.ObjectInUse || pgErr.Code == pgerrcode.UndefinedObject) { // in use again, or gone
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("drop the interrupted run's slot %s on the source: %w", c.slot, err)
		}
		c.log.Info("dropped the interrupted run's replication slot", zap.String("slot", c.slot))
		return nil
	}
	return fmt.Errorf("slot %s on the source stays in use: stop whatever reads it, then run again", c.slot)
}

func (c *logicalCapture) Start(ctx context.Context) (*CapturePoint, error) {
	conn, err := connect(ctx, c.sourceURL, "source", nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	// The publication comes first: it must exist when the stream starts
	// decoding, and any existing FOR ALL TABLES one of that name is reused
	// (preflight refused one that is not FOR ALL TABLES).
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, c.publication).Scan(&exists); err != nil {
		return nil, fmt.Errorf("look up publication %s on the source: %w", c.publication, err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE PUBLICATION "+pgutil.QuoteIdent(c.publication)+" FOR ALL TABLES"); err != nil {
			return nil, fmt.Errorf("create publication %s on the source: %w", c.publication, err)
		}
		c.log.Info("created publication", zap.String("publication", c.publication))
	}

	c.repl, err = pgutil.ConnectReplication(ctx, c.sourceURL, "source")
	if err != nil {
		return nil, err
	}
	// EXPORT_SNAPSHOT (spelled (SNAPSHOT 'export') since PG 15, which still
	// accepts this form) makes the slot's consistent point and the exported
	// snapshot the same instant: every transaction committed before it is
	// visible in the snapshot, every later one is decoded by the slot.
	res, err := pglogrepl.CreateReplicationSlot(ctx, c.repl, c.slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		c.Release(ctx)
		return nil, fmt.Errorf("create replication slot %s on the source: %w", c.slot, err)
	}
	c.log.Info("created replication slot with an exported snapshot",
		zap.String("slot", c.slot), zap.String("consistent_lsn", res.ConsistentPoint), zap.String("snapshot", res.SnapshotName))
	return &CapturePoint{
		SnapshotName: res.SnapshotName,
		State: state.State{Capture: state.CaptureLogical, SlotName: c.slot, Publication: c.publication,
			ConsistentLSN: res.ConsistentPoint},
	}, nil
}

// Release closes the replication session. The exported snapshot can no
// longer be imported afterwards; the slot stays.
func (c *logicalCapture) Release(ctx context.Context) error {
	if c.repl == nil {
		return nil
	}
	err := c.repl.Close(ctx)
	c.repl = nil
	return err
}

// Close has nothing to stop: the slot and publication stay for the
// stream, and Release closed the replication session.
func (c *logicalCapture) Close() {}

var (
	_ Capture = (*logicalCapture)(nil)
	_ Capture = (*triggerCapture)(nil)
)

// newCapture picks the capture for mode, already resolved by preflight.
func newCapture(mode string, cfg *Config, log *zap.Logger) (Capture, error) {
	switch mode {
	case CaptureLogical:
		return &logicalCapture{sourceURL: cfg.SourceURL, slot: cfg.SlotName, publication: cfg.Publication, log: log}, nil
	case CaptureTrigger:
		return &triggerCapture{sourceURL: cfg.SourceURL, cfg: cfg.Trigger, log: log}, nil
	default:
		return nil, fmt.Errorf("%w: capture mode %q", ErrCaptureUnavailable, mode)
	}
}
