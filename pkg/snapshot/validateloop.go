package snapshot

import (
	"context"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/pgutil"
)

// ValidateForeignKeysWhileStreaming validates the foreign keys a chunked
// copy created NOT VALID, beside the stream: first after a few seconds,
// then with a backoff doubling up to 5 minutes while some still fail
// (their rows hold once the stream has applied what the chunks'
// snapshots did not see), until none is left or ctx ends. Each VALIDATE
// reads the referencing table, hence the backoff. It returns when done
// or when ctx ends; run it in a goroutine and wait for it.
func ValidateForeignKeysWhileStreaming(ctx context.Context, targetURL string, log *zap.Logger) {
	for delay := 5 * time.Second; ; delay = min(2*delay, 5*time.Minute) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		conn, err := pgutil.Connect(ctx, targetURL, "target")
		if err != nil {
			log.Debug("validate the copy's foreign keys: retried later", zap.Error(err))
			continue
		}
		validated, left, err := ValidateForeignKeys(ctx, conn)
		conn.Close(context.Background())
		for _, k := range validated {
			log.Info("foreign key validated on the target", zap.String("foreign_key", k.String()))
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Warn("validate the copy's foreign keys: retried later", zap.Error(err), zap.Duration("retry_in", min(2*delay, 5*time.Minute)))
		case len(left) == 0:
			if len(validated) > 0 {
				log.Info("every foreign key the copy created NOT VALID is validated")
			}
			return
		default:
			for _, k := range left {
				log.Info("foreign key not valid yet on the target: retried while the stream catches up", zap.String("foreign_key", k.String()),
					zap.String("error", k.LastError), zap.Duration("retry_in", min(2*delay, 5*time.Minute)))
			}
		}
	}
}
