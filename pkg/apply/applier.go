package apply

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"replicator/pkg/position"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

// Config bounds how apply groups and pipelines work.
type Config struct {
	// MaxChanges ends a target transaction once it holds this many changes
	// (a single larger source transaction is still applied whole). Default
	// (0) 5000.
	MaxChanges int
	// MaxBytes ends a target transaction once its changes pass this many
	// bytes. Default (0) 32 MiB.
	MaxBytes int64
	// MaxDelay ends a target transaction this long after its first source
	// transaction arrived, so latency stays bounded at low rates. Default
	// (0) 100ms.
	MaxDelay time.Duration
	// ConflictRetries is how many times a target transaction that lost a
	// deadlock (SQLSTATE 40P01) or a serialization failure (40001) to
	// another session is applied again, from its start, in the same
	// session before the stream fails and reconnects (retry.go). Default
	// (0) 5; negative: never.
	ConflictRetries int
	// BatchStatements and BatchBytes bound one pipelined round trip (and
	// the memory its arguments hold). Defaults (0) 1000 and 8 MiB.
	BatchStatements int
	BatchBytes      int64
	// FenceBypass sets the trigger fence's bypass (replicator.fence_bypass
	// = on) on the apply session, and lets a role that may not set
	// session_replication_role apply anyway: the fallback window's reverse
	// stream writes into a fenced Heroku source whose credential is no
	// superuser. Whoever sets it keeps the target's own triggers from
	// firing another way (pkg/cutover disables them under the fence).
	FenceBypass bool
}

func (c *Config) setDefaults() {
	if c.MaxChanges == 0 {
		c.MaxChanges = 5000
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 32 << 20
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 100 * time.Millisecond
	}
	if c.ConflictRetries == 0 {
		c.ConflictRetries = 5
	}
	if c.BatchStatements == 0 {
		c.BatchStatements = 1000
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = 8 << 20
	}
}

// Validate applies defaults and checks the bounds.
func (c *Config) Validate() error {
	c.setDefaults()
	if c.MaxChanges < 1 || c.MaxBytes < 1 || c.MaxDelay < 0 || c.BatchStatements < 1 || c.BatchBytes < 1 {
		return fmt.Errorf("apply: batch bounds must be positive (changes %d, bytes %d, delay %s, statements %d, batch bytes %d)",
			c.MaxChanges, c.MaxBytes, c.MaxDelay, c.BatchStatements, c.BatchBytes)
	}
	return nil
}

// Applier applies source transactions to the target, many per target
// transaction, exactly once. It uses one target connection, which it
// owns while Run runs.
type Applier struct {
	cfg  Config
	conn *pgx.Conn
	log  *zap.Logger
	m    *Metrics
	cat  *catalog

	applied    position.Position // end of the last transaction committed on the target
	lastCommit time.Time         // source commit time of the newest transaction that had one

	// current target transaction
	tx         pgx.Tx
	batch      *pgx.Batch
	meta       []stmtMeta
	batchBytes int64
	run        *insertRun
	changes    int
	bytes      int64
	counts     map[countKey]int
	txns       []*wal.Txn
	groupFirst atomic.Int64 // unix nanos of the oldest commit time in the group; 0 when none
	// position is the gauge of the applied position's kind, chosen by
	// NewApplier: LastAppliedLSN, or LastAppliedBatch under trigger
	// capture. nil without metrics.
	position    prometheus.Gauge
	lastApplied atomic.Pointer[position.Position]

	// net changes (net.go), by target table name: each new description
	// of a relation loads its target table anew (catalog.plan), and a
	// change applied in order must first flush what was gathered under
	// the earlier description, or an older update would overwrite it.
	nets     map[string]*netTable
	netOrder []*netTable
	netRows  int
	// precise applies every change on its own, in order: used to replay a
	// group whose set-wise statement failed, so the error names the row.
	precise bool
	// chunks skips what a chunked copy already holds (chunks.go); nil
	// after a copy under one snapshot.
	chunks *ChunkFilter
	// schema is asked before each source transaction whether the target's
	// schema must change first (schema.go); nil: never.
	schema   SchemaGate
	narrowed map[narrowKey]*wal.Relation // narrowInsert's relations
}

type countKey struct{ table, op string }

// stmtMeta says what a queued statement does, for errors and checks.
type stmtMeta struct {
	table    string
	op       string
	key      string
	first    position.Position // source positions of its changes, named only in errors
	last     position.Position
	xid      uint32
	expected int64  // rows it must touch; -1 for any
	setWise  bool   // a set-wise statement of net changes (net.go)
	guard    string // identity columns it requires unchanged (guardColumns), for errors
}

// insertRun is a run of inserts into one table with the same columns,
// sent as one multi-row INSERT.
type insertRun struct {
	p           *plan
	cols        []int
	vals        [][]*string // per column
	rows        int
	first, last position.Position
	xid         uint32
	firstKey    string // the first row's key, named when the run is one row
}

// NewApplier prepares conn for apply: session_replication_role = replica,
// so target triggers and foreign-key checks do not fire (the source
// already ran them). applied is where the target is: transactions ending
// at or before it are skipped; its kind (an LSN, or a changelog batch
// under trigger capture) is the kind every transaction must have, and
// picks the position gauge of m. appliedCommit is the source commit time
// recorded with it (zero when unknown), kept in the state while only
// heartbeats move the position.
func NewApplier(ctx context.Context, conn *pgx.Conn, cfg Config, applied position.Position, appliedCommit time.Time,
	m *Metrics, log *zap.Logger) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var gauge prometheus.Gauge
	switch applied.Kind() {
	case position.KindLSN:
		if m != nil {
			gauge = m.LastAppliedLSN
		}
	case position.KindBatch:
		if m != nil {
			gauge = m.LastAppliedBatch
		}
	default:
		return nil, fmt.Errorf("apply: cannot start at %s: not the position of a source transaction", applied)
	}
	if cfg.FenceBypass {
		if _, err := conn.Exec(ctx, "SET replicator.fence_bypass = on"); err != nil {
			return nil, fmt.Errorf("target: SET replicator.fence_bypass = on: %w", err)
		}
	}
	if _, err := conn.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		var pgErr *pgconn.PgError
		if !cfg.FenceBypass || !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
			return nil, fmt.Errorf("target: SET session_replication_role = replica (the target user needs superuser, or rds_superuser on RDS): %w", err)
		}
		log.Info("apply runs without session_replication_role = replica (the role may not set it): foreign keys are checked, and the target's own triggers must be disabled by the caller")
	}
	// Capture triggers fire ALWAYS (replica role or not); this keeps what
	// apply writes into a captured database out of its changelog.
	if _, err := conn.Exec(ctx, "SET "+trigger.ApplyingSetting+" = on"); err != nil {
		return nil, fmt.Errorf("target: SET %s = on: %w", trigger.ApplyingSetting, err)
	}
	// Set-wise statements join the target table to a few thousand unnested
	// keys; once the planner sees the array it may prefer a hash join over
	// a full scan of a large table. Key lookups through the index are
	// always the right plan here.
	if _, err := conn.Exec(ctx, "SET enable_hashjoin = off; SET enable_mergejoin = off"); err != nil {
		return nil, fmt.Errorf("target: set planner options: %w", err)
	}
	a := &Applier{cfg: cfg, conn: conn, log: log, m: m, cat: newCatalog(), applied: applied, lastCommit: appliedCommit,
		nets: map[string]*netTable{}, position: gauge}
	a.lastApplied.Store(&applied)
	var err error
	if a.chunks, err = LoadChunkFilter(ctx, conn); err != nil {
		return nil, err
	}
	if gauge != nil {
		gauge.Set(float64(applied.Uint64()))
	}
	return a, nil
}

// SetSchemaGate makes the applier consult g before each source
// transaction. Call it before Run.
func (a *Applier) SetSchemaGate(g SchemaGate) { a.schema = g }

// Applied is the end position of the last transaction committed on the
// target. Safe to call from any goroutine.
func (a *Applier) Applied() position.Position { return *a.lastApplied.Load() }

// Busy reports the commit time of the oldest transaction being applied,
// or false when none is.
func (a *Applier) Busy() (time.Time, bool) {
	n := a.groupFirst.Load()
	if n == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// Run applies transactions from src until ctx ends (then it finishes the
// target transaction in progress and returns nil) or an error.
func (a *Applier) Run(ctx context.Context, src wal.Source) error {
	// Database work continues past ctx so a group in progress commits
	// cleanly on shutdown; it is abandoned if that takes over 30 s.
	opCtx, cancelOp := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelOp()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(30*time.Second, cancelOp) })
	defer stop()
	for {
		t, err := src.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &StageError{"capture", err}
		}
		err = a.group(ctx, opCtx, src, t)
		// The group whole, while err is that of its target transaction:
		// a retry or a replay re-adds them and may fail part way.
		txns := a.txns
		err = a.retry(opCtx, src, txns, err)
		var ae *ApplyError
		var se *StageError
		if errors.As(err, &ae) && ae.setWise && !errors.As(err, &se) && len(txns) > 0 {
			// A set-wise statement cannot say which row failed: replay the
			// same transactions one change at a time to find it. (Not
			// after a stage's error: the transaction it was about to
			// apply is not among txns.)
			a.rollback()
			a.log.Warn("a batched change failed; applying its transactions one change at a time to find which", zap.Error(err))
			a.precise = true
			err = a.replay(opCtx, src, txns)
			err = a.retry(opCtx, src, txns, err)
			a.precise = false
		}
		if err != nil {
			closeAll(txns)
			a.abort()
			if errors.As(err, &se) {
				return err
			}
			return &StageError{"apply", err}
		}
	}
}

// group applies t and the transactions that follow it within the bounds,
// in one target transaction, then records the position and commits.
func (a *Applier) group(ctx, opCtx context.Context, src wal.Source, t *wal.Txn) error {
	start := time.Now()
	for t != nil {
		if t.End.Kind() != a.applied.Kind() {
			// Positions order only within one kind: skipping by them
			// would be meaningless.
			t.Close()
			return &StageError{"capture", fmt.Errorf("capture delivered a transaction at %s to a target at %s", t.End, a.applied)}
		}
		if !a.applied.Less(t.End) {
			t.Close() // applied before a restart: exactly once
		} else {
			if a.schema != nil {
				if err := a.gate(opCtx, src, t); err != nil {
					return err
				}
			}
			if err := a.add(opCtx, t); err != nil {
				return err
			}
		}
		t = nil
		if a.changes >= a.cfg.MaxChanges || a.bytes >= a.cfg.MaxBytes || ctx.Err() != nil {
			break
		}
		next, err := src.Poll()
		if err != nil {
			return &StageError{"capture", err}
		}
		if next == nil {
			// Nothing ready: send what is queued, then wait for more
			// until the delay bound.
			if err := a.flush(opCtx); err != nil {
				return err
			}
			wait := a.cfg.MaxDelay - time.Since(start)
			if wait <= 0 || len(a.txns) == 0 {
				break
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			next, err = src.Next(wctx)
			cancel()
			if err != nil && wctx.Err() == nil {
				return &StageError{"capture", err}
			}
		}
		t = next
	}
	if len(a.txns) == 0 {
		return nil
	}
	return a.commit(opCtx, src)
}

// add queues one source transaction's changes.
func (a *Applier) add(ctx context.Context, t *wal.Txn) error {
	// t joins the group first: whatever fails below, a retry or a
	// replay of the group (Run) includes it.
	a.txns = append(a.txns, t)
	if a.tx == nil {
		tx, err := a.conn.Begin(ctx)
		if err != nil {
			return fmt.Errorf("target: begin: %w", err)
		}
		a.tx, a.batch, a.counts = tx, &pgx.Batch{}, map[countKey]int{}
	}
	if !t.Heartbeat && a.groupFirst.Load() == 0 {
		a.groupFirst.Store(t.CommitTime.UnixNano())
	}
	if !t.CommitTime.IsZero() {
		a.lastCommit = t.CommitTime
	}
	a.changes += t.Count
	a.bytes += t.Bytes
	return t.Each(func(c *wal.Change) error {
		if a.schema != nil {
			c = a.narrowInsert(c)
		}
		if a.chunks != nil {
			var keep bool
			var err error
			if c, keep, err = a.chunks.filter(t, c); err != nil || !keep {
				return err
			}
		}
		if err := a.change(ctx, t, c); err != nil {
			return err
		}
		if len(a.meta) >= a.cfg.BatchStatements || a.batchBytes >= a.cfg.BatchBytes || a.netRows >= maxSetRows {
			return a.flush(ctx)
		}
		return nil
	})
}

func (a *Applier) commit(ctx context.Context, src wal.Source) error {
	if err := a.flush(ctx); err != nil {
		return err
	}
	last := a.txns[len(a.txns)-1]
	// The position goes in the same target transaction as the data: after
	// a crash the target says exactly which source transactions it holds.
	// A logical heartbeat has no commit time of its own: the state keeps
	// that of the last real transaction, so apply lag is measured from it.
	commitTime := a.lastCommit
	if commitTime.IsZero() {
		commitTime = time.Now()
	}
	if err := state.RecordApplied(ctx, a.tx, last.End, commitTime); err != nil {
		return err
	}
	if err := a.tx.Commit(ctx); err != nil {
		return fmt.Errorf("target: commit through %s: %w", last.End, err)
	}
	a.tx = nil
	// Only now may the source forget these transactions.
	src.Committed(last)
	a.applied = last.End
	applied := last.End
	a.lastApplied.Store(&applied)
	n := 0
	for _, t := range a.txns {
		if !t.Heartbeat {
			n++
		}
		t.Close()
	}
	if a.m != nil {
		a.m.AppliedTransactions.Add(float64(n))
		for k, v := range a.counts {
			a.m.AppliedChanges.WithLabelValues(k.table, k.op).Add(float64(v))
		}
		if a.changes > 0 {
			a.m.BatchChanges.Observe(float64(a.changes))
		}
		if a.position != nil {
			a.position.Set(float64(last.End.Uint64()))
		}
	}
	a.reset()
	return nil
}

// replay applies txns again in a new target transaction and commits.
func (a *Applier) replay(ctx context.Context, src wal.Source, txns []*wal.Txn) error {
	for _, t := range txns {
		if err := a.add(ctx, t); err != nil {
			return err
		}
	}
	return a.commit(ctx, src)
}

// rollback rolls back the target transaction in progress; the group's
// transactions stay open for a replay.
func (a *Applier) rollback() {
	if a.tx != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		a.tx.Rollback(ctx)
		cancel()
		a.tx = nil
	}
	a.reset()
}

// abort rolls back the target transaction in progress and drops the group.
func (a *Applier) abort() {
	txns := a.txns
	a.rollback()
	for _, t := range txns {
		t.Close()
	}
}

func (a *Applier) reset() {
	a.txns, a.batch, a.meta, a.run, a.counts = nil, nil, nil, nil, nil
	a.changes, a.bytes, a.batchBytes = 0, 0, 0
	clear(a.nets)
	a.netOrder, a.netRows = nil, 0
	a.groupFirst.Store(0)
}
