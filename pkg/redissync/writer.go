package redissync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"golang.org/x/sync/semaphore"

	"replicator/pkg/redisconn"
)

// WriterConfig configures the pipelined writer to the target.
type WriterConfig struct {
	// Target is the target server (address, user, password, TLS); its DB
	// is ignored: each key goes to the database it came from.
	Target *redis.Options
	// Connections is how many connections write in parallel. Default 4.
	Connections int
	// PipelineCommands is the most commands sent in one round trip.
	// Default 256.
	PipelineCommands int
	// MaxInflightBytes bounds the bytes queued or in flight to the target.
	// Default 64 MiB.
	MaxInflightBytes int64
	// TargetRDBVersion is the newest RDB version the target can RESTORE;
	// 0 detects it from INFO server.
	TargetRDBVersion int
	// HashFieldTTL is what happens to a hash field's own TTL (Redis 7.4+)
	// when the target has no HPEXPIREAT: "refuse" (the default, "") stops
	// before that key is written; "drop" writes the field without its TTL
	// and reports it. Fields already expired are never written either way.
	HashFieldTTL string
}

// Hash field TTL policies (WriterConfig.HashFieldTTL).
const (
	FieldTTLRefuse = "refuse"
	FieldTTLDrop   = "drop"
)

// Validate checks the configuration.
func (c *WriterConfig) Validate() error {
	if c.Target == nil {
		return errors.New("redis writer: no target")
	}
	if c.Connections < 0 || c.PipelineCommands < 0 || c.MaxInflightBytes < 0 || c.TargetRDBVersion < 0 {
		return errors.New("redis writer: negative limits")
	}
	switch c.HashFieldTTL {
	case "", FieldTTLRefuse, FieldTTLDrop:
	default:
		return fmt.Errorf("redis writer: hash field TTL policy %q: use refuse or drop", c.HashFieldTTL)
	}
	return nil
}

func (c WriterConfig) withDefaults() WriterConfig {
	if c.Connections == 0 {
		c.Connections = 4
	}
	if c.PipelineCommands == 0 {
		c.PipelineCommands = 256
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = 64 << 20
	}
	if c.HashFieldTTL == "" {
		c.HashFieldTTL = FieldTTLRefuse
	}
	return c
}

// job is a unit of work for one key: its commands run in order on one
// connection. All jobs of a key go to the same connection (routed by key),
// so the pieces of a large key arrive in order.
type job struct {
	db      int
	key     []byte
	cmds    []command
	bytes   int64
	keyDone bool // the key is complete once this job ran
	// txStart opens a MULTI for the key that its keyDone job closes with
	// EXEC, so a key written in several round trips appears whole or not
	// at all: the jobs in between run on a connection of their own.
	txStart bool
	noKey   bool // the keyDone job leaves the key absent: not counted

	// restore marks a RESTORE job; if the target refuses the payload the
	// worker recreates the key with native commands instead.
	restore  bool
	payload  []byte
	expireAt int64

	barrier chan struct{} // a Flush marker, not a write: closed once reached
}

// Writer writes keys to the target over several pipelined connections.
type Writer struct {
	cfg     WriterConfig
	log     *zap.Logger
	metrics *Metrics
	version int
	// fieldTTL: the target has HPEXPIREAT (hash field TTLs), probed once.
	fieldTTL bool
	// pxat: the target's SET takes PXAT (Redis 6.2+).
	pxat    bool
	written atomic.Int64 // keys whose last job ran without error
	dropped droppedTTLs
	cluster bool        // the target is a Redis Cluster (cluster.go)
	closed  atomic.Bool // Close ran: the queues are closed, Flush has nothing to wait for

	chans []chan *job
	sem   *semaphore.Weighted
	done  sync.WaitGroup // workers

	mu       sync.Mutex
	err      error
	fallback int64
	ctx      context.Context
	cancel   context.CancelFunc
}

// NewWriter connects to the target and starts the writers; m may be nil
// (no metrics).
func NewWriter(ctx context.Context, cfg WriterConfig, log *zap.Logger, m *Metrics) (*Writer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	w := &Writer{cfg: cfg, log: log, metrics: m, sem: semaphore.NewWeighted(cfg.MaxInflightBytes)}
	c := w.client(0, 1)
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return nil, redisconn.Explain("target", cfg.Target, err)
	}
	if w.cluster, err = isCluster(ctx, c); err != nil {
		return nil, fmt.Errorf("target Redis %s: INFO cluster: %w", cfg.Target.Addr, err)
	}
	sv := parseServerInfo(info)
	w.version = cfg.TargetRDBVersion
	if w.version == 0 {
		w.version = sv.rdbVersion()
	}
	w.fieldTTL = hasCommand(ctx, c, "hpexpireat", sv.rdbVersion() >= 12)
	w.pxat = sv.atLeast(6, 2)
	w.ctx, w.cancel = context.WithCancel(ctx)
	for i := 0; i < cfg.Connections; i++ {
		// Room for a whole pipeline: a worker takes what is queued when
		// its previous round trip ends, so a smaller queue would cap
		// every pipeline at the queue's length.
		ch := make(chan *job, cfg.PipelineCommands)
		w.chans = append(w.chans, ch)
		w.done.Add(1)
		go w.worker(ch)
	}
	log.Info("target connected", zap.String("addr", cfg.Target.Addr), zap.Int("restore_rdb_version", w.version), zap.Int("connections", cfg.Connections), zap.Bool("cluster", w.cluster))
	return w, nil
}

// setsStrings reports whether a string key expiring at expireAt (Unix
// ms, 0 for none) is written by SET rather than RESTORE: always without
// a TTL, and with one where SET takes PXAT.
func (w *Writer) setsStrings(expireAt int64) bool { return expireAt == 0 || w.pxat }

// TargetVersion is the RDB version payloads are stamped with.
func (w *Writer) TargetVersion() int { return w.version }

// Written is how many keys were written completely so far; after Flush it
// counts every key submitted before.
func (w *Writer) Written() int64 { return w.written.Load() }

// hasCommand asks the target once whether it knows a command (COMMAND
// INFO answers nil for an unknown one); if COMMAND itself is refused the
// server version decides (guess).
func hasCommand(ctx context.Context, c targetClient, name string, guess bool) bool {
	v, err := c.Do(ctx, "COMMAND", "INFO", name).Slice()
	if err != nil || len(v) != 1 {
		return guess
	}
	return v[0] != nil
}

// droppedTTLs records hash field TTLs written without their TTL (policy
// drop): a count and the first few keys, for the summary.
type droppedTTLs struct {
	mu       sync.Mutex
	n        int64
	examples []string
}

const maxExamples = 5

func (d *droppedTTLs) add(db int, key, field []byte) (first bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.n++
	if len(d.examples) < maxExamples {
		d.examples = append(d.examples, fmt.Sprintf("db %d key %q field %q", db, printable(key), printable(field)))
	}
	return d.n == 1
}

// DroppedFieldTTLs is how many hash field TTLs were dropped (policy drop,
// target without HPEXPIREAT) and a few of them.
func (w *Writer) DroppedFieldTTLs() (int64, []string) {
	w.dropped.mu.Lock()
	defer w.dropped.mu.Unlock()
	return w.dropped.n, append([]string(nil), w.dropped.examples...)
}

// serverInfo is what the writer reads from the target's INFO server.
type serverInfo struct {
	major, minor int // redis_version (which Valkey reports too)
	valkey       bool
}

func parseServerInfo(info string) serverInfo {
	var sv serverInfo
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch name {
		case "redis_version":
			parts := strings.Split(v, ".")
			sv.major, _ = strconv.Atoi(parts[0])
			if len(parts) > 1 {
				sv.minor, _ = strconv.Atoi(parts[1])
			}
		case "server_name":
			sv.valkey = sv.valkey || v == "valkey"
		case "valkey_version":
			sv.valkey = sv.valkey || v != ""
		}
	}
	return sv
}

// atLeast reports whether the server's version is at least major.minor.
func (sv serverInfo) atLeast(major, minor int) bool {
	return sv.major > major || sv.major == major && sv.minor >= minor
}

// RDBVersionOf maps INFO server output to the newest RDB version that
// server loads.
func RDBVersionOf(info string) int { return parseServerInfo(info).rdbVersion() }

// rdbVersion is the newest RDB version the server loads. Valkey refuses
// Redis' RDB 12 whatever its own number.
func (sv serverInfo) rdbVersion() int {
	var ver int
	switch {
	case sv.atLeast(7, 4):
		ver = 12
	case sv.atLeast(7, 2):
		ver = 11
	case sv.atLeast(7, 0):
		ver = 10
	case sv.atLeast(5, 0):
		ver = 9
	case sv.atLeast(4, 0):
		ver = 8
	case sv.atLeast(3, 2):
		ver = 7
	default:
		ver = 6
	}
	if sv.valkey {
		ver = min(ver, 11)
	}
	return ver
}

func (w *Writer) client(db, pool int) targetClient {
	if w.cluster {
		return w.clusterClient(pool)
	}
	o := *w.cfg.Target
	o.DB = db
	o.PoolSize = pool
	o.MaxRetries = -1 // a write is never retried blindly; errors stop the sync
	return redis.NewClient(&o)
}

func (w *Writer) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
		w.cancel()
	}
	w.mu.Unlock()
}

// Err is the first write error.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// submit queues a job; it blocks while MaxInflightBytes are in flight.
func (w *Writer) submit(ctx context.Context, j *job) error {
	if err := w.Err(); err != nil {
		return err
	}
	weight := min(max(j.bytes, 1), w.cfg.MaxInflightBytes)
	if err := w.sem.Acquire(ctx, weight); err != nil {
		if e := w.Err(); e != nil {
			return e
		}
		return err
	}
	j.bytes = weight
	select {
	case w.chans[fnv32a(j.key)%uint32(len(w.chans))] <- j:
		return nil
	case <-w.ctx.Done():
		w.sem.Release(weight)
		if e := w.Err(); e != nil {
			return e
		}
		return w.ctx.Err()
	}
}

// fnv32a is FNV-1a of b (as hash/fnv's, without its allocation per key).
func fnv32a(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// Flush waits until every job submitted before the call has run and
// returns the first error. It may be called any number of times, also
// while other goroutines submit (the shards of a cluster source share one
// writer): a barrier goes through each worker's queue, which is FIFO, so
// Flush waits for what came before it and not for what others add after.
func (w *Writer) Flush() error {
	if w.closed.Load() {
		return w.Err() // every job ran before Close returned
	}
	var barriers []chan struct{}
	for _, ch := range w.chans {
		b := make(chan struct{})
		select {
		case ch <- &job{barrier: b}:
			barriers = append(barriers, b)
		case <-w.ctx.Done():
		}
	}
	for _, b := range barriers {
		<-b
	}
	return w.Err()
}

// Close flushes, stops the workers and returns the first error. It is
// called once, when nothing more will be written.
func (w *Writer) Close() error {
	err := w.Flush()
	w.closed.Store(true)
	for _, ch := range w.chans {
		close(ch)
	}
	w.done.Wait()
	w.cancel()
	return err
}

func (w *Writer) worker(ch chan *job) {
	defer w.done.Done()
	cs := &conns{db: map[int]targetClient{}, tx: map[string]targetClient{}, free: map[string][]targetClient{}}
	// Closing the connections also discards a transaction left open by an
	// error: the key it was writing never appears.
	defer cs.close()
	var batch []*job
	for j := range ch {
		if j.barrier != nil {
			close(j.barrier)
			continue
		}
		batch = append(batch[:0], j)
		n := len(j.cmds)
		var barrier chan struct{}
	more:
		for n < w.cfg.PipelineCommands {
			select {
			case next, ok := <-ch:
				if !ok {
					break more
				}
				if next.barrier != nil {
					barrier = next.barrier
					break more
				}
				batch = append(batch, next)
				n += len(next.cmds)
			default:
				break more
			}
		}
		if w.Err() == nil {
			if err := w.run(cs, batch); err != nil {
				w.fail(err)
			}
		}
		for _, b := range batch {
			w.sem.Release(b.bytes)
		}
		if barrier != nil {
			close(barrier)
		}
	}
}

// conns are one worker's connections: one per database, and one per key
// whose transaction spans several batches (reused once it is closed).
type conns struct {
	db map[int]targetClient
	tx map[string]targetClient // by txID
	// free holds closed transactions' connections for reuse, by database
	// (or, on a cluster, by the master's address: see txClient).
	free map[string][]targetClient
	home map[targetClient]string // a tx connection's key in free
	// raw carries the plain jobs of a single-server target, by database
	// (rawconn.go); nil until the first is dialled.
	raw map[int]*rawConn
}

func (cs *conns) close() {
	for _, c := range cs.db {
		c.Close()
	}
	for _, c := range cs.tx {
		c.Close()
	}
	for _, l := range cs.free {
		for _, c := range l {
			c.Close()
		}
	}
	for _, c := range cs.raw {
		c.Close()
	}
}

func txID(db int, key []byte) string { return strconv.Itoa(db) + "/" + string(key) }

// txClient is a connection of its own for a key whose transaction spans
// several batches: the MULTI stays open on it between them. On a cluster
// target that connection must go to the master of the key's slot (a
// cluster client would route the keyless MULTI and EXEC to any node), so
// it is a single-server client to that master's address.
func (w *Writer) txClient(cs *conns, j *job, db func(int) targetClient) (targetClient, error) {
	home := strconv.Itoa(j.db)
	if w.cluster {
		cc, ok := db(0).(*redis.ClusterClient)
		if !ok {
			return nil, errors.New("cluster target without a cluster client")
		}
		m, err := cc.MasterForKey(w.ctx, string(j.key))
		if err != nil {
			return nil, fmt.Errorf("target key %q: master of its slot: %w", printable(j.key), err)
		}
		home = m.Options().Addr
	}
	if l := cs.free[home]; len(l) > 0 {
		c := l[len(l)-1]
		cs.free[home] = l[:len(l)-1]
		return c, nil
	}
	o := *w.cfg.Target
	o.DB = j.db
	if w.cluster {
		o.Addr, o.DB = home, 0
	}
	o.PoolSize = 1
	o.MaxRetries = -1 // a write is never retried blindly; errors stop the sync
	c := redis.NewClient(&o)
	if cs.home == nil {
		cs.home = map[targetClient]string{}
	}
	cs.home[c] = home
	return c, nil
}

// sent is one job as it went into a pipeline.
type sent struct {
	j    *job
	db   int
	cmds []*redis.Cmd
	args []command
	// inline: the whole key is this job, sent in a transaction pipeline
	// (MULTI/EXEC around it and its inline neighbours).
	inline bool
	// raw: a plain job on a single-server target, sent on the worker's
	// rawConn of its database instead of through go-redis.
	raw bool
}

// route picks the connection of each job and the commands it sends (the
// job's, with MULTI and EXEC around a key whose transaction spans jobs). A
// key whose whole transaction is in one job stays on the database
// connection and goes in a transaction pipeline (TxPipeline) with the
// other such jobs next to it.
func (w *Writer) route(cs *conns, batch []*job) ([]targetClient, [][]sent, error) {
	// order[i]'s jobs are by[i]. Almost every job of a batch goes to the
	// same connection (its database's), so the last one is tried first.
	var order []targetClient
	var by [][]sent
	last := -1
	dbClient := func(db int) targetClient {
		c := cs.db[db]
		if c == nil {
			c = w.client(db, 1)
			cs.db[db] = c
		}
		return c
	}
	for _, j := range batch {
		if w.cluster && j.db != 0 {
			return nil, nil, errClusterDB(j.db)
		}
		var id string
		var c targetClient
		open := false
		if j.txStart || len(cs.tx) > 0 { // the common RESTORE job builds no id
			id = txID(j.db, j.key)
			c, open = cs.tx[id]
		}
		args := j.cmds
		inline := false
		switch {
		case j.txStart && j.keyDone:
			c = dbClient(j.db)
			inline = true
		case j.txStart:
			var err error
			if c, err = w.txClient(cs, j, dbClient); err != nil {
				return nil, nil, err
			}
			cs.tx[id] = c
			args = append([]command{{"MULTI"}}, args...)
		case open:
			if j.keyDone {
				args = append(append([]command(nil), args...), command{"EXEC"})
				// Later jobs of the batch may reuse the connection: on it
				// they come after this EXEC.
				delete(cs.tx, id)
				cs.free[cs.home[c]] = append(cs.free[cs.home[c]], c)
			}
		default:
			c = dbClient(j.db)
		}
		raw := false
		if !w.cluster && c == cs.db[j.db] && !inline {
			raw = true
			for _, cmd := range args {
				raw = raw && rawEncodable(cmd)
			}
		}
		if last < 0 || order[last] != c {
			last = slices.Index(order, c)
			if last < 0 {
				order, by = append(order, c), append(by, make([]sent, 0, len(batch)))
				last = len(order) - 1
			}
		}
		by[last] = append(by[last], sent{j: j, db: j.db, args: args, inline: inline, raw: raw})
	}
	return order, by, nil
}

// run sends the batch, one pipeline per connection.
func (w *Writer) run(cs *conns, batch []*job) error {
	order, by, err := w.route(cs, batch)
	if err != nil {
		return err
	}
	for i, c := range order {
		all := by[i]
		// Runs of plain, raw and inline-transaction jobs, in order: two
		// copies of one key (a file's duplicates) must land in file order.
		for start := 0; start < len(all); {
			end := start
			for end < len(all) && all[end].inline == all[start].inline && all[end].raw == all[start].raw {
				end++
			}
			if all[start].raw {
				if err := w.runRaw(cs, c, all[start:end]); err != nil {
					return err
				}
				start = end
				continue
			}
			pipe := c.Pipeline()
			if all[start].inline {
				pipe = c.TxPipeline()
			}
			for i := start; i < end; i++ {
				for _, cmd := range all[i].args {
					all[i].cmds = append(all[i].cmds, pipe.Do(w.ctx, cmd...))
				}
			}
			pipe.Exec(w.ctx) // errors are read per command below
			for k, s := range all[start:end] {
				if err := w.check(c, s); err != nil {
					w.ran(all[start : start+k])
					return err
				}
			}
			w.ran(all[start:end])
			start = end
		}
	}
	return nil
}

// ran counts jobs that ran, at once: the workers share the counters,
// and one atomic add a job each was a cost of its own on small keys.
func (w *Writer) ran(jobs []sent) {
	var bytes, keys int64
	for _, s := range jobs {
		bytes += s.j.bytes
		if s.j.keyDone && !s.j.noKey {
			keys++
		}
	}
	if keys > 0 {
		w.written.Add(keys)
	}
	w.metrics.imported(keys, bytes)
}

// runRaw sends plain jobs of one database on the worker's rawConn, in one
// round trip, and reads their replies in order. A refused RESTORE payload
// is recreated natively on c, the database's go-redis connection, as in
// check. After any error the rawConn is closed (the replies of the rest
// of the pipeline are unread, or the connection is broken).
func (w *Writer) runRaw(cs *conns, c targetClient, all []sent) error {
	db := all[0].db
	rc := cs.raw[db]
	if rc == nil {
		var err error
		if rc, err = dialRaw(w.ctx, w.cfg.Target, db); err != nil {
			return err
		}
		if cs.raw == nil {
			cs.raw = map[int]*rawConn{}
		}
		cs.raw[db] = rc
	}
	n, err := w.sendRaw(rc, c, all)
	w.ran(all[:n])
	if err != nil {
		rc.Close()
		delete(cs.raw, db)
		if w.ctx.Err() != nil {
			return w.ctx.Err()
		}
	}
	return err
}

// sendRaw is runRaw's round trip: it returns how many jobs ran and the
// first error.
func (w *Writer) sendRaw(rc *rawConn, c targetClient, all []sent) (int, error) {
	for _, s := range all {
		for _, cmd := range s.args {
			rc.write(cmd)
		}
	}
	if err := rc.bw.Flush(); err != nil {
		return 0, jobErr(all[0], 0, err)
	}
	for n, s := range all {
		for i := range s.args {
			rerr, err := rc.reply()
			if err != nil {
				return n, jobErr(s, i, err)
			}
			if rerr != nil {
				if err := w.replyErr(c, s, i, rerr); err != nil {
					return n, err
				}
			}
		}
	}
	return len(all), nil
}

// check reads the replies of one job.
func (w *Writer) check(c targetClient, s sent) error {
	for i, cmd := range s.cmds {
		err := cmd.Err()
		if err == nil && cmdName(s.args[i]) == "EXEC" {
			// EXEC answers each queued command; an error there is one of
			// them failing (the others ran: Redis has no rollback).
			vals, _ := cmd.Val().([]any)
			for _, v := range vals {
				if e, ok := v.(error); ok {
					err = e
					break
				}
			}
		}
		if err == nil || errors.Is(err, redis.Nil) {
			continue
		}
		if err := w.replyErr(c, s, i, err); err != nil {
			return err
		}
	}
	return nil
}

// replyErr handles the target's error reply to command i of job s: a
// refused RESTORE payload is recreated natively on c (nil once that
// worked); any other error stops the writer, naming the key.
func (w *Writer) replyErr(c targetClient, s sent, i int, err error) error {
	if s.j.restore && i == 0 && refusedPayload(err) {
		return w.restoreNatively(c, s.j, err)
	}
	return jobErr(s, i, err)
}

// jobErr is err of command i of job s, with the key and the command.
func jobErr(s sent, i int, err error) error {
	return fmt.Errorf("target db %d key %q: %s: %w", s.db, printable(s.j.key), cmdName(s.args[i]), err)
}

func cmdName(c command) string {
	if len(c) == 0 {
		return ""
	}
	if s, ok := c[0].(string); ok {
		return s
	}
	return "command"
}

// refusedPayload recognises the target refusing a DUMP payload it cannot
// read (a newer RDB version, an encoding it does not know).
func refusedPayload(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Bad data format") || strings.Contains(s, "payload version or checksum")
}

func (w *Writer) restoreNatively(c targetClient, j *job, cause error) error {
	cmds, err := nativeFromDump(j.key, j.expireAt, j.payload, w.builder(j.db))
	if err != nil {
		return fmt.Errorf("key %q: target refused RESTORE (%v) and the payload cannot be rewritten: %w", printable(j.key), cause, err)
	}
	w.mu.Lock()
	w.fallback++
	first := w.fallback == 1
	w.mu.Unlock()
	if first {
		w.log.Warn("target refused a RESTORE payload; recreating such keys with native commands", zap.Error(cause))
	}
	// One transaction: the key appears whole or not at all.
	pipe := c.TxPipeline()
	res := make([]*redis.Cmd, len(cmds))
	for i, cmd := range cmds {
		res[i] = pipe.Do(w.ctx, cmd...)
	}
	pipe.Exec(w.ctx) // errors are read per command below
	for i, r := range res {
		if err := r.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("key %q: %s: %w", printable(j.key), cmdName(cmds[i]), err)
		}
	}
	return nil
}

// FlushFunctions deletes the target's function libraries, which FLUSHALL
// keeps: a target emptied to mirror the source must not keep libraries
// the source no longer has. A server without functions (before Redis 7)
// has nothing to flush.
func (w *Writer) FlushFunctions(ctx context.Context) error {
	err := w.Do(ctx, 0, "FUNCTION", "FLUSH")
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "unknown command") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("target: FUNCTION FLUSH after FLUSHALL: %w", err)
	}
	return nil
}

// Do runs one command on database db right away, outside the pipelines.
func (w *Writer) Do(ctx context.Context, db int, args ...any) error {
	if w.cluster {
		return w.clusterDo(ctx, db, args...)
	}
	c := w.client(db, 1)
	defer c.Close()
	return c.Do(ctx, args...).Err()
}

// printable cuts a key to a length that fits an error message.
func printable(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
