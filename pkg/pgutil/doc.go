// Package pgutil holds the small Postgres helpers every stage shares:
// connecting with errors a person can act on, removing credentials from
// anything that may be printed, quoting identifiers and literals, and
// telling a lost connection from other errors.
//
// Connection errors name the side ("source" or "target"), the host and the
// database, say what to check, and never contain the password:
//
//	conn, err := pgutil.Connect(ctx, sourceURL, "source")
//	if err != nil {
//		return err // e.g. `source 10.0.0.5:5432/app: password authentication failed for user "app": check the password in the source URL`
//	}
package pgutil
