// Package audit is step one of the migration playbook: an inventory of the
// source that tells the team what they are moving and what will get in the
// way, before anything is written anywhere.
//
// For Postgres: version and size, per-table rows and bytes, tables without a
// primary key or replica identity (their UPDATE/DELETE would fail under a
// FOR ALL TABLES publication), extensions RDS does not offer, sequences,
// large objects (not carried by logical decoding), unlogged tables,
// long-running transactions, the capture mode that will work and why, and
// an estimated copy time. For Redis: version, memory, keys per database,
// type mix and biggest keys from a sample, and whether the replication
// commands exist. For `heroku config` output: the `aws ssm put-parameter`
// commands that move each variable without ever printing a value.
//
//	rep, err := audit.Postgres(ctx, conn, audit.Options{})
//	rep.Write(os.Stdout, "markdown")
package audit
