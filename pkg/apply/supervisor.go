package apply

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgutil"
	"replicator/pkg/wal"
)

// The pieces of the stream's supervisor (Stream): the wait between
// attempts, the panic boundary, and the goroutines of one attempt.

// reconnectBackoff is the wait before the next attempt: it doubles from
// MinBackoff up to MaxBackoff, with ±25% jitter so that streams cut by one
// incident (a failover, a network blip) do not all reconnect in step. The
// jittered wait is kept within [MinBackoff, MaxBackoff].
type reconnectBackoff struct {
	b        *backoff.ExponentialBackOff
	min, max time.Duration
}

func newReconnectBackoff(min, max time.Duration) *reconnectBackoff {
	b := &backoff.ExponentialBackOff{InitialInterval: min, RandomizationFactor: 0.25, Multiplier: 2, MaxInterval: max}
	b.Reset()
	return &reconnectBackoff{b: b, min: min, max: max}
}

// Next is the wait before the next attempt.
func (r *reconnectBackoff) Next() time.Duration {
	return min(max(r.b.NextBackOff(), r.min), r.max)
}

// Reset starts over from MinBackoff: the stream ran well for a while, so
// the next interruption is a fresh incident.
func (r *reconnectBackoff) Reset() { r.b.Reset() }

// guard runs fn at the supervisor's boundary: a panic in it (a bug in
// apply, in a decoder, in the lag poller) is not retried, since the same
// input would panic again. It becomes a fatal *PanicError for stage,
// logged here with its stack; the caller reports it like any fatal error.
func guard(stage string, log *zap.Logger, fn func() error) func() error {
	return func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				pe := &PanicError{Value: r, Stack: debug.Stack()}
				log.Error("stream stopped by a panic", zap.String("stage", stage),
					zap.String("panic", pgutil.RedactText(fmt.Sprint(r))), zap.ByteString("stack", pe.Stack))
				err = &StageError{stage, pe}
			}
		}()
		return fn()
	}
}

// applyAndWatch is one attempt's running part: the applier pulling from
// src, and watch keeping the lag gauges current beside it. They are one
// errgroup: when apply returns (nil once ctx ends, or its error) the
// watcher is stopped and waited for, and a panic in either stops both.
func applyAndWatch(ctx context.Context, ap *Applier, src wal.Source, m *Metrics, log *zap.Logger, watch func(context.Context)) error {
	g, gctx := errgroup.WithContext(ctx)
	watchCtx, stopWatch := context.WithCancel(gctx)
	defer stopWatch()
	g.Go(guard("apply", log, func() error {
		defer stopWatch()
		return ap.Run(gctx, src)
	}))
	g.Go(guard("capture", log, func() error {
		watch(watchCtx)
		return nil
	}))
	err := g.Wait()
	m.ApplyLagSeconds.Set(0)
	return err
}
