package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"replicator/pkg/cutover"
	"replicator/pkg/pgutil"
)

type cutoverCmd struct {
	pgFlags
	MaxLag         time.Duration `help:"Wait until apply lag is below this before fencing." default:"5s"`
	Timeout        time.Duration `help:"Give up a waiting step (lag, open write transactions, draining) after this long." default:"10m"`
	Fence          bool          `help:"Stop writes on the source (revocable with --unfence)."`
	FenceMethod    string        `help:"How to fence: auto (trigger when the replicator's role owns every user table, as on Heroku, else revoke), trigger (a trigger refusing writes on every user table; works when the app logs in with the replicator's own role), revoke (write privileges of the app roles) or read-only (default_transaction_read_only on the database; not with trigger capture)." enum:"auto,trigger,revoke,read-only" default:"auto"`
	AppRoles       []string      `help:"Roles to fence (default: every role that owns or may write to a user table, except the replicator's own login role)." sep:"," placeholder:"ROLE"`
	Unfence        bool          `help:"Give the source exactly the write access the fence took, and forget the fenced steps (loses what the app wrote to the target since the switch: use --rollback then)."`
	Rollback       bool          `help:"The fallback: fence the target, wait for replicator reverse to carry the target's last writes to the source, move the source's sequences, verify, unfence the source, and print the switch back."`
	DryRun         bool          `help:"Show the plan (lag, roles to fence, sessions to end, sequence moves) and change nothing."`
	SequenceMargin int64         `help:"Move each target sequence to at least the source's value plus this." default:"1000"`
	Verify         string        `help:"Verification: full (every table and sequence while streaming, before the fence; inside the write freeze only the rows written since, so the freeze does not grow with the database), full-in-freeze (every table inside the freeze; for a role that may not create triggers on the source's tables) or none (skipped, with a warning)." enum:"full,full-in-freeze,none" default:"full"`
	Route53Zone    string        `name:"route53-zone" help:"Route 53 hosted zone id for the printed switch commands." placeholder:"ZONE_ID"`
	RecordName     string        `help:"DNS name of your own the app reaches the database through, for the printed plain (not weighted) CNAME." placeholder:"NAME"`
	AppRecord      string        `help:"The app's own public endpoint (e.g. api.mydomain.com), for the printed Route 53 weighted records at 10 % then 100 %." placeholder:"NAME"`
	RedisTarget    string        `help:"ElastiCache URL: with --redis-source, cutover waits for the Redis follower and verifies Redis inside the freeze; it also fills in the printed REDIS_URL (its password is never printed)." env:"REPLICATOR_REDIS_TARGET_URL" placeholder:"URL"`
	Format         string        `help:"Format of the report written with --out: text or markdown (for the change ticket: tool version, both sides, times, position, fence state, every step, the write freeze)." enum:"text,markdown" default:"text"`
	Out            string        `help:"Write the cutover's report to FILE at the end (the steps still print as they run)." placeholder:"FILE" type:"path"`
	RedisSource    string        `help:"Heroku Redis URL: with --redis-target, include Redis in the night (replicator redis sync --follow must be running)." env:"REPLICATOR_REDIS_SOURCE_URL" placeholder:"URL"`
	redisTLS
}

func (c *cutoverCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target, c.RedisTarget, c.RedisSource)
	if c.Unfence && c.Fence {
		return errors.New("cutover: --fence and --unfence contradict each other: pass one")
	}
	if c.Rollback && (c.Fence || c.Unfence) {
		return errors.New("cutover: --rollback fences the target and unfences the source itself: pass it without --fence and --unfence")
	}
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := cutover.Config{
		SourceURL: c.Source, TargetURL: c.Target, MaxLag: c.MaxLag, Timeout: c.Timeout,
		Fence: c.Fence, FenceMethod: c.FenceMethod, AppRoles: c.AppRoles, DryRun: c.DryRun,
		SequenceMargin: c.SequenceMargin, Verify: c.Verify,
		Route53Zone: c.Route53Zone, RecordName: c.RecordName, AppRecord: c.AppRecord, RedisTarget: c.RedisTarget,
		Version: versionString(), ReportFormat: c.Format,
	}
	if c.RedisSource != "" {
		if c.RedisTarget == "" {
			return errors.New("cutover: --redis-source needs --redis-target (the ElastiCache URL) too")
		}
		if cfg.RedisSource, err = redisOptions("redis-source", c.RedisSource, c.redisTLS); err != nil {
			return err
		}
		if cfg.RedisTargetOptions, err = redisOptions("redis-target", c.RedisTarget, c.redisTLS); err != nil {
			return err
		}
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	// The package prints URLs with a <PASSWORD> placeholder; scrubbing the
	// passwords themselves is the last line of defence (scrubWriter would
	// also mask the placeholders).
	out := &secretsWriter{w: os.Stdout, secrets: g.secrets()}
	if c.Unfence {
		return cutover.Unfence(ctx, cfg, out, log)
	}
	if c.Rollback {
		err := cutover.Rollback(ctx, cfg, out, log)
		if errors.Is(err, cutover.ErrDifferences) {
			return errDifferences
		}
		return err
	}
	// No metrics endpoint: a cutover is short, and the final
	// verification's counters (cfg.VerifyMetrics) would go to a registry
	// nobody serves.
	var rep bytes.Buffer
	if c.Out != "" {
		cfg.Report = &rep
	}
	err = cutover.Run(ctx, cfg, out, log)
	if c.Out != "" && rep.Len() > 0 {
		scrubbed := []byte(pgutil.Scrub(rep.String(), g.secrets()))
		if werr := writeReport(c.Out, func(w io.Writer) error { _, err := w.Write(scrubbed); return err }); werr != nil && err == nil {
			err = werr
		}
	}
	if errors.Is(err, cutover.ErrDifferences) {
		return errDifferences
	}
	return err
}

// secretsWriter replaces the given passwords in everything written.
type secretsWriter struct {
	w       io.Writer
	secrets []string
}

func (s *secretsWriter) Write(p []byte) (int, error) {
	text := string(p)
	for _, sec := range s.secrets {
		if len(sec) >= 3 {
			text = strings.ReplaceAll(text, sec, "xxxxx")
		}
	}
	if _, err := io.WriteString(s.w, text); err != nil {
		return 0, err
	}
	return len(p), nil
}
