// Package testenv starts real, throwaway PostgreSQL 15 clusters and
// redis-server processes for integration tests, and can stop, kill -9 and
// restart them for fault tests.
//
// There is no mock of Postgres or Redis anywhere in this project: every
// integration test talks to a server started here. A server that cannot be
// started fails the test (t.Fatal), it never skips it, so CI goes red rather
// than silently green on a machine that lacks the servers.
//
// initdb refuses to run as root, so when the test process is root the
// cluster is created and run as the "postgres" OS user; the data directory
// is made inside a directory that user may write.
//
// Usage, one server shared by a package and a database per test:
//
//	var pg *testenv.Postgres
//
//	func TestMain(m *testing.M) {
//		os.Exit(testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{}))
//	}
//
//	func TestCopy(t *testing.T) {
//		src := pg.NewDatabase(t) // dropped in t.Cleanup
//		...
//	}
package testenv
