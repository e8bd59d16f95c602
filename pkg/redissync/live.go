package redissync

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"replicator/pkg/redisconn"
	"replicator/pkg/redisrdb"
)

// syncLive copies a live source: by PSYNC (as a replica) when the mode
// allows and the source accepts it, else by SCAN + DUMP + PTTL.
func syncLive(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (LoadStats, error) {
	if cfg.shardID == "" {
		// A source that cannot even answer INFO (refused connection, wrong
		// password) fails below with the messages of the single-server
		// path; a cluster whose node list cannot be read stops here.
		shards, err := clusterShards(ctx, cfg.Source)
		var ce *clusterNodesError
		var reply redis.Error
		switch {
		case errors.As(err, &ce):
			return LoadStats{}, err
		case err != nil && !errors.Is(err, errNotACluster) && !errors.As(err, &reply):
			// No answer at all (refused, TLS mismatch, timeout): the
			// replication handshake would only wait for it again.
			return LoadStats{}, redisconn.Explain("source", cfg.Source, err)
		}
		if err == nil {
			return syncClusterSource(ctx, cfg, w, shards, log)
		}
	}
	if cfg.Mode == "auto" || cfg.Mode == "psync" {
		if cfg.resumable() {
			var p position
			var held map[uint16]int64
			var ok bool
			var err error
			if w.cluster {
				var cp clusterPositions
				cp, ok, err = readClusterPositions(ctx, w, cfg.posKey(), log)
				p, held = cp.min, cp.held
			} else {
				p, ok, err = readPosition(ctx, w, cfg.posKey())
			}
			if err != nil {
				return LoadStats{}, err
			}
			if ok {
				return LoadStats{}, resumePSYNC(ctx, cfg, w, p, held, log)
			}
			if err := clearPosition(ctx, w, cfg.posKey()); err != nil {
				return LoadStats{}, err
			}
		}
		rc, st, err := psyncSnapshot(ctx, cfg, w, log)
		if err == nil {
			if !cfg.Follow {
				rc.Close()
				return st, nil
			}
			if cfg.DurablePosition {
				if err := writePosition(ctx, w, cfg.posKey(), rc.replid, rc.offset); err != nil {
					rc.Close()
					return st, err
				}
			}
			return st, followPSYNC(ctx, cfg, w, rc, log)
		}
		// A refusal, or an RDB newer than this decoder (checked in the
		// header, before any key is written), can still be copied by SCAN.
		if cfg.Mode == "psync" || !errors.Is(err, ErrPSYNCRefused) && !errors.Is(err, redisrdb.ErrVersion) {
			return st, err
		}
		log.Warn("cannot copy the source by replication; falling back to SCAN + DUMP + PTTL (a copy that is not point-in-time; follow by keyspace notifications is best-effort)",
			zap.String("reason", err.Error()))
	}
	if !cfg.Follow {
		return scanSnapshot(ctx, cfg, w, log)
	}
	// Subscribed before the SCAN: keys changed while it runs are copied
	// again after it (keyspace.go).
	ks, err := subscribeKeyspace(ctx, cfg, w, log)
	if err != nil {
		return LoadStats{}, err
	}
	defer ks.close()
	st, err := scanSnapshot(ctx, cfg, w, log)
	if err != nil {
		return st, err
	}
	return st, ks.follow(ctx)
}

// psyncSnapshot connects as a replica, asks for a full sync and loads the
// RDB it receives. The returned connection is positioned at the start of
// the command stream.
func psyncSnapshot(ctx context.Context, cfg SyncConfig, w *Writer, log *zap.Logger) (*replConn, LoadStats, error) {
	rc, err := dialSource(ctx, cfg.Source)
	if err != nil {
		return nil, LoadStats{}, err
	}
	st, err := fullSync(ctx, cfg, w, rc, "?", -1, log)
	if err != nil {
		rc.Close()
		return nil, st, err
	}
	return rc, st, nil
}

// fullSync runs the handshake asking for (replid, offset) and loads the
// RDB when the source answers FULLRESYNC.
func fullSync(ctx context.Context, cfg SyncConfig, w *Writer, rc *replConn, replid string, offset int64, log *zap.Logger) (LoadStats, error) {
	full, err := rc.handshake(replid, offset)
	if err != nil {
		return LoadStats{}, err
	}
	if !full {
		return LoadStats{}, nil
	}
	log.Info("source accepted full resynchronisation; loading its RDB", zap.String("replid", rc.replid), zap.Int64("offset", rc.offset))
	stop := context.AfterFunc(ctx, func() { rc.Close() })
	defer stop()
	r, drain, err := rc.rdb()
	if err != nil {
		return LoadStats{}, err
	}
	d := redisrdb.NewDecoder(r, cfg.Decoder)
	st, err := Load(ctx, d, w, cfg.BigKeyBytes, log)
	if err != nil {
		return st, transferError(rc.addr, err)
	}
	if err := drain(); err != nil {
		return st, transferError(rc.addr, err)
	}
	if err := w.Flush(); err != nil {
		return st, err
	}
	logStats(log, "snapshot from PSYNC imported", st)
	return st, nil
}
