package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/schemachange"
	"replicator/pkg/wal"
)

// SchemaGate is what the applier asks about schema changes
// (schemachange.Handler). Both methods are called from the applier's
// goroutine.
type SchemaGate interface {
	// Before is called before source transaction t is applied (heartbeats
	// included). It returns true when the target's schema must be brought
	// up to date first: the applier commits the transactions it holds,
	// then calls Sync, then applies t. An error stops the stream before
	// t, after the transactions held are committed (a refused schema
	// change takes effect exactly there), or is retried when it is a lost
	// connection.
	Before(ctx context.Context, t *wal.Txn) (bool, error)
	// Sync applies the schema changes Before found to the target. It
	// returns true when it copied tables through the chunk ledger: the
	// applier then reloads its chunk filter.
	Sync(ctx context.Context) (bool, error)
}

// SchemaCaughtUpError: the target refused a row (a data exception or a
// constraint, such as an enum label it lacks), and the source's schema
// had changed in a way the target now has: the session is retried from
// the position recorded on the target, whose transaction the refusal
// rolled back, so the row is applied again after its schema change.
type SchemaCaughtUpError struct{ Err error }

func (e *SchemaCaughtUpError) Error() string {
	return "the target refused a row before a schema change it needed was applied; applied it, retrying: " + e.Err.Error()
}
func (e *SchemaCaughtUpError) Unwrap() error { return e.Err }

// explainRefusedRow is how a schema change that no relation description
// names (an enum label added, a constraint dropped, a column made
// nullable or wider) is ordered under logical capture when the row that
// needs it arrives before the interval poll saw it: the row's refusal
// makes the handler poll at once. A change found is applied and the
// session retried; a change that stops the stream replaces the row's
// error with its own message; nothing found leaves the row's error.
func explainRefusedRow(ctx context.Context, schema *schemachange.Handler, err error, log *zap.Logger) error {
	var ae *ApplyError
	var pgErr *pgconn.PgError
	if err == nil || ctx.Err() != nil || !errors.As(err, &ae) || !errors.As(err, &pgErr) ||
		!strings.HasPrefix(pgErr.Code, "22") && !strings.HasPrefix(pgErr.Code, "23") {
		return err
	}
	changed, serr := schema.Refresh(ctx)
	var re *schemachange.RefusedError
	if errors.As(serr, &re) {
		return &StageError{"apply", serr}
	}
	if serr != nil {
		log.Warn("could not poll the source's schema after the target refused a row", zap.Error(serr))
		return err
	}
	if !changed {
		return err
	}
	return &StageError{"apply", &SchemaCaughtUpError{err}}
}

// gate runs the schema gate before t; see SchemaGate. On error t is closed.
func (a *Applier) gate(ctx context.Context, src wal.Source, t *wal.Txn) error {
	need, err := a.schema.Before(ctx, t)
	if err == nil && !need {
		return nil
	}
	if len(a.txns) > 0 {
		// What precedes t is committed first: a refusal stops the stream
		// exactly before t, and the target's DDL takes no lock against an
		// open transaction of ours.
		held := a.txns
		cerr := a.commit(ctx, src)
		if cerr = a.retry(ctx, src, held, cerr); cerr != nil {
			// A stage's error: t, taken from the source, is not among the
			// group's transactions, so Run must not apply them again.
			closeAll(held)
			t.Close()
			return &StageError{"apply", cerr}
		}
	}
	if err != nil {
		t.Close()
		return &StageError{"capture", err}
	}
	copied, err := a.schema.Sync(ctx)
	if err != nil {
		t.Close()
		return &StageError{"apply", err}
	}
	// Plans are per relation description and target table: the target's
	// tables changed, so they are read again.
	a.cat = newCatalog()
	if copied {
		if a.chunks, err = LoadChunkFilter(ctx, a.conn); err != nil {
			t.Close()
			return fmt.Errorf("reload the chunk ledger after copying new tables: %w", err)
		}
	}
	return nil
}

// narrowInsert returns an INSERT without the columns it does not carry.
// Under trigger capture an insert recorded before an ADD COLUMN is read
// with the table's newer column list, the new columns marked unchanged:
// the row was written before they existed, so the target gives them the
// value the source gave existing rows (the default the column was added
// with; a volatile default has the table copied again instead, see
// pkg/schemachange). Inserts that carry every column are returned as
// they are. The narrowed relation descriptions are kept per column set.
func (a *Applier) narrowInsert(c *wal.Change) *wal.Change {
	if c.Kind != wal.Insert {
		return c
	}
	missing := false
	for _, v := range c.New {
		if v.Kind == wal.ValueUnchanged {
			missing = true
			break
		}
	}
	if !missing {
		return c
	}
	mask := make([]byte, len(c.New))
	for i, v := range c.New {
		mask[i] = '1'
		if v.Kind == wal.ValueUnchanged {
			mask[i] = '0'
		}
	}
	if a.narrowed == nil || len(a.narrowed) > 10000 {
		a.narrowed = map[narrowKey]*wal.Relation{}
	}
	key := narrowKey{c.Rel, string(mask)}
	rel := a.narrowed[key]
	if rel == nil {
		r := *c.Rel
		r.Columns = nil
		for i, col := range c.Rel.Columns {
			if i < len(mask) && mask[i] == '1' {
				r.Columns = append(r.Columns, col)
			}
		}
		rel = &r
		a.narrowed[key] = rel
	}
	n := *c
	n.Rel = rel
	n.New = make([]wal.Value, 0, len(rel.Columns))
	for i, v := range c.New {
		if mask[i] == '1' {
			n.New = append(n.New, v)
		}
	}
	return &n
}

type narrowKey struct {
	rel  *wal.Relation
	mask string
}
