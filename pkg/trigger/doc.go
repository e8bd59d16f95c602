// Package trigger owns change capture without logical replication, for
// sources such as Heroku Postgres whose credential owns the tables but may
// not create replication slots: row triggers write every change into a
// changelog table in schema replicator on the source, and batches are cut
// at transaction-snapshot boundaries, the technique of PgQ/Londiste built
// on pg_current_snapshot() and pg_visible_in_snapshot() (PostgreSQL 13+).
//
// What lives on the source (install.go):
//
//   - replicator.changelog: id (capture order), txid (xid8 of the writing
//     transaction), rel (table oid), op (I/U/D/T), key (UPDATE, DELETE:
//     the old key) and vals (INSERT: the row; UPDATE: the new values) as
//     jsonb objects of column name → text value. An UPDATE records only
//     the columns whose value changed, so a large unchanged value is never
//     copied; a TRUNCATE records the truncated table (CASCADE and RESTART
//     IDENTITY cannot be seen from a trigger: cascaded tables record their
//     own TRUNCATE, sequences are moved at cutover). The key is the
//     primary key, else the replica identity index, else every column.
//   - replicator.ticks: snapshots recorded by the ticker. Tick 0 is the
//     copy's snapshot (the capture point).
//   - replicator.tables: the install catalog (columns, key, partition root).
//   - per table a generated SECURITY DEFINER function with explicit column
//     lists (col::text under pinned output settings) and triggers AFTER
//     INSERT/UPDATE/DELETE FOR EACH ROW and AFTER TRUNCATE FOR EACH
//     STATEMENT. Changes of partitions are recorded under their
//     partitioned root. The triggers fire ALWAYS, so writes of sessions
//     under session_replication_role = replica are captured too; a session
//     with ApplyingSetting on (this tool's apply) is not.
//
// Batches (batch.go) are read in an order apply can use as it is, with
// the argument for it written at batchSQL; a change superseded by a later
// TRUNCATE of its table is left out, which also covers a TRUNCATE that
// commits during the copy (TRUNCATE is not MVCC-safe).
//
// DDL is not captured: after ALTER TABLE or CREATE TABLE on the source,
// Install must run again (it is idempotent); CheckInstalled, called by
// StartCapturePoint and New, refuses a source whose tables or columns
// changed since.
//
// The flow, from the copy to the stream:
//
//	tables, err := trigger.Install(ctx, srcConn, cfg, log)     // before the copy's snapshot
//	cp, err := trigger.StartCapturePoint(ctx, sourceURL, log)  // cp.SnapshotName for the copy workers
//	state.Begin(ctx, target, &st)                             // st = cp.State()
//	… copy …; cp.Release(ctx)
//
//	m, err := trigger.NewMetrics(reg)                         // once per process
//	src, err := trigger.OpenSource(ctx, sourceURL,
//		trigger.SourceConfig{Capture: cfg, Applied: st.Applied.ID()}, log, m)
//	defer src.Close()
//	err = applier.Run(ctx, src)                               // pkg/apply
//
// Source (source.go) is a wal.Source: it runs the ticker, reads each batch
// after the applied one (one read ahead of apply) into one wal.Txn
// positioned by the batch id, and purges what apply reports committed.
// pkg/apply applies each Txn, records its position on the target in the
// same transaction (state.RecordApplied of position.Batch), commits, and
// only then calls Committed: a target transaction holds whole batches
// only, and after a crash the stream resumes after the recorded batch.
// `replicator stream` (apply.Stream) does exactly this. Capture's Tick,
// NextBatch, Open and Purge are the same steps one at a time, for callers
// that drive them themselves (cutover's on-demand tick, the tests).
//
// Choose and CheckPrivileges serve `--capture auto` and preflight.
package trigger
