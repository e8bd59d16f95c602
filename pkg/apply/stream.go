package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/position"
	"replicator/pkg/schemachange"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

// StreamConfig configures `replicator stream`.
type StreamConfig struct {
	SourceURL string // required
	TargetURL string // required

	Apply Config
	// Capture tuning; its SourceURL, Slot, Publication and Start are filled
	// from the target's state and ignored here. TxnMemory and SpillDir
	// serve trigger capture too.
	Capture wal.Config
	// Trigger tunes trigger capture, used when the target's state says the
	// snapshot was taken with it.
	Trigger trigger.Config

	// MinBackoff and MaxBackoff bound the wait before reconnecting after a
	// retryable error; it doubles each time, with ±25% jitter kept within
	// the bounds, and starts over at MinBackoff after a run longer than
	// twice MaxBackoff. Defaults (0) 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// SourcePollInterval is how often the source's WAL end is read for
	// replicator_source_lag_bytes. Default (0) 2s.
	SourcePollInterval time.Duration
	// SequenceInterval is how often the target's sequences are moved
	// forward to the source's while streaming (sequences.go). Default (0)
	// 10s; negative: never (cutover still moves them).
	SequenceInterval time.Duration

	// DDL is what the stream does with schema changes on the source
	// (pkg/schemachange): schemachange.ModeApply (default, "") applies the
	// additive ones and stops on the others, ModeStop stops on every one.
	DDL schemachange.Mode
	// SchemaPollInterval is the longest time between two polls of the
	// source's catalog. Default (0) 2s.
	SchemaPollInterval time.Duration
	// TableCopier copies tables created on the source through the chunk
	// ledger (snapshot.TableCopier{}); nil: such a table stops the stream.
	TableCopier schemachange.Copier
	// SchemaMetrics receives replicator_schema_changes_total; nil: none.
	SchemaMetrics *schemachange.Metrics

	// Metrics and TriggerMetrics receive the stream's metrics and trigger
	// capture's. Build them once per process (NewMetrics,
	// trigger.NewMetrics): they outlive the stream's reconnects. nil: no
	// metrics.
	Metrics        *Metrics
	TriggerMetrics *trigger.Metrics
}

// Validate applies defaults and checks the configuration.
func (c *StreamConfig) Validate() error {
	if c.SourceURL == "" {
		return errors.New("stream: no source URL: pass --source or set REPLICATOR_SOURCE_URL")
	}
	if c.TargetURL == "" {
		return errors.New("stream: no target URL: pass --target or set REPLICATOR_TARGET_URL")
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.SourcePollInterval == 0 {
		c.SourcePollInterval = 2 * time.Second
	}
	if c.SequenceInterval == 0 {
		c.SequenceInterval = 10 * time.Second
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("stream: backoff bounds %s..%s are invalid", c.MinBackoff, c.MaxBackoff)
	}
	return c.Apply.Validate()
}

// StageError says which stage of the stream failed: "connect", "capture"
// or "apply" (the label of replicator_stream_errors_total).
type StageError struct {
	Stage string
	Err   error
}

func (e *StageError) Error() string { return e.Err.Error() }
func (e *StageError) Unwrap() error { return e.Err }

// ErrSnapshotNotDone is returned when the target's snapshot has not
// finished: streaming onto a partial copy would lose rows.
var ErrSnapshotNotDone = errors.New("the snapshot into the target has not finished: run `replicator snapshot` (or `replicator run`) to complete it before streaming")

// Stream applies the source's changes to the target until ctx ends (then it
// finishes the target transaction in progress and returns nil) or a fatal
// error. Retryable errors (connections lost, a server restarting) are
// retried with bounded exponential backoff; the stream resumes from the
// position recorded on the target, so nothing is applied twice. A panic
// inside the stream stops it with a *PanicError (its stack in the log).
// Metrics go to cfg.Metrics and cfg.TriggerMetrics.
func Stream(ctx context.Context, cfg StreamConfig, log *zap.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	m := cfg.Metrics
	if m == nil {
		m = newMetrics() // unregistered: updated below, read by nobody
	}
	wait := newReconnectBackoff(cfg.MinBackoff, cfg.MaxBackoff)
	started := false
	for {
		began := time.Now()
		err := guard("apply", log, func() error { return attempt(ctx, cfg, m, log, &started) })()
		if ctx.Err() != nil {
			log.Info("stream stopped")
			return nil
		}
		if err == nil {
			err = errors.New("stream ended unexpectedly")
		}
		stage := "apply"
		var se *StageError
		if errors.As(err, &se) {
			stage = se.Stage
		}
		m.StreamErrors.WithLabelValues(stage).Inc()
		if le := (*StreamLockedError)(nil); !errors.As(err, &le) {
			recordError(cfg.TargetURL, err, log) // not over the running stream's own record
		}
		var ce *pgutil.ConnError
		if !IsRetryable(err) || (!started && errors.As(err, &ce)) {
			// A server that cannot be reached at the very start is more
			// likely a wrong URL than a restart: say so and stop.
			return err
		}
		if time.Since(began) > 2*cfg.MaxBackoff {
			wait.Reset() // it ran a good while: a fresh incident
		}
		retryIn := wait.Next()
		log.Warn("stream interrupted; reconnecting", zap.String("stage", stage), zap.Error(err), zap.Duration("retry_in", retryIn))
		timer := time.NewTimer(retryIn)
		select {
		case <-ctx.Done():
			timer.Stop()
			log.Info("stream stopped")
			return nil
		case <-timer.C:
		}
	}
}

// attempt runs one session: connect, read the state, stream, apply.
func attempt(ctx context.Context, cfg StreamConfig, m *Metrics, log *zap.Logger, started *bool) error {
	target, err := pgutil.Connect(ctx, cfg.TargetURL, "target")
	if err != nil {
		return &StageError{"connect", err}
	}
	defer target.Close(context.Background())
	st, err := state.Load(ctx, target)
	if err != nil {
		return &StageError{"connect", err}
	}
	if err := lockStream(ctx, target); err != nil {
		return &StageError{"connect", err}
	}
	if st.SnapshotStatus != state.SnapshotDone {
		return &StageError{"connect", ErrSnapshotNotDone}
	}
	// Schema changes made while the stream was down are brought over
	// first (the additive ones; a refused one waits for its position).
	schema, err := schemachange.Open(ctx, schemachange.Config{SourceURL: cfg.SourceURL, TargetURL: cfg.TargetURL,
		Mode: cfg.DDL, Capture: st.Capture, Publication: st.Publication, PollInterval: cfg.SchemaPollInterval,
		Trigger: cfg.Trigger, Metrics: cfg.SchemaMetrics, Copier: cfg.TableCopier, FenceBypass: cfg.Apply.FenceBypass}, log)
	if err != nil {
		return &StageError{"connect", err}
	}
	defer schema.Close()
	if _, err := schema.Sync(ctx); err != nil {
		return &StageError{"apply", err}
	}
	switch {
	case st.Capture == state.CaptureTrigger:
		return attemptTrigger(ctx, cfg, target, st, m, log, started, schema)
	case st.Capture != state.CaptureLogical:
		return &StageError{"connect", fmt.Errorf("the target's migration uses %q capture, which this version does not know", st.Capture)}
	}
	start, err := position.ParseLSN(st.ConsistentLSN)
	if err != nil {
		return &StageError{"connect", fmt.Errorf("the target's state has no valid consistent LSN (%q): run `replicator snapshot` again", st.ConsistentLSN)}
	}
	if start.Less(st.Applied) {
		start = st.Applied
	}
	ccfg := cfg.Capture
	ccfg.SourceURL, ccfg.Slot, ccfg.Publication = cfg.SourceURL, st.SlotName, st.Publication
	ccfg.Start = start.LSN()
	src, err := wal.OpenLogical(ctx, ccfg, log)
	if err != nil {
		return &StageError{"capture", err}
	}
	defer src.Close()
	ap, err := NewApplier(ctx, target, cfg.Apply, start, st.AppliedCommitTime, m, log)
	if err != nil {
		return &StageError{"apply", err}
	}
	ap.SetSchemaGate(schema)
	*started = true
	err = applyAndWatch(ctx, ap, src, m, log, withSequences(cfg, log, func(ctx context.Context) { watchLag(ctx, cfg, src, ap, m, log) }))
	return explainRefusedRow(ctx, schema, err, log)
}

// watchLag keeps the lag gauges current. The source's WAL end is read on
// a plain connection; the keepalives' position covers the gaps.
func watchLag(ctx context.Context, cfg StreamConfig, src *wal.Logical, ap *Applier, m *Metrics, log *zap.Logger) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var polled pglogrepl.LSN
	lastPoll := time.Time{}
	lastLog := time.Now()
	for {
		if time.Since(lastPoll) >= cfg.SourcePollInterval {
			lastPoll = time.Now()
			if conn == nil {
				c, err := pgutil.Connect(ctx, cfg.SourceURL, "source")
				if err == nil {
					conn = c
				}
			}
			if conn != nil {
				var lsn pglogrepl.LSN
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := conn.QueryRow(qctx, "SELECT pg_current_wal_lsn()").Scan(&lsn)
				cancel()
				if err != nil {
					conn.Close(context.Background())
					conn = nil
				} else {
					polled = lsn
				}
			}
		}
		end := max(polled, src.SourceEnd())
		applied := ap.Applied().LSN()
		if end > applied {
			m.SourceLagBytes.Set(float64(end - applied))
		} else {
			m.SourceLagBytes.Set(0)
		}
		if time.Since(lastLog) >= 30*time.Second {
			lastLog = time.Now()
			log.Info("stream progress", zap.Stringer("applied_lsn", applied), zap.Stringer("source_lsn", end),
				zap.Uint64("lag_bytes", uint64(max(end, applied)-applied)))
		}
		if first, busy := ap.Busy(); busy {
			m.ApplyLagSeconds.Set(max(0, time.Since(first).Seconds()))
		} else if !src.Pending() {
			m.ApplyLagSeconds.Set(0)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// recordError stores the error in the target's state for `replicator
// status`, on a connection of its own (the stream's may be gone).
func recordError(targetURL string, err error, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, cerr := pgutil.Connect(ctx, targetURL, "target")
	if cerr != nil {
		return
	}
	defer conn.Close(ctx)
	if rerr := state.RecordError(ctx, conn, pgutil.RedactText(err.Error())); rerr != nil {
		log.Debug("could not record the error in the target's state", zap.Error(rerr))
	}
}
