// Package position owns the one type that says where a change stream is
// on its source: a Position. The capture sources build them (pkg/wal from
// the pgoutput stream's WAL positions, pkg/trigger from the changelog's
// batch and row ids), pkg/apply compares them, names them in errors and
// records them on the target, and pkg/state stores them typed: a source
// LSN in a pg_lsn column, a batch id in a bigint one.
//
// A Position has a kind:
//
//   - KindLSN: a source WAL position (logical capture), the end of a
//     source transaction's commit record or the start of one change;
//   - KindBatch: a trigger capture changelog batch id, the position of a
//     whole batch (a batch has no position inside it);
//   - KindChangelogID: the id of one changelog row (one change under
//     trigger capture), named in errors only.
//
// The zero Position (KindNone) is "no position": nothing applied yet, or
// a NULL column. Positions order only within one kind: an LSN and a batch
// id say nothing about each other. The next kind planned is a snapshot
// chunk, for a copy that records its progress in the same way.
//
// Formats follow what the source itself prints: an LSN is PostgreSQL's
// pg_lsn text (%X/%X, as pg_current_wal_lsn() shows it).
//
//	end := position.LSN(commit.TransactionEndLSN)
//	if !applied.Less(end) { /* already on the target */ }
//	err := fmt.Errorf("apply at %s: %w", position.Range(first, last), err)
//	_, err = tx.Exec(ctx, `UPDATE replicator.state SET applied_lsn = $1`, end) // driver.Valuer
package position
