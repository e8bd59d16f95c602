package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/verify"
)

// The write freeze must not grow with the database, so the full
// verification runs before the fence, while the stream applies, and the
// check inside the freeze reads only what can have changed since:
//
//  1. (step 2, before the fence) verify.Track starts a touched-row log on
//     the target, then on the source: from here on every row either side
//     writes is logged by key. Then a full verification compares every
//     table at a point of the stream (verify waits for the target to apply
//     the source's position and re-checks rows in flight). Its outcome and
//     position are recorded as step "verify-live".
//  2. (step 6, inside the freeze, after the drain) verify.Run with Touched
//     compares only the rows the two logs name, plus every sequence;
//     keyless, truncated and new tables whole. A row can differ now only
//     if one side wrote it after the logs started: a write on the target
//     that bypassed the stream is in the target's log, a source change the
//     stream never carried is in the source's. Then the target's log is
//     removed (before the app writes there), and the source's once the
//     freeze is recorded.
//
// What the freeze then costs is the rows written during the full
// verification and the lag wait, not the rows stored. Those still grow
// with the size, through the length of the full verification (at 200
// writes/s, a 40 s verification logs about 8,000 rows, compared in about
// a second). Not done yet: a catch-up pass before the fence over the rows
// logged so far, after which the freeze would compare only the rows
// logged since that pass began (told apart by the writing transaction's
// visibility in a snapshot taken when the pass starts, so a late
// committer is never skipped). When a log cannot
// be started (the replicator's role may not create triggers on the
// source's tables: the revoke fence's case), step 6 compares everything
// inside the freeze, as --verify full-in-freeze does, and says so.

// liveVerifyRecord is what the verification before the fence covered.
type liveVerifyRecord struct {
	Tables     int       `json:"tables"`
	Rows       int64     `json:"rows"`
	Position   string    `json:"position"`
	Consistent string    `json:"consistency"`
	StartedAt  time.Time `json:"started_at"`
	Seconds    float64   `json:"seconds"`
}

// verifyLive runs step 2's verification while streaming. It returns the
// step's text; ErrDifferences when the copy differs (nothing is fenced).
func (r *runner) verifyLive(ctx context.Context, title string) (string, error) {
	started := time.Now()
	untrackTarget := func() {
		if err := verify.Untrack(context.Background(), r.cfg.TargetURL, "target"); err != nil {
			r.log.Warn("remove the touched-row log on the target", zap.Error(err))
		}
	}
	if _, err := verify.Track(ctx, r.cfg.TargetURL, "target"); err != nil {
		return r.noLiveVerify(ctx, err)
	}
	if _, err := verify.Track(ctx, r.cfg.SourceURL, "source"); err != nil {
		untrackTarget()
		return r.noLiveVerify(ctx, err)
	}
	// A row the app keeps writing (a counter) can differ at every
	// re-check: named in a log, it is compared again inside the freeze.
	rep, err := verify.Run(ctx, verify.Config{Source: r.cfg.SourceURL, Target: r.cfg.TargetURL, Metrics: r.cfg.VerifyMetrics,
		InFlightLogged: true}, r.log)
	if err != nil {
		return "", err
	}
	if rep.Different() {
		if err := rep.WriteText(r.out); err != nil {
			return "", err
		}
		r.step(2, title, "FAILED", fmt.Sprintf("verified while streaming: %d tables and %d sequences differ; nothing was fenced", rep.TablesDifferent, rep.SequencesBehind))
		return "", ErrDifferences
	}
	rec := liveVerifyRecord{Tables: rep.TablesChecked, Rows: rep.SourceRows, Position: rep.Position, Consistent: rep.Consistent,
		StartedAt: started.UTC(), Seconds: time.Since(started).Seconds()}
	if err := saveRecord(ctx, r.tgt, stepVerifyLive, statusDone, rec); err != nil {
		return "", err
	}
	r.recs[stepVerifyLive] = record{Status: statusDone}
	inFlight := ""
	if n := rep.InFlightRows(); n > 0 {
		inFlight = fmt.Sprintf(", %d rows still being written left to the check inside the freeze", n)
	}
	return fmt.Sprintf("verified while streaming: %d tables, %d rows identical (%s)%s in %s; inside the freeze only rows written since are compared",
		rec.Tables, rec.Rows, rec.Position, inFlight, time.Since(started).Round(time.Millisecond)), nil
}

// noLiveVerify is step 2 when no touched-row log could be started: the
// final verification will read everything inside the freeze.
func (r *runner) noLiveVerify(ctx context.Context, cause error) (string, error) {
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	r.log.Warn("no verification before the fence: the touched-row log could not be started", zap.Error(cause))
	fmt.Fprintf(r.out, "  warning: %v: the final verification will compare every table inside the write freeze\n", cause)
	return "not verified while streaming (see the warning above): step 6 compares everything inside the freeze", nil
}

// verifyTouched is step 6's comparison inside the freeze when step 2
// verified while streaming; ok is false when the logs are gone, and the
// caller compares everything.
func (r *runner) verifyTouched(ctx context.Context, vcfg verify.Config) (rep *verify.Report, ok bool, err error) {
	vcfg.Touched = true
	rep, err = verify.Run(ctx, vcfg, r.log)
	if errors.Is(err, verify.ErrNoTouchedLog) {
		fmt.Fprintln(r.out, "  warning: the touched-row log of step 2 is gone: comparing every table inside the freeze")
		return nil, false, nil
	}
	return rep, err == nil, err
}

// untrack removes the touched-row logs: the target's before the app may
// write there, the source's once the freeze is over (dropping triggers
// takes each table's lock, which the fenced app's reads would queue
// behind inside the freeze). A failure leaves triggers that
// `replicator cleanup` removes; it is reported, not fatal.
func (r *runner) untrack(ctx context.Context, name, url string) {
	if err := verify.Untrack(ctx, url, name); err != nil {
		r.log.Warn("remove the touched-row log", zap.String("side", name), zap.Error(err))
		fmt.Fprintf(r.out, "  warning: could not remove the touched-row log on the %s (%v): `replicator cleanup` removes it\n", name, err)
	}
}
