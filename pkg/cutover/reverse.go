package cutover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/apply"
	"replicator/pkg/pgutil"
	"replicator/pkg/schemachange"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// The fallback window. From the switch on, the app writes to the target
// (AWS) while the source (Heroku) stays fenced; to fall back without
// losing those writes, they flow back to the source:
//
//	target PG ─► trigger capture ─► pkg/apply ─► source PG
//
// Capture on the target is the trigger capture of pkg/trigger, installed
// by the cutover inside the freeze, after the drain and before the switch
// is printed (reverseCapture): the app cannot have written to the target
// yet, so tick 0 taken then is the start of everything the app will write
// there. The forward apply's own writes on the target are not captured
// (its sessions set replicator.applying, which the capture functions check
// first), so nothing the forward stream carried comes back.
//
// The reverse stream (Reverse, `replicator reverse`) is apply.Stream with
// the two sides swapped: it reads the target's changelog and applies it
// to the source, recording its position in replicator.state on the source
// in the same transaction as the data (exactly once across kill -9), and
// holds the stream lock on the source's database. Its sessions pass the
// source's fence with replicator.fence_bypass (apply.Config.FenceBypass);
// when the source's role may not set session_replication_role (Heroku's
// credential is no superuser), what a replica session would skip is
// taken out of the way for the window, as a table owner may: the source's
// own triggers are disabled (they would fire again on changes their twins
// on the target already made), and its foreign keys with ON DELETE/ON
// UPDATE actions are dropped (the cascade ran on the target, and its
// effects arrive as captured changes). The rollback, or --unfence, puts
// both back before the app may write there (the keys NOT VALID inside
// the freeze, validated right after it).

// stepReverse records, in replicator.cutover on the target, that capture
// on the target is installed: the direction is reverse from then on.
// stepRolledBack records that `cutover --rollback` gave the source back.
const (
	stepReverse    = "reverse"
	stepRolledBack = "rollback"
)

// reverseRecord is what reverseCapture set up.
type reverseRecord struct {
	At     time.Time `json:"at"`
	Tables int       `json:"tables"`
	// Snapshot is tick 0 of the target's capture: pg_current_snapshot()
	// when it was installed.
	Snapshot string `json:"snapshot"`
	// Disabled are the source's own triggers disabled for the window.
	Disabled []sourceTrigger `json:"disabled_triggers,omitempty"`
	// Dropped are the source's foreign keys with an ON DELETE or ON
	// UPDATE action, dropped for the window: the cascade already ran on
	// the target and its effects arrive as captured changes, so the
	// source must not run it again.
	Dropped []sourceConstraint `json:"dropped_foreign_keys,omitempty"`
}

// sourceConstraint is one constraint of a source table, with its
// definition as pg_get_constraintdef gives it.
type sourceConstraint struct {
	Table string `json:"table"` // quoted, schema-qualified
	Name  string `json:"name"`
	Def   string `json:"definition"`
}

// sourceTrigger is one trigger of a source table.
type sourceTrigger struct {
	Table   string `json:"table"` // quoted, schema-qualified
	Trigger string `json:"trigger"`
}

// reverseCapture is the cutover's hook for the fallback window: once the
// source is fenced and drained, and before the switch is printed, it
// installs trigger capture on the target, takes its capture point, and
// records the reverse direction on both sides. It may be repeated: once
// recorded it is skipped.
func (r *runner) reverseCapture(ctx context.Context) error {
	const title = "  fallback: capture on the target"
	switch {
	case r.cfg.DryRun:
		fmt.Fprintln(r.out, title+": dry run (would install trigger capture on the target's tables inside the freeze, for `replicator reverse`)")
		return nil
	case !r.fenced:
		fmt.Fprintln(r.out, title+": skipped (the source is not fenced, so the app has not switched: nothing to carry back yet)")
		return nil
	case r.done(stepReverse):
		fmt.Fprintln(r.out, title+": skipped (already installed: the direction is reverse)")
		return nil
	}
	started := time.Now()
	rec, err := installReverse(ctx, r.src, r.tgt, r.cfg.TargetURL, r.log)
	if err != nil {
		return err
	}
	if err := saveRecord(ctx, r.tgt, stepReverse, statusDone, rec); err != nil {
		return err
	}
	s, t := r.flagURLs()
	detail := fmt.Sprintf("%d tables, tick 0 at %s, in %s", rec.Tables, SnapshotText(rec.Snapshot), time.Since(started).Round(time.Millisecond))
	if len(rec.Disabled)+len(rec.Dropped) > 0 {
		detail += fmt.Sprintf("; %d triggers of the source's own disabled and %d foreign keys with actions dropped for the window (its role may not skip them per session), back with --rollback or --unfence", len(rec.Disabled), len(rec.Dropped))
	}
	fmt.Fprintf(r.out, "%s: done (%s)\n", title, detail)
	fmt.Fprintf(r.out, "  every write the app makes on the target from now on is recorded; carry them back to the source with the reverse stream, running from now until the fallback window closes:\n     replicator reverse --source %s --target %s\n", s, t)
	r.log.Info("reverse capture installed on the target", zap.Int("tables", rec.Tables), zap.Int("disabled_source_triggers", len(rec.Disabled)))
	return nil
}

// prepareReverse installs trigger capture on the target before the
// fence, so that the freeze only takes its capture point: creating a
// trigger per table takes a while on a large schema. Installing early is
// safe: until the switch only the forward apply writes to the target, and
// its sessions are never captured (replicator.applying); what counts is
// tick 0, taken inside the freeze. Skipped on a dry run, without --fence,
// and once the fallback window is recorded.
func (r *runner) prepareReverse(ctx context.Context) error {
	if r.cfg.DryRun || r.done(stepReverse) || !(r.cfg.Fence || r.fenced) {
		return nil
	}
	started := time.Now()
	tables, err := trigger.Install(ctx, r.tgt, trigger.Config{}, r.log)
	if err != nil {
		return fmt.Errorf("install capture on the target for the fallback window: %w", err)
	}
	fmt.Fprintf(r.out, "  fallback: capture triggers installed on the %d tables of the target before the fence, in %s (nothing is recorded before the switch: the forward apply's writes are not captured)\n",
		len(tables), time.Since(started).Round(time.Millisecond))
	return nil
}

// prepareAndWaitLag is step 2 with the early install in front: installing
// takes table locks the forward apply waits for, so the lag is waited for
// after it.
func (r *runner) prepareAndWaitLag(ctx context.Context) error {
	if err := r.prepareReverse(ctx); err != nil {
		return err
	}
	return r.waitLag(ctx)
}

// SnapshotText shortens a pg_snapshot text for a person.
func SnapshotText(snap string) string {
	if i := strings.IndexByte(snap, ':'); i > 0 {
		return "xmin " + snap[:i]
	}
	return snap
}

// installReverse installs capture on the target and the reverse stream's
// state on the source. The order matters: the triggers are committed
// before the capture point's snapshot (see trigger.CapturePoint), and the
// source's state names that snapshot as where the reverse stream starts.
func installReverse(ctx context.Context, src, tgt *pgx.Conn, targetURL string, log *zap.Logger) (*reverseRecord, error) {
	// An earlier rollback left the target fenced: a new cutover gives it
	// its writes back here, inside the freeze, since the app moves to it.
	if err := liftTargetFence(ctx, src, tgt); err != nil {
		return nil, err
	}
	// Usually installed before the fence (prepareReverse): then only a
	// table created since needs it here.
	if err := trigger.CheckInstalled(ctx, tgt); err != nil {
		if _, err := trigger.Install(ctx, tgt, trigger.Config{}, log); err != nil {
			return nil, fmt.Errorf("install capture on the target for the fallback window: %w", err)
		}
	}
	tables, err := trigger.ListTables(ctx, tgt)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	cp, err := trigger.StartCapturePoint(ctx, targetURL, log)
	if err != nil {
		return nil, fmt.Errorf("take the target's capture point for the fallback window: %w", err)
	}
	snap := cp.Snapshot
	cp.Release(ctx)
	rec := &reverseRecord{Tables: len(tables), Snapshot: snap}
	if err := tgt.QueryRow(ctx, `SELECT now()`).Scan(&rec.At); err != nil {
		return nil, fmt.Errorf("target: read the clock: %w", err)
	}
	may, err := maySkipTriggers(ctx, src)
	if err != nil {
		return nil, err
	}
	if !may {
		if rec.Disabled, rec.Dropped, err = disableSourceTriggers(ctx, src, tgt); err != nil {
			return nil, err
		}
	}
	// A new window: the reverse stream's schema follower starts from a
	// new baseline (reverseBaseline), not an earlier window's.
	if err := schemachange.ForgetBaseline(ctx, src); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	// The reverse stream's bookkeeping on the source: the target's
	// capture starting after tick 0, nothing applied yet.
	if err := state.Begin(ctx, src, &state.State{Capture: state.CaptureTrigger, SnapshotXmin: snap, SnapshotStatus: state.SnapshotDone}); err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	return rec, nil
}

// reverseBaseline records on the source, before the reverse stream's
// first start in a window, the schema it reflects of the target for the
// stream's schema follower: the source's own schema, but for the
// foreign keys dropped for the window, which it reflects as the target
// has them. Taken by the follower itself, the baseline would lack those
// keys, and the follower would add them back (with their ON DELETE
// CASCADE), so that a delete carried back would cascade on the source
// and the next change carried, the cascade's own delete of the same
// rows, would find them gone. Not inside the freeze: reading both
// catalogs takes seconds on a schema of thousands of tables, and the
// source's own schema is right whenever it is read, since only the
// reverse stream changes it during the window.
func reverseBaseline(ctx context.Context, tgt, src *pgx.Conn, dropped []sourceConstraint) error {
	if _, err := schemachange.RecordBaseline(ctx, tgt, src, keptOf(dropped)); err != nil {
		return fmt.Errorf("record on the source the schema the reverse stream starts from: %w", err)
	}
	return nil
}

func keptOf(keys []sourceConstraint) []schemachange.Kept {
	kept := make([]schemachange.Kept, len(keys))
	for i, k := range keys {
		kept[i] = schemachange.Kept{Table: k.Table, Name: k.Name}
	}
	return kept
}

// maySkipTriggers reports whether the source's role may set
// session_replication_role = replica (superuser, rds_superuser): then the
// reverse apply skips the source's triggers per session, as the forward
// apply does on the target.
func maySkipTriggers(ctx context.Context, src *pgx.Conn) (bool, error) {
	err := pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`)
		return err
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.InsufficientPrivilege {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("source: try session_replication_role: %w", err)
	}
	return true, nil
}

// sourceOwnTriggers selects the enabled user triggers of the source's
// user tables that are neither the fence nor trigger capture; partition
// clones follow their parent's.
var sourceOwnTriggers = `SELECT format('%I.%I', n.nspname, c.relname), t.tgname
	FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
	WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgenabled <> 'D'
	AND pn.nspname NOT IN ('` + state.Schema + `', '` + fenceSchema + `') AND ` + trigTables + `
	ORDER BY 1, 2`

// sourceActionKeys selects the source's foreign keys that act on the
// referencing rows (CASCADE, SET NULL, SET DEFAULT on delete or update);
// those of partitions follow their parent's.
var sourceActionKeys = `SELECT format('%I.%I', n.nspname, c.relname), k.conname, pg_get_constraintdef(k.oid)
	FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE k.contype = 'f' AND k.conparentid = 0 AND (k.confdeltype NOT IN ('a', 'r') OR k.confupdtype NOT IN ('a', 'r'))
	AND ` + trigTables + ` ORDER BY 1, 2`

// disableSourceTriggers disables the source's own triggers and drops its
// foreign keys with actions, in one transaction: what a replica session
// would skip, done the way a table owner may (the internal triggers of a
// foreign key cannot be disabled without superuser). Plain foreign keys
// stay: the changes arrive in the target's commit order, which satisfied
// them there. The source is fenced, so the app cannot write meanwhile.
// The keys are first listed on the target as kept (schemachange.Keep):
// the forward stream, which may still run, follows the source's schema
// and would otherwise drop them on the target too, where the app's
// deletes must cascade.
func disableSourceTriggers(ctx context.Context, src, tgt *pgx.Conn) ([]sourceTrigger, []sourceConstraint, error) {
	krows, err := src.Query(ctx, sourceActionKeys)
	if err != nil {
		return nil, nil, fmt.Errorf("source: list its foreign keys with actions: %w", err)
	}
	keys, err := pgx.CollectRows(krows, func(r pgx.CollectableRow) (sourceConstraint, error) {
		var k sourceConstraint
		return k, r.Scan(&k.Table, &k.Name, &k.Def)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("source: list its foreign keys with actions: %w", err)
	}
	if err := schemachange.Keep(ctx, tgt, keptOf(keys)); err != nil {
		return nil, nil, err
	}
	var out []sourceTrigger
	err = pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		for _, k := range keys {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+k.Table+" DROP CONSTRAINT "+pgutil.QuoteIdent(k.Name)); err != nil {
				return fmt.Errorf("drop foreign key %s on %s for the window: %w", k.Name, k.Table, err)
			}
		}
		rows, err := tx.Query(ctx, sourceOwnTriggers)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (sourceTrigger, error) {
			var t sourceTrigger
			return t, r.Scan(&t.Table, &t.Trigger)
		})
		if err != nil {
			return err
		}
		for _, t := range out {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+t.Table+" DISABLE TRIGGER "+pgutil.QuoteIdent(t.Trigger)); err != nil {
				return fmt.Errorf("disable trigger %s on %s: %w", t.Trigger, t.Table, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("source: disable its own triggers for the reverse stream: %w: the replicator's role must own the tables", err)
	}
	return out, keys, nil
}

// enableSourceTriggers enables again what disableSourceTriggers disabled
// (tables or triggers dropped since are left alone). It may be repeated.
func enableSourceTriggers(ctx context.Context, src *pgx.Conn, ts []sourceTrigger) error {
	if len(ts) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		for _, t := range ts {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2)`, t.Table, t.Trigger).Scan(&exists); err != nil {
				return fmt.Errorf("source: look up trigger %s on %s: %w", t.Trigger, t.Table, err)
			}
			if !exists {
				continue
			}
			if _, err := tx.Exec(ctx, "ALTER TABLE "+t.Table+" ENABLE TRIGGER "+pgutil.QuoteIdent(t.Trigger)); err != nil {
				return fmt.Errorf("source: enable trigger %s on %s again: %w", t.Trigger, t.Table, err)
			}
		}
		return nil
	})
}

// addSourceKeys adds back the foreign keys disableSourceTriggers dropped,
// NOT VALID: a brief lock and no scan, so the freeze does not grow with
// the tables; validateSourceKeys checks the rows once the app writes
// again. A key already there (a rerun) is left alone.
func addSourceKeys(ctx context.Context, src *pgx.Conn, keys []sourceConstraint) error {
	if len(keys) == 0 {
		return nil
	}
	return pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
		for _, k := range keys {
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NULL OR EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)`,
				k.Table, k.Name).Scan(&exists); err != nil {
				return fmt.Errorf("source: look up foreign key %s on %s: %w", k.Name, k.Table, err)
			}
			if exists {
				continue
			}
			if _, err := tx.Exec(ctx, "ALTER TABLE "+k.Table+" ADD CONSTRAINT "+pgutil.QuoteIdent(k.Name)+" "+k.Def+" NOT VALID"); err != nil {
				return fmt.Errorf("source: add foreign key %s on %s back (%s): %w", k.Name, k.Table, k.Def, err)
			}
		}
		return nil
	})
}

// validateSourceKeys validates the foreign keys addSourceKeys added; it
// takes no lock that stops the app's writes.
func validateSourceKeys(ctx context.Context, src *pgx.Conn, keys []sourceConstraint) error {
	for _, k := range keys {
		var valid bool
		if err := src.QueryRow(ctx, `SELECT coalesce((SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2), true)`,
			k.Table, k.Name).Scan(&valid); err != nil {
			return fmt.Errorf("source: look up foreign key %s on %s: %w", k.Name, k.Table, err)
		}
		if valid {
			continue
		}
		if _, err := src.Exec(ctx, "ALTER TABLE "+k.Table+" VALIDATE CONSTRAINT "+pgutil.QuoteIdent(k.Name)); err != nil {
			return fmt.Errorf("source: validate foreign key %s on %s: %w: it is in place but NOT VALID; fix the rows it names and run ALTER TABLE %s VALIDATE CONSTRAINT %s",
				k.Name, k.Table, err, k.Table, pgutil.QuoteIdent(k.Name))
		}
	}
	return nil
}

// reverseRecordOf reads the reverse record among the target's records;
// nil when there is none.
func reverseRecordOf(recs map[string]record) (*reverseRecord, error) {
	rec, ok := recs[stepReverse]
	if !ok {
		return nil, nil
	}
	var rr reverseRecord
	if err := json.Unmarshal(rec.Detail, &rr); err != nil {
		return nil, fmt.Errorf("read the reverse record in replicator.cutover on the target: %w", err)
	}
	return &rr, nil
}

// restoreSourceTriggers enables the source's triggers a reverse install
// disabled and adds its foreign keys back (NOT VALID), as recorded on the
// target, before the app may write to the source again; Unfence and the
// rollback call it, then validateSourceKeys once the source is unfenced.
// With the keys back, the forward stream follows them again.
func restoreSourceTriggers(ctx context.Context, src, tgt *pgx.Conn, recs map[string]record) error {
	rr, err := reverseRecordOf(recs)
	if rr == nil || err != nil {
		return err
	}
	if err := addSourceKeys(ctx, src, rr.Dropped); err != nil {
		return err
	}
	if err := schemachange.Unkeep(ctx, tgt); err != nil {
		return err
	}
	return enableSourceTriggers(ctx, src, rr.Disabled)
}

// validateAfterUnfence validates the foreign keys restoreSourceTriggers
// added back; a failure is reported, not fatal: the source is already
// the app's again.
func validateAfterUnfence(ctx context.Context, src *pgx.Conn, recs map[string]record, out io.Writer, log *zap.Logger) {
	rr, err := reverseRecordOf(recs)
	if rr == nil || err != nil || len(rr.Dropped) == 0 {
		return
	}
	if err := validateSourceKeys(ctx, src, rr.Dropped); err != nil {
		log.Warn("foreign key not validated", zap.Error(err))
		fmt.Fprintf(out, "  WARNING: %v\n", err)
		return
	}
	fmt.Fprintf(out, "  validated the %d foreign keys with actions added back to the source (the app was already writing)\n", len(rr.Dropped))
}

// ReverseConfig is the reverse stream: SourceURL and TargetURL name the
// migration's sides as everywhere else (source: Heroku, target: AWS); the
// stream reads the target and writes the source. Stream tunes it like the
// forward stream; its URLs are ignored.
type ReverseConfig struct {
	SourceURL string
	TargetURL string
	Stream    apply.StreamConfig
	// ForwardCheck is how often the reverse stream looks for a forward
	// logical stream (which would carry its writes back to the target).
	// Default 2s.
	ForwardCheck time.Duration
}

// ErrNoReverse is returned when the cutover has not installed capture on
// the target: there is nothing to stream back.
var ErrNoReverse = errors.New("no reverse direction is recorded: `replicator cutover --fence` installs capture on the target inside the write freeze; run the cutover first")

// Reverse runs the reverse stream until ctx ends (then nil) or a fatal
// error: apply.Stream from the target's changelog onto the source, with
// the fence bypass. It refuses to start before the cutover installed
// capture on the target, and while a forward logical stream runs (its
// slot would decode the reverse stream's writes on the source and apply
// them to the target a second time; trigger capture skips them).
func Reverse(ctx context.Context, cfg ReverseConfig, log *zap.Logger) error {
	if cfg.SourceURL == "" || cfg.TargetURL == "" {
		return errors.New("reverse: pass --source (Heroku) and --target (AWS), or set REPLICATOR_SOURCE_URL and REPLICATOR_TARGET_URL")
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.ForwardCheck <= 0 {
		cfg.ForwardCheck = 2 * time.Second
	}
	logical, err := checkReverse(ctx, cfg.SourceURL, cfg.TargetURL)
	if err != nil {
		return err
	}
	sc := cfg.Stream
	sc.SourceURL, sc.TargetURL = cfg.TargetURL, writable(cfg.SourceURL)
	sc.Apply.FenceBypass = true
	g, gctx := errgroup.WithContext(ctx)
	runCtx, stop := context.WithCancel(gctx)
	defer stop()
	g.Go(func() error {
		defer stop()
		return apply.Stream(runCtx, sc, log.With(zap.String("direction", "reverse")))
	})
	if logical {
		g.Go(func() error {
			t := time.NewTicker(cfg.ForwardCheck)
			defer t.Stop()
			for {
				select {
				case <-runCtx.Done():
					return nil
				case <-t.C:
				}
				if err := forwardLogicalRunning(runCtx, cfg.TargetURL); err != nil {
					stop()
					return err
				}
			}
		})
	}
	return g.Wait()
}

// checkReverse refuses a reverse stream with nothing to carry or one that
// would echo; it reports whether the forward capture is logical.
func checkReverse(ctx context.Context, sourceURL, targetURL string) (bool, error) {
	tgt, err := pgutil.Connect(ctx, targetURL, "target")
	if err != nil {
		return false, err
	}
	defer tgt.Close(context.Background())
	recs, err := loadRecords(ctx, tgt)
	if err != nil {
		return false, err
	}
	if recs[stepReverse].Status != statusDone {
		if recs[stepRolledBack].Status == statusDone {
			return false, errors.New("reverse: the migration was rolled back (`cutover --rollback`): the source is the primary again and nothing flows back; cut over again to start a new fallback window")
		}
		return false, fmt.Errorf("reverse: %w", ErrNoReverse)
	}
	src, err := pgutil.Connect(ctx, writable(sourceURL), "source")
	if err != nil {
		return false, err
	}
	defer src.Close(context.Background())
	if _, err := state.Load(ctx, src); err != nil {
		return false, fmt.Errorf("reverse: the source holds no reverse stream state (replicator.state on the source): run `replicator cutover --fence` again to install it")
	}
	rr, err := reverseRecordOf(recs)
	if err != nil {
		return false, err
	}
	if err := reverseBaseline(ctx, tgt, src, rr.Dropped); err != nil {
		return false, fmt.Errorf("reverse: %w", err)
	}
	fst, err := state.Load(ctx, tgt)
	if err != nil {
		return false, fmt.Errorf("reverse: %w", err)
	}
	if fst.Capture != state.CaptureLogical {
		return false, nil
	}
	return true, forwardLogicalRunning(ctx, targetURL)
}

// forwardLogicalRunning returns an error while the forward stream holds
// the target's stream lock under logical capture.
func forwardLogicalRunning(ctx context.Context, targetURL string) error {
	tgt, err := pgutil.Connect(ctx, targetURL, "target")
	if err != nil {
		return err
	}
	defer tgt.Close(context.Background())
	held, err := state.LockHeld(ctx, tgt, state.StreamLockKey)
	if err != nil {
		return err
	}
	if held {
		return errors.New("reverse: the forward stream (`replicator stream`/`run`) still runs on the source's replication slot: it would decode the reverse stream's writes on the source and apply them to the target a second time; stop it first (after the cutover it has nothing left to carry), then start `replicator reverse` again")
	}
	return nil
}

// writable adds default_transaction_read_only=off to a connection string:
// under the read-only fence new sessions on the source start read-only,
// and the reverse stream's must write.
func writable(conn string) string {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := url.Parse(conn)
		if err != nil {
			return conn // pgx reports the bad URL
		}
		q := u.Query()
		q.Set("default_transaction_read_only", "off")
		u.RawQuery = q.Encode()
		return u.String()
	}
	return conn + " default_transaction_read_only=off"
}
