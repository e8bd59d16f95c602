package cutover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/snapshot"
	"replicator/pkg/state"
	"replicator/pkg/verify"
)

// ErrDifferences is returned when the final verification found
// differences; its report has been written.
var ErrDifferences = errors.New("cutover: the final verification found differences: do not switch; see the report above")

const steps = 7

// streamGrace is how long the stream may look stopped while step 4 waits
// before the cutover gives up on it (a restart takes a few seconds).
const streamGrace = 15 * time.Second

// runner carries one cutover run.
type runner struct {
	cfg      Config
	out      io.Writer
	log      *zap.Logger
	src, tgt *pgx.Conn
	st       *state.State
	recs     map[string]record
	fenced   bool // the source is fenced (by this run or an earlier one)
	fencedAt time.Time
	// fencedHere: this run fenced the source, so fencedAt is this run's
	// clock.
	fencedHere bool

	// For the report (report.go): every step's final line, the position
	// drained to, the write freeze.
	lines      []string
	position   string
	freezeLine string
}

func (r *runner) step(n int, title, status, detail string) {
	line := fmt.Sprintf("step %d/%d: %s: %s", n, steps, title, status)
	if detail != "" {
		line += " (" + detail + ")"
	}
	if r.fencedHere && n > 3 && status == "done" {
		// Where the freeze goes, step by step.
		line += fmt.Sprintf(" [%.2f s into the write freeze]", time.Since(r.fencedAt).Seconds())
	}
	fmt.Fprintln(r.out, line)
	if status != "waiting" {
		r.lines = append(r.lines, line)
	}
	// Debug: the line above is what a person reads; at info the log
	// would print every step a second time on a terminal.
	r.log.Debug("cutover step", zap.Int("step", n), zap.String("title", title), zap.String("status", status), zap.String("detail", detail))
}

func (r *runner) done(step string) bool { return r.recs[step].Status == statusDone }

func (r *runner) flagURLs() (string, string) {
	return shellQuote(placeholderURL(r.cfg.SourceURL, "<PASSWORD>")), shellQuote(placeholderURL(r.cfg.TargetURL, "<PASSWORD>"))
}

// open checks cfg, gives a nil log a no-op one, and connects to both
// sides: what every entry point does first.
func open(ctx context.Context, cfg *Config, log *zap.Logger) (src, tgt *pgx.Conn, _ *zap.Logger, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	if src, tgt, err = connectBoth(ctx, cfg); err != nil {
		return nil, nil, nil, err
	}
	return src, tgt, log, nil
}

func connectBoth(ctx context.Context, cfg *Config) (src, tgt *pgx.Conn, err error) {
	scfg, err := pgutil.ParseConfig(cfg.SourceURL, "source")
	if err != nil {
		return nil, nil, err
	}
	// Under the read-only fence new sessions start read-only; this one
	// must still be able to undo the fence.
	scfg.RuntimeParams["default_transaction_read_only"] = "off"
	if src, err = pgutil.ConnectConfig(ctx, scfg, "source"); err != nil {
		return nil, nil, err
	}
	if tgt, err = pgutil.Connect(ctx, cfg.TargetURL, "target"); err != nil {
		src.Close(context.Background())
		return nil, nil, err
	}
	return src, tgt, nil
}

// Run runs the cutover's steps, printing one line per step to out. It
// returns ErrDifferences when the final verification finds differences.
func Run(ctx context.Context, cfg Config, out io.Writer, log *zap.Logger) (err error) {
	src, tgt, log, err := open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	defer tgt.Close(context.Background())
	r := &runner{cfg: cfg, out: out, log: log, src: src, tgt: tgt}
	started := time.Now()
	defer func() {
		if rerr := r.writeReport(context.Background(), started, err); rerr != nil && err == nil {
			err = fmt.Errorf("write the cutover report: %w", rerr)
		}
	}()
	if cfg.DryRun {
		fmt.Fprintln(out, "dry run: nothing is changed on the source or the target")
	} else {
		if err := lockCutover(ctx, tgt); err != nil {
			return err
		}
	}
	defer func() {
		// Without the fence the logs of step 2 prove nothing later (the
		// next run starts them again) and would cost the app every write.
		if !r.fenced && !cfg.DryRun && cfg.Verify == VerifyFull {
			r.untrack(context.Background(), "source", cfg.SourceURL)
			r.untrack(context.Background(), "target", cfg.TargetURL)
		}
	}()
	for i, f := range []func(context.Context) error{r.preconditions, r.prepareAndWaitLag, r.fence, r.drain, r.sequences, r.verify, r.reverseCapture} {
		if err := f(ctx); err != nil {
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				undo := ""
				if r.fenced {
					undo = "; the source stays fenced until you run `replicator cutover --unfence`"
				}
				return fmt.Errorf("cutover interrupted during step %d/%d: run it again to continue from there%s", i+1, steps, undo)
			}
			return err
		}
	}
	if err := r.freeze(ctx); err != nil {
		return err
	}
	if r.fenced && r.cfg.Verify == VerifyFull {
		r.untrack(ctx, "source", r.cfg.SourceURL) // after the freeze: see untrack
	}
	if cfg.DryRun {
		r.step(7, "switch the application", "dry run", "would switch with the commands below, once a cutover without --dry-run has run")
	} else {
		r.step(7, "switch the application", "done", "commands below")
	}
	writeSwitch(out, &r.cfg)
	return nil
}

// freezeRecord is the write freeze as recorded in replicator.cutover:
// from the fence to the moment the target was ready for the app.
type freezeRecord struct {
	FencedAt      time.Time `json:"fenced_at"`
	TargetReadyAt time.Time `json:"target_ready_at"`
	Seconds       float64   `json:"seconds"`
}

func (f freezeRecord) String() string {
	return fmt.Sprintf("write freeze: %.1f s (fenced %s, target ready %s)", f.Seconds,
		f.FencedAt.Local().Format("15:04:05.000"), f.TargetReadyAt.Local().Format("15:04:05.000"))
}

// freeze prints and records the write freeze once the target is ready
// (drained, sequences moved, verified). A rerun after an interruption
// counts from the first fence: the app was refused all along.
func (r *runner) freeze(ctx context.Context) error {
	if r.cfg.DryRun || !r.fenced {
		return nil
	}
	if rec, ok := r.recs[stepFreeze]; ok && rec.Status == statusDone {
		var f freezeRecord
		if json.Unmarshal(rec.Detail, &f) == nil {
			r.freezeLine = f.String() + " (recorded by an earlier run)"
			fmt.Fprintln(r.out, r.freezeLine)
		}
		return nil
	}
	if r.fencedAt.IsZero() {
		var fr fenceRecord
		json.Unmarshal(r.recs[stepFence].Detail, &fr)
		r.fencedAt = fr.FencedAt
	}
	f := freezeRecord{FencedAt: r.fencedAt, TargetReadyAt: time.Now()}
	f.Seconds = f.TargetReadyAt.Sub(f.FencedAt).Seconds()
	if err := saveRecord(ctx, r.tgt, stepFreeze, statusDone, f); err != nil {
		return err
	}
	r.freezeLine = f.String()
	fmt.Fprintln(r.out, f.String())
	r.log.Info("write freeze", zap.Float64("seconds", f.Seconds), zap.Time("fenced_at", f.FencedAt), zap.Time("target_ready_at", f.TargetReadyAt))
	return nil
}

// 1. preconditions
func (r *runner) preconditions(ctx context.Context) error {
	const title = "preconditions"
	st, err := state.Load(ctx, r.tgt)
	if err != nil {
		return fmt.Errorf("cutover: %w", err)
	}
	r.st = st
	if st.SnapshotStatus != state.SnapshotDone {
		return fmt.Errorf("cutover: the snapshot is not finished (status %q in replicator.state on the target): let `replicator snapshot` (or `run`) finish first", st.SnapshotStatus)
	}
	s, t := r.flagURLs()
	detail, err := checkStream(ctx, r.src, st, s, t, streamFresh)
	if err != nil {
		return err
	}
	if r.recs, err = loadRecords(ctx, r.tgt); err != nil {
		return err
	}
	r.fenced = r.recs[stepFence].Status != ""
	if !r.fenced {
		// Fencing a source whose changes nobody applies strands them
		// behind the fence: refuse before anything changes. Once fenced,
		// step 4 waits for the stream (with a grace for restarts).
		applying, err := checkApplying(ctx, r.src, r.tgt, st, s, t)
		if err != nil {
			return err
		}
		detail += ", stream " + applying
	}
	if r.fenced {
		detail += "; the source is already fenced"
	}
	if st.LastError != "" {
		detail += "; the stream's last recorded error: " + st.LastError
	}
	if !r.cfg.DryRun {
		if err := ensureRecords(ctx, r.tgt); err != nil {
			return err
		}
	}
	r.step(1, title, "done", detail)
	return nil
}

// 2. wait for low lag, then verify while streaming (verifylive.go)
func (r *runner) waitLag(ctx context.Context) error {
	title := fmt.Sprintf("wait for apply lag below %s", r.cfg.MaxLag)
	live := r.cfg.Verify == VerifyFull
	if live {
		title += ", verify while streaming"
	}
	if r.fenced {
		r.step(2, title, "skipped", "the source is fenced: step 4 drains what is left")
		return nil
	}
	if r.cfg.DryRun {
		l, _, err := measureLag(ctx, r.src, r.tgt)
		if err != nil {
			return err
		}
		text := "current lag " + l.String()
		if live {
			text += "; would compare every table while streaming, and inside the freeze only the rows written since"
		}
		r.step(2, title, "dry run", text)
		return nil
	}
	lagLow := func() (string, error) {
		return r.waitFor(ctx, 2, title, func() (bool, string, error) {
			l, _, err := measureLag(ctx, r.src, r.tgt)
			if err != nil {
				return false, "", err
			}
			return l.Seconds < r.cfg.MaxLag.Seconds(), "lag " + l.String(), nil
		}, "the stream is not keeping up: check `replicator status` and its log, then run cutover again (or raise --max-lag / --timeout)")
	}
	detail, err := lagLow()
	if err != nil {
		return err
	}
	// Caught up, the target's rows are the source's as of the applied
	// position: the foreign keys a chunked copy left NOT VALID must hold
	// now. One that does not stops the cutover before the fence.
	validated, left, err := snapshot.ValidateForeignKeys(ctx, r.tgt)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("cutover refused, nothing fenced: %w", snapshot.PendingForeignKeysError(left))
	}
	if len(validated) > 0 {
		detail += fmt.Sprintf("; %d foreign keys the copy created NOT VALID validated", len(validated))
	}
	if live {
		text, err := r.verifyLive(ctx, title)
		if err != nil {
			return err
		}
		if r.cfg.afterLiveVerify != nil {
			if err := r.cfg.afterLiveVerify(ctx); err != nil {
				return err
			}
		}
		// The verification took a while: the fence must still find the
		// stream caught up.
		if detail, err = lagLow(); err != nil {
			return err
		}
		detail += "; " + text
	}
	r.step(2, title, "done", detail)
	return nil
}

// 3. fence
func (r *runner) fence(ctx context.Context) error {
	const title = "fence writes on the source"
	rec, has := r.recs[stepFence]
	switch {
	case has && rec.Status == statusDone:
		var fr fenceRecord
		json.Unmarshal(rec.Detail, &fr)
		r.step(3, title, "skipped", fmt.Sprintf("already fenced (%s); undo with --unfence", fr.Method))
		return nil
	case has:
		// A run stopped between recording the fence and finishing it:
		// apply exactly the recorded change again.
		var fr fenceRecord
		if err := json.Unmarshal(rec.Detail, &fr); err != nil {
			return fmt.Errorf("read the fence record in replicator.cutover: %w", err)
		}
		if r.cfg.DryRun {
			r.step(3, title, "dry run", "an earlier run started the fence; would finish it: "+fr.Method)
			return nil
		}
		return r.finishFence(ctx, &fr, "finished the fence an earlier run started")
	case !r.cfg.Fence:
		r.step(3, title, "skipped", "not asked: pass --fence to stop writes; until then steps 4 to 6 are not final")
		return nil
	}
	if r.st.Capture == state.CaptureTrigger && r.cfg.FenceMethod == FenceReadOnly {
		return errors.New("cutover: --fence-method read-only would also stop trigger capture's own writes on the source (its ticks): use --fence-method trigger (the default picks it when the replicator's role owns the tables)")
	}
	plan, err := planFence(ctx, r.src, &r.cfg)
	if err != nil {
		return err
	}
	for _, w := range plan.warnings {
		fmt.Fprintln(r.out, "  warning: "+w)
	}
	if r.cfg.DryRun {
		what := "would set default_transaction_read_only = on for database " + plan.rec.Database
		switch plan.rec.Method {
		case FenceRevoke:
			what = "would revoke INSERT/UPDATE/DELETE/TRUNCATE from " + describeRevokes(plan.rec.Revoked)
		case FenceTrigger:
			r.step(3, title, "dry run", fmt.Sprintf("would put a trigger refusing writes on %d tables (method trigger: works with one login shared by the app and the replicator); would end the %d write transactions open now",
				len(plan.rec.Tables), plan.sessions))
			return nil
		}
		r.step(3, title, "dry run", fmt.Sprintf("%s; roles %s; would end %d sessions", what, strings.Join(plan.rec.Roles, ", "), plan.sessions))
		return nil
	}
	// Recorded before it is made, so a crash in between leaves a record
	// that both a rerun and --unfence can act on.
	if err := saveRecord(ctx, r.tgt, stepFence, statusStarted, plan.rec); err != nil {
		return err
	}
	return r.finishFence(ctx, &plan.rec, "")
}

func (r *runner) finishFence(ctx context.Context, fr *fenceRecord, note string) error {
	const title = "fence writes on the source"
	ended, err := applyFence(ctx, r.src, fr)
	if err != nil {
		return err
	}
	fr.SessionsEnded += ended
	r.fenced = true
	// The freeze is timed on this host's clock, from the fence's commit.
	r.fencedAt, r.fencedHere = time.Now(), true
	if note != "" {
		r.fencedAt, r.fencedHere = fr.FencedAt, false // an earlier run fenced: count from then
	}
	// Transactions that wrote before the fence may still commit; the
	// high-water mark must come after them. The trigger fence needs no
	// wait: its CREATE TRIGGERs took every table's lock, so no write
	// transaction on them was open when it committed.
	if fr.Method != FenceTrigger {
		_, err = r.waitFor(ctx, 3, title, func() (bool, string, error) {
			n, err := openWriters(ctx, r.src)
			return n == 0, fmt.Sprintf("%d write transactions still open on the source", n), err
		}, "end them (pg_terminate_backend) or wait for them, then run cutover again; undo the fence with --unfence")
		if err != nil {
			return err
		}
	}
	if err := saveRecord(ctx, r.tgt, stepFence, statusDone, fr); err != nil {
		return err
	}
	what := "default_transaction_read_only = on for database " + fr.Database
	switch fr.Method {
	case FenceRevoke:
		what = "revoked from " + describeRevokes(fr.Revoked)
	case FenceTrigger:
		what = fmt.Sprintf("a trigger refuses writes on %d tables (method trigger); %s", len(fr.Tables), describeEnded(fr.Ended))
	}
	detail := fmt.Sprintf("%s; ended %d sessions; undo with --unfence", what, ended)
	if fr.Method == FenceTrigger {
		detail = what + "; undo with --unfence"
	}
	if note != "" {
		detail = note + ": " + detail
	}
	r.step(3, title, "done", detail)
	return nil
}

// 4. high-water mark
func (r *runner) drain(ctx context.Context) error {
	const title = "wait for the target to apply the source's high-water mark"
	if r.done(stepDrain) {
		var hw highWater
		json.Unmarshal(r.recs[stepDrain].Detail, &hw)
		r.position = "source " + hw.String() + ", applied on the target"
		r.step(4, title, "skipped", "already applied "+hw.String())
		return nil
	}
	if r.cfg.DryRun {
		r.step(4, title, "dry run", "would record the source's position after the fence and wait for the target to apply it")
		return nil
	}
	var hw highWater
	if rec, ok := r.recs[stepDrain]; ok && r.fenced {
		// The mark an earlier run took after the fence still holds.
		if err := json.Unmarshal(rec.Detail, &hw); err != nil {
			return fmt.Errorf("read the drain record in replicator.cutover: %w", err)
		}
	} else {
		var err error
		if hw, err = takeHighWater(ctx, r.src, r.st, r.cfg.SourceURL, r.log); err != nil {
			return err
		}
		if r.fenced {
			if err := saveRecord(ctx, r.tgt, stepDrain, statusStarted, hw); err != nil {
				return err
			}
		}
	}
	var stalledSince time.Time
	s, t := r.flagURLs()
	detail, err := r.waitFor(ctx, 4, title, func() (bool, string, error) {
		ok, detail, err := reached(ctx, r.src, r.tgt, hw)
		if ok || err != nil {
			return ok, detail, err
		}
		// A stream that stopped will not deliver the mark: say so soon
		// rather than at the timeout. A reconnecting stream is inactive
		// for a moment, so only a lasting stop counts.
		if _, serr := checkStream(ctx, r.src, r.st, s, t, 0); serr != nil {
			if stalledSince.IsZero() {
				stalledSince = time.Now()
			} else if time.Since(stalledSince) > streamGrace {
				return false, "", fmt.Errorf("%w; the source stays fenced: run cutover again once the stream runs", serr)
			}
		} else {
			stalledSince = time.Time{}
		}
		return false, detail, nil
	}, "is `replicator stream` still running? see `replicator status`; run cutover again once it applies (the fence stays)")
	if err != nil {
		return err
	}
	r.position = "source " + hw.String() + ", applied on the target"
	if r.cfg.RedisSource != nil {
		rd, err := r.redisCatchUp(ctx)
		if err != nil {
			return err
		}
		detail += "; " + rd
	}
	return r.finish(ctx, 4, title, stepDrain, hw, fmt.Sprintf("high-water mark %s; %s", hw, detail))
}

func (hw highWater) String() string {
	if hw.LSN != "" {
		return "LSN " + hw.LSN
	}
	return fmt.Sprintf("tick %d", hw.Tick)
}

// finish records a step as done when the source is fenced; before the
// fence its result does not hold (writes go on), so it is not recorded.
func (r *runner) finish(ctx context.Context, n int, title, step string, detail any, text string) error {
	if !r.fenced {
		r.step(n, title, "done", text+"; not recorded: the source is not fenced, so it will run again")
		return nil
	}
	if err := saveRecord(ctx, r.tgt, step, statusDone, detail); err != nil {
		return err
	}
	r.step(n, title, "done", text)
	return nil
}

// 5. sequences
func (r *runner) sequences(ctx context.Context) error {
	title := fmt.Sprintf("move target sequences to the source's value + %d", r.cfg.SequenceMargin)
	if r.done(stepSequences) {
		r.step(5, title, "skipped", "already moved")
		return nil
	}
	moved, text, err := forwardSequences(ctx, r.src, r.tgt, r.cfg.SequenceMargin, r.cfg.DryRun, r.out, "source")
	if err != nil {
		return err
	}
	if r.cfg.DryRun {
		r.step(5, title, "dry run", text)
		return nil
	}
	return r.finish(ctx, 5, title, stepSequences, moved, text)
}

// 6. verification
func (r *runner) verify(ctx context.Context) error {
	const title = "final verification"
	switch {
	case r.cfg.Verify == VerifyNone:
		r.log.Warn("final verification skipped (--verify none)")
		r.step(6, title, "skipped", "WARNING: --verify none: the copy was not verified; run `replicator verify` before switching")
		return nil
	case r.done(stepVerify):
		r.step(6, title, "skipped", "already verified identical")
		return nil
	case r.cfg.DryRun && r.cfg.Verify == VerifyFull:
		r.step(6, title, "dry run", "would compare the rows written since step 2's verification, and every sequence")
		return nil
	case r.cfg.DryRun:
		r.step(6, title, "dry run", "would compare every table and sequence of source and target")
		return nil
	}
	started := time.Now()
	vcfg := verify.Config{Source: r.cfg.SourceURL, Target: r.cfg.TargetURL, Metrics: r.cfg.VerifyMetrics}
	if r.fenced {
		// Step 4 drained the stream and nothing writes any more: a
		// difference now is not a row in flight, re-checking cannot clear it.
		vcfg.Rechecks = -1
	}
	var rep *verify.Report
	touched := false
	if r.cfg.Verify == VerifyFull && r.done(stepVerifyLive) {
		var err error
		if rep, touched, err = r.verifyTouched(ctx, vcfg); err != nil {
			return err
		}
	}
	if !touched {
		var err error
		if rep, err = verify.Run(ctx, vcfg, r.log); err != nil {
			return err
		}
	}
	if rep.Different() {
		if err := rep.WriteText(r.out); err != nil {
			return err
		}
		what := ""
		if touched {
			what = fmt.Sprintf(" (compared the %d rows written since step 2's verification)", rep.RowsCompared)
		}
		r.step(6, title, "FAILED", fmt.Sprintf("%d tables and %d sequences differ%s", rep.TablesDifferent, rep.SequencesBehind, what))
		return ErrDifferences
	}
	text := fmt.Sprintf("%d tables, %d rows identical, %d sequences not behind",
		rep.TablesChecked, rep.SourceRows, len(rep.Sequences))
	if touched {
		text = fmt.Sprintf("%d rows written since step 2's verification compared and identical (%d tables, %d of them compared whole), %d sequences not behind",
			rep.RowsCompared, rep.TablesChecked, rep.TablesWhole, len(rep.Sequences))
	}
	if r.cfg.RedisSource != nil {
		rd, err := r.redisVerify(ctx)
		if err != nil {
			r.step(6, title, "FAILED", "Redis differs")
			return err
		}
		text += "; " + rd
	}
	if r.fenced && r.cfg.Verify == VerifyFull {
		r.untrack(ctx, "target", r.cfg.TargetURL) // before the app writes there
	}
	text += ", in " + time.Since(started).Round(time.Millisecond).String()
	return r.finish(ctx, 6, title, stepVerify, map[string]any{"tables": rep.TablesChecked, "rows": rep.SourceRows,
		"touched_only": touched, "rows_compared": rep.RowsCompared}, text)
}

// Unfence gives the source back exactly the write access the fence took,
// as recorded in replicator.cutover on the target, and clears the records
// of the steps that only held while fenced. Without a fence record it
// changes nothing.
func Unfence(ctx context.Context, cfg Config, out io.Writer, log *zap.Logger) error {
	src, tgt, log, err := open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	defer tgt.Close(context.Background())
	const title = "step 1/1: unfence the source"
	recs, err := loadRecords(ctx, tgt)
	if err != nil {
		return err
	}
	rec, ok := recs[stepFence]
	var fr fenceRecord
	if ok {
		if err := json.Unmarshal(rec.Detail, &fr); err != nil {
			return fmt.Errorf("read the fence record in replicator.cutover: %w", err)
		}
	} else {
		// The trigger fence describes itself on the source: lift it even
		// when the target's record is gone (its bookkeeping removed), so
		// "nothing to restore" is never said of a source that refuses.
		tables, err := fencedTables(ctx, src)
		if err != nil {
			return err
		}
		if len(tables) == 0 {
			fmt.Fprintln(out, title+": skipped (no fence recorded in replicator.cutover on the target, and no fence trigger on the source: nothing to restore)")
			return nil
		}
		fr = fenceRecord{Method: FenceTrigger, Tables: tables}
		fmt.Fprintf(out, "  note: no fence recorded on the target, but the source carries the fence trigger on %d tables: lifting those\n", len(tables))
	}
	if cfg.DryRun {
		what := "would reset default_transaction_read_only of database " + fr.Database
		switch fr.Method {
		case FenceRevoke:
			what = "would grant back to " + describeRevokes(fr.Revoked)
		case FenceTrigger:
			what = fmt.Sprintf("would drop the fence trigger on %d tables and %s()", len(fr.Tables), fenceFunction)
		}
		fmt.Fprintf(out, "%s: dry run (%s)\n", title, what)
		return nil
	}
	if err := lockCutover(ctx, tgt); err != nil {
		return err
	}
	// The fallback window's reverse install may have disabled the
	// source's own triggers (reverse.go): back before the app writes.
	if err := restoreSourceTriggers(ctx, src, tgt, recs); err != nil {
		return err
	}
	restored, gone, ended, err := undoFence(ctx, src, &fr)
	if err != nil {
		return err
	}
	if len(recs) > 0 {
		if err := forgetAfterUnfence(ctx, tgt); err != nil {
			return err
		}
	}
	// The touched-row logs of the verification before the fence held
	// only for this fence.
	r := &runner{cfg: cfg, out: out, log: log}
	r.untrack(ctx, "source", cfg.SourceURL)
	r.untrack(ctx, "target", cfg.TargetURL)
	what := fmt.Sprintf("restored default_transaction_read_only of database %s; ended %d sessions that started read-only under the fence", fr.Database, ended)
	switch fr.Method {
	case FenceRevoke:
		what = fmt.Sprintf("granted back %d privileges: %s", restored, describeRevokes(fr.Revoked))
	case FenceTrigger:
		what = fmt.Sprintf("dropped the fence trigger on %d tables and %s()", restored, fenceFunction)
	}
	if len(gone) > 0 {
		what += "; tables dropped since, left alone: " + strings.Join(gone, ", ")
	}
	log.Info("unfenced the source", zap.String("method", fr.Method), zap.Int("restored", restored))
	fmt.Fprintf(out, "%s: done (%s)\n", title, what)
	validateAfterUnfence(ctx, src, recs, out, log)
	return nil
}
