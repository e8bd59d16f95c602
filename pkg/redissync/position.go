package redissync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The durable follow position (SyncConfig.DurablePosition) is a hash on
// the target, database 0:
//
//	__replicator:follow  replid <source replication ID>  offset <applied offset>
//
// It is written in the same MULTI/EXEC as the commands it covers, so the
// target's data and the position it records cannot disagree: after a crash
// (of the follower, the target connection, or kill -9) either both a batch
// and its position are there or neither is, and PSYNC <replid> <offset+1>
// resumes exactly after the last applied command. A local state file could
// only be written after the target acknowledged the batch; a crash between
// the two would replay commands that are not idempotent (INCR, RPUSH).
//
// The key is the tool's own: `redis verify` leaves it out, and a fresh
// snapshot deletes it before loading (a snapshot killed half way leaves no
// position, so the next run copies again instead of resuming on half the
// data).

// PositionKey is the target key holding the follow position; it is not
// part of the copied data. A cluster source keeps one position per shard,
// in PositionKey + ":shard:" + the first hash slot the shard serves.
//
// A shard is named by its first slot, not by its master's node ID: when
// a master fails over, its promoted replica serves the same slots under
// another node ID, and continues the same stream (PSYNC2: its second
// replication ID is the old master's, with the same offsets). A follower
// restarted after a failover thus finds the shard's position and resumes
// on the new master with PSYNC instead of copying the shard again. The
// position's replid is the one the stream continued under last (the new
// master's, from its +CONTINUE), so a second failover continues too. A
// reshard changes the first slots, and the follow refuses a reshard
// anyway (reshard.go).
const PositionKey = "__replicator:follow"

// posKey is the position key of the follower configured by c.
func (c SyncConfig) posKey() string {
	if c.shardID != "" {
		return PositionKey + ":shard:" + strconv.Itoa(c.shardSlot)
	}
	return PositionKey
}

// position is where the follower stands in the source's replication
// stream: the offset just after the last applied command, and the
// database the stream had selected there (the source does not repeat
// SELECT when a replica continues).
type position struct {
	replid string
	offset int64
	db     int
}

// readPosition returns the stored position; ok is false when none is.
func readPosition(ctx context.Context, w *Writer, key string) (p position, ok bool, err error) {
	c := w.client(0, 1)
	defer c.Close()
	vals, err := c.HMGet(ctx, key, "replid", "offset", "db").Result()
	if err != nil {
		return p, false, fmt.Errorf("target: reading the follow position (%s): %w", key, err)
	}
	id, _ := vals[0].(string)
	off, _ := vals[1].(string)
	db, _ := vals[2].(string)
	if id == "" && off == "" {
		return p, false, nil
	}
	p.replid = id
	p.offset, err = strconv.ParseInt(off, 10, 64)
	if err == nil && db != "" {
		p.db, err = strconv.Atoi(db)
	}
	if err != nil || len(id) != 40 {
		return p, false, fmt.Errorf("target: the follow position %s holds replid %q offset %q db %q, not a position this tool wrote: delete the key or rerun with --flush-target", key, id, off, db)
	}
	return p, true, nil
}

// writePosition stores (replid, offset) outside any transaction: after a
// snapshot is loaded and flushed, so it covers every key written. The
// stream after a full sync starts with a SELECT, so db is 0.
func writePosition(ctx context.Context, w *Writer, key, replid string, offset int64) error {
	if w.cluster {
		return writeClusterPositions(ctx, w, key, replid, offset)
	}
	if err := w.Do(ctx, 0, "HSET", key, "replid", replid, "offset", offset, "db", 0); err != nil {
		return fmt.Errorf("target: storing the follow position: %w", err)
	}
	return nil
}

// clearPosition deletes a stored position before a snapshot overwrites
// the data it described.
func clearPosition(ctx context.Context, w *Writer, key string) error {
	if w.cluster {
		return clearClusterPositions(ctx, w, key+":*")
	}
	if err := w.Do(ctx, 0, "DEL", key); err != nil {
		return fmt.Errorf("target: clearing the follow position: %w", err)
	}
	return nil
}

// clearPositions deletes every stored position (those of a cluster
// source's shards too).
func clearPositions(ctx context.Context, w *Writer) error {
	if w.cluster {
		return clearClusterPositions(ctx, w, PositionKey+":*")
	}
	c := w.client(0, 1)
	defer c.Close()
	keys, err := positionKeys(ctx, c)
	if err != nil {
		return fmt.Errorf("target: looking for follow positions: %w", err)
	}
	for _, k := range keys {
		if err := clearPosition(ctx, w, k); err != nil {
			return err
		}
	}
	return nil
}

// positionKeys lists the position keys in database 0 of c.
func positionKeys(ctx context.Context, c redis.Cmdable) ([]string, error) {
	var out []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, PositionKey+"*", 1000).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// IsPositionKey reports whether key (in database 0) is a follow position
// this package keeps on the target, not copied data.
func IsPositionKey(key string) bool {
	return key == PositionKey || len(key) > len(PositionKey) && key[:len(PositionKey)+1] == PositionKey+":"
}

// applyDurable applies a batch so that every command reaches the target
// inside a MULTI/EXEC that also stores the position after it. Runs of
// commands outside a source transaction are wrapped in a MULTI of our own;
// a source MULTI...EXEC is passed through (it may span batches: the target
// queues it on this connection until EXEC) with the position queued just
// before its EXEC. A dropped connection discards an open transaction on the
// target, and the follower resumes from the last stored position.
func (f *follower) applyDurable(ctx context.Context, batch []replCmd) error {
	conn, err := f.targetConn(ctx)
	if err != nil {
		return err
	}
	pipe := conn.Pipeline()
	type sent struct {
		cmd  *redis.Cmd
		name string
		end  int64
	}
	var all []sent
	var bytesOut int64
	do := func(name string, end int64, args ...any) {
		all = append(all, sent{cmd: pipe.Do(ctx, args...), name: name, end: end})
	}
	position := func(end int64) {
		do("SELECT", end, "SELECT", 0)
		do("HSET", end, "HSET", f.cfg.posKey(), "replid", f.replid, "offset", end, "db", f.db)
		do("SELECT", end, "SELECT", f.db)
	}
	inMulti := f.inMulti
	ours := false // a MULTI of our own is open
	last := f.applied
	safe := f.safe // where a resume would start: outside source transactions
	for _, c := range batch {
		start := last
		last = c.end
		if len(c.args) == 0 {
			continue
		}
		name := string(bytes.ToUpper(c.args[0]))
		if name == "PING" || name == "REPLCONF" {
			continue // replication keepalives, not data
		}
		args, n := c.anyArgs()
		bytesOut += n
		switch {
		case !inMulti && name == "MULTI":
			if ours {
				position(start)
				do("EXEC", start, "EXEC")
				ours = false
			}
			safe = start
			inMulti = true
		case inMulti && name == "EXEC":
			position(c.end)
			inMulti = false
		case inMulti && name == "DISCARD":
			inMulti = false
		case !inMulti && !ours:
			do("MULTI", c.end, "MULTI")
			ours = true
		}
		if name == "SELECT" && len(c.args) == 2 {
			if n, err := strconv.Atoi(string(c.args[1])); err == nil {
				f.db = n
			}
		}
		do(name, c.end, args...)
	}
	if !inMulti {
		if !ours && last != f.safe {
			do("MULTI", last, "MULTI")
			ours = true
		}
		if ours {
			position(last)
			do("EXEC", last, "EXEC")
		}
	}
	if len(all) > 0 {
		pipe.Exec(ctx) // errors are read per command below
	}
	for _, s := range all {
		err := s.cmd.Err()
		if err == nil && s.name == "EXEC" {
			// A command that failed when EXEC ran it comes back as an
			// element of EXEC's reply.
			vals, _ := s.cmd.Val().([]any)
			for _, v := range vals {
				if e, ok := v.(error); ok {
					err = e
					break
				}
			}
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			f.closeTarget() // the connection may hold a half-queued transaction
			return &targetError{fmt.Errorf("target: applying %s from the source at offset %d: %w", s.name, s.end, err)}
		}
	}
	f.m.bytesImported(bytesOut)
	for _, c := range batch {
		f.release(c)
	}
	f.inMulti = inMulti
	f.applied = last
	if !inMulti {
		safe = last
	}
	f.safe = safe // inside an open source transaction: where it began
	return nil
}
