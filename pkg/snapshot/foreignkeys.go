package snapshot

// Foreign keys after a chunked copy. Each chunk is read under a snapshot
// of its own, so until the stream has applied what those snapshots did
// not see, a copied row may reference one that another chunk's snapshot
// did not hold (yet, or any more): the keys are created NOT VALID, which
// enforces them for every later write but checks no existing row. They
// are recorded in replicator.pending_fks on the target, in the same
// transaction that creates them, and stay there until ALTER TABLE …
// VALIDATE CONSTRAINT has succeeded: ValidateForeignKeys tries each (the
// stream does, with backoff, once it runs; cutover does before it
// fences), and status, verify and cutover name the ones left.

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/pkg/state"
)

// recordPendingFKs records keys in tx, the transaction that creates them.
func recordPendingFKs(ctx context.Context, tx pgx.Tx, keys []state.ForeignKey) error {
	if len(keys) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, state.PendingFKsDDL); err != nil {
		return fmt.Errorf("create replicator.pending_fks on the target: %w", err)
	}
	for _, k := range keys {
		if _, err := tx.Exec(ctx, `INSERT INTO replicator.pending_fks (table_name, constraint_name) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			k.Table, k.Name); err != nil {
			return fmt.Errorf("record foreign key %s as not validated on the target: %w", k, err)
		}
	}
	return nil
}

// ValidateForeignKeys runs ALTER TABLE … VALIDATE CONSTRAINT for each
// pending foreign key, each in a transaction of its own that also
// removes its record. A key whose rows do not hold yet (SQLSTATE 23503:
// the stream has not caught up, or the target's rows differ from the
// source's) stays pending with the error recorded, and is in left. The
// check takes a SHARE UPDATE EXCLUSIVE lock on the referencing table:
// the stream's and the app's writes go on meanwhile.
func ValidateForeignKeys(ctx context.Context, target *pgx.Conn) (validated, left []state.ForeignKey, err error) {
	keys, err := state.PendingForeignKeys(ctx, target)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range keys {
		err := pgx.BeginFunc(ctx, target, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "ALTER TABLE "+k.Table+" VALIDATE CONSTRAINT "+k.Name); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DELETE FROM replicator.pending_fks WHERE table_name = $1 AND constraint_name = $2`, k.Table, k.Name)
			return err
		})
		var pgErr *pgconn.PgError
		switch {
		case err == nil:
			validated = append(validated, k)
		case errors.As(err, &pgErr) && (pgErr.Code == pgerrcode.UndefinedObject || pgErr.Code == pgerrcode.UndefinedTable):
			// The key, or its table, is no longer on the target (dropped
			// by hand, as a refused drop's fix says): nothing is left to
			// validate, and a key the source still has is verify's
			// schema difference to report, not a pending one that would
			// hold cutover back for good.
			if _, err := target.Exec(ctx, `DELETE FROM replicator.pending_fks WHERE table_name = $1 AND constraint_name = $2`, k.Table, k.Name); err != nil {
				return validated, left, fmt.Errorf("forget foreign key %s, gone from the target: %w", k, err)
			}
		case errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ForeignKeyViolation:
			k.LastError = pgErr.Message
			if pgErr.Detail != "" {
				k.LastError += ": " + pgErr.Detail
			}
			if _, err := target.Exec(ctx, `UPDATE replicator.pending_fks SET last_error = $3, tried_at = now() WHERE table_name = $1 AND constraint_name = $2`,
				k.Table, k.Name, k.LastError); err != nil {
				return validated, left, fmt.Errorf("record why foreign key %s is not valid yet on the target: %w", k, err)
			}
			left = append(left, k)
		default:
			return validated, left, fmt.Errorf("validate foreign key %s on the target: %w", k, err)
		}
	}
	return validated, left, nil
}

// PendingForeignKeysError says which foreign keys are not validated yet
// and how to finish them.
func PendingForeignKeysError(keys []state.ForeignKey) error {
	lines := make([]string, len(keys))
	for i, k := range keys {
		lines[i] = k.String()
		if k.LastError != "" {
			lines[i] += " (" + k.LastError + ")"
		}
	}
	return fmt.Errorf("%d foreign keys copied NOT VALID are not validated yet on the target: %s; they are validated once the stream has caught up with every chunk of the copy (it retries while it runs; a key that still fails names rows that differ from the source: run `replicator verify`); by hand: ALTER TABLE … VALIDATE CONSTRAINT …",
		len(keys), strings.Join(lines, "; "))
}
