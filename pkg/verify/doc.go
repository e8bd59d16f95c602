// Package verify proves a copy: it compares every table and sequence of a
// source and a target Postgres database and names the rows that differ.
// It also compares materialized views (count and checksum of their rows)
// and large objects (count and a checksum over oids and contents), which
// no stream carries (objects.go). Sequences behind the source are
// warnings until cutover has moved them (its "sequences" step in
// replicator.cutover), differences after: the stream only keeps them
// close. Materialized views that differ are always warnings: their rows
// depend on when each side refreshed them (cutover refreshes the
// target's).
//
// The definitions of the tables are compared too (schema.go): for every user
// table on both sides (pgcatalog.AllTables: partitioned tables and
// partitions included), its partitioning (PARTITION BY, and for a partition
// its parent and bound: a partition detached on one side), its columns
// (missing, extra, type, collation, NOT NULL, default, generated expression,
// identity), its indexes (missing, extra, definition with uniqueness and
// predicate, name, validity) and its constraints (primary key, unique,
// foreign key, check, exclusion). Each difference names the object, what
// each side has and the fix, the SQL to run on the target where one is
// obvious; any makes the report different (exit 1), like a difference of the
// data. Config.Tables narrows it to the same tables as the data. Without
// Config.Tables the other objects the stream follows are compared as well
// (schemaobjects.go): enums (labels in order), domains, composite and range
// types, sequences (options), functions and procedures, views and
// materialized views, each with the SQL the stream would have run. Not
// compared, since the tool or RDS makes them differ by design: schema
// replicator, triggers (capture triggers on the source, fence triggers),
// owners, grants and role names. Definitions are compared as the servers
// print them (pg_get_indexdef and the like): two major versions that print
// one definition differently show it as a difference.
//
// The work happens inside the databases. Each session pins the settings that
// change a row's text (TimeZone, DateStyle, IntervalStyle,
// extra_float_digits, bytea_output, lc_monetary) so that the same row
// hashes the same on both sides. A row's 64-bit hash is the xor of one
// seeded hash per compared column (those present on both sides, in order
// of their names, so column order does not matter): the type's own hash
// where it is exact (integers, text in byte order, numeric with its scale,
// timestamps, uuid, ...), the hash of the value's text otherwise (floats,
// intervals, jsonb, citext, arrays, ...), and a constant of the column's
// own for NULL, so NULL differs from the empty string and from zero.
// Chunks are summarised by count(*) and the SUM of the row hashes: a sum,
// not an xor, so duplicate rows do not cancel out.
//
// Tables are compared in one of two modes:
//
//   - key ranges: tables with a primary key. Chunks are primary-key ranges
//     planned on the source (quantiles of a block sample), half-open
//     [lo, hi), the same on both sides. With a single-column key, each side
//     is read once by a parallel sequential scan of Config.Jobs processes
//     (both sides at once), and every row is placed in its range with
//     width_bucket, or, for an evenly spread integer key, in a range of
//     equal width by one division; with a composite key each range is its
//     own index range scan. A mismatched range is bisected
//     through the index (one scan of the side with more rows cuts it into
//     parts and checksums them, one of the other side checksums the same
//     parts) until it holds at most Config.LeafRows rows, whose per-column
//     hashes are then fetched from both sides and compared in Go.
//   - hash buckets: tables without a primary key (compared as multisets of
//     rows, told apart by their hash, copies counted), and large
//     tables whose key cannot be range-scanned in byte order (text keys under
//     a non-C collation) or, for composite keys, whose rows lie scattered
//     over the table. Each side is read once by a parallel sequential scan,
//     rows grouped into buckets by the hash of their key (or whole row); only
//     the rows of mismatched buckets are read again, streamed in bucket
//     order and compared one bucket at a time.
//
// Text keys are ordered with COLLATE "C": source and target may run
// different C libraries whose collations sort differently.
//
// While a stream is running (replicator.state on the target holds an applied
// position), Run records the source's WAL position, waits until the target
// has applied it, compares, and re-checks every difference after
// Config.RecheckDelay, reporting only the differences that persist: a row in
// flight is not a difference, nor is a schema change the stream is still
// carrying to the target.
//
// Incremental mode (Config.Touched, touched.go) makes a check whose cost
// is what changed, not what is stored: the check inside cutover's write
// freeze. Track starts, on each side, a log of the primary keys every
// insert, update and delete writes (ALWAYS row triggers, so the target's
// apply, a direct write to the target and a source session that bypasses
// capture are logged alike; TRUNCATE marks the whole table). A full run
// begun after Track proves every row identical at its point; afterwards,
// a row can differ only if one side wrote it since, and then its key is in
// one of the two logs. The incremental run fetches exactly those rows by
// key from both sides, in batches of touchBatch, and compares them (so a
// change on the target that the stream never made, and a change on the
// source the stream never carried, are both found), plus every sequence.
// Tables without a primary key, truncated since, or created since (no
// trigger) are compared whole and counted in Report.TablesWhole.
//
// It does not run count(*) on every table: an exact count of a 100 GB
// table is a full scan, minutes inside the freeze, and it proves nothing
// the key comparison does not. A table's rows equal the rows proven
// identical by the full run plus the logged keys; a logged key present on
// one side only is reported as missing or extra, so equal counts follow
// from an empty difference. What it relies on instead is that no write
// escapes the triggers: a superuser's ALTER TABLE DISABLE TRIGGER ALL, or
// a file-level change, would. Rows compared are reported per table
// (TableResult.RowsCompared) and in total.
//
// Usage:
//
//	metrics, err := verify.NewMetrics(registry) // once per process
//	rep, err := verify.Run(ctx, verify.Config{Source: src, Target: dst, Metrics: metrics}, log)
//	if err != nil { return err }            // connection or catalog error
//	rep.WriteText(os.Stdout)
//	if rep.Different() { /* exit 1 */ }
package verify
