package redissync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// The durable follow position on a cluster target. A MULTI/EXEC on a
// cluster cannot span hash slots (CROSSSLOT), not even on one master, so
// the position is kept per slot, in a key whose hash tag lands on that
// slot, plus a floor per master:
//
//	__replicator:follow:{<slot tag>}        replid, offset: this slot holds the stream up to offset
//	__replicator:follow:floor:{<master tag>} replid, offset: every slot of this master holds it up to offset
//
// A batch of the follow stream becomes one MULTI/EXEC per slot it touches
// (that slot's commands in stream order, then the HSET of the slot's
// position), then the floor of every master once all of them committed.
// After a crash (kill -9 between two EXECs) the follower resumes the
// source's stream at the lowest floor (PSYNC <replid> <min+1>) and skips,
// for each key, the commands that end at or before what its slot holds:
// the larger of its slot's position and its master's floor. No command is
// applied twice on any slot and none is lost. Commands without a key
// (FLUSHALL, FUNCTION, SCRIPT) run on every master outside the slot
// transactions; replaying them after a crash is harmless.
//
// Costs: one HSET per slot touched per batch and one per master; at most
// one small key per slot ever written (16384) and one per master, which
// `redis verify` leaves out. A master without a floor (the slot layout
// changed between the stop and the resume, or a previous run stopped
// while writing them) means the source is copied again, and the log says
// so. A source transaction spanning slots is applied as one MULTI/EXEC
// per slot (atomic per slot only, as in applyCluster).

// masterTag is one master of a cluster target and the tag its position key
// carries.
type masterTag struct {
	addr string
	tag  string
}

// clusterMasters lists the masters of a cluster target with their tags,
// sorted by address.
func clusterMasters(ctx context.Context, cc *redis.ClusterClient) ([]masterTag, []string, error) {
	slots, err := cc.ClusterSlots(ctx).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("target cluster: CLUSTER SLOTS: %w", err)
	}
	owner := make([]string, 16384)
	distinct := map[string]bool{}
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			continue
		}
		distinct[s.Nodes[0].Addr] = true
		for i := s.Start; i <= s.End && i < len(owner); i++ {
			owner[i] = s.Nodes[0].Addr
		}
	}
	tags := map[string]string{}
	for i := 0; len(tags) < len(distinct) && i < 1<<20; i++ {
		t := strconv.Itoa(i)
		if a := owner[keySlot(t)]; a != "" && tags[a] == "" {
			tags[a] = t
		}
	}
	var out []masterTag
	for a, t := range tags {
		out = append(out, masterTag{addr: a, tag: t})
	}
	if len(out) == 0 {
		return nil, nil, errors.New("target cluster: CLUSTER SLOTS lists no master")
	}
	sort.Slice(out, func(i, j int) bool { return out[i].addr < out[j].addr })
	return out, owner, nil
}

// slotTags[s] is the smallest decimal number whose hash slot is s.
var slotTags = sync.OnceValue(func() *[16384]string {
	var t [16384]string
	for i, left := 0, len(t); left > 0; i++ {
		n := strconv.Itoa(i)
		if s := keySlot(n); t[s] == "" {
			t[s] = n
			left--
		}
	}
	return &t
})

// slotPosKey is the position key of base for slot s; floorKey the floor
// of the master with tag.
func slotPosKey(base string, s uint16) string { return base + ":{" + slotTags()[s] + "}" }
func floorKey(base, tag string) string        { return base + ":floor:{" + tag + "}" }

// clusterPositions are the positions read from a cluster target: the
// lowest floor, where the stream resumes, and per slot what it holds
// beyond that.
type clusterPositions struct {
	min  position
	held map[uint16]int64
}

// readClusterPositions reads base's floors and slot positions. ok is
// false when a master has no floor: then nothing can be resumed exactly.
//
// Every key under one base describes one stream: a snapshot or a reload
// of the shard deletes them all before the first is written again. A
// source failover does not start a new stream: the promoted replica
// continues it with the same offsets under its own replication ID, which
// the keys written after it carry, while keys not written since still
// name the old one. So offsets are compared whatever ID they carry (a
// slot position left out for its older ID would have its commands
// applied twice), and the stream is resumed under the ID of the highest
// floor, the last one written.
func readClusterPositions(ctx context.Context, w *Writer, base string, log *zap.Logger) (cp clusterPositions, ok bool, err error) {
	cc := w.clusterClient(1)
	defer cc.Close()
	masters, owner, err := clusterMasters(ctx, cc)
	if err != nil {
		return cp, false, err
	}
	read := func(key string) (id string, off int64, found bool, err error) {
		vals, err := cc.HMGet(ctx, key, "replid", "offset").Result()
		if err != nil {
			return "", 0, false, fmt.Errorf("target: reading the follow position (%s): %w", key, err)
		}
		id, _ = vals[0].(string)
		o, _ := vals[1].(string)
		if id == "" && o == "" {
			return "", 0, false, nil
		}
		off, perr := strconv.ParseInt(o, 10, 64)
		if perr != nil || len(id) != 40 {
			return "", 0, false, fmt.Errorf("target: the follow position %s holds replid %q offset %q, not a position this tool wrote: delete the key or rerun with --flush-target", key, id, o)
		}
		return id, off, true, nil
	}
	floors := map[string]int64{}
	var highest int64
	for _, m := range masters {
		id, off, found, err := read(floorKey(base, m.tag))
		if err != nil {
			return cp, false, err
		}
		if !found {
			if len(floors) > 0 || m != masters[0] {
				log.Warn("a master of the target holds no follow position (the slot layout changed, or a previous run stopped while writing them); copying the source again",
					zap.String("master", m.addr))
			}
			return cp, false, nil
		}
		if len(floors) == 0 || off < cp.min.offset {
			cp.min.offset = off
		}
		if len(floors) == 0 || off > highest {
			cp.min.replid, highest = id, off
		}
		floors[m.addr] = off
	}
	// What each slot holds beyond the lowest floor: its own position
	// (of this stream), or else its master's floor.
	slotPos := map[uint16]int64{}
	for _, m := range masters {
		n, err := cc.MasterForKey(ctx, "{"+m.tag+"}")
		if err != nil {
			return cp, false, fmt.Errorf("target: master %s: %w", m.addr, err)
		}
		keys, err := positionKeysMatching(ctx, n, base+":{*")
		if err != nil {
			return cp, false, fmt.Errorf("target: looking for follow positions on %s: %w", m.addr, err)
		}
		for _, k := range keys {
			_, off, found, err := read(k)
			if err != nil {
				return cp, false, err
			}
			if found {
				slotPos[keySlot(k)] = off
			}
		}
	}
	cp.held = map[uint16]int64{}
	for s := range uint16(16384) {
		if v := max(slotPos[s], floors[owner[s]]); v > cp.min.offset {
			cp.held[s] = v
		}
	}
	return cp, true, nil
}

// writeClusterPositions stores (replid, offset) as every master's floor,
// after a snapshot is loaded and flushed (and the old positions cleared).
func writeClusterPositions(ctx context.Context, w *Writer, base, replid string, offset int64) error {
	cc := w.clusterClient(1)
	defer cc.Close()
	masters, _, err := clusterMasters(ctx, cc)
	if err != nil {
		return err
	}
	for _, m := range masters {
		if err := cc.HSet(ctx, floorKey(base, m.tag), "replid", replid, "offset", offset, "db", 0).Err(); err != nil {
			return fmt.Errorf("target: storing the follow position on %s: %w", m.addr, err)
		}
	}
	return nil
}

// clearClusterPositions deletes the position keys matching pattern on
// every master.
func clearClusterPositions(ctx context.Context, w *Writer, pattern string) error {
	cc := w.clusterClient(1)
	defer cc.Close()
	return cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		keys, err := positionKeysMatching(ctx, n, pattern)
		if err != nil {
			return fmt.Errorf("target: looking for follow positions on %s: %w", n.Options().Addr, err)
		}
		for _, k := range keys {
			if err := n.Del(ctx, k).Err(); err != nil {
				return fmt.Errorf("target: clearing the follow position %s: %w", k, err)
			}
		}
		return nil
	})
}

func positionKeysMatching(ctx context.Context, c redis.Cmdable, pattern string) ([]string, error) {
	var out []string
	var cursor uint64
	for {
		keys, next, err := c.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, keys...)
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// firstKey is the key a command from the replication stream acts on, by
// which it is routed; ok is false for commands without a key (they run on
// every master). The stream carries write commands as Redis propagates
// them: the key is the first argument, except for these.
func firstKey(name string, args []any) (string, bool) {
	pos := 1
	switch name {
	case "EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO":
		if len(args) < 4 || fmt.Sprint(args[2]) == "0" {
			return "", false
		}
		pos = 3
	case "XGROUP", "XINFO", "OBJECT", "BITOP":
		pos = 2
	case "FLUSHALL", "FLUSHDB", "FUNCTION", "SCRIPT", "PING", "SELECT", "MULTI", "EXEC", "DISCARD", "SWAPDB", "PUBLISH", "SPUBLISH":
		return "", false
	}
	if len(args) <= pos {
		return "", false
	}
	switch k := args[pos].(type) {
	case []byte:
		return string(k), true
	case string:
		return k, true
	}
	return fmt.Sprint(args[pos]), true
}

// applyClusterDurable applies a batch to a cluster target with the
// position: one MULTI/EXEC per master, holding that master's commands of
// the batch and its position after them.
//
// A master that answers MOVED (a finished reshard, a failover) or is
// unreachable aborts its own transaction only: the slot map is reloaded,
// every master's stored offset read again, and the batch routed again, so
// that what a master already committed is skipped there. A slot still
// being migrated (ASK) cannot take part in a per-master transaction: its
// commands wait, retried with backoff, until the migration ends, and the
// follow stops after clusterRetryFor.
func (f *follower) applyClusterDurable(ctx context.Context, batch []replCmd) error {
	if f.cl == nil {
		f.cl = &clusterFollower{c: f.w.clusterClient(2)}
	}
	tx := append([][]any(nil), f.cl.tx...)
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(clusterRetryFor)
	for {
		err := f.applyClusterDurableOnce(ctx, batch)
		if err == nil || ctx.Err() != nil || !clusterRetryable(err) || time.Now().After(deadline) {
			return err
		}
		f.log.Warn("a master of the target cluster refused or dropped its transaction; reloading the slot map and applying the batch again from each master's stored position",
			zap.Error(err), zap.Duration("backoff", delay))
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(2*delay, 2*time.Second)
		f.cl.tx = append(f.cl.tx[:0], tx...)
		f.cl.masters = nil
		f.cl.c.ReloadState(ctx)
		cp, ok, rerr := readClusterPositions(ctx, f.w, f.cfg.posKey(), zap.NewNop())
		if rerr != nil || !ok {
			continue // still failing over: try again
		}
		f.held = cp.held
		if lowest := cp.min.offset; lowest < f.safe {
			// A promoted replica had not received the last transactions
			// of its master: they are no longer in memory, but still in
			// the source's backlog. Resume the stream from there; each
			// master skips what it holds.
			f.safe, f.applied, f.inMulti = lowest, lowest, false
			f.cl.tx = nil
			return fmt.Errorf("a master of the target cluster lost writes in a failover (it holds the stream up to offset %d only): resuming the source's stream from there", lowest)
		}
	}
}

// clusterRetryFor is how long a batch is retried on a cluster target
// whose slot map is changing.
const clusterRetryFor = 2 * time.Minute

// clusterRetryable recognises the errors of a slot map in motion: the
// transaction they hit was not applied (EXECABORT, or no EXEC at all).
func clusterRetryable(err error) bool {
	s := err.Error()
	for _, m := range []string{"MOVED", "ASK", "EXECABORT", "CLUSTERDOWN", "TRYAGAIN", "connection refused", "connection reset", "EOF", "i/o timeout", "broken pipe"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func (f *follower) applyClusterDurableOnce(ctx context.Context, batch []replCmd) error {
	cf := f.cl
	if cf.masters == nil {
		ms, _, err := clusterMasters(ctx, cf.c)
		if err != nil {
			return &targetError{err}
		}
		cf.masters = ms
	}
	type routed struct {
		args []any
		end  int64
	}
	per := map[uint16][]routed{}
	var order []uint16 // slots in the order they first appear
	var bytesOut int64
	fail := func(what string, end int64, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &targetError{fmt.Errorf("target cluster: applying %s from the source at offset %d: %w", what, end, err)}
	}
	// commit runs the slot transactions gathered so far, each with its
	// slot's position at safe.
	commit := func(safe int64) error {
		for _, slot := range order {
			cmds := per[slot]
			key := slotPosKey(f.cfg.posKey(), slot)
			var res []*redis.Cmd
			_, err := cf.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
				for _, r := range cmds {
					res = append(res, p.Do(ctx, r.args...))
				}
				res = append(res, p.Do(ctx, "HSET", key, "replid", f.replid, "offset", safe, "db", 0))
				return nil
			})
			for i, r := range res {
				if e := r.Err(); e != nil && !errors.Is(e, redis.Nil) {
					if i < len(cmds) {
						return fail(strings.ToUpper(fmt.Sprintf("%s", cmds[i].args[0])), cmds[i].end, e)
					}
					return fail("the HSET of the follow position", safe, e)
				}
			}
			if err != nil && !errors.Is(err, redis.Nil) {
				return fail("MULTI/EXEC", safe, err)
			}
			delete(per, slot)
		}
		order = order[:0]
		return nil
	}
	route := func(end int64, a []any) {
		key, _ := firstKey(strings.ToUpper(fmt.Sprintf("%s", a[0])), a)
		slot := keySlot(key)
		if end <= f.held[slot] {
			return // applied there before a restart
		}
		if _, ok := per[slot]; !ok {
			order = append(order, slot)
		}
		per[slot] = append(per[slot], routed{a, end})
	}
	inMulti := f.inMulti
	last, safe := f.applied, f.safe
	for _, c := range batch {
		last = c.end
		if len(c.args) == 0 {
			continue
		}
		name := string(bytes.ToUpper(c.args[0]))
		args, n := c.anyArgs()
		bytesOut += n
		switch {
		case name == "PING" || name == "REPLCONF":
		case name == "SELECT":
			if len(c.args) == 2 && string(c.args[1]) != "0" {
				return &targetError{fmt.Errorf("source offset %d: %w", c.end, errClusterDB(atoiOr(c.args[1], -1)))}
			}
		case name == "MULTI":
			inMulti = true
			cf.tx = cf.tx[:0]
		case name == "DISCARD":
			inMulti = false
			cf.tx = nil
		case name == "EXEC":
			// The transaction's commands are compared with what a slot
			// holds as a whole, by the end of its EXEC.
			slots := map[uint16]bool{}
			for _, a := range cf.tx {
				for _, s := range splitPerKey(strings.ToUpper(fmt.Sprintf("%s", a[0])), a) {
					k, _ := firstKey(strings.ToUpper(fmt.Sprintf("%s", s[0])), s)
					slots[keySlot(k)] = true
					route(c.end, s)
				}
			}
			if len(slots) > 1 {
				if cf.split.Add(1) == 1 {
					f.log.Warn("a source transaction spans several hash slots; it is applied as one MULTI/EXEC per slot (atomic per slot only); the follow log lines count them",
						zap.Int("slots", len(slots)))
				}
			}
			cf.tx = cf.tx[:0]
			inMulti = false
		case inMulti:
			cf.tx = append(cf.tx, args)
		default:
			if _, ok := firstKey(name, args); !ok {
				// No key (FLUSHALL, FUNCTION, SCRIPT): every master, in
				// stream order, after what came before it.
				if err := commit(safe); err != nil {
					return err
				}
				if err := cf.c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
					return n.Do(ctx, args...).Err()
				}); err != nil {
					return fail(name, c.end, err)
				}
				break
			}
			for _, s := range splitPerKey(name, args) {
				route(c.end, s)
			}
		}
		if !inMulti {
			safe = c.end
		}
	}
	if err := commit(safe); err != nil {
		return err
	}
	if safe > f.safe {
		for _, m := range cf.masters {
			if err := cf.c.HSet(ctx, floorKey(f.cfg.posKey(), m.tag), "replid", f.replid, "offset", safe, "db", 0).Err(); err != nil {
				return fail("the HSET of the follow position", safe, err)
			}
		}
		for s, o := range f.held {
			if o <= safe {
				delete(f.held, s)
			}
		}
	}
	f.m.bytesImported(bytesOut)
	for _, c := range batch {
		f.release(c)
	}
	f.inMulti, f.applied, f.safe = inMulti, last, safe
	return nil
}
