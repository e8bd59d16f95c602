package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"time"

	"replicator/pkg/pgutil"
	"replicator/pkg/report"
	"replicator/pkg/verify"
)

type verifyCmd struct {
	pgFlags
	formatFlags
	Tables       []string      `help:"Compare only these tables: schema.name or name, wildcards * and ? allowed, comma-separated. A partitioned table's name selects its partitions. The schema comparison follows the same tables." placeholder:"TABLE" sep:","`
	Jobs         int           `help:"Processes per side: the first read of a table is a parallel query of this many processes on each server; then this many chunks are compared at a time, one connection per side each." default:"4"`
	ChunkRows    int64         `help:"Rows per chunk (at most 1024 chunks per table)." default:"10000"`
	WaitTimeout  time.Duration `help:"While a stream is running: how long to wait for the target to apply the source's current position before comparing." default:"1m"`
	RecheckDelay time.Duration `help:"While a stream is running: pause before differences are re-checked (only persisting ones are reported)." default:"2s"`
	MetricsAddr  string        `help:"Serve /metrics (Prometheus) here while verifying; empty to disable." default:"" placeholder:"HOST:PORT"`
}

func (c *verifyCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setupOneShot(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := verify.Config{
		Source: c.Source, Target: c.Target, Tables: c.Tables, Jobs: c.Jobs, ChunkRows: c.ChunkRows,
		WaitTimeout: c.WaitTimeout, RecheckDelay: c.RecheckDelay,
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Metrics, err = verify.NewMetrics(reg); err != nil {
		return err
	}
	rep, err := verify.Run(ctx, cfg, log)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	switch c.Format {
	case "json":
		err = rep.WriteJSON(&buf)
	case "markdown":
		err = rep.WriteMarkdown(&buf, report.Header{Version: versionString(), Fenced: targetFence(ctx, c.Target)})
	default:
		err = rep.WriteText(&buf)
	}
	if err != nil {
		return fmt.Errorf("render the report: %w", err)
	}
	// The report holds no URLs, only host:port/db; scrub anyway, a last
	// line of defence.
	out := []byte(pgutil.Scrub(buf.String(), g.secrets()))
	if err := writeReport(c.Out, func(w io.Writer) error { _, err := w.Write(out); return err }); err != nil {
		return err
	}
	if rep.Different() {
		return errDifferences
	}
	return nil
}

// targetFence reads whether the source is fenced from the target's cutover
// records, for a report header; a failure to connect makes it unknown.
func targetFence(ctx context.Context, target string) report.Fence {
	conn, err := pgutil.Connect(ctx, target, "target")
	if err != nil {
		return report.Fence{Detail: "cannot connect to the target to read it"}
	}
	defer conn.Close(context.Background())
	return report.FenceState(ctx, conn)
}
