package main

import (
	"context"

	"go.uber.org/zap"

	"replicator/pkg/cutover"
)

// reverseCmd is the fallback window's daemon: after the cutover it carries
// the app's writes on the target (AWS) back to the fenced source (Heroku),
// so that `cutover --rollback` loses none of them. It runs beside (or
// instead of, with logical capture) the forward stream until the window
// closes or the rollback is done, resumes where it stopped after a
// restart or kill -9, and serves the same metrics as `stream`.
type reverseCmd struct {
	pgFlags
	metricsFlags
	streamFlags
}

func (c *reverseCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setup(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	// The stream's configuration in the stream's own terms: it reads the
	// target and writes the source (cutover.Reverse swaps the URLs).
	cfg := c.streamConfig(c.Source, c.Target)
	if err := streamMetrics(&cfg, reg); err != nil {
		return err
	}
	log.Info("reverse stream: carrying the target's changes back to the source", zap.String("until", "SIGINT or SIGTERM"))
	return cutover.Reverse(ctx, cutover.ReverseConfig{SourceURL: c.Source, TargetURL: c.Target, Stream: cfg}, log)
}
