// Package cleanup removes every object the replicator created: on the
// source the logical replication slot, the publication, and schema
// replicator (which holds trigger capture's changelog and functions; the
// capture triggers on application tables depend on those functions and go
// with them); on the target schema replicator with the bookkeeping.
//
// It is safe to rerun: what is already gone is reported as such. It refuses
// while a stream is still consuming the slot, because dropping an active
// slot would cut a running migration, and (ErrBusy) while the source is
// fenced by a cutover or a trigger-capture stream is applying, unless
// Options.Force. Even forced it never lifts a fence: the trigger fence's
// schema replicator_fence on the source and the fence's record in
// replicator.cutover on the target stay for `replicator cutover --unfence`.
//
//	busy, err := cleanup.CheckBusy(ctx, source, target) // why not now, what --force leaves
//	plan, err := cleanup.Plan(ctx, source, target)      // what exists now
//	done, err := cleanup.RunWith(ctx, source, target, cleanup.Options{})
package cleanup
