package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/trigger"
)

// errConnectionLost is added to a run's error when a connection to either
// database dropped mid-run (a network cut, a server restart): the cause
// alone ("unexpected EOF") does not tell the user what to do.
var errConnectionLost = errors.New("the connection was lost (network cut or server restart): rerun `replicator snapshot` once both databases are reachable; it starts over cleanly")

// errConnectionLostResume is errConnectionLost for the chunked copy.
var errConnectionLostResume = errors.New("the connection was lost (network cut or server restart): rerun `replicator snapshot` once both databases are reachable; it resumes with the chunks not yet copied")

// withRerunHint wraps err with errConnectionLost (or, for the chunked
// copy, errConnectionLostResume) when it is a lost connection; other
// errors are returned as they are.
func withRerunHint(err error, oneSnapshot bool) error {
	if err == nil || !pgutil.IsConnectionLost(err) {
		return err
	}
	if !oneSnapshot {
		return fmt.Errorf("%w: %w", err, errConnectionLostResume)
	}
	return fmt.Errorf("%w: %w", err, errConnectionLost)
}

// ErrInterrupted is the cause of a run stopped by its context (SIGINT or
// SIGTERM at the command line): not a failure of either database.
var ErrInterrupted = errors.New("snapshot interrupted before it finished")

// interrupted describes a run stopped by its context: what it leaves on
// each side and the commands that go on from there. It looks with fresh
// connections (the run's own may have been closed by the cancellation),
// each allowed a few seconds.
func (r *run) interrupted() error {
	var left []string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if src, err := pgutil.Connect(ctx, r.cfg.SourceURL, "source"); err == nil {
		left = append(left, leftOnSource(ctx, src, r.cfg)...)
		src.Close(context.Background())
	} else if r.point != nil {
		left = append(left, "possibly a replication slot or capture triggers on the source (it could not be checked: "+err.Error()+")")
	}
	if r.marked {
		if dst, err := pgutil.Connect(ctx, r.cfg.TargetURL, "target"); err == nil {
			left = append(left, leftOnTarget(ctx, dst)...)
			dst.Close(context.Background())
		} else {
			left = append(left, "schema replicator and the tables copied so far on the target (it could not be checked: "+err.Error()+")")
		}
	}
	if len(left) == 0 {
		return fmt.Errorf("%w: nothing was created yet; run `replicator snapshot` again when ready", ErrInterrupted)
	}
	again := "it resets these and starts over"
	if !r.cfg.OneSnapshot {
		again = "it resumes with the chunks not yet copied"
	}
	return fmt.Errorf("%w; left behind: %s; next: run `replicator snapshot` again (%s), or `replicator cleanup --source URL --target URL --yes` to remove them",
		ErrInterrupted, strings.Join(left, "; "), again)
}

// leftOnSource lists the replication slot, publication and capture
// triggers a run created on the source.
func leftOnSource(ctx context.Context, src *pgx.Conn, cfg *Config) []string {
	var left []string
	var slot, pub bool
	// A slot still being created when the run was stopped goes away with
	// its walsender, which the server ends a moment after the run's
	// session closed: wait (briefly) until no process holds the slot
	// before saying whether it stays.
	for deadline := time.Now().Add(3 * time.Second); ; {
		var active bool
		err := src.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1),
			EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL)`, cfg.SlotName).Scan(&slot, &active)
		if err != nil || !active || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if src.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)`, cfg.Publication).Scan(&pub) == nil {
		if slot {
			left = append(left, fmt.Sprintf("replication slot %s on the source (it retains WAL until dropped)", cfg.SlotName))
		}
		if pub {
			left = append(left, fmt.Sprintf("publication %s on the source", cfg.Publication))
		}
	}
	var triggers, tables int
	if src.QueryRow(ctx, `SELECT count(*), count(DISTINCT tgrelid) FROM pg_trigger WHERE tgname = ANY ($1)`,
		trigger.TriggerNames()).Scan(&triggers, &tables) == nil && triggers > 0 {
		left = append(left, fmt.Sprintf("%d capture triggers on %d source tables, recording every change into replicator.changelog on the source", triggers, tables))
	}
	var changelog bool
	if src.QueryRow(ctx, `SELECT to_regclass('replicator.changelog') IS NOT NULL`).Scan(&changelog) == nil && changelog {
		left = append(left, "schema replicator on the source (changelog and ticks of trigger capture)")
	}
	return left
}

// leftOnTarget lists the tables and bookkeeping a run created on the
// target.
func leftOnTarget(ctx context.Context, dst *pgx.Conn) []string {
	var left []string
	var tables int
	if dst.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('information_schema', 'replicator') AND n.nspname NOT LIKE 'pg\_%'`).Scan(&tables) == nil && tables > 0 {
		left = append(left, fmt.Sprintf("%d tables on the target, partly copied", tables))
	}
	left = append(left, "schema replicator on the target (its state says the copy did not finish)")
	return left
}
