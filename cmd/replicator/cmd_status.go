package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/report"
	"replicator/pkg/status"
)

type statusCmd struct {
	targetFlag
	Source string `help:"Source Postgres URL (optional): adds lag (logical: WAL bytes and the replication slot's health; trigger: changes not yet applied) in seconds." env:"REPLICATOR_SOURCE_URL,DATABASE_URL" placeholder:"URL"`
	Format string `help:"Output format: text, json or markdown (for a change ticket)." enum:"text,json,markdown" default:"text"`
}

func (c *statusCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Target, c.Source)
	started := time.Now()
	target, err := pgutil.Connect(ctx, c.Target, "target")
	if err != nil {
		return err
	}
	defer target.Close(context.Background())
	var source *pgx.Conn
	if c.Source != "" {
		if source, err = pgutil.Connect(ctx, c.Source, "source"); err != nil {
			return err
		}
		defer source.Close(context.Background())
	}
	st, err := status.Gather(ctx, target, source)
	if err != nil {
		return err
	}
	st.LastError = pgutil.Scrub(st.LastError, g.secrets())
	switch c.Format {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "markdown":
		h := report.Header{Version: versionString(), Sides: []report.Side{report.SideOf("target", c.Target)},
			Started: started, Ended: time.Now(), Fenced: report.FenceState(ctx, target)}
		if c.Source != "" {
			h.Sides = append([]report.Side{report.SideOf("source", c.Source)}, h.Sides...)
		}
		var buf bytes.Buffer
		if err := st.WriteMarkdown(&buf, h); err != nil {
			return err
		}
		_, err := os.Stdout.WriteString(pgutil.Scrub(buf.String(), g.secrets()))
		return err
	}
	st.WriteText(os.Stdout)
	return nil
}
