package trigger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// CapturePoint is where trigger capture hands over from the copy: an
// exported snapshot that the copy workers import, and the same snapshot's
// pg_current_snapshot() recorded as tick 0 (the start position).
//
// Why this has no gap and no duplicate: the triggers were installed (and
// committed) before the snapshot was taken, and creating a trigger waits
// for every running writer of its table. So each change of a captured
// table is either in a transaction visible in the snapshot, whose rows the
// copy reads, or it was recorded in the changelog by its trigger. Batches
// hold exactly the changelog rows whose transaction is not visible in tick
// 0 (pg_visible_in_snapshot), so each change reaches the target once,
// through the copy or through a batch.
type CapturePoint struct {
	// SnapshotName is what the copy workers pass to SET TRANSACTION
	// SNAPSHOT. It can be imported until Release.
	SnapshotName string
	// Snapshot is the text of pg_current_snapshot() in the exported
	// snapshot ("xmin:xmax:xip,…"): tick 0, recorded on the target as
	// state.SnapshotXmin.
	Snapshot string

	conn *pgx.Conn
	log  *zap.Logger
}

// StartCapturePoint opens the exporting transaction on the source and
// records tick 0. Install must have run: it refuses when a table of the
// source has no capture trigger, since its changes would be lost.
// The caller must call Release once the copy workers have imported the
// snapshot (or on failure); the exporting transaction stays open until
// then.
func StartCapturePoint(ctx context.Context, sourceURL string, log *zap.Logger) (*CapturePoint, error) {
	conn, err := pgutil.Connect(ctx, sourceURL, "source")
	if err != nil {
		return nil, err
	}
	p := &CapturePoint{conn: conn, log: log}
	if err := p.start(ctx); err != nil {
		p.Release(ctx)
		return nil, err
	}
	return p, nil
}

func (p *CapturePoint) start(ctx context.Context) error {
	if err := CheckInstalled(ctx, p.conn); err != nil {
		return err
	}
	if _, err := p.conn.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`); err != nil {
		return fmt.Errorf("open the capture point transaction on the source: %w", err)
	}
	// One statement: in REPEATABLE READ its snapshot is the transaction's,
	// so the exported snapshot and pg_current_snapshot() are one and the
	// same instant.
	if err := p.conn.QueryRow(ctx, `SELECT pg_export_snapshot(), pg_current_snapshot()::text`).Scan(&p.SnapshotName, &p.Snapshot); err != nil {
		return fmt.Errorf("export the capture point snapshot on the source: %w", err)
	}
	// Tick 0 is written by another session: the exporting transaction
	// stays read-only. Ticks of an earlier migration go: a new capture
	// point starts a new numbering, as state.Begin starts a new migration.
	cfg := p.conn.Config().Copy()
	tickConn, err := pgutil.ConnectConfig(ctx, cfg, "source")
	if err != nil {
		return err
	}
	defer tickConn.Close(ctx)
	err = pgx.BeginFunc(ctx, tickConn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE replicator.ticks IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM replicator.ticks`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO replicator.ticks (id, snap, at) VALUES (0, $1::pg_snapshot, now())`, p.Snapshot)
		return err
	})
	if err != nil {
		return fmt.Errorf("record tick 0 (snapshot %s) on the source: %w", p.Snapshot, err)
	}
	p.log.Info("trigger capture point taken", zap.String("snapshot", p.Snapshot), zap.String("exported", p.SnapshotName))
	return nil
}

// State is the bookkeeping the target records for this capture point
// (state.Begin): trigger capture starting after tick 0.
func (p *CapturePoint) State() state.State {
	return state.State{Capture: state.CaptureTrigger, SnapshotXmin: p.Snapshot}
}

// Release ends the exporting transaction; the snapshot can no longer be
// imported. It may be called more than once, and after a failed start.
func (p *CapturePoint) Release(ctx context.Context) error {
	if p.conn == nil {
		return nil
	}
	p.conn.Exec(ctx, `ROLLBACK`)
	err := p.conn.Close(ctx)
	p.conn = nil
	return err
}

// ErrEarlierInstall is what CheckInstalled's error wraps when capture is
// complete but some tables are still captured as an earlier version
// installed it (see EarlierRowTrigger): Upgrade replaces that layout.
var ErrEarlierInstall = errors.New("trigger capture installed by an earlier version")

// CheckInstalled returns an error naming the tables of the source whose
// changes capture would miss, and the fix: a table without its capture
// triggers (created after Install, or never installed), a capture trigger
// disabled, or a row trigger whose key columns are no longer the table's
// key (the key was changed since install). A column added, dropped,
// renamed or retyped is not among them: the capture functions record each
// row as it is at the time of the write (see rowFunctionDDL). When the
// only problem is tables captured by an earlier version's layout (their
// changes are recorded, by the one trigger EarlierRowTrigger), the error
// wraps ErrEarlierInstall.
func CheckInstalled(ctx context.Context, conn *pgx.Conn) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('replicator.changelog') IS NOT NULL AND to_regclass('replicator.ticks') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("look for the changelog on the source: %w", err)
	}
	if !exists {
		return fmt.Errorf("source has no trigger capture installed (schema replicator with its changelog and capture functions): install it first")
	}
	tables, err := ListTables(ctx, conn)
	if err != nil {
		return err
	}
	// Every capture trigger of the source, with the function it calls,
	// whether it fires, and its arguments.
	rows, err := conn.Query(ctx, `SELECT t.tgrelid, t.tgname, n.nspname || '.' || p.proname, t.tgenabled::text, t.tgargs
		FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE t.tgname = ANY ($1) AND NOT t.tgisinternal`, TriggerNames())
	if err != nil {
		return fmt.Errorf("look up the capture triggers on the source: %w", err)
	}
	type trig struct {
		function string
		enabled  string
		args     []string
	}
	found := map[uint32]map[string]trig{}
	for rows.Next() {
		var rel uint32
		var name, function, enabled string
		var raw []byte
		if err := rows.Scan(&rel, &name, &function, &enabled, &raw); err != nil {
			rows.Close()
			return fmt.Errorf("look up the capture triggers on the source: %w", err)
		}
		// Each argument ends with a NUL.
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if found[rel] == nil {
			found[rel] = map[string]trig{}
		}
		found[rel][name] = trig{function: function, enabled: enabled, args: args}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up the capture triggers on the source: %w", err)
	}
	current := map[string]string{TruncateTrigger: truncateFunc}
	for _, rt := range rowTriggers {
		current[rt.name] = rt.function
	}
	// What a table captured by the earlier layout has.
	earlierLayout := map[string]string{TruncateTrigger: truncateFunc, EarlierRowTrigger: earlierRowFunc}
	var missing, earlier []string
	for _, t := range tables {
		want := current
		_, hasEarlier := found[t.ID][EarlierRowTrigger]
		_, hasInsert := found[t.ID][InsertTrigger]
		if hasEarlier && !hasInsert {
			want = earlierLayout
		}
		var prob string
		// In a fixed order, so that the message names the first problem.
		for _, name := range TriggerNames() {
			fn, wanted := want[name]
			tr, ok := found[t.ID][name]
			switch {
			case prob != "":
			case !wanted && ok:
				// Both layouts at once would record every write twice.
				prob = fmt.Sprintf("%s (trigger %s of an earlier version is left beside the current ones)", t, name)
			case !wanted:
			case !ok || tr.function != fn:
				prob = t.String()
			case tr.enabled != "A":
				prob = fmt.Sprintf("%s (trigger %s is not enabled ALWAYS)", t, name)
			case name != TruncateTrigger && t.Root == t.ID && !slices.Equal(tr.args, rowArgs(t)):
				prob = fmt.Sprintf("%s (its key changed since install: the trigger records %s)", t, describeArgs(tr.args))
			}
		}
		switch {
		case prob != "":
			missing = append(missing, prob)
		case hasEarlier:
			earlier = append(earlier, t.String())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("source tables without capture triggers: %s: install trigger capture again (it is idempotent)", listSome(missing))
	}
	if len(earlier) > 0 {
		return fmt.Errorf("%w: source tables captured by its one trigger %s each: %s: install trigger capture again, which replaces it by a trigger per operation", ErrEarlierInstall, EarlierRowTrigger, listSome(earlier))
	}
	return nil
}

func listSome(names []string) string {
	if len(names) > 10 {
		names = append(names[:10:10], fmt.Sprintf("and %d more", len(names)-10))
	}
	return strings.Join(names, ", ")
}

// describeArgs names the key a row trigger's arguments record.
func describeArgs(args []string) string {
	if len(args) <= 1 {
		return "every column as the key"
	}
	return "key (" + strings.Join(args[1:], ", ") + ")"
}
