// Package triggere2e holds the end-to-end tests of trigger capture: the
// built `replicator` command (snapshot, stream, cleanup) against real
// servers, with a source shaped like Heroku Postgres (wal_level=replica, a
// login role that owns its tables but is neither superuser nor
// REPLICATION). It has no code of its own; run it with
//
//	go test ./internal/triggere2e/
package triggere2e
