package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"replicator/pkg/apply"
	"replicator/pkg/pgutil"
	"replicator/pkg/snapshot"
	"replicator/pkg/state"
)

// runCmd is the sidecar daemon: snapshot when the target has none finished,
// then stream until SIGINT/SIGTERM. Rerunning it (after a crash, a reboot,
// a kill -9) continues where it stopped: an unfinished snapshot resumes
// with the chunks not yet copied (with --one-snapshot: starts over), a
// finished one goes straight to streaming from the applied position.
type runCmd struct {
	snapshotCmd
	streamFlags
}

func (c *runCmd) Run(ctx context.Context, g *Globals) error {
	g.remember(c.Source, c.Target)
	log, reg, err := g.setup(ctx, c.MetricsAddr)
	if err != nil {
		return err
	}
	defer log.Sync()
	target, err := pgutil.Connect(ctx, c.Target, "target")
	if err != nil {
		return err
	}
	done, err := snapshot.IsDone(ctx, target)
	target.Close(context.Background())
	if err != nil {
		return err
	}
	if done {
		log.Info("snapshot already done on the target: streaming from the applied position")
	} else {
		// The stream lock is held from before the copy: a second run or
		// stream against this target is refused now, naming this one,
		// not once the copy is done.
		unlock, err := holdStreamLock(ctx, c.Target)
		if err != nil {
			return err
		}
		log.Info("no finished snapshot on the target: copying first, then streaming")
		err = c.snapshot(ctx, log, reg)
		unlock()
		if err != nil {
			if errors.Is(err, context.Canceled) {
				next := "resumes the copy with the chunks not yet copied"
				if c.OneSnapshot {
					next = "starts the copy over"
				}
				return fmt.Errorf("stopped during the snapshot: the next `replicator run` %s", next)
			}
			return err
		}
	}
	log.Info("streaming changes", zap.String("until", "SIGINT or SIGTERM"))
	cfg := c.streamConfig(c.Source, c.Target)
	if err := streamMetrics(&cfg, reg); err != nil {
		return err
	}
	return streamValidatingForeignKeys(ctx, cfg, c.Target, log)
}

// holdStreamLock takes the target's stream lock (apply.LockStream) on a
// connection of its own and returns what releases it. Another holder is a
// *apply.StreamLockedError: "another stream is running (pid, host,
// since)", exit 2.
func holdStreamLock(ctx context.Context, targetURL string) (unlock func(), err error) {
	conn, err := pgutil.Connect(ctx, targetURL, "target")
	if err != nil {
		return nil, err
	}
	if err := state.EnsureSchema(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	if err := apply.LockStream(ctx, conn); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	return func() {
		// Unlocked explicitly: closing alone lets the server drop the
		// session (and the lock) a moment later, which the stream that
		// follows would see as its own lock still held.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, state.StreamLockKey)
		conn.Close(ctx)
	}, nil
}
