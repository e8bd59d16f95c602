package snapshot

import (
	"context"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/trigger"
)

// triggerCapture is trigger capture's capture point (pkg/trigger): the
// capture triggers are installed and committed first, then one
// transaction exports its snapshot, whose pg_current_snapshot() is tick 0.
// A change is then either visible in that snapshot (the copy reads it) or
// recorded by a trigger in a transaction the snapshot does not see (a
// batch after tick 0 applies it): no gap, no duplicate.
type triggerCapture struct {
	sourceURL string
	cfg       trigger.Config
	log       *zap.Logger
	point     *trigger.CapturePoint

	// The ticker runs from the capture point to the end of the run, so the
	// changes recorded during a long copy are cut into batches of one tick
	// interval, not one batch the size of the copy's duration that the
	// source would have to sort and the target apply in one transaction.
	stopTicker func()
}

// Reset removes what an interrupted run installed: the triggers, their
// functions and the changelog with its ticks, so that a later Start (or a
// switch to logical capture) begins from nothing.
func (c *triggerCapture) Reset(ctx context.Context) error {
	conn, err := connect(ctx, c.sourceURL, "source", nil)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if err := trigger.Uninstall(ctx, conn); err != nil {
		return err
	}
	c.log.Info("removed the interrupted run's trigger capture from the source")
	return nil
}

func (c *triggerCapture) Start(ctx context.Context) (*CapturePoint, error) {
	conn, err := connect(ctx, c.sourceURL, "source", nil)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	tables, err := trigger.Install(ctx, conn, c.cfg, c.log)
	if err != nil {
		return nil, err
	}
	for _, t := range tables {
		if t.Identity == 'f' && t.Root == t.ID {
			c.log.Warn("table has no primary key: trigger capture keys its rows by all their columns, and an UPDATE or DELETE changes one of the identical rows",
				zap.Stringer("table", t))
		}
	}
	c.point, err = trigger.StartCapturePoint(ctx, c.sourceURL, c.log)
	if err != nil {
		return nil, err
	}
	c.startTicker()
	return &CapturePoint{SnapshotName: c.point.SnapshotName, State: c.point.State()}, nil
}

func (c *triggerCapture) startTicker() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.stopTicker = func() { cancel(); <-done }
	go func() {
		defer close(done)
		capt, err := trigger.New(ctx, c.sourceURL, c.cfg, c.log, nil)
		if err != nil {
			c.log.Warn("the trigger capture ticker could not start; the stream will cut the changes made during the copy into batches instead", zap.Error(err))
			return
		}
		defer capt.Close()
		for ctx.Err() == nil {
			// Ticks are an optimisation here: a failure is retried, and
			// never fails the copy.
			if err := capt.RunTicker(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("trigger capture ticker failed; retrying", zap.Error(err))
				select {
				case <-ctx.Done():
				case <-time.After(5 * time.Second):
				}
			}
		}
	}()
}

// Close stops the ticker at the end of the run; the stream ticks from
// then on.
func (c *triggerCapture) Close() {
	if c.stopTicker != nil {
		c.stopTicker()
		c.stopTicker = nil
	}
}

// Release ends the exporting transaction; the triggers stay and keep
// recording for the stream.
func (c *triggerCapture) Release(ctx context.Context) error {
	if c.point == nil {
		return nil
	}
	err := c.point.Release(ctx)
	c.point = nil
	return err
}
