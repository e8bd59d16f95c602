// Package state owns the bookkeeping the replicator keeps in schema
// "replicator" on the target: which capture mode a migration uses, where the
// change stream starts (the slot's consistent point, or the copy's
// transaction snapshot for trigger capture), whether the snapshot is done,
// and the source position of the last applied transaction.
//
// Position updates are written by the apply stage in the same target
// transaction as the data they cover, so after a crash the target itself
// says exactly what it already holds. There is one migration per target
// database: the table holds a single row.
//
//	st, err := state.Load(ctx, target)
//	if errors.Is(err, state.ErrNoMigration) { /* run snapshot first */ }
package state
