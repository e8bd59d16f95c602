package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/debug"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
	"replicator/pkg/redissync"
	"replicator/pkg/redisverify"
	"replicator/pkg/report"
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

	// What Redis itself would refuse or lose.
	HashFieldTTL  string `name:"hash-field-ttl" help:"Hash fields with their own TTL (Redis 7.4+) into a target without HPEXPIREAT: refuse (stop before writing such a key) or drop (write the field without its TTL and report it). Expired fields are never written." enum:"refuse,drop" default:"refuse"`
	DuplicateKeys string `help:"An RDB file that repeats a key (Redis refuses to load it): refuse (nothing is written) or last (the last copy of each key wins, reported)." enum:"refuse,last" default:"refuse"`

	redisTLS
	Connections      int  `help:"Parallel pipelined connections to the target." default:"4"`
	ScanConnections  int  `help:"In SCAN mode, parallel connections reading keys from the source (per shard of a cluster)." default:"4"`
	BigKeyMB         int  `name:"big-key-mb" help:"Values larger than this many MiB are written with native commands in pieces instead of one RESTORE." default:"16"`
	TargetRDBVersion int  `help:"Newest RDB version the target can RESTORE; 0 detects it from INFO (set 11 for Valkey if detection is wrong)." default:"0"`
	FlushTarget      bool `help:"FLUSHALL the target before copying: use when re-running after an interrupted or older import, on a target nothing else uses."`
	Resume           bool `help:"With --follow over PSYNC: keep the follow position on the target (key __replicator:follow) and, after a restart, continue from it instead of copying again." default:"true" negatable:""`
}

// redisTLS are the Redis TLS flags.
type redisTLS struct {
	TLSSkipVerify bool   `help:"Do not verify the Redis servers' TLS certificates (Heroku Redis uses self-signed ones)."`
	TLSCA         string `name:"tls-ca" help:"Verify the Redis servers' TLS certificates against this CA bundle (PEM) instead of the system's." placeholder:"FILE"`
}

// go-redis logs dial retries and pool events on its own; the errors this
// program reports say the same, explained. Nothing of the library's own
// goes to the output.
func init() { redis.SetLogger(quietRedis{}) }

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// unwrapPath drops the *fs.PathError wrapping (the path is already named).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// redisOptions parses a redis:// or rediss:// URL.
func redisOptions(what, raw string, t redisTLS) (*redis.Options, error) {
	if raw == "" {
		return nil, fmt.Errorf("no %s Redis URL: pass --%s redis://[user:password@]host:port or set its environment variable", what, what)
	}
	o, err := redisconn.ParseURL(what, raw)
	if err != nil {
		return nil, err
	}
	if o.TLSConfig == nil {
		return o, nil
	}
	switch {
	case t.TLSSkipVerify:
		o.TLSConfig = &tls.Config{InsecureSkipVerify: true, ServerName: o.TLSConfig.ServerName} //nolint:gosec // asked for by --tls-skip-verify
	case t.TLSCA != "":
		pem, err := os.ReadFile(t.TLSCA)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("--tls-ca %s: no such file: pass the path of the PEM CA bundle of the Redis servers (or --tls-skip-verify for self-signed certificates, as on Heroku Redis)", t.TLSCA)
		case err != nil:
			return nil, fmt.Errorf("--tls-ca %s cannot be read (%v): pass a readable PEM file holding the CA bundle of the Redis servers", t.TLSCA, unwrapPath(err))
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
	cfg.DurablePosition, cfg.ScanConnections = c.Resume, c.ScanConnections
	if cfg.Writer.Target, err = redisOptions("target", c.Target, c.redisTLS); err != nil {
		return err
	}
	if c.RDB == "" {
		if cfg.Source, err = redisOptions("source", c.Source, c.redisTLS); err != nil {
			return err
		}
	}
	cfg.DuplicateKeys, cfg.Writer.HashFieldTTL = c.DuplicateKeys, c.HashFieldTTL
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
	tuneGC()
	_, err = redissync.Sync(ctx, cfg, log)
	return err
}

// tuneGC trades heap headroom for CPU during a sync: a bulk copy allocates
// a small buffer per key (the RESTORE payload, the decoded value) that dies
// within milliseconds, and with the default GOGC=100 the collector ran
// often enough to cost about a quarter of the tool's CPU, on the cores the
// source and the target need. GOGC=400 with a soft limit of 192 MiB keeps
// the heap small on a small live set (the 64 MiB in-flight bound plus one
// big key) and makes the collector work harder only as that limit nears,
// well under the 300 MB the tool may use. GOGC or GOMEMLIMIT set in the
// environment win.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(192 << 20)
	}
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
	h := report.Header{Version: versionString(), Sides: []report.Side{report.SideOf("source", c.Source), report.SideOf("target", c.Target)},
		Fenced: report.Fence{Detail: "redis verify does not read the Postgres fence: see verify's report"}}
	if err := writeReport(c.Out, func(w io.Writer) error { return rep.WriteWithHeader(w, c.Format, h) }); err != nil {
		return err
	}
	if !rep.Identical() {
		return errDifferences
	}
	return nil
}
