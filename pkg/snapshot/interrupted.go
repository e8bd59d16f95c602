package snapshot

import (
	"errors"
	"fmt"

	"replicator/pkg/pgutil"
)

// errConnectionLost is added to a run's error when a connection to either
// database dropped mid-run (a network cut, a server restart): the cause
// alone ("unexpected EOF") does not tell the user what to do.
var errConnectionLost = errors.New("the connection was lost (network cut or server restart): rerun `replicator snapshot` once both databases are reachable; it starts over cleanly")

// withRerunHint wraps err with errConnectionLost when it is a lost
// connection; other errors are returned as they are.
func withRerunHint(err error) error {
	if err == nil || !pgutil.IsConnectionLost(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, errConnectionLost)
}
