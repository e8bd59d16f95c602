package main

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"replicator/pkg/apply"
	"replicator/pkg/pgutil"
	"replicator/pkg/snapshot"
)

// runCmd is the sidecar daemon: snapshot when the target has none finished,
// then stream until SIGINT/SIGTERM. Rerunning it (after a crash, a reboot,
// a kill -9) continues where it stopped: an unfinished snapshot starts over,
// a finished one goes straight to streaming from the applied position.
type runCmd struct {
	snapshotCmd
	streamFlags
}

func (c *runCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setup(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	target, err := pgutil.Connect(ctx, c.Target, "target")
	if err != nil {
		return err
	}
	done, err := snapshot.IsDone(ctx, target)
	target.Close(context.Background())
	if err != nil {
		return err
	}
	if done {
		log.Info("snapshot already done on the target: streaming from the applied position")
	} else {
		log.Info("no finished snapshot on the target: copying first, then streaming")
		if err := c.snapshot(ctx, log, reg); err != nil {
			if errors.Is(err, context.Canceled) {
				return fmt.Errorf("stopped during the snapshot: the next `replicator run` starts the copy over")
			}
			return err
		}
	}
	log.Info("streaming changes", zap.String("until", "SIGINT or SIGTERM"))
	cfg := c.streamConfig(c.Source, c.Target)
	if err := streamMetrics(&cfg, reg); err != nil {
		return err
	}
	return apply.Stream(ctx, cfg, log)
}
