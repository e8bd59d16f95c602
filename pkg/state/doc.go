// Package state owns the bookkeeping the replicator keeps in schema
// "replicator" on the target: which capture mode a migration uses, where the
// change stream starts (the slot's consistent point, or the copy's
// transaction snapshot for trigger capture), whether the snapshot is done,
// and the source position of the last applied transaction.
//
// Position updates are written by the apply stage in the same target
// transaction as the data they cover, so after a crash the target itself
// says exactly what it already holds. Positions are stored typed
// (position.Position): an LSN in the pg_lsn column applied_lsn, a trigger
// capture batch id in the bigint column applied_batch. There is one
// migration per target database: the table holds a single row.
//
//	st, err := state.Load(ctx, target)
//	if errors.Is(err, state.ErrNoMigration) { /* run snapshot first */ }
//	// … in the target transaction that applies the changes up to end:
//	err = state.RecordApplied(ctx, tx, end, commitTime)
package state
