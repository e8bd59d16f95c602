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
// cutover only watches the stream drain, it does not apply anything.
func checkStream(ctx context.Context, src *pgx.Conn, st *state.State, srcFlag, tgtFlag string) (string, error) {
	startIt := fmt.Sprintf("start `replicator stream --source %s --target %s` (or `replicator run`) and keep it running during the cutover", srcFlag, tgtFlag)
	switch st.Capture {
	case state.CaptureLogical:
		var active bool
		err := src.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, st.SlotName).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return "", fmt.Errorf("cutover: the source has no replication slot %q: the stream cannot deliver the last changes; take a new snapshot (`replicator snapshot`)", st.SlotName)
		}
		if err != nil {
			return "", fmt.Errorf("source: read pg_replication_slots: %w", err)
		}
		if !active {
			return "", fmt.Errorf("cutover: no stream is running (slot %q on the source is inactive): %s", st.SlotName, startIt)
		}
		return fmt.Sprintf("logical capture, slot %s active", st.SlotName), nil
	case state.CaptureTrigger:
		var age *float64
		err := src.QueryRow(ctx, `SELECT extract(epoch FROM now() - max(at))::float8 FROM replicator.ticks`).Scan(&age)
		if err != nil {
			return "", fmt.Errorf("source: read replicator.ticks (trigger capture): %w", err)
		}
		if age == nil || *age > 60 {
			return "", fmt.Errorf("cutover: no stream is running (the source's trigger capture was not ticked in the last minute): %s", startIt)
		}
		return "trigger capture, ticked recently", nil
	default:
		return "", fmt.Errorf("cutover: replicator.state on the target names capture %q, which this version does not know: upgrade replicator", st.Capture)
	}
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
		from := st.AppliedLSN
		if from == "" {
			from = st.ConsistentLSN
		}
		if err := src.QueryRow(ctx, `SELECT greatest(pg_current_wal_lsn() - $1::pg_lsn, 0)::bigint`, from).Scan(&l.Bytes); err != nil {
			return l, nil, fmt.Errorf("source: read WAL position: %w", err)
		}
		// Under one WAL page the difference is the stream's own
		// bookkeeping and keepalives, not unapplied changes.
		behind = l.Bytes > 8192
	case state.CaptureTrigger:
		var last int64
		if err := src.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM replicator.ticks`).Scan(&last); err != nil {
			return l, nil, fmt.Errorf("source: read replicator.ticks: %w", err)
		}
		l.Batches = max(last-st.AppliedBatch, 0)
		// The ticker closes a batch every second or so: one batch behind
		// is the stream working.
		behind = l.Batches > 1
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
		var got pglogrepl.LSN
		if st.AppliedLSN != "" {
			if got, err = pglogrepl.ParseLSN(st.AppliedLSN); err != nil {
				return false, "", fmt.Errorf("replicator.state applied_lsn %q: %w", st.AppliedLSN, err)
			}
		}
		if got >= want {
			return true, "applied " + st.AppliedLSN, nil
		}
		return false, fmt.Sprintf("applied %s of %s, %d bytes to go", got, want, uint64(want-got)), nil
	}
	if st.AppliedBatch >= hw.Tick {
		return true, fmt.Sprintf("applied batch %d", st.AppliedBatch), nil
	}
	return false, fmt.Sprintf("applied batch %d of %d", st.AppliedBatch, hw.Tick), nil
}

// waitFor polls cond every cfg.PollInterval, printing its progress every
// cfg.ProgressInterval, until it holds or cfg.Timeout passes (then the
// error says what to do).
func (r *runner) waitFor(ctx context.Context, n int, title string, cond func() (bool, string, error), timeoutFix string) (string, error) {
	deadline := time.Now().Add(r.cfg.Timeout)
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
			return "", fmt.Errorf("cutover step %d (%s): gave up after %s (%s): %s", n, title, r.cfg.Timeout, detail, timeoutFix)
		}
		if !time.Now().Before(nextPrint) {
			r.step(n, title, "waiting", detail)
			nextPrint = time.Now().Add(r.cfg.ProgressInterval)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(r.cfg.PollInterval):
		}
	}
}
