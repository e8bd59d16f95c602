package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"replicator/pkg/apply"
	"replicator/pkg/schemachange"
	"replicator/pkg/snapshot"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

type streamCmd struct {
	pgFlags
	metricsFlags
	streamFlags
}

// streamFlags tune the change stream; `run` embeds them too.
type streamFlags struct {
	BatchChanges int           `help:"Source changes grouped into one target transaction (at most)." default:"5000"`
	BatchDelay   time.Duration `help:"Longest wait for more source transactions before a target commit." default:"100ms"`
	TxnMemoryMB  int64         `name:"txn-memory-mb" help:"MiB of one source transaction (under trigger capture: one changelog batch) held in memory before it is spilled to disk." default:"8"`
	QueueMemory  int64         `name:"queue-memory-mb" help:"MiB of received transactions waiting for apply." default:"64"`
	SpillDir     string        `help:"Directory for spilled large transactions (default: the system's temporary directory)." placeholder:"DIR"`
	DDL          string        `name:"ddl" enum:"apply,stop" default:"apply" help:"Schema changes on the source while streaming: apply (add columns, tables, indexes and partitions on the target, stop on drops, renames and type changes) or stop (stop on every change)."`
	SchemaPoll   time.Duration `name:"schema-poll" help:"Longest time between two reads of the source's catalog for schema changes." default:"2s"`
}

// streamConfig is the stream's configuration from flags; `run` uses it
// after the snapshot.
func (f streamFlags) streamConfig(source, target string) apply.StreamConfig {
	return apply.StreamConfig{
		SourceURL: source, TargetURL: target,
		Apply: apply.Config{MaxChanges: f.BatchChanges, MaxDelay: f.BatchDelay},
		Capture: wal.Config{TxnMemory: f.TxnMemoryMB << 20, QueueMemory: f.QueueMemory << 20,
			SpillDir: f.SpillDir},
		DDL: schemachange.Mode(f.DDL), SchemaPollInterval: f.SchemaPoll, TableCopier: snapshot.TableCopier{},
	}
}

// Run follows the capture the snapshot recorded in the target's
// replicator.state (logical or trigger); apply.Stream reads it.
func (c *streamCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setup(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := c.streamConfig(c.Source, c.Target)
	if err := streamMetrics(&cfg, reg); err != nil {
		return err
	}
	return streamValidatingForeignKeys(ctx, cfg, c.Target, log)
}

// streamMetrics builds the stream's metrics on reg, once per process.
func streamMetrics(cfg *apply.StreamConfig, reg prometheus.Registerer) error {
	var err error
	if cfg.Metrics, err = apply.NewMetrics(reg); err != nil {
		return fmt.Errorf("register the stream's metrics: %w", err)
	}
	if cfg.TriggerMetrics, err = trigger.NewMetrics(reg); err != nil {
		return fmt.Errorf("register trigger capture's metrics: %w", err)
	}
	if cfg.SchemaMetrics, err = schemachange.NewMetrics(reg); err != nil {
		return fmt.Errorf("register the schema-change metrics: %w", err)
	}
	return nil
}
