// Package audit is step one of the migration playbook: an inventory of the
// source that tells the team what they are moving and what will get in the
// way, before anything is written anywhere.
//
// For Postgres: version and size, per-table rows and bytes, tables without a
// primary key or replica identity (their UPDATE/DELETE would fail under a
// FOR ALL TABLES publication), extensions RDS does not offer, sequences,
// large objects (not carried by logical decoding), unlogged tables,
// long-running transactions, the capture mode that will work and why, and
// an estimated copy time; row estimates also for never-analyzed tables
// (counted or sampled), every extension with whether RDS for PostgreSQL
// 15 offers it and at which version (rdsextensions.go: its source and
// date; a version it does not know is "check `SHOW rds.extensions`",
// never a guess), standalone sequences, triggers, foreign tables, materialized views,
// generated columns, roles RDS will not have, connections and the oldest
// transactions. For Redis: version, memory, eviction policy, persistence,
// keys per database, type mix and big keys by MEMORY USAGE from a sample,
// and whether the replication commands exist. From both: a sizing
// suggestion (Size) with its reasoning and a terraform.tfvars for
// deploy/terraform (TFVars). For `heroku config` output: the `aws ssm
// put-parameter` commands that move each variable without ever printing a
// value; for a Procfile, each process type's AWS analog (ParseProcfile).
//
//	rep, err := audit.Postgres(ctx, conn, audit.Options{})
//	r := audit.Report{Postgres: rep, Header: &header} // header: pkg/report
//	rep.Write(os.Stdout, "markdown")
package audit
