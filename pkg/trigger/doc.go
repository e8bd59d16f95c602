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
//     transaction), rel (table oid), part (the partition written to, when
//     rel is its partitioned root; NULL otherwise), op (I/U/D/T), key (UPDATE, DELETE:
//     the old key) and vals (INSERT: the row; UPDATE: the new values) as
//     hstore objects of column name → text value. An UPDATE records only
//     the columns whose value changed, so a large unchanged value is never
//     copied; a TRUNCATE records the truncated table (CASCADE and RESTART
//     IDENTITY cannot be seen from a trigger: cascaded tables record their
//     own TRUNCATE, sequences are moved at cutover), also in
//     replicator.truncates. The key is the primary key, else the replica
//     identity index, else every column. Its one index is on txid.
//   - the hstore extension (trusted since PostgreSQL 13), created in
//     schema replicator unless the source has it already.
//   - replicator.ticks: snapshots recorded by the ticker. Tick 0 is the
//     copy's snapshot (the capture point).
//   - replicator.tables: the install catalog (columns, key, partition root
//     at install), which names the changes of a table dropped since.
//   - three SECURITY DEFINER functions, replicator.capture_insert,
//     capture_update and capture_delete, one per operation, that every
//     table's AFTER INSERT, AFTER UPDATE and AFTER DELETE FOR EACH ROW
//     triggers call with the oid to record and the key columns as
//     arguments (an earlier version's one trigger and function,
//     replicator.capture_row, is replaced by Install and Upgrade, which
//     starting capture runs), and
//     replicator.capture_truncate for the AFTER TRUNCATE FOR EACH
//     STATEMENT triggers. Changes of partitions are recorded under their
//     partitioned root, naming the partition (Change.Partition): apply
//     writes to the root, the chunked copy's filter judges by the
//     partition's chunks, as the copy read it. The triggers fire ALWAYS, so writes of sessions
//     under session_replication_role = replica are captured too; a session
//     with ApplyingSetting on (this tool's apply) is not.
//
// # Schema changes
//
// Capture follows each table's columns with no window in which a write is
// missed, because nothing in it depends on the table's shape: the
// function records hstore(NEW) and hstore(OLD), built from the row itself
// at the time of the write, rather than a column list generated at
// install (which a later ALTER would leave behind: a new column's values
// would never be recorded, and a dropped or renamed one would make the
// application's writes fail until it was regenerated). Regenerating on
// change instead would leave the writes between the ALTER and the
// regeneration to a second mechanism, with no event triggers on Heroku to
// run it in the ALTER's own transaction. What other parts build on:
//
//   - each change names its columns by name: INSERT the whole row, UPDATE
//     the old key and the new values of the changed columns (the whole new
//     row when the key changed), DELETE the old key. A column added on the
//     source is in the changes by name from its first write after the
//     ALTER commits (ALTER TABLE takes an ACCESS EXCLUSIVE lock, so every
//     write is wholly before or after it); a dropped column disappears
//     from later changes; a renamed one appears under its new name.
//   - values are each type's text output (what col::text gives) under
//     pinned output settings (DateStyle, IntervalStyle, TimeZone,
//     bytea_output, extra_float_digits), which the target's input
//     functions read back to the same value: arrays, composites, json
//     (its text kept exactly) and jsonb, bytea, timestamptz, float
//     NaN/Infinity, numeric, domains, enums. Generated columns are recorded
//     in the row but left out of the changes by the reader.
//   - an unchanged value, TOASTed or not, is not in an UPDATE's change
//     (unless the key changed: then the whole new row is), so it is never
//     copied into the changelog nor rewritten on the target.
//   - the key columns are the trigger's arguments, set at install; a key
//     column renamed or dropped since makes the old key the whole old row,
//     so no change loses its key. CheckInstalled refuses a key changed
//     since install, a table without its triggers (created after install:
//     Install again, or InstallTables on it), or a disabled trigger; a
//     column change is not a reason to refuse.
//
// The batch reader describes each change's table from the change and the
// source's catalog (describe.go): a change whose columns are not those of
// the table's current description gets a new *Table, which Source turns
// into a new wal.Relation, as logical capture sends a new Relation after
// ALTER TABLE.
//
// The flow, from the copy to the stream:
//
//	tables, err := trigger.Install(ctx, srcConn, cfg, log)     // before the copy's snapshot
//	more, err := trigger.InstallTables(ctx, srcConn, cfg, log, oid) // a table created mid-stream, before its copy
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
