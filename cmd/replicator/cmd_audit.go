package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"replicator/pkg/audit"
	"replicator/pkg/pgutil"
	"replicator/pkg/report"
)

type auditCmd struct {
	Source      string `help:"Source Postgres URL." env:"REPLICATOR_SOURCE_URL,DATABASE_URL" placeholder:"URL"`
	RedisSource string `help:"Source Redis URL (redis:// or rediss://)." env:"REPLICATOR_REDIS_SOURCE_URL,REDIS_URL" placeholder:"URL"`
	redisTLS
	HerokuConfig string `help:"Output of 'heroku config -a APP' (or --shell/--json): print the aws ssm put-parameter commands that move each variable, values never printed." placeholder:"FILE" type:"existingfile"`
	HerokuApp    string `help:"Heroku app name for the generated commands (default: read from the heroku config header)."`
	SSMPrefix    string `help:"SSM parameter path prefix for the generated commands (default /APP/)." placeholder:"PATH"`
	Procfile     string `help:"The app's Procfile: map each process type to its AWS analog (web: ECS service behind an ALB, workers: ECS services, release: a one-off task)." placeholder:"FILE" type:"existingfile"`
	TFVars       string `name:"tfvars" help:"Also write the terraform.tfvars for deploy/terraform, filled in from the audit, to FILE." placeholder:"FILE" type:"path"`
	Format       string `help:"Output format: text, json or markdown." enum:"text,json,markdown" default:"text"`
	Out          string `help:"Write the report to FILE instead of standard output." placeholder:"FILE" type:"path"`
}

func (c *auditCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.RedisSource)
	if c.HerokuConfig == "" {
		c.HerokuConfig = g.HerokuEnv // the same `heroku config -s` file
	}
	if c.Source == "" && c.RedisSource == "" && c.HerokuConfig == "" {
		return fmt.Errorf("nothing to audit: pass --source (Postgres URL), --redis-source (Redis URL) and/or --heroku-config FILE (or --heroku-env FILE)")
	}
	var rep audit.Report
	app := c.HerokuApp
	h := report.Header{Version: versionString(), Started: time.Now(),
		Fenced: report.Fence{Detail: "the audit reads only the source; run `replicator status --format markdown` against the target"}}
	for _, s := range [][2]string{{"source", c.Source}, {"redis source", c.RedisSource}} {
		if s[1] != "" {
			h.Sides = append(h.Sides, report.SideOf(s[0], s[1]))
		}
	}
	rep.Header = &h
	if c.Source != "" {
		conn, err := pgutil.Connect(ctx, c.Source, "source")
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if rep.Postgres, err = audit.Postgres(ctx, conn, audit.Options{}); err != nil {
			return err
		}
	}
	if c.RedisSource != "" {
		opts, err := redisOptions("redis-source", c.RedisSource, c.redisTLS)
		if err != nil {
			return err
		}
		if rep.Redis, err = audit.Redis(ctx, opts, 10000); err != nil {
			return err
		}
	}
	if c.HerokuConfig != "" {
		f, err := os.Open(c.HerokuConfig)
		if err != nil {
			return err
		}
		hc, err := audit.ParseHerokuConfig(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--heroku-config %s: %w", c.HerokuConfig, err)
		}
		rep.SSMCommands = hc.SSMCommands(c.HerokuApp, c.SSMPrefix)
		if app == "" {
			app = hc.App
		}
	}
	if rep.Postgres != nil || rep.Redis != nil {
		sz := audit.Size(rep.Postgres, rep.Redis)
		rep.Sizing = &sz
		rep.TFVars = audit.TFVars(&rep, sz, app)
		if c.TFVars != "" {
			if err := os.WriteFile(c.TFVars, []byte(rep.TFVars), 0o644); err != nil {
				return fmt.Errorf("--tfvars %s: %w", c.TFVars, err)
			}
		}
	}
	if c.Procfile != "" {
		f, err := os.Open(c.Procfile)
		if err != nil {
			return err
		}
		rep.Processes, err = audit.ParseProcfile(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("--procfile %s: %w: fix the file or pass the app's Procfile", c.Procfile, err)
		}
	}
	h.Ended = time.Now()
	return writeReport(c.Out, func(w io.Writer) error { return rep.Write(w, c.Format) })
}
