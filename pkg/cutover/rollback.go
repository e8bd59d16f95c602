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

	"replicator/pkg/state"
	"replicator/pkg/verify"
)

// The rollback is the cutover in the other direction, for the fallback
// window: the target (AWS) is fenced, the reverse stream drains onto the
// source (Heroku), the two are verified, the source's sequences move past
// the target's, and the source gets its writes back. Its steps are
// recorded in replicator.cutover on the source, the side the stream feeds
// (as the forward steps are on the target): "fence" there is the target's
// fence. Every step is safe to rerun; a rerun after an interruption
// continues from the records, and the freeze counts from the first fence.

const rollbackSteps = 7

type rollback struct {
	cfg      Config
	out      io.Writer
	log      *zap.Logger
	src, tgt *pgx.Conn
	rst      *state.State      // the reverse stream's state, on the source
	fwd      map[string]record // the forward cutover's records, on the target
	recs     map[string]record // the rollback's records, on the source
	fenced   bool              // the target is fenced
	fencedAt time.Time
}

func (b *rollback) step(n int, title, status, detail string) {
	line := fmt.Sprintf("rollback step %d/%d: %s: %s", n, rollbackSteps, title, status)
	if detail != "" {
		line += " (" + detail + ")"
	}
	fmt.Fprintln(b.out, line)
	b.log.Info("rollback step", zap.Int("step", n), zap.String("title", title), zap.String("status", status), zap.String("detail", detail))
}

func (b *rollback) done(step string) bool { return b.recs[step].Status == statusDone }

func (b *rollback) reverseFlags() string {
	return fmt.Sprintf("replicator reverse --source %s --target %s", shellQuote(placeholderURL(b.cfg.SourceURL, "<PASSWORD>")),
		shellQuote(placeholderURL(b.cfg.TargetURL, "<PASSWORD>")))
}

// Rollback gives the migration back to the source without losing what
// the app wrote to the target since the switch. It refuses (nothing
// changed) unless the reverse stream runs, applies, and lags less than
// Config.MaxLag. It returns ErrDifferences when the verification inside
// its freeze finds differences; both sides then stay fenced.
func Rollback(ctx context.Context, cfg Config, out io.Writer, log *zap.Logger) error {
	src, tgt, log, err := open(ctx, &cfg, log)
	if err != nil {
		return err
	}
	defer src.Close(context.Background())
	defer tgt.Close(context.Background())
	b := &rollback{cfg: cfg, out: out, log: log, src: src, tgt: tgt}
	if cfg.DryRun {
		fmt.Fprintln(out, "dry run: nothing is changed on the source or the target")
	} else if err := lockCutover(ctx, tgt); err != nil {
		return err
	}
	for i, f := range []func(context.Context) error{b.preconditions, b.fence, b.drain, b.sequences, b.verify, b.unfence} {
		if err := f(ctx); err != nil {
			if errors.Is(err, errAlreadyRolledBack) {
				return nil
			}
			if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
				undo := ""
				if b.fenced {
					undo = "; the target stays fenced, and the source too, until it completes"
				}
				return fmt.Errorf("rollback interrupted during step %d/%d: run `replicator cutover --rollback` again to continue from there%s", i+1, rollbackSteps, undo)
			}
			return err
		}
	}
	if cfg.DryRun {
		return nil
	}
	b.step(7, "switch the application back", "done", "commands below")
	writeSwitchBack(out, &b.cfg)
	return nil
}

// 1. preconditions
func (b *rollback) preconditions(ctx context.Context) error {
	const title = "preconditions"
	var err error
	if b.fwd, err = loadRecords(ctx, b.tgt); err != nil {
		return err
	}
	if b.recs, err = loadRecords(ctx, b.src); err != nil {
		return err
	}
	if b.fwd[stepRolledBack].Status == statusDone && b.fwd[stepReverse].Status == "" {
		b.step(1, title, "done", "already rolled back: the source is the primary again")
		return errAlreadyRolledBack
	}
	if b.fwd[stepReverse].Status != statusDone {
		return fmt.Errorf("cutover --rollback: %w (without it, `--unfence` gives the source its writes back; it is safe only if the app never wrote to the target)", ErrNoReverse)
	}
	if b.rst, err = state.Load(ctx, b.src); err != nil {
		return fmt.Errorf("cutover --rollback: the source holds no reverse stream state (replicator.state on the source): run `replicator cutover --fence` again to install it")
	}
	b.fenced = b.recs[stepFence].Status != ""
	running, err := state.LockHeld(ctx, b.src, state.StreamLockKey)
	if err != nil {
		return err
	}
	if !running {
		return fmt.Errorf("cutover --rollback: no reverse stream is running (nothing holds its lock on the source): start `%s` and run --rollback again once it applies", b.reverseFlags())
	}
	detail := "reverse stream running"
	if !b.fenced {
		// Like the forward cutover: fencing a target whose changes nobody
		// applies would strand them behind the fence.
		var age *float64
		if err := b.src.QueryRow(ctx, `SELECT extract(epoch FROM now() - applied_at)::float8 FROM replicator.state`).Scan(&age); err != nil {
			return fmt.Errorf("source: read replicator.state: %w", err)
		}
		if age == nil || *age > streamFresh.Seconds() {
			since := "has applied nothing yet"
			if age != nil {
				since = fmt.Sprintf("last applied a batch %.0f s ago", *age)
			}
			return fmt.Errorf("cutover --rollback: the reverse stream is not applying (it %s, want within %s): see its log and `replicator status`; run --rollback again once it applies", since, streamFresh)
		}
		l, _, err := measureLag(ctx, b.tgt, b.src)
		if err != nil {
			return err
		}
		if l.Seconds >= b.cfg.MaxLag.Seconds() {
			return fmt.Errorf("cutover --rollback: the reverse stream lags %s, above --max-lag %s: wait for it to catch up (see `replicator status`) or raise --max-lag, then run --rollback again", l, b.cfg.MaxLag)
		}
		detail += fmt.Sprintf(", applied %.1f s ago, lag %s", *age, l)
	} else {
		detail += "; the target is already fenced"
	}
	if b.rst.LastError != "" {
		detail += "; the reverse stream's last recorded error: " + b.rst.LastError
	}
	if !b.cfg.DryRun {
		if err := ensureRecords(ctx, b.src); err != nil {
			return err
		}
	}
	b.step(1, title, "done", detail)
	return nil
}

var errAlreadyRolledBack = errors.New("already rolled back")

// 2. fence the target
func (b *rollback) fence(ctx context.Context) error {
	const title = "fence writes on the target"
	rec, has := b.recs[stepFence]
	if has && rec.Status == statusDone {
		b.step(2, title, "skipped", "already fenced")
		return nil
	}
	var fr fenceRecord
	if has {
		if err := json.Unmarshal(rec.Detail, &fr); err != nil {
			return fmt.Errorf("read the fence record in replicator.cutover on the source: %w", err)
		}
	} else {
		cfg := b.cfg
		cfg.FenceMethod, cfg.AppRoles = FenceTrigger, nil
		plan, err := planFence(ctx, b.tgt, &cfg)
		if err != nil {
			return fmt.Errorf("target: %w", err)
		}
		if b.cfg.DryRun {
			b.step(2, title, "dry run", fmt.Sprintf("would put a trigger refusing writes on %d tables of the target; would end the %d write transactions open now", len(plan.rec.Tables), plan.sessions))
			return nil
		}
		fr = plan.rec
		fr.Rollback = true
		if err := saveRecord(ctx, b.src, stepFence, statusStarted, fr); err != nil {
			return err
		}
	}
	ended, err := applyFence(ctx, b.tgt, &fr)
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	fr.SessionsEnded += ended
	b.fenced = true
	b.fencedAt = time.Now()
	if has {
		b.fencedAt = fr.FencedAt
	}
	if err := saveRecord(ctx, b.src, stepFence, statusDone, fr); err != nil {
		return err
	}
	b.step(2, title, "done", fmt.Sprintf("a trigger refuses writes on %d tables of the target; %s", len(fr.Tables), describeEnded(fr.Ended)))
	return nil
}

// 3. drain the reverse stream
func (b *rollback) drain(ctx context.Context) error {
	const title = "wait for the source to apply the target's high-water mark"
	if b.done(stepDrain) {
		b.step(3, title, "skipped", "already drained")
		return nil
	}
	if b.cfg.DryRun {
		b.step(3, title, "dry run", "would tick the target's capture after the fence and wait for the reverse stream to apply it")
		return nil
	}
	var hw highWater
	if rec, ok := b.recs[stepDrain]; ok {
		if err := json.Unmarshal(rec.Detail, &hw); err != nil {
			return fmt.Errorf("read the drain record in replicator.cutover on the source: %w", err)
		}
	} else {
		var err error
		if hw, err = takeHighWater(ctx, b.tgt, b.rst, b.cfg.TargetURL, b.log); err != nil {
			return fmt.Errorf("target: %w", err)
		}
		if err := saveRecord(ctx, b.src, stepDrain, statusStarted, hw); err != nil {
			return err
		}
	}
	var stalledSince time.Time
	detail, err := b.waitFor(ctx, 3, title, func() (bool, string, error) {
		ok, detail, err := reached(ctx, b.tgt, b.src, hw)
		if ok || err != nil {
			return ok, detail, err
		}
		running, err := state.LockHeld(ctx, b.src, state.StreamLockKey)
		if err != nil {
			return false, "", err
		}
		if running {
			stalledSince = time.Time{}
		} else if stalledSince.IsZero() {
			stalledSince = time.Now()
		} else if time.Since(stalledSince) > streamGrace {
			return false, "", fmt.Errorf("cutover --rollback: the reverse stream stopped before it applied the target's last changes; both sides stay fenced: start `%s` and run --rollback again", b.reverseFlags())
		}
		return false, detail, nil
	}, "is `replicator reverse` still running? see `replicator status`; run --rollback again once it applies (both sides stay fenced)")
	if err != nil {
		return err
	}
	if err := saveRecord(ctx, b.src, stepDrain, statusDone, hw); err != nil {
		return err
	}
	b.step(3, title, "done", hw.String()+"; "+detail)
	return nil
}

// 4. sequences: the source's move past the target's, which handed out
// values since the switch (no stream carries sequences).
func (b *rollback) sequences(ctx context.Context) error {
	title := fmt.Sprintf("move source sequences to the target's value + %d", b.cfg.SequenceMargin)
	if b.done(stepSequences) {
		b.step(4, title, "skipped", "already moved")
		return nil
	}
	moved, text, err := forwardSequences(ctx, b.tgt, b.src, b.cfg.SequenceMargin, b.cfg.DryRun, b.out, "target")
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if b.cfg.DryRun {
		b.step(4, title, "dry run", text)
		return nil
	}
	if err := saveRecord(ctx, b.src, stepSequences, statusDone, moved); err != nil {
		return err
	}
	b.step(4, title, "done", text)
	return nil
}

// 5. verification: the target (where the app wrote) against the source.
func (b *rollback) verify(ctx context.Context) error {
	const title = "verify the source against the target"
	switch {
	case b.cfg.Verify == VerifyNone:
		b.log.Warn("rollback verification skipped (--verify none)")
		b.step(5, title, "skipped", "WARNING: --verify none: run `replicator verify --source <AWS> --target <Heroku>` before switching back")
		return nil
	case b.done(stepVerify):
		b.step(5, title, "skipped", "already verified identical")
		return nil
	case b.cfg.DryRun:
		b.step(5, title, "dry run", "would compare every table and sequence of target and source")
		return nil
	}
	started := time.Now()
	// Both sides are fenced and drained: a difference now is real, so
	// no waiting and no re-checks.
	rep, err := verify.Run(ctx, verify.Config{Source: b.cfg.TargetURL, Target: b.cfg.SourceURL, Metrics: b.cfg.VerifyMetrics,
		WaitTimeout: -1, Rechecks: -1}, b.log)
	if err != nil {
		return err
	}
	if rep.Different() {
		if err := rep.WriteText(b.out); err != nil {
			return err
		}
		b.step(5, title, "FAILED", fmt.Sprintf("%d tables and %d sequences differ; both sides stay fenced: repair the source (the report names the rows) and run --rollback again, or lift the target's fence to stay on AWS", rep.TablesDifferent, rep.SequencesBehind))
		return ErrDifferences
	}
	if err := saveRecord(ctx, b.src, stepVerify, statusDone, map[string]any{"tables": rep.TablesChecked, "rows": rep.SourceRows}); err != nil {
		return err
	}
	b.step(5, title, "done", fmt.Sprintf("%d tables, %d rows identical, %d sequences not behind, in %s",
		rep.TablesChecked, rep.SourceRows, len(rep.Sequences), time.Since(started).Round(time.Millisecond)))
	return nil
}

// 6. unfence the source: its own triggers first, then the fence; the
// freeze ends here.
func (b *rollback) unfence(ctx context.Context) error {
	const title = "unfence the source"
	if b.cfg.DryRun {
		b.step(6, title, "dry run", "would enable the source's own triggers again and drop its fence")
		return nil
	}
	if err := restoreSourceTriggers(ctx, b.src, b.tgt, b.fwd); err != nil {
		return err
	}
	var fr fenceRecord
	if rec, ok := b.fwd[stepFence]; ok {
		if err := json.Unmarshal(rec.Detail, &fr); err != nil {
			return fmt.Errorf("read the fence record in replicator.cutover on the target: %w", err)
		}
	} else {
		tables, err := fencedTables(ctx, b.src)
		if err != nil {
			return err
		}
		fr = fenceRecord{Method: FenceTrigger, Tables: tables}
	}
	restored, _, _, err := undoFence(ctx, b.src, &fr)
	if err != nil {
		return err
	}
	ready := time.Now()
	if b.fencedAt.IsZero() {
		var tf fenceRecord
		json.Unmarshal(b.recs[stepFence].Detail, &tf)
		b.fencedAt = tf.FencedAt
	}
	f := freezeRecord{FencedAt: b.fencedAt, TargetReadyAt: ready, Seconds: ready.Sub(b.fencedAt).Seconds()}
	if err := saveRecord(ctx, b.src, stepFreeze, statusDone, f); err != nil {
		return err
	}
	// The forward records (the reverse one too) only held while the
	// source was fenced; the rollback's record makes the direction
	// forward again.
	if err := forgetAfterUnfence(ctx, b.tgt); err != nil {
		return err
	}
	if err := saveRecord(ctx, b.tgt, stepRolledBack, statusDone, f); err != nil {
		return err
	}
	b.step(6, title, "done", fmt.Sprintf("%s; dropped the fence trigger on %d tables", what(fr), restored))
	validateAfterUnfence(ctx, b.src, b.fwd, b.out, b.log)
	line := fmt.Sprintf("rollback write freeze: %.1f s (target fenced %s, source ready %s)", f.Seconds,
		f.FencedAt.Local().Format("15:04:05.000"), f.TargetReadyAt.Local().Format("15:04:05.000"))
	fmt.Fprintln(b.out, line)
	b.log.Info("rollback write freeze", zap.Float64("seconds", f.Seconds))
	return nil
}

func what(fr fenceRecord) string {
	if fr.Method == FenceTrigger {
		return "the source's own triggers are enabled again"
	}
	return "method " + fr.Method
}

// waitFor is runner.waitFor for the rollback's steps, all of which wait
// inside its freeze (the target is fenced from step 2 on).
func (b *rollback) waitFor(ctx context.Context, n int, title string, cond func() (bool, string, error), timeoutFix string) (string, error) {
	return pollUntil(ctx, &b.cfg, "rollback", min(b.cfg.PollInterval, freezePoll), b.step, n, title, cond, timeoutFix)
}

// liftTargetFence lifts a fence an earlier rollback put on the target
// (recorded on the source) and forgets that rollback's records: a new
// cutover is moving the app to the target again. Nothing when there is
// none.
func liftTargetFence(ctx context.Context, src, tgt *pgx.Conn) error {
	recs, err := loadRecords(ctx, src)
	if err != nil {
		return err
	}
	rec, ok := recs[stepFence]
	if !ok {
		return nil
	}
	var fr fenceRecord
	if err := json.Unmarshal(rec.Detail, &fr); err != nil {
		return fmt.Errorf("read the rollback's fence record in replicator.cutover on the source: %w", err)
	}
	if _, _, _, err := undoFence(ctx, tgt, &fr); err != nil {
		return fmt.Errorf("target: lift the fence of the earlier rollback: %w", err)
	}
	_, err = src.Exec(ctx, `DELETE FROM replicator.cutover`)
	if err != nil {
		return fmt.Errorf("source: clear the earlier rollback's records: %w", err)
	}
	_, err = tgt.Exec(ctx, `DELETE FROM replicator.cutover WHERE step = $1`, stepRolledBack)
	return err
}

// writeSwitchBack prints the switch back to the source: nothing in it is
// run.
func writeSwitchBack(w io.Writer, cfg *Config) {
	var sb strings.Builder
	sb.WriteString("  Switch the application back (nothing below was run; run it yourself):\n")
	sb.WriteString("  1. Point the app at the source again, all at once (the target refuses writes now):\n")
	fmt.Fprintf(&sb, "     aws ssm put-parameter --name '<PARAMETER_PREFIX>/DATABASE_URL' --type SecureString --overwrite --value %s\n",
		shellQuote(placeholderURL(cfg.SourceURL, "<PASSWORD>")))
	sb.WriteString("     (an app still running on Heroku reads the add-on's own DATABASE_URL: scale its dynos back up, heroku ps:scale web=N worker=N)\n")
	sb.WriteString("  2. Make the app read it: aws ecs update-service --cluster <CLUSTER> --service <SERVICE> --force-new-deployment\n")
	sb.WriteString("     (on an EC2 host: sudo systemctl restart <APP_UNIT>)\n")
	if cfg.RecordName != "" {
		fmt.Fprintf(&sb, "     Or point the plain CNAME %s back at %s.\n", cfg.RecordName, hostOf(cfg.SourceURL))
	}
	if cfg.AppRecord != "" {
		fmt.Fprintf(&sb, "  3. Send all of %s's traffic back to the app on Heroku (weight 0 for AWS).\n", cfg.AppRecord)
	}
	sb.WriteString("  Then stop `replicator reverse`: nothing is left to carry. The target stays fenced until the next cutover (which lifts it) or `replicator cleanup`.\n")
	io.WriteString(w, sb.String())
}
