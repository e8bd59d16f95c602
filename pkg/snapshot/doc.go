// Package snapshot copies a Postgres database's schema and data from a
// source to a target under one consistent snapshot, and records on the
// target where the change stream must start so that the stream continues
// exactly where the copy ends: no gap, no duplicate.
//
// A run, in order:
//
//  1. Preflight on both sides before anything is written (versions,
//     wal_level, privileges, free slots and WAL senders, slot and
//     publication names, tables without a replica identity, target
//     writable, empty or ours). Every problem is one line naming the object
//     and the fix; all are returned together in a *PreflightError.
//  2. The target is marked in replicator.state (pkg/state) with status
//     "copying"; then the capture point is created (Capture): for logical
//     capture, publication FOR ALL TABLES and then CREATE_REPLICATION_SLOT
//     … LOGICAL pgoutput EXPORT_SNAPSHOT over the replication protocol. Its
//     consistent point is recorded as consistent_lsn. For trigger capture
//     (pkg/trigger; chosen by `auto` when the source cannot create a slot
//     or runs wal_level below logical, with the reason logged), the
//     capture triggers are installed and committed first, then one
//     transaction exports its snapshot, whose pg_current_snapshot() is
//     tick 0, recorded as snapshot_xmin. The copy skips schema replicator
//     and the schema restore leaves the capture triggers out.
//  3. While that replication session stays open, a catalog session, pg_dump
//     (--snapshot) and every copy worker import the snapshot
//     (SET TRANSACTION SNAPSHOT in REPEATABLE READ READ ONLY). Then the
//     session is released.
//  4. The schema's pre-data section (types, functions, tables, sequences)
//     is restored; extensions and schemas the target has are skipped.
//  5. Tables (leaf partitions, never their parents) are split into ctid
//     block ranges and copied by the workers in parallel: COPY TO STDOUT on
//     the source piped into COPY FROM STDIN on the target (text format,
//     generated columns left out, identity values kept), with
//     session_replication_role = replica on the target and large values
//     compressed with lz4 where the target has it. Every copied table is
//     held with ACCESS SHARE locks until the copy ends, as pg_dump does.
//     Large objects follow, still in the snapshot, with their oids
//     (largeobjects.go).
//  6. Sequences are read and the source snapshot ends (its table locks,
//     which keep TRUNCATE and rewrites from breaking the copy, go with it).
//     The post-data section (indexes, constraints, triggers) is restored
//     with --jobs parallel connections; materialized views are filled,
//     sequences set, the database's own settings (ALTER DATABASE … SET)
//     carried (dbsettings.go), and every copied table is analyzed.
//  7. replicator.state's snapshot_status becomes "done".
//
// Bookkeeping written (and nothing else outside the copied schema):
//
//   - target replicator.state (pkg/state), via state.Begin twice: before the
//     slot exists {capture, slot_name, publication, snapshot_status=copying},
//     then the same with consistent_lsn = the slot's consistent point; at
//     the very end state.SetSnapshotStatus(done), a synchronous commit after
//     every chunk's (asynchronous) one.
//   - target: a session advisory lock (key 0x7265706c69636174) for the run.
//   - source: publication Config.Publication FOR ALL TABLES (an existing FOR
//     ALL TABLES one is reused), slot Config.SlotName (pgoutput), and with
//     ReplicaIdentityFull, REPLICA IDENTITY FULL on the keyless tables. For
//     trigger capture instead: schema replicator with the changelog, ticks,
//     capture functions and the triggers on every table (trigger.Install);
//     tables without a primary key are keyed by all their columns.
//
// A run killed at any point is started over cleanly by the next one (see
// cleanTarget for why it does not resume); a second run against a done
// target returns ErrAlreadyDone, and IsDone tells `replicator run` whether
// to snapshot first. Memory stays bounded by jobs ×
// 256 KiB of COPY text whatever the table sizes.
//
// Usage:
//
//	metrics, err := snapshot.NewMetrics(registry) // once per process
//	res, err := snapshot.Run(ctx, snapshot.Config{
//		SourceURL: src, TargetURL: dst, Jobs: 8, Metrics: metrics,
//	}, log)
//	if errors.Is(err, snapshot.ErrPreflight) { /* print err: one line per problem */ }
//	// res.ConsistentLSN is where `replicator stream` starts.
package snapshot
