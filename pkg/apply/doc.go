// Package apply owns the apply side of the change stream: it groups many
// source transactions into one target transaction, pipelines the
// statements (pgx batches of prepared statements; runs of inserts into one
// table as one multi-row INSERT over unnest), writes the source position
// into the target's state (pkg/state) in that same transaction, and only
// after the commit tells the source it may release the WAL. That makes the
// stream exactly-once: after any crash it resumes from the target's
// recorded position and skips what is already applied.
//
// Rows are located by the source's replica identity (primary key or
// identity index; under REPLICA IDENTITY FULL one row matching the whole
// old row, chosen by ctid so identical duplicates lose exactly one).
// Unchanged TOAST columns are left out of UPDATE, generated target columns
// are never written, identity columns are inserted with OVERRIDING SYSTEM
// VALUE, and the session runs with session_replication_role = replica.
//
// The applier records positions itself: each target transaction ends with
// state.RecordApplied of its last source transaction's End, whatever the
// kind (position.Position). Under trigger capture (the target's state says
// which), each changelog batch arrives as one wal.Txn whose position is
// the batch id (trigger.Source); a target transaction holds whole batches
// only, since a Txn is never split. Errors name positions as they format
// themselves: "source LSN 0/16B3748", "changelog id 42".
//
// After a chunked copy (pkg/snapshot's ledger, replicator.chunks on the
// target), the applier judges each change by the snapshot of the chunk
// its key falls in and skips what that chunk already holds
// (ChunkFilter, chunks.go, where the argument for its exactness is).
//
// A target transaction that loses a deadlock or a serialization failure
// to another session (a verification installing its triggers, an
// operator's transaction) is rolled back and applied again, whole, in the
// same session, a few times with a short backoff (retry.go), before it
// counts as the stream's error; both capture modes go through it.
//
// Stream is the supervisor behind `replicator stream`: it reconnects with
// bounded, jittered exponential backoff on retryable errors, stops with a
// clear error (table, key, position, cause) on a change the target
// refuses, and turns a panic inside it into a fatal PanicError with the
// stack in the log. The applier and the lag poller of one attempt run in
// one errgroup (supervisor.go).
//
//	m, err := apply.NewMetrics(registry)        // once per process
//	tm, err := trigger.NewMetrics(registry)
//	err = apply.Stream(ctx, apply.StreamConfig{SourceURL: src, TargetURL: dst,
//		Metrics: m, TriggerMetrics: tm}, log)
package apply
