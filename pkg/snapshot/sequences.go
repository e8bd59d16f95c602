package snapshot

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// Sequence is one sequence of the source and its value.
type Sequence = sequence

// ReadSequences lists the user sequences of the database conn is connected
// to (identity and serial ones included, schema replicator left out) with
// their current values. Cutover uses it to move the target's sequences
// forward after the stream, which does not carry them.
func ReadSequences(ctx context.Context, conn *pgx.Conn) ([]Sequence, error) {
	return readSequences(ctx, conn)
}
