package cutover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// checkStream refuses a migration whose stream is not running: the
// cutover only watches the stream drain, it does not apply anything. A
// logical stream's slot inactive for less than wait is taken for a
// stream reconnecting, and waited for.
func checkStream(ctx context.Context, src *pgx.Conn, st *state.State, srcFlag, tgtFlag string, wait time.Duration) (string, error) {
	startIt := fmt.Sprintf("start `replicator stream --source %s --target %s` (or `replicator run`) and keep it running during the cutover", srcFlag, tgtFlag)
	switch st.Capture {
	case state.CaptureLogical:
		// A running stream leaves its slot for as long as it takes to
		// reconnect after an error (a deadlock with the target's own
		// DDL, a cut connection): one inactive for all of wait is no
		// stream, one active again within it is the same stream back.
		deadline := time.Now().Add(wait)
		for {
			var active bool
			err := src.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, st.SlotName).Scan(&active)
			if errors.Is(err, pgx.ErrNoRows) {
				return "", fmt.Errorf("cutover: the source has no replication slot %q: the stream cannot deliver the last changes; take a new snapshot (`replicator snapshot`)", st.SlotName)
			}
			if err != nil {
				return "", fmt.Errorf("source: read pg_replication_slots: %w", err)
			}
			if active {
				return fmt.Sprintf("logical capture, slot %s active", st.SlotName), nil
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("cutover: no stream is running (slot %q on the source is inactive): %s", st.SlotName, startIt)
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	case state.CaptureTrigger:
		var age *float64
		err := src.QueryRow(ctx, `SELECT extract(epoch FROM now() - max(at))::float8 FROM replicator.ticks`).Scan(&age)
		if err != nil {
			return "", fmt.Errorf("source: read replicator.ticks (trigger capture): %w", err)
		}
		if age == nil || *age > 60 {
			return "", fmt.Errorf("cutover: no stream is running (the source's trigger capture was not ticked in the last minute): %s", startIt)
		}
		return "trigger capture", nil
	default:
		return "", fmt.Errorf("cutover: replicator.state on the target names capture %q, which this version does not know: upgrade replicator", st.Capture)
	}
}

// streamFresh is how recently the target must have applied a batch (or,
// logical, a transaction while behind) for the stream to count as running.
// The trigger ticker closes a batch every second, and an empty batch is
// applied too (its position recorded), so a running stream moves well
// within it.
const streamFresh = 10 * time.Second

// checkApplying refuses a stream that does not apply: judged from what the
// target applied (replicator.state.applied_at, on the target's clock), not
// from the source's ticks, which a stopped stream may have left fresh.
func checkApplying(ctx context.Context, src, tgt *pgx.Conn, st *state.State, srcFlag, tgtFlag string) (string, error) {
	var age *float64
	if err := tgt.QueryRow(ctx, `SELECT extract(epoch FROM now() - applied_at)::float8 FROM replicator.state`).Scan(&age); err != nil {
		return "", fmt.Errorf("target: read replicator.state: %w", err)
	}
	startIt := fmt.Sprintf("start `replicator stream --source %s --target %s` (or `replicator run`) and run cutover once it applies", srcFlag, tgtFlag)
	if st.Capture == state.CaptureLogical {
		// An idle logical stream applies nothing and records nothing: it
		// only has to have moved if the source is ahead of it.
		l, _, err := measureLag(ctx, src, tgt)
		if err != nil {
			return "", err
		}
		if l.Bytes <= 8192 {
			return "caught up", nil
		}
	}
	if age == nil {
		return "", fmt.Errorf("cutover: no stream is running (the target has applied nothing yet): %s", startIt)
	}
	if *age > streamFresh.Seconds() {
		return "", fmt.Errorf("cutover: no stream is running (the target last applied a batch %.0f s ago, want within %s): %s", *age, streamFresh, startIt)
	}
	return fmt.Sprintf("applied %.1f s ago", *age), nil
}

// lag is the apply lag as the cutover measures it.
type lag struct {
	Bytes   int64   // logical: source WAL not yet applied
	Batches int64   // trigger: ticks not yet applied
	Seconds float64 // 0 when caught up, else the age of the last applied commit
}

func (l lag) String() string {
	if l.Batches > 0 || (l.Bytes == 0 && l.Seconds > 0) {
		return fmt.Sprintf("%.1f s, %d batches behind", l.Seconds, l.Batches)
	}
	return fmt.Sprintf("%.1f s, %d bytes of source WAL behind", l.Seconds, l.Bytes)
}

// measureLag compares the source's position with what the target applied.
// Seconds are the source clock's now minus the source commit time of the
// last applied transaction, counted only when the target is behind: an
// idle, caught-up source is no lag.
func measureLag(ctx context.Context, src, tgt *pgx.Conn) (lag, *state.State, error) {
	var l lag
	st, err := state.Load(ctx, tgt)
	if err != nil {
		return l, nil, err
	}
	var behind bool
	switch st.Capture {
	case state.CaptureLogical:
		from := st.ConsistentLSN
		if !st.Applied.IsZero() {
			from = st.Applied.LSN().String()
		}
		if err := src.QueryRow(ctx, `SELECT greatest(pg_current_wal_lsn() - $1::pg_lsn, 0)::bigint`, from).Scan(&l.Bytes); err != nil {
			return l, nil, fmt.Errorf("source: read WAL position: %w", err)
		}
		// Under one WAL page the difference is the stream's own
		// bookkeeping and keepalives, not unapplied changes.
		behind = l.Bytes > 8192
	case state.CaptureTrigger:
		// Ticks come from the stream itself: a stopped stream makes no
		// ticks, and counting ticks alone would call it caught up. So the
		// changelog is asked too: any change the applied tick's snapshot
		// does not see is waiting, and the lag is that tick's age on the
		// source's clock.
		var last int64
		var tickAge *float64
		var pending bool
		if err := src.QueryRow(ctx, `SELECT coalesce((SELECT max(id) FROM replicator.ticks), 0),
				(SELECT greatest(extract(epoch FROM now() - at), 0)::float8 FROM replicator.ticks WHERE id = $1),
				EXISTS (SELECT 1 FROM replicator.changelog c
					WHERE NOT pg_visible_in_snapshot(c.txid, (SELECT snap FROM replicator.ticks WHERE id = $1)))`,
			st.Applied.ID()).Scan(&last, &tickAge, &pending); err != nil {
			return l, nil, fmt.Errorf("source: read replicator.ticks and replicator.changelog: %w", err)
		}
		l.Batches = max(last-st.Applied.ID(), 0)
		// The ticker closes a batch every second or so: one batch behind
		// is the stream working.
		behind = l.Batches > 1 || pending
		if behind && tickAge != nil {
			l.Seconds = *tickAge
			return l, st, nil
		}
	}
	if behind {
		since := st.AppliedCommitTime
		if since.IsZero() {
			since = st.StartedAt
		}
		if err := src.QueryRow(ctx, `SELECT greatest(extract(epoch FROM now() - $1::timestamptz), 0)::float8`, since).Scan(&l.Seconds); err != nil {
			return l, nil, fmt.Errorf("source: read the clock: %w", err)
		}
	}
	return l, st, nil
}

// highWater is a source position: an LSN for logical capture, a tick for
// trigger capture.
type highWater struct {
	LSN  string `json:"lsn,omitempty"`
	Tick int64  `json:"tick,omitempty"`
}

// takeHighWater records the source's current position: everything
// committed before it is what the target must hold.
func takeHighWater(ctx context.Context, src *pgx.Conn, st *state.State, sourceURL string, log *zap.Logger) (highWater, error) {
	switch st.Capture {
	case state.CaptureLogical:
		var hw highWater
		if err := src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&hw.LSN); err != nil {
			return hw, fmt.Errorf("source: read the high-water mark pg_current_wal_lsn(): %w", err)
		}
		return hw, nil
	default:
		// A tick closes a batch holding every transaction committed before
		// it; applying that batch is reaching the mark.
		capt, err := trigger.New(ctx, sourceURL, trigger.Config{}, log, nil)
		if err != nil {
			return highWater{}, err
		}
		defer capt.Close()
		id, err := capt.Tick(ctx)
		if err != nil {
			return highWater{}, err
		}
		return highWater{Tick: id}, nil
	}
}

// reached reports whether the target has applied hw, and what remains.
func reached(ctx context.Context, src, tgt *pgx.Conn, hw highWater) (bool, string, error) {
	st, err := state.Load(ctx, tgt)
	if err != nil {
		return false, "", err
	}
	if hw.LSN != "" {
		want, err := pglogrepl.ParseLSN(hw.LSN)
		if err != nil {
			return false, "", fmt.Errorf("high-water mark %q: %w", hw.LSN, err)
		}
		got := st.Applied.LSN() // 0 when nothing is applied yet
		if got >= want {
			return true, "applied " + got.String(), nil
		}
		return false, fmt.Sprintf("applied %s of %s, %d bytes to go", got, want, uint64(want-got)), nil
	}
	if st.Applied.ID() >= hw.Tick {
		return true, fmt.Sprintf("applied batch %d", st.Applied.ID()), nil
	}
	return false, fmt.Sprintf("applied batch %d of %d", st.Applied.ID(), hw.Tick), nil
}

// waitFor polls cond every cfg.PollInterval (at most freezePoll once
// fenced), printing its progress every cfg.ProgressInterval, until it
// holds or cfg.Timeout passes (then the error says what to do).
func (r *runner) waitFor(ctx context.Context, n int, title string, cond func() (bool, string, error), timeoutFix string) (string, error) {
	poll := r.cfg.PollInterval
	if r.fenced {
		// Inside the write freeze every poll interval is downtime.
		poll = min(poll, freezePoll)
	}
	return pollUntil(ctx, &r.cfg, "cutover", poll, r.step, n, title, cond, timeoutFix)
}

// pollUntil is waitFor of both directions: what ("cutover", "rollback")
// starts the timeout's error, step prints the progress.
func pollUntil(ctx context.Context, cfg *Config, what string, poll time.Duration, step func(n int, title, status, detail string),
	n int, title string, cond func() (bool, string, error), timeoutFix string) (string, error) {
	deadline := time.Now().Add(cfg.Timeout)
	nextPrint := time.Now()
	for {
		ok, detail, err := cond()
		if err != nil {
			return "", err
		}
		if ok {
			return detail, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s step %d (%s): gave up after %s (%s): %s", what, n, title, cfg.Timeout, detail, timeoutFix)
		}
		if !time.Now().Before(nextPrint) {
			step(n, title, "waiting", detail)
			nextPrint = time.Now().Add(cfg.ProgressInterval)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(poll):
		}
	}
}

// freezePoll bounds the poll interval of a step waiting inside the freeze.
const freezePoll = 20 * time.Millisecond
