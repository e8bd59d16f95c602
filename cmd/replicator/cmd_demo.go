package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"go.uber.org/zap"

	"replicator/internal/demo"
)

type demoCmd struct {
	Duration time.Duration `help:"How long the stream runs under live load before verification." default:"10s"`
	Rate     int           `help:"Live writes per second to each of Postgres and Redis." default:"200"`
}

func (c *demoCmd) Run(ctx context.Context, g *Globals) error {
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync()
	// The narrative goes to stdout; the components only speak up on
	// warnings, unless --log-level asks for more.
	if g.LogLevel == "info" {
		log = log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}
	var terminal io.Writer
	if isatty.IsTerminal(os.Stderr.Fd()) {
		terminal = os.Stderr
	}
	prog := newSnapshotProgress(log, terminal, 5*time.Second)
	res, err := demo.Run(ctx, demo.Options{Out: os.Stdout, Log: log, Progress: prog, Stream: c.Duration, WritesPerSecond: c.Rate})
	prog.stop(err == nil)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if !res.PostgresIdentical || !res.RedisIdentical {
		return errDifferences
	}
	return nil
}
