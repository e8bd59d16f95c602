// Package schemachange follows the source's schema while the stream runs:
// a deploy's migrations (ADD COLUMN, CREATE TABLE, CREATE INDEX, a new
// partition) are applied to the target in stream order, and every other
// change (DROP, RENAME, a type change, a detached partition) stops the
// stream with one message that names the object, what the source shows
// and the fix. No schema change is ignored: each one the diff finds is
// applied, found already made on the target, or stops the stream.
//
// # Detection
//
// Heroku has no event triggers, so changes are found two ways, in both
// capture modes:
//
//   - Catalog polls (ReadCatalog): tables, columns (type, default, NOT
//     NULL, generated, identity), indexes, CHECK and FOREIGN KEY
//     constraints, partitions and their bounds of every user schema, and
//     its enums (labels in order), domains, composite and range types,
//     sequences, functions, procedures, views and materialized views
//     (objects.go), read in one REPEATABLE READ snapshot, keyed by the
//     source's oid and attnum so a rename is told from a drop and an
//     add. Diff compares it with the catalog the target reflects, which is
//     kept on the target (replicator.schema_catalog, written in the same
//     target transaction as the DDL it records): a restart neither loses
//     nor repeats a change. The first stream after a snapshot takes the
//     target's own schema as that baseline (Align), so what changed
//     between the copy and the stream shows too.
//   - The change stream: a pgoutput RELATION message (wal.Txn.Described)
//     that describes a table unlike the catalog the target reflects, or a
//     table it does not know, makes the handler poll before that
//     transaction is applied (once that transaction is visible to a new
//     snapshot: the walsender sends a commit as soon as its WAL is flushed,
//     before the committing backend leaves the proc array, so Before first
//     waits for the transaction's xid lock, released after that, or the
//     poll could miss the DDL and the row would reach apply ahead of it).
//     Under trigger capture each batch newer than
//     the last check's tick makes it check the catalog first (see the
//     ordering below),
//     and an insert recorded before a column existed names only the
//     columns it carries.
//
// # Ordering: why an additive change is applied before the first row
// change that needs it, never after
//
// Apply asks the handler (Before) before each source transaction. A
// change found is applied (Sync) between two target transactions: apply
// first commits what it holds, so the target's DDL never waits on apply's
// own locks. Under logical capture pgoutput describes a relation anew
// before the first change decoded after its ALTER TABLE, inside that
// change's transaction: the poll made before that transaction reads a
// catalog in which the DDL is committed (the transaction wrote the
// table after the DDL's lock was released), so the column exists on the
// target before the first row that carries it. A change to a table the
// target does not have (a new table, a new partition) is the same
// signal. Under trigger capture, batch N holds the transactions that
// committed before tick N's snapshot; a poll whose snapshot sees tick N
// committed sees every DDL those transactions needed, so checking
// whenever a batch is newer than the last check's tick orders every
// change before the batch that needs it.
//
// That check reads only the rows part of the fingerprint (Fingerprint
// with rowsOnly: tables, columns, partitions, schemas, constraints,
// unique indexes, enum labels), and the whole catalog only when it moved;
// defaults, types, functions, views and sequences are left to the
// interval poll (--schema-poll). None of those decides whether or how
// the target takes a row change that was captured before the interval
// poll sees it: trigger capture records every value of an insert and the
// changed ones of an update, so a default is never the target's to
// apply (the one an ADD COLUMN gave existing rows comes with the column,
// which the check covers); a function, a view or a sequence holds no
// captured row; a domain or composite type tightened on the source
// admits only rows the target admits too, and one loosened, like an enum
// label the check missed, makes the target refuse the row, which makes
// the stream poll at once and apply it or stop on it (see enums below).
// A refused change to one of them stops the stream at the tick after the
// interval poll that saw it, not at the DDL's own: what was applied in
// between does not depend on it. The check's cost no longer grows with
// the functions, views and types of the schema (bench/schemapoll).
// Applying an additive change early is harmless:
// rows applied before it was made on the source do not name the new
// column, and take on the target the value existing source rows took.
//
// ADD COLUMN is made with the source's type, default and NOT NULL. The
// value existing rows took is the source's: when PostgreSQL stored it
// (attmissingval: a default that is not volatile, such as 0 or now()),
// the target's column is added with that very value as its default, then
// given the source's default expression; when it did not (a volatile
// default such as random() or nextval(), or an identity: the source
// rewrote the table, each row with its own value), the table is copied
// again through the chunk ledger, so the target holds the source's
// values.
//
// CREATE TABLE in a captured schema: the table is captured first
// (trigger capture: trigger.InstallTables; logical: the publication, unless it
// is FOR ALL TABLES), then made on the target with its columns,
// constraints and indexes, its chunks planned in the chunk ledger in that
// same target transaction (pkg/snapshot PlanTables), then copied chunk by
// chunk, each under a snapshot of its own (CopyPending), before apply goes
// on; apply then reloads its chunk filter (pkg/apply chunks.go). A change
// to a row that a chunk's snapshot already saw is skipped, any other is
// applied: the argument of the chunked copy (pkg/snapshot doc.go) holds
// unchanged, because capture began before the first chunk's snapshot. A
// session interrupted mid-copy finishes the copy when the next one opens.
// A new partition is made PARTITION OF its parent with the source's
// bounds; logical capture copies its rows the same way (they arrive under
// the partition's own name); trigger capture does not, since the parent's
// row trigger is cloned onto it at creation and every row it holds is in
// the changelog under the parent.
//
// Types, sequences, functions and views are made on the target from the
// source's own definitions (format_type, pg_get_functiondef,
// pg_get_viewdef), in an order that lets each use the ones before:
// types and sequences before tables and columns (a new column of a new
// enum, a serial column's sequence), functions and views after them, then
// constraints (a CHECK may call a function), then indexes. An enum label
// added (ALTER TYPE … ADD VALUE, BEFORE or AFTER as on the source) is
// made before any row that carries it: under trigger capture the batch
// that holds such a row is newer than the poll that saw the label; under
// logical capture no relation description names it, so a row that
// arrives before the interval poll saw it is refused by the target (an
// invalid enum value), and that refusal makes the stream poll at once
// (pkg/apply explainRefusedRow): the change is applied and the session
// is retried from the position recorded on the target, whose transaction
// the refusal rolled back. The same covers a CHECK constraint dropped, a
// column made nullable or wider: a row the target refuses (SQLSTATE
// classes 22 and 23) first looks for the schema change that explains it.
// A CHECK or FOREIGN KEY constraint added is made NOT VALID, then
// validated when the source's is valid: up to that point in the stream
// the target's rows are the source's, which passed it; rows that break it
// stop the stream naming the constraint. One added NOT VALID and
// validated later on the source (ALTER TABLE … VALIDATE CONSTRAINT: the
// poll sees convalidated change) is validated on the target in stream
// order with the other changes (SHARE UPDATE EXCLUSIVE: writes go on);
// rows on the target that break it (a divergence) stop the stream naming
// the constraint and the fix. A foreign key a chunked copy left NOT VALID
// (replicator.pending_fks) is the copy's to validate (pkg/snapshot), not
// taken for such a change. A function or view replaced
// (CREATE OR REPLACE) is replaced on the target; a sequence's options
// altered are altered there; a new sequence is one that cutover (and the
// stream's sequence step) moves forward, since they move every target
// sequence by name. A type, sequence, function or view dropped or renamed,
// a domain or composite type altered, an enum label renamed, and a
// materialized view redefined stop the stream with the fix.
//
// CREATE INDEX is built on a connection of its own in the background,
// with CONCURRENTLY, so apply goes on meanwhile (PostgreSQL cannot build a
// partitioned table's index, or a constraint, concurrently: those are
// built plainly, and apply waits on that table while they build). An
// index appears to the poll once it is valid on the source, so it is
// started at most one poll interval (--schema-poll, default 2 s) after
// the source's build finished, and is ready on the target a build's time
// later; until then the target simply has no such index. A failed build
// stops the stream, naming the index.
//
// A change that stops the stream takes effect once every change made
// before it is applied: at the first transaction that describes the
// table with its new shape, or the first one past the source position
// read with the poll that saw it (the WAL insert position under logical
// capture; the next tick under trigger capture). Apply commits what
// precedes it and stops with a *RefusedError (exit 2 at the CLI); nothing
// of it is half-applied. After the operator makes the same change on the
// target and restarts, the poll finds the target already matching the
// source and goes on. With ModeStop (--ddl stop) every change stops the
// stream this way.
//
// # Constraints gone on purpose (the fallback window)
//
// The cutover drops, for the fallback window, the source's foreign keys
// with ON DELETE/ON UPDATE actions when its role cannot skip them per
// session (pkg/cutover reverse.go). Two followers would misread that
// drop: the forward stream's would drop the keys on the target too, where
// the app now writes and their cascades must run; the reverse stream's,
// whose baseline would be the source's own schema (Align), would find the
// keys on the target and add them back to the source, where a carried
// delete would cascade again. So the cutover lists them first on the
// target (Keep, replicator.schema_kept), which a poll of the source takes
// as still there; inside the freeze it forgets an earlier window's
// baseline on the source (ForgetBaseline), and `reverse` records the new
// one before its first start, with the keys as the target has them
// (RecordBaseline: outside the freeze, since reading both catalogs takes
// seconds on thousands of tables); the rollback empties the list
// (Unkeep) once the keys are back.
//
// # Limits
//
//   - Column collations, comments, grants, triggers, rules, policies,
//     aggregates, operators, a matview's indexes and its REFRESH, and a
//     sequence's OWNED BY are not followed (verify compares
//     constraints). Schema replicator_fence, where cutover puts its
//     fence function, is the tool's own and never carried over.
//   - A new table, and a table whose new column has a volatile default,
//     is copied while apply waits: the lag grows for the copy's time.
//   - A new partition is copied through the chunk ledger like any new
//     table, so the rows of a table filled before it was attached (which
//     no capture saw) reach the target; under trigger capture its changes
//     name the partition (wal.Change.Partition) and are judged by its own
//     chunks. Capture is installed on a new table alone
//     (trigger.InstallTables): capture follows columns by itself.
//
// Usage (pkg/apply does this for each stream session):
//
//	h, err := schemachange.Open(ctx, schemachange.Config{SourceURL: src, TargetURL: dst,
//		Capture: st.Capture, Publication: st.Publication, Copier: snapshot.TableCopier{}}, log)
//	defer h.Close()
//	applier.SetSchemaGate(h) // Before and Sync, called by apply
package schemachange
