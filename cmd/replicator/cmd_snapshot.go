package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"replicator/pkg/snapshot"
	"replicator/pkg/units"
)

type snapshotCmd struct {
	pgFlags
	metricsFlags
	Jobs                int    `help:"Parallel copy and index-build workers (each holds one source and one target connection)." default:"4"`
	Capture             string `help:"Change capture the stream will use: auto (logical when the source can create a slot and runs wal_level=logical, else trigger; the log says why), logical (a replication slot) or trigger (row triggers and a changelog in schema replicator on the source; needs only table ownership)." enum:"auto,logical,trigger" default:"auto"`
	ReplicaIdentityFull bool   `help:"Set REPLICA IDENTITY FULL on source tables that have no primary key (otherwise the snapshot refuses to start, because their UPDATE/DELETE would fail under the publication)."`
	ChunkMB             int    `help:"Split tables into chunks of this many MiB of heap, copied in parallel." default:"32" hidden:""`
	OneSnapshot         bool   `help:"Copy every table under one source snapshot held for the whole copy (the source's vacuum waits for it), and start an interrupted run over. By default each chunk of a table is read under a short snapshot of its own, recorded in a chunk ledger on the target: an interrupted run resumes with the chunks not done, and other hosts may add workers with --join."`
	Chunked             bool   `help:"The default copy; accepted so that existing scripts keep working." hidden:""`
	CopyFormat          string `help:"COPY format of the data: auto (binary for every table whose columns are all of built-in types, the same on both sides, between servers of one major version; text for the others) or text (every table as text)." enum:"auto,text" default:"auto"`
	Join                bool   `help:"Add --jobs workers to the chunked copy another 'replicator snapshot' (or 'run') drives against this target, then exit once no chunk is left to claim."`
}

// config is the package config for these flags.
func (c *snapshotCmd) config() snapshot.Config {
	return snapshot.Config{SourceURL: c.Source, TargetURL: c.Target, Jobs: c.Jobs, Capture: c.Capture,
		ReplicaIdentityFull: c.ReplicaIdentityFull, ChunkBytes: int64(c.ChunkMB) << 20, OneSnapshot: c.OneSnapshot,
		CopyFormat: c.CopyFormat}
}

// Validate refuses flags that contradict each other (exit 2).
func (c *snapshotCmd) Validate() error {
	if c.OneSnapshot && c.Chunked {
		return fmt.Errorf("--one-snapshot and --chunked contradict each other: leave out --chunked (the chunked copy is the default)")
	}
	if c.OneSnapshot && c.Join {
		return fmt.Errorf("--join adds workers to a chunked copy, which --one-snapshot turns off: leave out --one-snapshot")
	}
	return nil
}

func (c *snapshotCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setupOneShot(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	return c.snapshot(ctx, log, reg)
}

// snapshot runs the copy with progress shown; `run` calls it too.
func (c *snapshotCmd) snapshot(ctx context.Context, log *zap.Logger, reg prometheus.Registerer) error {
	var terminal io.Writer
	if isatty.IsTerminal(os.Stderr.Fd()) {
		terminal = os.Stderr
	}
	cfg := c.config()
	var err error
	if cfg.Metrics, err = snapshot.NewMetrics(reg); err != nil {
		return err
	}
	prog := newSnapshotProgress(log, terminal, 5*time.Second)
	cfg.Progress = prog
	if c.Join {
		err := snapshot.Join(ctx, cfg, log)
		prog.stop(err == nil)
		if err == nil {
			fmt.Println("joined: no chunk left to claim; the run that drives the copy finishes it")
		}
		return err
	}
	res, err := snapshot.Run(ctx, cfg, log)
	prog.stop(err == nil)
	if err != nil {
		return err
	}
	how := "fresh start"
	switch {
	case res.StartedOver:
		how = "started over after an interrupted run"
	case res.Resumed:
		how = "resumed an interrupted run, keeping the chunks it had copied"
	}
	fmt.Printf("snapshot done (%s): %d tables, %d rows, %s, %d sequences in %s\n",
		how, res.Tables, res.Rows, units.Bytes(res.Bytes), res.Sequences, res.Duration.Round(time.Millisecond))
	if res.Capture == snapshot.CaptureTrigger {
		fmt.Printf("trigger capture records changes after snapshot %s: run `replicator stream`\n", res.SnapshotXmin)
	} else {
		fmt.Printf("stream starts at %s (slot %s, publication %s): run `replicator stream`\n", res.ConsistentLSN, res.SlotName, res.Publication)
	}
	return nil
}
