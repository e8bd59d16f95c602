package cutover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Step names as recorded in replicator.cutover.
const (
	stepFence     = "fence"
	stepDrain     = "drain"
	stepSequences = "sequences"
	stepVerify    = "verify"
	stepFreeze    = "freeze"
	// stepVerifyLive is the verification before the fence (verifylive.go);
	// recorded before the fence, it holds only with the touched-row logs
	// it started, and is forgotten with them.
	stepVerifyLive = "verify-live"
)

// Step statuses. A step is "started" once its plan is recorded and before
// its effect is complete: a rerun finishes it from the record.
const (
	statusStarted = "started"
	statusDone    = "done"
)

const recordDDL = `
CREATE SCHEMA IF NOT EXISTS replicator;
CREATE TABLE IF NOT EXISTS replicator.cutover (
	step       text PRIMARY KEY,
	status     text NOT NULL CHECK (status IN ('started', 'done')),
	detail     jsonb NOT NULL DEFAULT '{}',
	updated_at timestamptz NOT NULL DEFAULT now()
);`

// record is one row of replicator.cutover.
type record struct {
	Status string
	Detail []byte // JSON
}

// ensureRecords creates the bookkeeping table. Dry runs never call it.
func ensureRecords(ctx context.Context, target *pgx.Conn) error {
	if _, err := target.Exec(ctx, recordDDL); err != nil {
		return fmt.Errorf("create replicator.cutover on the target: %w", err)
	}
	return nil
}

// loadRecords reads every step's record; a missing table reads as none.
func loadRecords(ctx context.Context, target *pgx.Conn) (map[string]record, error) {
	out := map[string]record{}
	rows, err := target.Query(ctx, `SELECT step, status, detail::text FROM replicator.cutover`)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedTable || pgErr.Code == pgerrcode.InvalidSchemaName) {
			return out, nil
		}
		return nil, fmt.Errorf("read replicator.cutover on the target: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var step, status, detail string
		if err := rows.Scan(&step, &status, &detail); err != nil {
			return nil, fmt.Errorf("read replicator.cutover on the target: %w", err)
		}
		out[step] = record{Status: status, Detail: []byte(detail)}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read replicator.cutover on the target: %w", err)
	}
	return out, nil
}

// saveRecord writes a step's status and detail (any JSON-encodable value).
func saveRecord(ctx context.Context, target *pgx.Conn, step, status string, detail any) error {
	js, err := json.Marshal(detail)
	if err != nil {
		return fmt.Errorf("encode the %s record: %w", step, err)
	}
	_, err = target.Exec(ctx, `INSERT INTO replicator.cutover (step, status, detail) VALUES ($1, $2, $3::jsonb)
		ON CONFLICT (step) DO UPDATE SET status = EXCLUDED.status, detail = EXCLUDED.detail, updated_at = now()`,
		step, status, string(js))
	if err != nil {
		return fmt.Errorf("record cutover step %s as %s in replicator.cutover on the target: %w", step, status, err)
	}
	return nil
}

// forgetAfterUnfence removes the records of the fence and of the steps
// that only held while the source was fenced, so a later cutover starts
// them again.
func forgetAfterUnfence(ctx context.Context, target *pgx.Conn) error {
	_, err := target.Exec(ctx, `DELETE FROM replicator.cutover WHERE step = ANY($1)`,
		[]string{stepFence, stepDrain, stepSequences, stepVerify, stepFreeze, stepReverse, stepVerifyLive})
	if err != nil {
		return fmt.Errorf("clear the cutover records on the target: %w", err)
	}
	return nil
}

// lockCutover takes a session advisory lock on the target so two cutovers
// of one migration never run at once. Released when the connection closes.
func lockCutover(ctx context.Context, target *pgx.Conn) error {
	var ok bool
	// The key is fixed: one migration per target database.
	if err := target.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('replicator.cutover'))`).Scan(&ok); err != nil {
		return fmt.Errorf("lock the cutover on the target: %w", err)
	}
	if !ok {
		return errors.New("another `replicator cutover` is running against this target: wait for it to finish (or stop it) and run again")
	}
	return nil
}
