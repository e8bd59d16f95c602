// Package cleanup removes every object the replicator created: on the
// source the logical replication slot, the publication, and schema
// replicator (which holds trigger capture's changelog and functions; the
// capture triggers on application tables depend on those functions and go
// with them); on the target schema replicator with the bookkeeping.
//
// It is safe to rerun: what is already gone is reported as such. It refuses
// while a stream is still consuming the slot, because dropping an active
// slot would cut a running migration.
//
//	plan, err := cleanup.Plan(ctx, source, target)   // what exists now
//	done, err := cleanup.Run(ctx, source, target)    // remove it
package cleanup
