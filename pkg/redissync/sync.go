package redissync

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	// ScanConnections is how many source connections read keys (DUMP,
	// PTTL) in parallel in SCAN mode, per database (per shard for a
	// cluster). Default 4.
	ScanConnections int
	// BigKeyBytes: a value larger than this is written with native
	// commands in pieces instead of one RESTORE. Default 16 MiB.
	BigKeyBytes int64
	// Writer configures the target side.
	Writer WriterConfig
	// Decoder bounds the decoder.
	Decoder redisrdb.Options
	// DurablePosition stores the follow position on the target
	// (PositionKey, in the same transaction as the commands it covers) and,
	// when a position is already there, resumes from it with PSYNC instead
	// of copying again. PSYNC follow only.
	DurablePosition bool
	// shardID is set for the follower of one shard of a cluster source;
	// shardSlot is a slot it serves, by which its master is found again
	// after a failover among shardSeeds (the masters' addresses).
	shardID    string
	shardSlot  int
	shardSeeds []string
	// Metrics receives the sync's metrics; nil records none. The command
	// builds one with NewMetrics per process.
	Metrics *Metrics
	// DuplicateKeys is what an RDB file that repeats a key does:
	// DuplicatesRefuse (the default, "") or DuplicatesLast.
	DuplicateKeys string
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
	switch c.DuplicateKeys {
	case "", DuplicatesRefuse, DuplicatesLast:
	default:
		return fmt.Errorf("redis sync: duplicate keys policy %q: use refuse or last", c.DuplicateKeys)
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

// resumable says whether the sync may continue from a stored follow
// position instead of copying.
func (c SyncConfig) resumable() bool {
	return c.Follow && c.DurablePosition && c.RDBFile == "" && c.Mode != "scan"
}

// Sync copies the source into the target and, with Follow, keeps it in
// sync until ctx ends.
func Sync(ctx context.Context, cfg SyncConfig, log *zap.Logger) (st LoadStats, err error) {
	if err := cfg.Validate(); err != nil {
		return LoadStats{}, err
	}
	cfg = cfg.withDefaults()
	w, err := NewWriter(ctx, cfg.Writer, log, cfg.Metrics)
	if err != nil {
		return LoadStats{}, err
	}
	defer summarise(w, log, &st, &err) // after Close: every write has run
	defer w.Close()
	if cfg.FlushTarget {
		log.Warn("flushing the target before the copy (--flush-target)", zap.String("target", cfg.Writer.Target.Addr))
		if err := w.Do(ctx, 0, "FLUSHALL"); err != nil {
			return LoadStats{}, fmt.Errorf("target Redis %s: FLUSHALL: %w", cfg.Writer.Target.Addr, err)
		}
		if err := w.FlushFunctions(ctx); err != nil {
			return LoadStats{}, err
		}
	}
	if !cfg.resumable() {
		// This copy overwrites what a position stored by an earlier
		// follower describes; resuming from it later would be wrong.
		if err := clearPositions(ctx, w); err != nil {
			return LoadStats{}, err
		}
	}
	if cfg.RDBFile != "" {
		return syncFile(ctx, cfg, w, log)
	}
	return syncLive(ctx, cfg, w, log)
}

// summarise runs when the sync ends (after the writer closed): it reports
// the dropped field TTLs and adds to an error how to start over.
func summarise(w *Writer, log *zap.Logger, st *LoadStats, err *error) {
	if n, ex := w.DroppedFieldTTLs(); n > 0 {
		st.DroppedFieldTTLs = n
		log.Warn("hash field TTLs dropped: the target has no HPEXPIREAT (Redis before 7.4), so these fields are now permanent (--hash-field-ttl drop)",
			zap.Int64("fields", n), zap.Strings("examples", ex))
	}
	if *err != nil {
		*err = startOver(*err, w)
	}
}

// startOver adds to an error that stopped the copy how many keys are
// already on the target and how to begin again from a clean target.
func startOver(err error, w *Writer) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	w.Flush() // the keys queued before the error (a no-op after Close)
	if n := w.Written(); n > 0 {
		return fmt.Errorf("%w; %d keys were already written to the target: to start over, fix this and run again with --flush-target (it empties the target first)", err, n)
	}
	return err
}

func syncFile(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (LoadStats, error) {
	// A first pass finds repeated keys, so that a refused file leaves the
	// target untouched; the decoder is fast next to the writes.
	dups, err := checkDuplicates(cfg, func() (io.ReadCloser, error) { return os.Open(cfg.RDBFile) })
	if err != nil {
		return LoadStats{}, fmt.Errorf("RDB file %s: %w", cfg.RDBFile, err)
	}
	if dups.Count > 0 {
		log.Warn("RDB file repeats keys; the last copy of each is kept (--duplicate-keys last)",
			zap.Int64("duplicate_keys", dups.Count), zap.Strings("examples", dups.Examples))
	}
	f, err := os.Open(cfg.RDBFile)
	if err != nil {
		return LoadStats{}, fmt.Errorf("RDB file: %w", err)
	}
	defer f.Close()
	d := redisrdb.NewDecoder(f, cfg.Decoder)
	st, err := Load(ctx, d, w, cfg.BigKeyBytes, log)
	st.DuplicateKeys = dups.Count
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
	log.Info(msg, zap.Int64("keys", st.Keys), zap.Int64("restored", st.Restored), zap.Int64("strings_set", st.Strings), zap.Int64("native", st.Native),
		zap.Int64("skipped_expired", st.SkippedExpired), zap.Int64("skipped_empty", st.SkippedEmpty),
		zap.Int64("functions", st.Functions), zap.Int64("rdb_bytes", st.Bytes),
		zap.Int64("expired_fields", st.ExpiredFields), zap.Int64("duplicate_keys", st.DuplicateKeys))
}
