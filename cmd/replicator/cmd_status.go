package main

import (
	"context"
	"encoding/json"
	"os"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/status"
)

type statusCmd struct {
	targetFlag
	Source string `help:"Source Postgres URL (optional): adds lag in bytes and the replication slot's health." env:"REPLICATOR_SOURCE_URL,DATABASE_URL" placeholder:"URL"`
	Format string `help:"Output format: text or json." enum:"text,json" default:"text"`
}

func (c *statusCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Target, c.Source)
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
	if c.Format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	st.WriteText(os.Stdout)
	return nil
}
