package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"replicator/internal/demo"
)

type demoCmd struct {
	Duration time.Duration `help:"How long the stream runs under live load before verification." default:"10s"`
	Rate     int           `help:"Live writes per second to each of Postgres and Redis." default:"200"`
}

func (c *demoCmd) Run(ctx context.Context, g *Globals) error {
	log, err := g.demoLogger()
	if err != nil {
		return err
	}
	defer log.Sync()
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

// demoLogger is the components' logger for the demo. The narrative goes
// to stdout and the components only speak up on warnings, unless
// --log-level asks for more. With --log-format auto their lines join the
// narrative on stdout, one readable line each (demo.NarrativeCore), so
// that `make demo | cat` shows no JSON; an explicit --log-format keeps
// the usual logger on stderr.
func (g *Globals) demoLogger() (*zap.Logger, error) {
	var log *zap.Logger
	if g.LogFormat == "auto" || g.LogFormat == "" {
		var level zapcore.Level
		if err := level.Set(g.LogLevel); err != nil {
			return nil, err
		}
		log = zap.New(demo.NarrativeCore(&scrubWriter{w: os.Stdout, secrets: g.secrets()}, level))
	} else {
		var err error
		if log, err = g.logger(); err != nil {
			return nil, err
		}
	}
	if g.LogLevel == "info" {
		log = log.WithOptions(zap.IncreaseLevel(zap.WarnLevel))
	}
	return log, nil
}
