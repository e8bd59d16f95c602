package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redissync"
	"replicator/pkg/redisverify"
)

type redisCmd struct {
	Sync   redisSyncCmd   `cmd:"" help:"Copy a Redis source (PSYNC, RDB file or SCAN+DUMP) into a target, optionally following live changes."`
	Verify redisVerifyCmd `cmd:"" help:"Compare two Redis servers key by key (digests computed client-side). Exit 1 on differences."`
}

type redisSyncCmd struct {
	metricsFlags
	Source string `help:"Source Redis URL (redis:// or rediss://)." env:"REPLICATOR_REDIS_SOURCE_URL,REDIS_URL" placeholder:"URL" xor:"src"`
	RDB    string `help:"Import this RDB file instead of a live source." placeholder:"FILE" type:"existingfile" xor:"src"`
	Target string `help:"Target Redis URL (ElastiCache)." env:"REPLICATOR_REDIS_TARGET_URL" placeholder:"URL"`
	Follow bool   `help:"After the copy, keep applying the source's changes until SIGINT/SIGTERM."`
	Mode   string `help:"How to read the source: auto (PSYNC, falling back to SCAN), psync or scan." enum:"auto,psync,scan" default:"auto"`
	redisTLS
	Connections      int  `help:"Parallel pipelined connections to the target." default:"4"`
	BigKeyMB         int  `name:"big-key-mb" help:"Values larger than this many MiB are written with native commands in pieces instead of one RESTORE." default:"16"`
	TargetRDBVersion int  `help:"Newest RDB version the target can RESTORE; 0 detects it from INFO (set 11 for Valkey if detection is wrong)." default:"0"`
	FlushTarget      bool `help:"FLUSHALL the target before copying: use when re-running after an interrupted or older import, on a target nothing else uses."`
}

// redisTLS are the Redis TLS flags.
type redisTLS struct {
	TLSSkipVerify bool   `help:"Do not verify the Redis servers' TLS certificates (Heroku Redis uses self-signed ones)."`
	TLSCA         string `name:"tls-ca" help:"Verify the Redis servers' TLS certificates against this CA bundle (PEM) instead of the system's." placeholder:"FILE" type:"existingfile"`
}

// redisOptions parses a redis:// or rediss:// URL.
func redisOptions(what, raw string, t redisTLS) (*redis.Options, error) {
	if raw == "" {
		return nil, fmt.Errorf("no %s Redis URL: pass --%s redis://[user:password@]host:port or set its environment variable", what, what)
	}
	if !strings.HasPrefix(raw, "redis://") && !strings.HasPrefix(raw, "rediss://") {
		return nil, fmt.Errorf("%s Redis URL must start with redis:// or rediss:// (TLS)", what)
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%s Redis URL: %w", what, err)
	}
	if o.TLSConfig == nil {
		return o, nil
	}
	switch {
	case t.TLSSkipVerify:
		o.TLSConfig = &tls.Config{InsecureSkipVerify: true, ServerName: o.TLSConfig.ServerName} //nolint:gosec // asked for by --tls-skip-verify
	case t.TLSCA != "":
		pem, err := os.ReadFile(t.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s holds no PEM certificate: pass the CA bundle of the Redis servers", t.TLSCA)
		}
		o.TLSConfig.RootCAs = pool
	}
	return o, nil
}

func (c *redisSyncCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := redissync.SyncConfig{RDBFile: c.RDB, Mode: c.Mode, Follow: c.Follow, FlushTarget: c.FlushTarget, BigKeyBytes: int64(c.BigKeyMB) << 20,
		Writer: redissync.WriterConfig{Connections: c.Connections, TargetRDBVersion: c.TargetRDBVersion}}
	if cfg.Writer.Target, err = redisOptions("target", c.Target, c.redisTLS); err != nil {
		return err
	}
	if c.RDB == "" {
		if cfg.Source, err = redisOptions("source", c.Source, c.redisTLS); err != nil {
			return err
		}
	}
	start := startMetrics // --follow is a daemon: a busy port refuses
	if !c.Follow {
		start = startMetricsOneShot
	}
	reg, err := start(ctx, c.MetricsAddr, log)
	if err != nil {
		return err
	}
	if cfg.Metrics, err = redissync.NewMetrics(reg); err != nil {
		return err
	}
	_, err = redissync.Sync(ctx, cfg, log)
	return err
}

type redisVerifyCmd struct {
	Source string `help:"Source Redis URL." env:"REPLICATOR_REDIS_SOURCE_URL,REDIS_URL" placeholder:"URL"`
	Target string `help:"Target Redis URL." env:"REPLICATOR_REDIS_TARGET_URL" placeholder:"URL"`
	redisTLS
	Sample       int           `help:"Check this many random keys per database instead of every key (0 = all)." default:"0"`
	TTLTolerance time.Duration `help:"How far the TTLs of a key may differ." default:"2s"`
	formatFlags
}

func (c *redisVerifyCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, err := g.logger()
	if err != nil {
		return err
	}
	defer log.Sync()
	cfg := redisverify.Config{Sample: c.Sample, TTLTolerance: c.TTLTolerance}
	if cfg.Source, err = redisOptions("source", c.Source, c.redisTLS); err != nil {
		return err
	}
	if cfg.Target, err = redisOptions("target", c.Target, c.redisTLS); err != nil {
		return err
	}
	rep, err := redisverify.Run(ctx, cfg, log)
	if err != nil {
		return err
	}
	if err := writeReport(c.Out, func(w io.Writer) error { return rep.Write(w, c.Format) }); err != nil {
		return err
	}
	if !rep.Identical() {
		return errDifferences
	}
	return nil
}
