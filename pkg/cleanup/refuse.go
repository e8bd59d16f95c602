package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/state"
)

// ErrBusy is returned when the migration is still in use: the source is
// fenced by a cutover, or a stream is running. Options.Force overrides it.
var ErrBusy = errors.New("the migration is still in use")

// Options adjust Run.
type Options struct {
	// Force removes the replicator's objects although the source is fenced
	// or a stream runs (never an active slot: the server refuses to drop
	// it). The fence itself is always left in place, and with it the
	// fence's record on the target: see Busy.Leaves.
	Force bool
}

// Busy says why cleanup should not run now and what a forced run leaves.
type Busy struct {
	// Reasons name what is in use, each with the command that ends it.
	Reasons []string
	// Leaves are the objects a forced cleanup leaves behind, and why.
	Leaves []string
	// Fenced is true when the source carries a cutover fence.
	Fenced bool
}

// fenceSchema and fenceTrigger are the trigger fence's objects on the
// source (see pkg/cutover fence_trigger.go); cleanup never removes them:
// only `replicator cutover --unfence` lifts a fence.
const (
	fenceSchema  = "replicator_fence"
	fenceTrigger = "replicator_fence"
)

// CheckBusy looks for a fence on the source (the target's record in
// replicator.cutover, or fence triggers on the source) and for a running
// stream or snapshot (their advisory locks on the target).
func CheckBusy(ctx context.Context, source, target *pgx.Conn) (*Busy, error) {
	b := &Busy{}
	var recorded bool
	err := target.QueryRow(ctx, `SELECT to_regclass('replicator.cutover') IS NOT NULL`).Scan(&recorded)
	if err != nil {
		return nil, fmt.Errorf("target: look for replicator.cutover: %w", err)
	}
	if recorded {
		if err := target.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM replicator.cutover WHERE step = 'fence')`).Scan(&recorded); err != nil {
			return nil, fmt.Errorf("target: read replicator.cutover: %w", err)
		}
	}
	var triggers int
	if err := source.QueryRow(ctx, `SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
		JOIN pg_namespace n ON n.oid = p.pronamespace WHERE t.tgname = $1 AND n.nspname = $2`, fenceTrigger, fenceSchema).Scan(&triggers); err != nil {
		return nil, fmt.Errorf("source: look for fence triggers: %w", err)
	}
	if recorded || triggers > 0 {
		b.Fenced = true
		what := "the source is fenced by a cutover (recorded in replicator.cutover on the target)"
		if !recorded {
			what = fmt.Sprintf("the source is fenced by a cutover (fence trigger on %d tables)", triggers)
		}
		b.Reasons = append(b.Reasons, what+": lift it with `replicator cutover --unfence` first")
		if triggers > 0 {
			b.Leaves = append(b.Leaves, fmt.Sprintf("source schema %s and the fence trigger on %d tables (the app stays refused until --unfence)", fenceSchema, triggers))
		}
		if recorded {
			b.Leaves = append(b.Leaves, "target table replicator.cutover (the fence's record, which --unfence needs)")
		}
	}
	// The stream and the snapshot each hold an advisory lock on the
	// target for as long as they run: a held lock is running work, however
	// quiet, and a released one is stopped work, however recent.
	for _, w := range []struct {
		key  int64
		what string
	}{
		{state.StreamLockKey, "a stream is running on the target: stop `replicator stream`/`run` (SIGTERM) first"},
		{state.SnapshotLockKey, "a snapshot is running on the target: let it finish or stop it (SIGINT) first"},
	} {
		held, err := state.LockHeld(ctx, target, w.key)
		if err != nil {
			return nil, err
		}
		if held {
			b.Reasons = append(b.Reasons, w.what)
		}
	}
	// The reverse stream (`replicator reverse`, the fallback window) holds
	// the stream lock on the source, whose database it writes.
	held, err := state.LockHeld(ctx, source, state.StreamLockKey)
	if err != nil {
		return nil, err
	}
	if held {
		b.Reasons = append(b.Reasons, "the reverse stream is running (it carries the app's writes on the target back to the source): stop `replicator reverse` (SIGTERM) first")
	}
	return b, nil
}

// RunWith is Run with options: without Force it refuses (ErrBusy) while
// CheckBusy finds the source fenced or a stream running.
func RunWith(ctx context.Context, source, target *pgx.Conn, opt Options) ([]Object, error) {
	b, err := CheckBusy(ctx, source, target)
	if err != nil {
		return nil, err
	}
	if len(b.Reasons) > 0 && !opt.Force {
		msg := strings.Join(b.Reasons, "; ")
		if len(b.Leaves) > 0 {
			msg += "; --force would remove the rest but leave " + strings.Join(b.Leaves, " and ")
		} else {
			msg += "; or pass --force"
		}
		return nil, fmt.Errorf("cleanup: %w: %s", ErrBusy, msg)
	}
	return run(ctx, source, target, b.Fenced)
}

// keepFenceRecordSQL empties schema replicator on the target but for the
// fence's record: dropping the schema would take the record an unfence
// needs.
const keepFenceRecordSQL = `DO $do$ DECLARE r record; BEGIN
	FOR r IN SELECT c.oid::regclass AS rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'replicator' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND c.relname <> 'cutover' AND NOT c.relispartition LOOP
		EXECUTE format('DROP %s IF EXISTS %s CASCADE',
			CASE (SELECT relkind FROM pg_class WHERE oid = r.rel) WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.rel);
	END LOOP;
	-- The reverse capture's functions, with the triggers on the app's
	-- tables that call them: left behind, they would refuse the app's
	-- writes on the target once their changelog is gone.
	-- Extensions the capture made in schema replicator (hstore) go whole:
	-- their member functions cannot be dropped one by one.
	FOR r IN SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE n.nspname = 'replicator' LOOP
		EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
	END LOOP;
	FOR r IN SELECT p.oid::regprocedure AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'replicator' LOOP
		EXECUTE format('DROP FUNCTION IF EXISTS %s CASCADE', r.fn);
	END LOOP; END $do$`
