package trigger

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
)

// ApplyFunc applies one batch to the target. It must read the batch from
// cur in order and commit it on the target in one transaction together
// with state.RecordAppliedBatch(ctx, tx, b.ID, b.Time), and return nil
// only once that transaction is committed: the position is b.ID, and a
// target transaction may hold several batches but never part of one (a
// batch has no position inside it). On error nothing of the batch may be
// committed; the batch is read again after a restart.
type ApplyFunc func(ctx context.Context, b *Batch, cur *Cursor) error

// Run is the capture loop of `stream` for trigger capture: it runs the
// ticker and, from the batch after applied (the target's
// state.AppliedBatch), reads each batch, hands it to apply, and purges
// what apply committed. It returns when ctx ends (ctx.Err()) or on the
// first error of the ticker, the source, apply or purge; the caller
// restarts it from the target's state.
func (c *Capture) Run(ctx context.Context, applied int64, apply ApplyFunc) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tickErr := make(chan error, 1)
	go func() {
		err := c.RunTicker(ctx)
		cancel() // a failed ticker stops the loop, which would wait for ticks
		tickErr <- err
	}()
	err := c.consume(ctx, applied, apply)
	cancel()
	terr := <-tickErr
	if parent.Err() != nil {
		return parent.Err()
	}
	if errors.Is(err, context.Canceled) && terr != nil && !errors.Is(terr, context.Canceled) {
		return terr
	}
	return err
}

func (c *Capture) consume(ctx context.Context, applied int64, apply ApplyFunc) error {
	// The rows apply committed before a restart may still be there.
	if _, err := c.Purge(ctx, applied); err != nil {
		return err
	}
	for {
		b, err := c.NextBatch(ctx, applied)
		if err != nil {
			return err
		}
		cur, err := c.Open(ctx, b)
		if err != nil {
			return err
		}
		err = apply(ctx, b, cur)
		cur.Close(context.WithoutCancel(ctx))
		if err != nil {
			return fmt.Errorf("apply batch %d: %w", b.ID, err)
		}
		applied = b.ID
		if n, err := c.Purge(ctx, applied); err != nil {
			return err
		} else if n > 0 {
			c.log.Debug("batch applied and purged", zap.Int64("batch", applied), zap.Int64("rows", n))
		}
	}
}
