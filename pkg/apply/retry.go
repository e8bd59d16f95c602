package apply

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/wal"
)

// A target transaction can lose a lock conflict that has nothing to do
// with the data: the server picks it as the victim of a deadlock with
// another session (DDL of a verification installing its triggers, an
// operator's transaction), or a serialization failure. Nothing of it is
// committed, so the group it held is applied again in the same session,
// from its first statement: the source is neither re-read nor
// reconnected, and a cutover waiting on the stream's slot does not find
// it inactive. Exactly-once holds because the position is recorded in the
// very transaction being retried (commit), and what the applier counts
// (metrics) is counted only after a commit.
//
// lock_not_available (55P03) is left out: the applier sets no
// lock_timeout, and one set on the role or database by the operator is a
// limit they chose; it fails the session as before.

// conflict reports whether err is a target transaction that lost a lock
// conflict and may be applied again as it is. An error of a stage (the
// capture's, or a schema change's DDL) is not: the group held by the
// applier is not what failed.
func conflict(err error) bool {
	var se *StageError
	var pgErr *pgconn.PgError
	if err == nil || errors.As(err, &se) || !errors.As(err, &pgErr) {
		return false
	}
	return slices.Contains(retriedCodes, pgErr.Code)
}

// retriedCodes are the SQLSTATEs of a lost lock conflict, the label
// values of replicator_apply_retries_total.
var retriedCodes = []string{pgerrcode.DeadlockDetected, pgerrcode.SerializationFailure}

// retry applies txns (the whole group of the target transaction that
// failed with err) again in a new target transaction, up to
// Config.ConflictRetries times while it keeps losing conflicts, with a
// short jittered backoff between attempts, and commits it. It returns nil
// once committed, err unchanged when err is no conflict, or the last
// error. txns stay the caller's to close.
func (a *Applier) retry(ctx context.Context, src wal.Source, txns []*wal.Txn, err error) error {
	if !conflict(err) || len(txns) == 0 {
		return err
	}
	wait := &backoff.ExponentialBackOff{InitialInterval: 50 * time.Millisecond, RandomizationFactor: 0.5,
		Multiplier: 2, MaxInterval: time.Second}
	wait.Reset()
	for attempt := 1; conflict(err); attempt++ {
		if attempt > a.cfg.ConflictRetries {
			break
		}
		tables := a.groupTables()
		a.rollback()
		var pgErr *pgconn.PgError
		errors.As(err, &pgErr)
		d := wait.NextBackOff()
		a.log.Warn("the target transaction lost a lock conflict with another session and was rolled back; applying it again",
			zap.String("sqlstate", pgErr.Code), zap.Strings("tables", tables), zap.Int("attempt", attempt),
			zap.Int("of", a.cfg.ConflictRetries), zap.Duration("retry_in", d), zap.Error(err))
		if a.m != nil {
			a.m.ApplyRetries.WithLabelValues(pgErr.Code).Inc()
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		if err = a.replay(ctx, src, txns); err == nil {
			return nil
		}
	}
	return err
}

// groupTables are the tables the target transaction in progress writes,
// sorted (source names, as the applied-changes metric labels them).
func (a *Applier) groupTables() []string {
	var tables []string
	for k := range a.counts {
		if !slices.Contains(tables, k.table) {
			tables = append(tables, k.table)
		}
	}
	slices.Sort(tables)
	return tables
}

func closeAll(txns []*wal.Txn) {
	for _, t := range txns {
		t.Close()
	}
}
