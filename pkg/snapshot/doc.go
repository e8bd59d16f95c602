// Package snapshot copies a Postgres database's schema and data from a
// source to a target, and records on the target where the change stream
// must start so that the stream continues exactly where the copy ends: no
// gap, no duplicate.
//
// By default (Config's zero value, and so the command's and the demo's)
// the copy is chunked (ledger.go, "The chunked copy" below):
// each chunk under a short source snapshot of its own, recorded in a
// ledger on the target, so that an interrupted run resumes and no source
// transaction stays open for hours. With Config.OneSnapshot
// (`--one-snapshot`) every table is read under the one snapshot exported
// with the capture point, and an interrupted run starts over. A
// one-snapshot run, in order:
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
//     the source piped into COPY FROM STDIN on the target (binary format
//     where the column types allow it, else text: "COPY format" below;
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
//   - target, for the chunked copy: replicator.chunks (the ledger),
//     replicator.pending_fks (the foreign keys not validated yet),
//     replicator.postdata (the post-data units built) and
//     replicator.snapshot_progress (what `replicator status` shows).
//   - target: a session advisory lock (key 0x7265706c69636174) for the run.
//   - source: publication Config.Publication FOR ALL TABLES (an existing FOR
//     ALL TABLES one is reused), slot Config.SlotName (pgoutput), and with
//     ReplicaIdentityFull, REPLICA IDENTITY FULL on the keyless tables. For
//     trigger capture instead: schema replicator with the changelog, ticks,
//     capture functions and the triggers on every table (trigger.Install);
//     tables without a primary key are keyed by all their columns.
//
// A one-snapshot run killed at any point is started over cleanly by the
// next one (see cleanTarget for why it does not resume); a second run against a done
// target returns ErrAlreadyDone, and IsDone tells `replicator run` whether
// to snapshot first. Memory stays bounded by jobs ×
// 256 KiB of COPY data whatever the table sizes.
//
// # COPY format (copyformat.go)
//
// Parsing COPY text was the largest single cost of the copy on the
// target (31 % of its CPU: splitting fields 23 %, input functions 7.5 %),
// the output functions a large part of the source's. In binary format the
// target reads each value's length and calls the type's receive function,
// the source its send function, and bytea is not hex-encoded. At pgbench
// scale 50 and 100 it took the target 13-24 % less user CPU and the
// whole copy 6-25 % less CPU (bench/README.md). But a binary value is only read right
// by a server that gives its type the same meaning: arrays and
// composites carry their element and column type OIDs, which differ
// between servers for any type not built in (array_recv and record_recv
// would refuse them), and a reg* value is the OID of an object. So a
// table goes in binary only when every copied column's type, and an
// array's element type, is a built-in (OID below 16384, in pg_catalog)
// base, range or multirange type with send and receive functions, not a
// reg* type nor an internal type whose receive function refuses every
// value, with the same OID and type modifier on the target's column,
// and both servers run the same major version (PostgreSQL does not
// promise binary forms across versions). Any other table (an enum, a
// composite, a domain, an extension's type, a column the target lacks)
// is copied as text; one log line says how many tables go each way and,
// for each text one, which column kept it there. Config.CopyFormat
// (`--copy-format text`) copies everything as text. Rows are counted in
// a binary stream by walking its tuples (binaryRows) as they pass, as
// newlines are in text; the ledger's bytes and the progress count the
// COPY data as sent, in whichever format. A row the target refuses is
// reported with the server's context: the table, the row of the chunk
// and the column.
//
// # The chunked copy (ledger.go): the default
//
// Without Config.OneSnapshot the copy survives interruption and holds no
// snapshot for hours: steps 3 and 5 above become the ledger below, the
// schema is dumped through the exported snapshot only, large objects and
// sequences are read after the copy (each large-object read a statement
// of its own), and a rerun after an interruption keeps the capture point
// and the chunks done ("resuming: 812 of 1,024 chunks already copied")
// when the source still holds the slot or tick 0 (else it starts over,
// saying why). Join adds the workers of another process, on this host or
// another.
//
// Step 6 changes too (postdata.go): the worker that commits a table's
// last chunk builds that table's indexes and primary-key, unique and
// exclusion constraints at once, while the other workers copy on, then
// analyzes it. Builds and copies share the Jobs workers, each build with
// maintenance_work_mem = IndexMemoryMB / Jobs. Each build is the SQL
// pg_restore would run for those entries of the schema dump, executed in
// one target transaction that also records the table in
// replicator.postdata: a build killed half-way leaves nothing and is done
// again by the next run, and a recorded one is never redone. What needs
// every table's data or no copied table (foreign keys, NOT VALID checks,
// triggers, rules, policies, statistics objects, partitioned parents'
// and materialized views' indexes, index attachments) is built once all
// chunks are done, as one recorded transaction of its own.
//
// A chunk is read by a bitmap heap scan of its key range, with
// max_parallel_workers_per_gather = 0: from pgbench scale 100 on, the
// planner would otherwise read each chunk with a Parallel Bitmap Heap
// Scan under a Gather, two more backends per chunk handing every row to
// the leader through shared memory, which cost the source 2.4 × the CPU
// of the one-snapshot copy's TID range scans; the copy is parallel over
// chunks already.
//
// A chunk's COPY data goes from source to target through a spool
// (spool.go, read by the target as it is written), not a pipe. With a
// pipe the chunk's source transaction stays open, holding its snapshot
// and the source's vacuum, for as long as the target takes to write the
// chunk: 145 s at scale 200 while a loaded target built a large primary
// key, against 3 s with the spool. The spool holds up to 16 MiB not yet
// read in memory (jobs × 16 MiB in all) and the rest of the chunk in an
// unlinked file in the temporary directory: disk use is at most one
// chunk per worker. The file costs a write and a read of the page cache
// per byte, about as much CPU as the rest of the process; memory first
// spares most of it.
//
// Foreign keys are created NOT VALID after a chunked copy (a row may
// reference one that another chunk's snapshot did not hold until the
// stream has caught up); they are enforced for new writes, and recorded
// in replicator.pending_fks in the transaction that creates them
// (foreignkeys.go). ValidateForeignKeys runs ALTER TABLE … VALIDATE
// CONSTRAINT for each and drops its record when it holds; `run` and
// `stream` call it beside the stream with backoff, `cutover` before the
// fence (refusing while one fails), and `status` names those left.
//
// A unique index on columns other than the chunking key can see a value
// twice when the value moved between rows of two chunks read at
// different times, and the table's build then fails (SQLSTATE 23505).
// The table's rows are then removed from the target and its chunks
// replaced by one whole-table unit, claimed next and read under one
// snapshot, which the source's own index holds to; the build follows it
// (recopyWhole, with a warning naming the table). Chunks are claimed
// largest table first (the ledger's ord), so that the longest index
// build runs while the other tables copy. Tables created on the source
// after the copy began are copied by the stream's schema handling
// (addtable.go), not by Run.
//
// The capture point (slot, or trigger capture's tick 0) is created once,
// before the first chunk. replicator.chunks on the target then lists every
// chunk: a range lo <= k < hi of the table's one-column integer primary
// key (or, without a primary key, of a one-column unique NOT NULL integer
// key), the first and last ranges open-ended; a table with no such key is
// one unit. A worker claims a chunk not done with FOR UPDATE SKIP LOCKED in
// a target transaction, reads it in a source REPEATABLE READ transaction of
// its own (so no source transaction outlives one chunk, sized to take
// seconds), writes its rows into that target transaction, records there
// the pg_current_snapshot() of the source transaction, and commits: the
// chunk's rows and its "done" are one commit. Any number of workers in any
// number of processes share the ledger; the target is the coordinator.
//
// Exactness. Write S(c) for chunk c's recorded snapshot and c(k) for the
// chunk whose range holds key k; the mapping is by value, fixed by the
// ledger, and integer order needs no collation.
//
//   - After the copy, the target holds for each key k exactly the source's
//     row at k as of S(c(k)), or no row when there was none: c(k)'s rows
//     are exactly those of its range visible to S(c(k)), committed at once.
//     An interrupted chunk committed nothing, and is copied again under a
//     new snapshot: nothing lost, nothing doubled.
//   - The stream delivers every transaction committed after the capture
//     point, in commit order; every S(c) was taken after the capture point,
//     so a transaction committed before it is visible to all of them and
//     never delivered. apply.ChunkFilter skips a change to key k iff its
//     transaction is visible to S(c(k)); the others are applied in order.
//     So the row at k goes from its state at S(c(k)) through exactly the
//     later changes to k: it ends as on the source.
//   - Visibility is by transaction: pgoutput's BEGIN carries the top-level
//     xid, trigger capture records pg_current_xact_id() (the top-level
//     xid8 even inside a SAVEPOINT), and pg_current_snapshot() lists only
//     top-level xids, so a transaction with subtransactions is judged as
//     the one unit that commits. Two transactions writing the same row are
//     ordered by its row lock, so a snapshot that sees the later one sees
//     the earlier one too: WAL commit order and snapshot visibility agree
//     for each row.
//   - A key moved from k1 to k2 is a delete at k1 and an insert at k2, each
//     judged by its own chunk's snapshot: seen by both, skipped; by
//     neither, applied as the update (the target has the row at k1); by
//     k2's chunk only, the delete at k1; by k1's only, the insert at k2,
//     which needs the whole row: trigger capture records a moved row whole;
//     under logical capture an unchanged TOAST value of such a row is not
//     sent, and the stream stops naming the table and key (copy the table
//     again) rather than write a partial row.
//   - An unchanged-TOAST update of a row copied late: if S(c(k)) saw it,
//     it is skipped; if not, the target's row at k is the row as of before
//     it (or was inserted by an earlier applied change) and holds the very
//     TOAST value the update leaves unchanged, which apply keeps.
//   - A TRUNCATE is applied when no chunk of the table saw it and skipped
//     when all did; seen by some only, the stream stops naming the table.
//   - A table copied as one unit has one snapshot: every change to it is
//     judged by that snapshot.
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
