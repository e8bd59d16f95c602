package cutover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/snapshot"
)

// seqMove is one target sequence and where the cutover puts it.
type seqMove struct {
	Name    string `json:"name"` // quoted for SQL
	Display string `json:"-"`    // quoted only where SQL needs it
	Source  int64  `json:"source"`
	From    int64  `json:"from"` // the target's last value before
	To      int64  `json:"to"`   // == From when no move is needed
	Descend bool   `json:"descending,omitempty"`
}

func (m seqMove) moves() bool { return m.To != m.From }

// planSequences works out, for every source sequence, the target value of
// at least the source's value plus margin (minus, for a descending one),
// never moving a target sequence backwards.
func planSequences(ctx context.Context, src, tgt *pgx.Conn, margin int64) ([]seqMove, error) {
	seqs, err := snapshot.ReadSequences(ctx, src)
	if err != nil {
		return nil, err
	}
	var out []seqMove
	for _, s := range seqs {
		name := pgutil.QualifiedName(s.Schema, s.Name)
		var inc, minV, maxV, last int64
		var called bool
		err := tgt.QueryRow(ctx, `SELECT s.increment_by, s.min_value, s.max_value, q.last_value, q.is_called
			FROM pg_sequences s, `+name+` q WHERE s.schemaname = $1 AND s.sequencename = $2`, s.Schema, s.Name).
			Scan(&inc, &minV, &maxV, &last, &called)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("cutover: sequence %s is on the source but not on the target: create it on the target (the snapshot's schema copy missed it) and run again", name)
		}
		if err != nil {
			return nil, fmt.Errorf("target: read sequence %s: %w: create it on the target if it is missing", name, err)
		}
		m := seqMove{Name: name, Display: displayName(s.Schema, s.Name), Source: s.LastValue, From: last, To: last, Descend: inc < 0}
		// The value the target hands out next is last+inc when called,
		// else last; "at least" compares what was handed out already.
		cur := last
		if !called {
			cur = last - inc
		}
		if m.Descend {
			want := s.LastValue - margin
			if want < minV {
				return nil, fmt.Errorf("cutover: sequence %s: source %d minus margin %d passes its MINVALUE %d: lower --sequence-margin", name, s.LastValue, margin, minV)
			}
			if cur > want {
				m.To = want
			}
		} else {
			want := s.LastValue + margin
			if want > maxV {
				return nil, fmt.Errorf("cutover: sequence %s: source %d plus margin %d passes its MAXVALUE %d: lower --sequence-margin", name, s.LastValue, margin, maxV)
			}
			if cur < want {
				m.To = want
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// moveSequences sets the planned values in one target transaction.
// Re-running it sets the same values: it may be repeated.
func moveSequences(ctx context.Context, tgt *pgx.Conn, moves []seqMove) error {
	return pgx.BeginFunc(ctx, tgt, func(tx pgx.Tx) error {
		for _, m := range moves {
			if !m.moves() {
				continue
			}
			// Compared again at the moment of setting: a target sequence
			// that moved on since the plan is never set backwards.
			_, err := tx.Exec(ctx, `SELECT CASE WHEN $3 THEN
					CASE WHEN (SELECT last_value FROM `+m.Name+`) > $2 THEN setval($1::regclass, $2, true) END
				ELSE
					CASE WHEN (SELECT last_value FROM `+m.Name+`) < $2 THEN setval($1::regclass, $2, true) END
				END`, m.Name, m.To, m.Descend)
			if err != nil {
				return fmt.Errorf("target: move sequence %s to %d: %w", m.Name, m.To, err)
			}
		}
		return nil
	})
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_$]*$`)

// displayName shows schema.name for a person, quoted only where needed.
func displayName(schema, name string) string {
	q := func(s string) string {
		if plainIdent.MatchString(s) {
			return s
		}
		return pgutil.QuoteIdent(s)
	}
	return q(schema) + "." + q(name)
}

// forwardSequences is the sequence step of both directions: it plans
// moving to's sequences past from's by margin, prints each move ("would"
// in a dry run), makes them unless dryRun, and refreshes to's
// materialized views (not streamed either, matviews.go). text sums it up
// for the step line; fromName names from's side in the printed moves.
func forwardSequences(ctx context.Context, from, to *pgx.Conn, margin int64, dryRun bool, out io.Writer, fromName string) (moved []seqMove, text string, err error) {
	moves, err := planSequences(ctx, from, to, margin)
	if err != nil {
		return nil, "", err
	}
	for _, m := range moves {
		if m.moves() {
			moved = append(moved, m)
		}
	}
	verb := "moved"
	if dryRun {
		verb = "would move"
	}
	for _, m := range moved {
		fmt.Fprintf(out, "  %s %s from %d to %d (%+d; %s at %d)\n", verb, m.Display, m.From, m.To, m.To-m.From, fromName, m.Source)
	}
	text = fmt.Sprintf("%d of %d sequences %s, the others already far enough", len(moved), len(moves), verb)
	if dryRun {
		return moved, text, nil
	}
	if err := moveSequences(ctx, to, moved); err != nil {
		return nil, "", err
	}
	views, err := refreshMatViews(ctx, to)
	if err != nil {
		return nil, "", err
	}
	return moved, text + fmt.Sprintf("; %d materialized views refreshed", len(views)), nil
}
