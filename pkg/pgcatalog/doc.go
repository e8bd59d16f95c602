// Package pgcatalog owns the one definition of what the replicator calls
// the application's tables (and, by the same rules, its other relations):
// which rows of pg_class a copy, a comparison, a capture trigger, a fence
// or an audit is about. Every package that lists the application's tables
// asks here, so that what is copied, what is captured, what is compared and
// what is fenced can never drift apart.
//
// A user relation (UserRelation) is a pg_class row that
//
//   - lives in a user schema (UserSchema): not pg_catalog, pg_toast, a
//     temporary schema (pg_temp_N, pg_toast_temp_N) or any other pg_*
//     schema (the prefix is reserved to the system), not
//     information_schema, and not schema replicator, the tool's own
//     bookkeeping (state.Schema);
//   - is not temporary (relpersistence t; those live in pg_temp_N anyway,
//     and no other session can read them);
//   - is not a member of an extension (pg_depend deptype 'e'): CREATE
//     EXTENSION makes those on the target, with the extension's own data.
//
// A user table is a user relation of relkind r (ordinary, including a
// partition that holds rows and an inheritance child) or p (partitioned).
// Each relation is judged on its own, partitions included. The callers
// that need a part of a partition tree say which with Options.Tables:
//
//   - AllTables: every user table, partitioned parents and partitions at
//     every level (privileges, audits, the fence, "is the target empty").
//   - RowTables: the tables that hold rows, relkind r: ordinary tables and
//     leaf partitions, never a partitioned parent (it has no rows of its
//     own), so a copy or a comparison reads each row exactly once.
//   - RootTables: ordinary tables and the roots of partition trees, never
//     a partition: what is done once per tree (a row trigger on a
//     partitioned table is cloned onto its partitions; DROP of the root
//     drops them).
//
// Options.Also adds relations of other kinds under the same rules: views
// and foreign tables for what an application can write through, sequences
// for what must be readable.
//
// Views, materialized views, foreign tables and sequences are never user
// tables. Materialized views and sequences are user relations, listed by
// their own callers with UserRelation and their relkind.
//
// The SQL form (Where, UserRelation, UserSchema, NotExtensionMember,
// ReplicaKey) is for queries that join the catalog further (sizes,
// privileges, ACLs); Tables returns the typed list. Both are the same
// predicate.
//
// Usage:
//
//	tables, err := pgcatalog.Tables(ctx, conn, pgcatalog.Options{Tables: pgcatalog.RowTables})
//	for _, t := range tables {
//		fmt.Println(t, t.Partition, t.HasReplicaKey)
//	}
//
//	rows, err := conn.Query(ctx, `SELECT c.oid, pg_table_size(c.oid)
//		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
//		WHERE `+pgcatalog.Where(pgcatalog.Options{Tables: pgcatalog.RowTables}))
package pgcatalog
