package redissync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"replicator/pkg/redisrdb"
)

// Following the replication stream: a reader goroutine parses commands
// into a bounded queue (the relay); the applier sends them in order, in
// pipelines, on one target connection (SELECT and MULTI are connection
// state), and acknowledges to the source once a second only the offset
// applied outside a transaction, which is also where a reconnect resumes.

type replCmd struct {
	args [][]byte
	end  int64 // source replication offset just after this command
	size int64 // bytes held in the relay
}

// anyArgs returns the command's arguments as go-redis takes them, and
// their size in bytes (what the target is sent).
func (c replCmd) anyArgs() ([]any, int64) {
	args := make([]any, len(c.args))
	var n int64
	for i, a := range c.args {
		args[i] = a
		n += int64(len(a))
	}
	return args, n
}

// The relay between reading and applying holds at most this many
// commands and bytes; when full, reading waits (and the source buffers).
const (
	relayCommands = 4096
	relayBytes    = 64 << 20
)

type follower struct {
	cfg SyncConfig
	w   *Writer
	log *zap.Logger
	m   *Metrics // may be nil

	replid   string
	received atomic.Int64
	applied  int64 // offset after the last applied command
	safe     int64 // applied offset outside MULTI: acked and resumed from
	inMulti  bool
	db       int

	target *redis.Conn
	client *redis.Client
	cl     *clusterFollower // a cluster target (cluster.go)
	// held: on a cluster target with a durable position, the offsets
	// slots already hold beyond safe after a resume (by slot);
	// their commands up to there are not applied again.
	held    map[uint16]int64
	release func(replCmd) // returns a command's bytes to the relay budget
	// slots: a shard of a cluster source, the slots its master served
	// when the follow started (reshard.go).
	slots slotWatch
}

func followPSYNC(ctx context.Context, cfg SyncConfig, w *Writer, rc *replConn, log *zap.Logger) error {
	f := newFollower(cfg, w, log, rc.replid, rc.offset)
	return f.run(ctx, rc)
}

func newFollower(cfg SyncConfig, w *Writer, log *zap.Logger, replid string, offset int64) *follower {
	f := &follower{cfg: cfg, w: w, log: log, m: cfg.Metrics, replid: replid, applied: offset, safe: offset}
	f.received.Store(offset)
	f.m.appliedOffset(offset)
	return f
}

// resumePSYNC continues from the position a previous run stored on the
// target (after a restart or kill -9): PSYNC <replid> <offset+1>, and a
// full resynchronisation only when the source cannot continue.
func resumePSYNC(ctx context.Context, cfg SyncConfig, w *Writer, p position, held map[uint16]int64, log *zap.Logger) error {
	f := newFollower(cfg, w, log, p.replid, p.offset)
	f.db, f.held = p.db, held
	log.Info("resuming from the follow position stored on the target", zap.String("replid", p.replid), zap.Int64("offset", p.offset), zap.Int("db", p.db))
	rc, err := f.reconnect(ctx)
	if err != nil {
		var te *targetError
		if errors.As(err, &te) {
			return te.err
		}
		return err
	}
	return f.run(ctx, rc)
}

func (f *follower) run(ctx context.Context, rc *replConn) error {
	log := f.log
	defer f.closeTarget()
	f.slots.log = log
	defer f.slots.close()
	log.Info("following the source's replication stream", zap.String("replid", rc.replid), zap.Int64("offset", f.safe), zap.Bool("durable_position", f.cfg.DurablePosition))
	if f.cfg.shardID != "" {
		if err := f.slots.check(ctx, f.cfg.Source); err != nil {
			return err.(*targetError).err
		}
	}
	delays := newReconnectBackOff()
	for {
		err := f.stream(ctx, rc)
		rc.Close()
		if ctx.Err() != nil {
			log.Info("follow stopped", zap.Int64("applied_offset", f.safe))
			return nil
		}
		var te *targetError
		if errors.As(err, &te) {
			return te.err
		}
		f.m.reconnected()
		delays.Reset() // each drop starts again from the shortest delay
		delay := delays.NextBackOff()
		log.Warn("replication link to the source dropped; reconnecting", zap.Error(err), zap.Duration("backoff", delay))
		for {
			if !sleep(ctx, delay) {
				return nil
			}
			rc, err = f.reconnect(ctx)
			if err == nil {
				break
			}
			var te *targetError
			if errors.As(err, &te) {
				return te.err
			}
			if ctx.Err() != nil {
				return nil
			}
			delay = delays.NextBackOff()
			log.Warn("reconnect to the source failed", zap.Error(err), zap.Duration("backoff", delay))
		}
	}
}

// Delays between reconnect attempts: from reconnectMin doubling up to
// reconnectMax, each spread by ±reconnectJitter so that replicators cut
// off from one source at once do not all come back in step.
const (
	reconnectMin    = time.Second
	reconnectMax    = 30 * time.Second
	reconnectJitter = 0.25
)

// newReconnectBackOff returns the reconnect delays. The library spreads
// each interval by ±RandomizationFactor, so its intervals are set that far
// inside [reconnectMin, reconnectMax]; the clamp only catches rounding.
func newReconnectBackOff() backoff.BackOff {
	return &clampedBackOff{
		BackOff: &backoff.ExponentialBackOff{
			InitialInterval:     time.Duration(math.Ceil(float64(reconnectMin) / (1 - reconnectJitter))),
			RandomizationFactor: reconnectJitter,
			Multiplier:          2,
			MaxInterval:         time.Duration(math.Floor(float64(reconnectMax) / (1 + reconnectJitter))),
		},
		min: reconnectMin, max: reconnectMax,
	}
}

// clampedBackOff keeps another backoff's delays within [min, max].
type clampedBackOff struct {
	backoff.BackOff
	min, max time.Duration
}

func (b *clampedBackOff) NextBackOff() time.Duration {
	return min(max(b.BackOff.NextBackOff(), b.min), b.max)
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// reconnect resumes with PSYNC <replid> <offset+1>; when the source no
// longer has that part of its backlog it answers FULLRESYNC, and the target
// is flushed and loaded again (keys deleted meanwhile would otherwise stay);
// for a shard of a cluster source only that shard's slots are.
func (f *follower) reconnect(ctx context.Context) (*replConn, error) {
	if f.cfg.shardID != "" {
		// A shard of a cluster source: its master may have failed over.
		if addr, err := shardMaster(ctx, f.cfg.Source, f.cfg.shardSeeds, f.cfg.shardSlot); err == nil && addr != f.cfg.Source.Addr {
			f.log.Warn("source shard failed over: following its new master", zap.String("old_master", f.cfg.Source.Addr), zap.String("new_master", addr))
			o := *f.cfg.Source
			o.Addr = addr
			f.cfg.Source = &o
			f.cfg.shardSeeds = append(f.cfg.shardSeeds, addr)
		}
	}
	rc, err := dialSource(ctx, f.cfg.Source)
	if err != nil {
		return nil, err
	}
	f.closeTarget() // a half-open MULTI dies with the old connection
	f.inMulti = false
	full, err := rc.handshake(f.replid, f.safe+1)
	if err != nil {
		rc.Close()
		return nil, err
	}
	if !full {
		if rc.replid != f.replid {
			// A promoted replica continues its old master's stream under
			// its own ID: later PSYNCs and positions name that one.
			f.log.Info("the source continues our stream under a new replication ID", zap.String("replid", f.replid), zap.String("new_replid", rc.replid))
			f.replid = rc.replid
		}
		f.log.Info("replication resumed from the source's backlog", zap.Int64("offset", f.safe))
		f.applied = f.safe
		f.received.Store(f.safe)
		return rc, nil
	}
	reason := "the source no longer holds our offset in its backlog (raise repl-backlog-size on the source)"
	if rc.replid != f.replid {
		reason = "the source's replication ID changed (it restarted or failed over)"
	}
	if err := f.clearForResync(ctx, reason, rc.replid); err != nil {
		rc.Close()
		return nil, &targetError{err}
	}
	r, drain, err := rc.rdb()
	if err != nil {
		rc.Close()
		return nil, err
	}
	st, err := Load(ctx, redisrdb.NewDecoder(r, f.cfg.Decoder), f.w, f.cfg.BigKeyBytes, f.log)
	if err != nil {
		rc.Close()
		return nil, err
	}
	if err := drain(); err != nil {
		rc.Close()
		return nil, err
	}
	if err := f.w.Flush(); err != nil {
		rc.Close()
		return nil, &targetError{err}
	}
	if f.cfg.DurablePosition {
		// A shard's old slot positions (cluster target) describe the
		// stream it left; they go only now, with the reload flushed.
		if f.cfg.shardID != "" && f.w.cluster {
			if err := clearPosition(ctx, f.w, f.cfg.posKey()); err != nil {
				rc.Close()
				return nil, &targetError{err}
			}
		}
		if err := writePosition(ctx, f.w, f.cfg.posKey(), rc.replid, rc.offset); err != nil {
			rc.Close()
			return nil, &targetError{err}
		}
	}
	logStats(f.log, "full resynchronisation loaded; following again", st)
	f.held = nil
	f.replid, f.applied, f.safe = rc.replid, rc.offset, rc.offset
	f.received.Store(rc.offset)
	f.m.appliedOffset(rc.offset)
	return rc, nil
}

// clearForResync empties what the source's RDB will fill again: the
// whole target for a single source; for a shard of a cluster source only
// that shard's slots, since flushing would drop the other shards' keys
// (shardresync.go).
func (f *follower) clearForResync(ctx context.Context, reason, newReplid string) error {
	if f.cfg.shardID != "" {
		return f.clearShard(ctx, reason, newReplid)
	}
	f.log.Warn("full resynchronisation: the source cannot continue from our position; flushing the target and loading the snapshot again",
		zap.String("reason", reason), zap.String("replid", f.replid), zap.Int64("offset", f.safe), zap.String("new_replid", newReplid))
	if err := f.w.Do(ctx, 0, "FLUSHALL"); err != nil {
		return fmt.Errorf("target: FLUSHALL before the full resynchronisation: %w", err)
	}
	return f.w.FlushFunctions(ctx)
}

type targetError struct{ err error }

func (e *targetError) Error() string { return e.err.Error() }
func (e *targetError) Unwrap() error { return e.err }

func (f *follower) closeTarget() {
	if f.target != nil {
		f.target.Close()
		f.client.Close()
		f.target, f.client = nil, nil
	}
	if f.cl != nil {
		f.cl.c.Close()
		f.cl = nil
	}
}

func (f *follower) targetConn(ctx context.Context) (*redis.Conn, error) {
	if f.target == nil {
		f.client = f.w.client(0, 1).(*redis.Client)
		f.target = f.client.Conn()
		if err := f.target.Do(ctx, "SELECT", f.db).Err(); err != nil {
			return nil, &targetError{fmt.Errorf("target: SELECT %d: %w", f.db, err)}
		}
	}
	return f.target, nil
}

// stream applies the command stream of rc until it fails or ctx ends.
func (f *follower) stream(ctx context.Context, rc *replConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan replCmd, relayCommands)
	readErr := make(chan error, 1)
	held := semaphore.NewWeighted(relayBytes)
	f.release = func(c replCmd) { held.Release(c.size) }
	go func() {
		off := f.received.Load()
		for {
			args, n, err := rc.readCommand()
			if err != nil {
				readErr <- err
				return
			}
			off += n
			f.received.Store(off)
			size := min(n, relayBytes)
			if err := held.Acquire(ctx, size); err != nil {
				return
			}
			select {
			case cmds <- replCmd{args: args, end: off, size: size}:
			case <-ctx.Done():
				return
			}
		}
	}()
	context.AfterFunc(ctx, func() { rc.Close() })
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	ticks := 0
	batch := make([]replCmd, 0, 256)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-readErr:
			// Apply what was read before the link dropped.
			for len(cmds) > 0 {
				if err := f.apply(ctx, []replCmd{<-cmds}); err != nil {
					return err
				}
			}
			return fmt.Errorf("source %s: %w", rc.addr, err)
		case <-tick.C:
			if err := rc.send("REPLCONF", "ACK", strconv.FormatInt(f.safe, 10)); err != nil {
				return fmt.Errorf("source %s: REPLCONF ACK: %w", rc.addr, err)
			}
			if f.cfg.shardID != "" {
				if err := f.slots.check(ctx, f.cfg.Source); err != nil {
					return err
				}
			}
			lag := f.received.Load() - f.applied
			f.m.followLag(lag)
			if ticks++; ticks%30 == 0 {
				fields := []zap.Field{zap.Int64("applied_offset", f.safe), zap.Int64("lag_bytes", lag)}
				if f.cl != nil {
					fields = append(fields, zap.Int64("transactions_split_per_slot", f.cl.split.Load()))
				}
				f.log.Info("following", fields...)
			}
		case c := <-cmds:
			batch = append(batch[:0], c)
		more:
			for len(batch) < cap(batch) {
				select {
				case c := <-cmds:
					batch = append(batch, c)
				default:
					break more
				}
			}
			if err := f.apply(ctx, batch); err != nil {
				return err
			}
			f.m.followLag(f.received.Load() - f.applied)
			f.m.appliedOffset(f.safe)
		}
	}
}

func (f *follower) apply(ctx context.Context, batch []replCmd) error {
	if f.cfg.shardID != "" {
		if err := f.restoreAsking(batch); err != nil {
			return err
		}
	}
	if f.w.cluster && f.cfg.DurablePosition {
		return f.applyClusterDurable(ctx, batch)
	}
	if f.w.cluster {
		return f.applyCluster(ctx, batch)
	}
	if f.cfg.DurablePosition {
		return f.applyDurable(ctx, batch)
	}
	conn, err := f.targetConn(ctx)
	if err != nil {
		return err
	}
	pipe := conn.Pipeline()
	type sent struct {
		cmd *redis.Cmd
		src replCmd
	}
	var all []sent
	var bytesOut int64
	for _, c := range batch {
		if len(c.args) == 0 {
			continue
		}
		name := string(bytes.ToUpper(c.args[0]))
		switch name {
		case "PING", "REPLCONF":
			continue // replication keepalives, not data
		case "SELECT":
			if n, err := strconv.Atoi(string(c.args[1])); err == nil && len(c.args) == 2 {
				f.db = n
			}
		}
		args := make([]any, len(c.args))
		for i, a := range c.args {
			args[i] = a
			bytesOut += int64(len(a))
		}
		all = append(all, sent{cmd: pipe.Do(ctx, args...), src: c})
	}
	if len(all) > 0 {
		pipe.Exec(ctx)
	}
	for _, s := range all {
		if err := s.cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &targetError{fmt.Errorf("target: applying %s from the source at offset %d: %w", bytes.ToUpper(s.src.args[0]), s.src.end, err)}
		}
	}
	f.m.bytesImported(bytesOut)
	for _, c := range batch {
		f.release(c)
		if len(c.args) > 0 {
			switch string(bytes.ToUpper(c.args[0])) {
			case "MULTI":
				f.inMulti = true
			case "EXEC", "DISCARD":
				f.inMulti = false
			}
		}
		f.applied = c.end
		if !f.inMulti {
			f.safe = c.end
		}
	}
	return nil
}
