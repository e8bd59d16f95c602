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
	Chunked             bool   `help:"Copy each chunk under a short source snapshot of its own, recorded in a chunk ledger on the target: no source transaction stays open for hours, an interrupted run resumes with the chunks not done, each table's indexes are built as soon as its data is complete, and other hosts may add workers with --join. Foreign keys are created NOT VALID (validate them once the stream has caught up)."`
	OneSnapshot         bool   `help:"Copy every table under one source snapshot held for the whole copy, and start an interrupted run over (the default)." hidden:""`
	Join                bool   `help:"Add --jobs workers to the chunked copy another 'replicator snapshot --chunked' runs against this target, then exit once no chunk is left to claim."`
}

// config is the package config for these flags.
func (c *snapshotCmd) config() snapshot.Config {
	return snapshot.Config{SourceURL: c.Source, TargetURL: c.Target, Jobs: c.Jobs, Capture: c.Capture,
		ReplicaIdentityFull: c.ReplicaIdentityFull, ChunkBytes: int64(c.ChunkMB) << 20,
		// The command still copies under one snapshot unless asked: see the
		// package documentation for what the chunked copy does not carry yet.
		OneSnapshot: c.OneSnapshot || !c.Chunked}
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
