package pgutil

import (
	"testing"

	"replicator/internal/testenv"
)

// pg is this package's own cluster: the tests of IsConnectionLost stop,
// crash and restart it.
var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }
