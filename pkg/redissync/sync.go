package redissync

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/pkg/redisrdb"
)

// SyncConfig configures one `redis sync`.
type SyncConfig struct {
	// Source is the live source server; nil when RDBFile is set.
	Source *redis.Options
	// RDBFile is an RDB file to import instead of a live source.
	RDBFile string
	// Mode is how to read a live source: "auto" (PSYNC, else SCAN),
	// "psync" or "scan". Default auto.
	Mode string
	// Follow keeps applying the source's changes after the snapshot until
	// ctx ends.
	Follow bool
	// FlushTarget runs FLUSHALL on the target before copying, so keys a
	// previous (interrupted or older) run left there and that the source
	// has since deleted do not survive. Only for a target used by nothing
	// else.
	FlushTarget bool
	// BigKeyBytes: a value larger than this is written with native
	// commands in pieces instead of one RESTORE. Default 16 MiB.
	BigKeyBytes int64
	// Writer configures the target side.
	Writer WriterConfig
	// Decoder bounds the decoder.
	Decoder redisrdb.Options
	// Metrics receives the sync's metrics; nil records none. The command
	// builds one with NewMetrics per process.
	Metrics *Metrics
}

// Validate checks the configuration.
func (c *SyncConfig) Validate() error {
	if (c.Source == nil) == (c.RDBFile == "") {
		return errors.New("redis sync: give exactly one source: a source URL or an RDB file")
	}
	switch c.Mode {
	case "", "auto", "psync", "scan":
	default:
		return fmt.Errorf("redis sync: mode %q: use auto, psync or scan", c.Mode)
	}
	if c.RDBFile != "" && c.Follow {
		return errors.New("redis sync: --follow needs a live source, not an RDB file")
	}
	if c.BigKeyBytes < 0 {
		return errors.New("redis sync: BigKeyBytes must not be negative")
	}
	if err := c.Decoder.Validate(); err != nil {
		return err
	}
	return c.Writer.Validate()
}

func (c SyncConfig) withDefaults() SyncConfig {
	if c.Mode == "" {
		c.Mode = "auto"
	}
	if c.BigKeyBytes == 0 {
		c.BigKeyBytes = 16 << 20
	}
	c.Decoder.CaptureRaw = c.BigKeyBytes
	return c
}

// Sync copies the source into the target and, with Follow, keeps it in
// sync until ctx ends.
func Sync(ctx context.Context, cfg SyncConfig, log *zap.Logger) (LoadStats, error) {
	if err := cfg.Validate(); err != nil {
		return LoadStats{}, err
	}
	cfg = cfg.withDefaults()
	w, err := NewWriter(ctx, cfg.Writer, log, cfg.Metrics)
	if err != nil {
		return LoadStats{}, err
	}
	defer w.Close()
	if cfg.FlushTarget {
		log.Warn("flushing the target before the copy (--flush-target)", zap.String("target", cfg.Writer.Target.Addr))
		if err := w.Do(ctx, 0, "FLUSHALL"); err != nil {
			return LoadStats{}, fmt.Errorf("target Redis %s: FLUSHALL: %w", cfg.Writer.Target.Addr, err)
		}
	}
	if cfg.RDBFile != "" {
		return syncFile(ctx, cfg, w, log)
	}
	return syncLive(ctx, cfg, w, log)
}

func syncFile(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (LoadStats, error) {
	f, err := os.Open(cfg.RDBFile)
	if err != nil {
		return LoadStats{}, fmt.Errorf("RDB file: %w", err)
	}
	defer f.Close()
	d := redisrdb.NewDecoder(f, cfg.Decoder)
	st, err := Load(ctx, d, w, cfg.BigKeyBytes, log)
	if err != nil {
		return st, fmt.Errorf("RDB file %s: %w", cfg.RDBFile, err)
	}
	if err := w.Flush(); err != nil {
		return st, err
	}
	logStats(log, "RDB file imported", st)
	return st, nil
}

func logStats(log *zap.Logger, msg string, st LoadStats) {
	log.Info(msg, zap.Int64("keys", st.Keys), zap.Int64("restored", st.Restored), zap.Int64("native", st.Native),
		zap.Int64("skipped_expired", st.SkippedExpired), zap.Int64("skipped_empty", st.SkippedEmpty),
		zap.Int64("functions", st.Functions), zap.Int64("rdb_bytes", st.Bytes))
}
