package verify

import (
	"errors"
	"fmt"

	"replicator/pkg/pgutil"
)

// ErrConnectionLost is added to verify's error when a connection dropped
// mid-run: nothing was compared wrongly, the comparison just did not end.
var ErrConnectionLost = errors.New("the connection was lost (network cut or server restart) before the comparison ended: run `replicator verify` again")

func withRetryHint(err error) error {
	if err == nil || !pgutil.IsConnectionLost(err) {
		return err
	}
	return fmt.Errorf("%w: %w", err, ErrConnectionLost)
}
