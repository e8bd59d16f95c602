package demo

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/internal/demoapp"
	"replicator/pkg/apply"
	"replicator/pkg/cutover"
	"replicator/pkg/trigger"
	"replicator/pkg/verify"
)

// Fallback is what the demo's fallback window proved.
type Fallback struct {
	TargetWrites  int64   // write transactions the app committed on the target
	Counted       string  // the rows they wrote, counted on the source after the rollback
	Identical     bool    // every table's rows and row count the same on both sides after the rollback
	FreezeSeconds float64 // the rollback's write freeze, as recorded on the source
}

// fallbackWrites is how long the app writes to the target.
const fallbackWrites = 3 * time.Second

// fallback runs the fallback window after the cutover: the reverse stream
// starts, the app writes to the target for a few seconds, the rollback
// carries everything back and unfences the source; then the rows the app
// wrote on the target are counted on the source with plain queries.
func fallback(ctx context.Context, o Options, source, target string, vm *verify.Metrics) (*Fallback, error) {
	say := func(format string, args ...any) { fmt.Fprintf(o.Out, format+"\n", args...) }
	revCtx, stopRev := context.WithCancel(ctx)
	defer stopRev()
	revErr := make(chan error, 1)
	go func() {
		revErr <- cutover.Reverse(revCtx, cutover.ReverseConfig{SourceURL: source, TargetURL: target,
			Stream: apply.StreamConfig{Trigger: trigger.Config{TickInterval: 200 * time.Millisecond}}}, o.Log)
	}()
	tgt, err := pgx.Connect(ctx, target)
	if err != nil {
		return nil, err
	}
	defer tgt.Close(context.Background())
	var switched time.Time
	if err := tgt.QueryRow(ctx, `SELECT now()`).Scan(&switched); err != nil {
		return nil, err
	}
	var st demoapp.Stats
	appCtx, stopApp := context.WithTimeout(ctx, fallbackWrites)
	demoapp.Load(appCtx, target, o.WritesPerSecond, &st)
	stopApp()
	say("      the app wrote to the target for %s: %d write transactions committed there (%d failed)", fallbackWrites, st.Transactions.Load(), st.Errors.Load())
	select {
	case err := <-revErr:
		return nil, fmt.Errorf("reverse stream stopped: %w", err)
	default:
	}

	err = cutover.Rollback(ctx, cutover.Config{SourceURL: source, TargetURL: target, SequenceMargin: 1000,
		Timeout: 2 * time.Minute, VerifyMetrics: vm}, indent(o.Out), o.Log)
	if err != nil && !errors.Is(err, cutover.ErrDifferences) {
		return nil, fmt.Errorf("rollback: %w", err)
	}
	fb := &Fallback{TargetWrites: st.Transactions.Load(), Identical: err == nil}
	stopRev()
	if err := <-revErr; err != nil && !errors.Is(err, context.Canceled) {
		o.Log.Warn("reverse stream ended with an error", zap.Error(err))
	}

	// Counted with plain queries, not by the code under test.
	src, err := pgx.Connect(ctx, source)
	if err != nil {
		return nil, err
	}
	defer src.Close(context.Background())
	const since = `SELECT (SELECT count(*) FROM users WHERE created_at >= $1), (SELECT count(*) FROM events WHERE created_at >= $1),
		(SELECT count(*) FROM audit_log WHERE at >= $1)`
	var su, se, sa, tu, te, ta int64
	if err := src.QueryRow(ctx, since, switched).Scan(&su, &se, &sa); err != nil {
		return nil, err
	}
	if err := tgt.QueryRow(ctx, since, switched).Scan(&tu, &te, &ta); err != nil {
		return nil, err
	}
	fb.Counted = fmt.Sprintf("%d users, %d events, %d audit rows written on the target since the switch (the target holds %d, %d, %d)", su, se, sa, tu, te, ta)
	if su != tu || se != te || sa != ta || su == 0 {
		fb.Identical = false
	}
	var diff []string
	rows, err := src.Query(ctx, `SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		var a, b int64
		if err := src.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&a); err != nil {
			return nil, err
		}
		if err := tgt.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&b); err != nil {
			return nil, err
		}
		if a != b {
			diff = append(diff, fmt.Sprintf("%s: source %d, target %d", t, a, b))
		}
	}
	if len(diff) > 0 {
		fb.Identical = false
		say("      row counts differ: %s", strings.Join(diff, "; "))
	}
	if err := src.QueryRow(ctx, `SELECT coalesce((SELECT (detail->>'seconds')::float8 FROM replicator.cutover WHERE step = 'freeze'), 0)`).Scan(&fb.FreezeSeconds); err != nil {
		return nil, err
	}
	say("      on the source after the rollback, counted there: %s; every table's row count equals the target's: %t", fb.Counted, len(diff) == 0)
	if _, err := src.Exec(ctx, `INSERT INTO audit_log (actor, action) VALUES ('app', 'back on the source')`); err != nil {
		fb.Identical = false
		say("      the app cannot write to the source after the rollback: %v", err)
	} else {
		say("      the app writes to the source again")
	}
	return fb, nil
}
