package main

import (
	"context"

	"go.uber.org/zap"

	"replicator/pkg/apply"
	"replicator/pkg/snapshot"
)

// streamValidatingForeignKeys runs the stream and, beside it, the
// validation of the foreign keys a chunked copy left NOT VALID; when the
// stream ends the validation is stopped and waited for.
func streamValidatingForeignKeys(ctx context.Context, cfg apply.StreamConfig, targetURL string, log *zap.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		snapshot.ValidateForeignKeysWhileStreaming(ctx, targetURL, log)
	}()
	err := apply.Stream(ctx, cfg, log)
	cancel()
	<-done
	return err
}
