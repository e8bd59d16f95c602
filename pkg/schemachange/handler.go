package schemachange

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/position"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
	"replicator/pkg/wal"
)

// Mode is what the stream does with a schema change (--ddl).
type Mode string

// Modes.
const (
	ModeApply Mode = "apply" // apply additive changes, stop on the others
	ModeStop  Mode = "stop"  // stop on every change
)

// Config configures a Handler.
type Config struct {
	SourceURL, TargetURL string // required
	// Mode is ModeApply (default, "") or ModeStop.
	Mode Mode
	// Capture is the target's capture mode (state.CaptureLogical or
	// state.CaptureTrigger); Publication the logical capture's.
	Capture     string
	Publication string
	// PollInterval is the longest time between two catalog polls while
	// the stream runs. Default (0) 2s. Under trigger capture the rows
	// part of the catalog is also checked before each batch newer than
	// the last check (see doc.go).
	PollInterval time.Duration
	// Trigger is trigger capture's install configuration (lock timeout).
	Trigger trigger.Config
	// Jobs copy new tables' chunks in parallel. Default (0) 2.
	Jobs int
	// ChunkBytes sizes new tables' chunks. Default (0) 32 MiB.
	ChunkBytes int64
	// Metrics receives replicator_schema_changes_total; nil: none.
	Metrics *Metrics
	// Copier copies new tables through the chunk ledger
	// (snapshot.TableCopier). nil: a new table, or one whose new column
	// needs its rows copied again, stops the stream instead.
	Copier Copier
	// FenceBypass: the target is a fenced database (the fallback window's
	// reverse stream into the Heroku source): the handler's session passes
	// the fence (apply.Config.FenceBypass), and runs without the replica
	// role when its role may not set it.
	FenceBypass bool
}

// Copier plans and copies tables through the chunk ledger on the target
// (pkg/snapshot's PlanTables and CopyPending, which see).
type Copier interface {
	PlanTables(ctx context.Context, src *pgx.Conn, tx pgx.Tx, names []string, chunkBytes int64) error
	CopyPending(ctx context.Context, sourceURL, targetURL string, jobs int, log *zap.Logger) (int, error)
}

// Validate applies defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Mode == "" {
		c.Mode = ModeApply
	}
	if c.Mode != ModeApply && c.Mode != ModeStop {
		return fmt.Errorf("--ddl %q: use apply or stop", string(c.Mode))
	}
	if c.PollInterval == 0 {
		c.PollInterval = 2 * time.Second
	}
	if c.PollInterval < 10*time.Millisecond {
		return fmt.Errorf("schema poll interval %s is below 10ms", c.PollInterval)
	}
	if c.Jobs == 0 {
		c.Jobs = 2
	}
	return nil
}

// Handler follows the source's schema for one stream session. Its methods
// are called from the apply goroutine only (Before, Sync); index builds
// run on goroutines of their own until Close.
type Handler struct {
	cfg Config
	log *zap.Logger
	src *pgx.Conn // catalog polls
	dst *pgx.Conn // DDL on the target, the stored catalog

	mu    sync.Mutex // known, buildErr, building: shared with index builds
	known *Catalog   // what the target reflects
	// building are the index builds running, by table oid and name.
	building map[string]bool
	buildErr error

	lastPoll time.Time
	covered  int64 // trigger capture: the highest tick the last poll saw
	polled   *Catalog
	pending  []Change // additive, for Sync
	// fingerprint is Fingerprint as of the last full read, at fullRead;
	// rowsFingerprint its rowsOnly part.
	fingerprint, rowsFingerprint string
	fullRead                     time.Time
	// justCopied are the tables the last Sync copied (see Sync).
	justCopied map[uint32]bool

	refusal     *RefusedError
	refusedRel  string            // qualified table of the refusal
	stopAfter   position.Position // the refusal takes effect past this position
	hasStopAt   bool
	stopCounted bool

	wg     sync.WaitGroup
	cancel context.CancelFunc
	bctx   context.Context
}

// Open connects to both sides, loads the catalog the target reflects (or,
// on the first stream after a snapshot, takes the target's own schema as
// that baseline), finishes copying any new table a previous session left
// half-copied, and polls once.
func Open(ctx context.Context, cfg Config, log *zap.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	src, err := pgutil.Connect(ctx, cfg.SourceURL, "source")
	if err != nil {
		return nil, err
	}
	dst, err := pgutil.Connect(ctx, cfg.TargetURL, "target")
	if err != nil {
		src.Close(context.Background())
		return nil, err
	}
	// The target's DDL runs as apply does: replica role, so emptying a
	// table to copy it again is not held up by foreign keys' triggers.
	fail := func(err error) (*Handler, error) {
		src.Close(context.Background())
		dst.Close(context.Background())
		return nil, err
	}
	if cfg.FenceBypass {
		if _, err := dst.Exec(ctx, "SET replicator.fence_bypass = on"); err != nil {
			return fail(fmt.Errorf("target: SET replicator.fence_bypass = on: %w", err))
		}
	}
	if _, err := dst.Exec(ctx, "SET session_replication_role = replica"); err != nil {
		var pgErr *pgconn.PgError
		if !cfg.FenceBypass || !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
			return fail(fmt.Errorf("target: SET session_replication_role = replica: %w", err))
		}
	}
	h := &Handler{cfg: cfg, log: log, src: src, dst: dst, building: map[string]bool{}}
	h.bctx, h.cancel = context.WithCancel(context.Background())
	if err := h.open(ctx); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func (h *Handler) open(ctx context.Context) error {
	known, err := loadStored(ctx, h.dst)
	if err != nil {
		return err
	}
	baseline, upgraded := known == nil, known != nil && known.Version < objectsVersion
	if baseline {
		if known, err = h.alignedTarget(ctx); err != nil {
			return err
		}
	} else if upgraded {
		// Stored before types, sequences, functions, views and
		// constraints were followed: the target's are their baseline.
		aligned, err := h.alignedTarget(ctx)
		if err != nil {
			return err
		}
		known.Objects, known.Version = aligned.Objects, objectsVersion
		for oid, t := range known.Tables {
			if at := aligned.Tables[oid]; at != nil {
				t.Constraints = at.Constraints
			}
		}
	}
	if baseline || upgraded {
		if err := pgx.BeginFunc(ctx, h.dst, func(tx pgx.Tx) error { return saveStored(ctx, tx, known) }); err != nil {
			return err
		}
	}
	if baseline {
		h.log.Info("schema baseline taken from the target's copy", zap.Int("tables", len(known.Tables)))
	}
	h.known = known
	if h.cfg.Copier != nil {
		if n, err := h.cfg.Copier.CopyPending(ctx, h.cfg.SourceURL, h.cfg.TargetURL, h.cfg.Jobs, h.log); err != nil {
			return fmt.Errorf("finish copying the tables created on the source: %w", err)
		} else if n > 0 {
			h.log.Info("finished copying the tables created on the source", zap.Int("chunks", n))
		}
	}
	return h.poll(ctx)
}

// alignedTarget is the target's own schema keyed like the source's
// (Align): the baseline of what the target reflects.
func (h *Handler) alignedTarget(ctx context.Context) (*Catalog, error) {
	srcCat, err := readCatalogTx(ctx, h.src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	tgtCat, err := readCatalogTx(ctx, h.dst)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	return Align(tgtCat, srcCat), nil
}

// Close stops the index builds in progress (a build interrupted is
// started again by the next session) and closes the connections.
func (h *Handler) Close() {
	h.cancel()
	h.wg.Wait()
	h.src.Close(context.Background())
	h.dst.Close(context.Background())
}

func readCatalogTx(ctx context.Context, conn *pgx.Conn) (*Catalog, error) {
	var c *Catalog
	err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		c, err = ReadCatalog(ctx, tx)
		return err
	})
	return c, err
}

// Before is called by apply before source transaction t is applied. It
// returns true when the target's schema must first be brought up to date
// (apply commits what it holds, then calls Sync), or the *RefusedError
// that stops the stream before t (apply commits what it holds first:
// everything before t is applied, nothing of t).
func (h *Handler) Before(ctx context.Context, t *wal.Txn) (bool, error) {
	if err := h.failedBuild(); err != nil {
		return false, err
	}
	if err := h.stopBefore(t); err != nil {
		return false, err
	}
	if len(h.pending) > 0 {
		return true, nil
	}
	need := time.Since(h.lastPoll) >= h.cfg.PollInterval
	rowsOnly := false
	if !need && h.cfg.Capture == state.CaptureTrigger && t.End.Kind() == position.KindBatch && t.End.ID() > h.covered {
		// The batch may hold rows that need a change made before its
		// tick: the catalog must have been read after that tick, but only
		// what decides how the target takes a row (doc.go).
		need, rowsOnly = true, true
	}
	reshaped := false
	for _, r := range t.Described {
		if h.differs(r) {
			need, reshaped = true, true
		}
	}
	if !need {
		return false, nil
	}
	if reshaped && t.XID != 0 {
		// The walsender sends a commit once its WAL record is flushed,
		// which is before the transaction is visible to new snapshots: a
		// poll made at once could miss the DDL that t's new description
		// comes from, and let t through to fail on the target.
		if err := h.waitVisible(ctx, t.XID); err != nil {
			return false, err
		}
	}
	if reshaped {
		rowsOnly = false
	}
	if err := h.pollRows(ctx, rowsOnly); err != nil {
		return false, err
	}
	if err := h.stopBefore(t); err != nil {
		return false, err
	}
	return len(h.pending) > 0, nil
}

// waitVisible returns once source transaction xid, whose commit was
// decoded, is visible to a snapshot taken after it returns. A committing
// transaction leaves the proc array before it releases its locks, its own
// transaction-id lock included (PostgreSQL's CommitTransaction), so once
// that lock is gone every later snapshot sees the transaction committed,
// and with it every DDL whose lock it waited for on the tables it wrote.
func (h *Handler) waitVisible(ctx context.Context, xid uint32) error {
	wait := time.Millisecond
	for deadline := time.Now().Add(30 * time.Second); ; {
		var running bool
		if err := h.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'transactionid' AND transactionid = $1::text::xid)`,
			fmt.Sprint(xid)).Scan(&running); err != nil {
			return fmt.Errorf("source: wait for transaction %d to end: %w", xid, err)
		}
		if !running {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("source: transaction %d was decoded as committed but still holds its lock after 30 s", xid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// differs reports whether a relation the source described has another
// shape than the target reflects (or is unknown to it).
func (h *Handler) differs(r *wal.Relation) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.known.Tables[r.ID]
	if t == nil {
		t = h.known.byName(r.Namespace, r.Name)
	}
	if t == nil || t.Schema != r.Namespace || t.Name != r.Name {
		return true
	}
	var cols []string
	for _, c := range t.Columns {
		if c.Generated == "" {
			cols = append(cols, c.Name)
		}
	}
	var got []string
	for _, c := range r.Columns {
		got = append(got, c.Name)
	}
	return strings.Join(cols, "\x00") != strings.Join(got, "\x00")
}

// stopBefore returns the pending refusal when t is past the point it
// takes effect: a transaction that describes the refused table anew (the
// first change after the DDL), or one past the position the source was at
// when the poll saw the change (so every change made before the DDL, which
// committed before that position, is applied first).
func (h *Handler) stopBefore(t *wal.Txn) error {
	if h.refusal == nil {
		return nil
	}
	// A heartbeat at the position says everything before it was sent.
	stop := h.hasStopAt && h.stopAfter.Kind() == t.End.Kind() &&
		(h.stopAfter.Less(t.End) || t.Heartbeat && h.stopAfter == t.End)
	for _, r := range t.Described {
		// The refused table described with its new shape: the first
		// change after the DDL.
		if (pgutil.QualifiedName(r.Namespace, r.Name) == h.refusedRel || r.ID == h.refusal.Change.Table) && h.differs(r) {
			stop = true
		}
	}
	if !stop {
		return nil
	}
	if !h.stopCounted {
		h.stopCounted = true
		h.cfg.Metrics.add(ActionStopped)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := pgx.BeginFunc(ctx, h.dst, func(tx pgx.Tx) error { return recordChange(ctx, tx, ActionStopped, h.refusal.Change) }); err != nil {
			h.log.Warn("could not record the schema change on the target", zap.Error(err))
		}
	}
	return h.refusal
}

// poll reads the source's catalog in one snapshot, with the position the
// source was at after it, and sorts what changed into changes to apply
// (pending) and the first change that stops the stream (refusal).
func (h *Handler) poll(ctx context.Context) error { return h.pollRows(ctx, false) }

// pollRows is poll; with rowsOnly, when the rows part of the fingerprint
// is unchanged, it only moves the tick covered on (a batch's check, see
// doc.go) and leaves the rest to the next interval poll.
func (h *Handler) pollRows(ctx context.Context, rowsOnly bool) error {
	var cat *Catalog
	var tick int64
	var lsn pglogrepl.LSN
	var fp, rowsFP string
	same := false
	err := pgx.BeginTxFunc(ctx, h.src, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		unchanged := h.polled != nil && h.refusal == nil && len(h.pending) == 0 && time.Since(h.fullRead) < fullReadEvery
		if rowsOnly && unchanged {
			if rowsFP, err = Fingerprint(ctx, tx, true); err != nil {
				return err
			}
			same = rowsFP == h.rowsFingerprint
		}
		if !same {
			if fp, err = Fingerprint(ctx, tx, false); err != nil {
				return err
			}
			rowsFP, _, _ = strings.Cut(fp, "|")
			// Nothing the catalog read depends on was written since the
			// last full read, which left nothing to do: the same catalog
			// again.
			same = fp == h.fingerprint && unchanged
			rowsOnly = false
		}
		if !same {
			var err error
			if cat, err = ReadCatalog(ctx, tx); err != nil {
				return err
			}
		}
		// Read in the same snapshot as the catalog: every DDL the catalog
		// shows committed before it. Ticks: a tick seen here was taken
		// before this snapshot. WAL: read after the snapshot was taken.
		if h.cfg.Capture == state.CaptureTrigger {
			return tx.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM replicator.ticks`).Scan(&tick)
		}
		return tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()`).Scan(&lsn)
	})
	if err != nil {
		return fmt.Errorf("source: poll the catalog for schema changes: %w", err)
	}
	if !rowsOnly {
		h.lastPoll = time.Now()
	}
	h.covered = tick
	if same {
		return nil
	}
	h.fingerprint, h.rowsFingerprint, h.fullRead = fp, rowsFP, time.Now()
	kept, err := loadKept(ctx, h.dst)
	if err != nil {
		return err
	}
	h.mu.Lock()
	withKept(cat, h.known, kept)
	changes := Diff(h.known, cat)
	h.mu.Unlock()
	changes = h.withoutBuilding(changes)
	if changes, err = h.withoutPendingForeignKeys(ctx, changes, cat); err != nil {
		return err
	}
	if len(changes) == 0 {
		h.polled, h.pending = cat, nil
		h.refusal, h.hasStopAt = nil, false // one the source undid
		return nil
	}
	var tgt *Catalog // aligned target catalog, read once when needed
	matched := func(c Change) (bool, error) {
		if tgt == nil {
			raw, err := readCatalogTx(ctx, h.dst)
			if err != nil {
				return false, fmt.Errorf("target: %w", err)
			}
			tgt = Align(raw, cat)
		}
		return matchedOnTarget(c, tgt, cat), nil
	}
	var pending []Change
	stillRefused := false
	for _, c := range changes {
		if h.refusal != nil && h.refusal.Change.Object == c.Object && h.refusal.Change.Kind == c.Kind {
			stillRefused = true
		}
	}
	if h.refusal != nil && !stillRefused {
		// The source no longer shows it (undone there): nothing to stop for.
		h.log.Info("a schema change the stream was to stop for is no longer on the source", zap.String("change", h.refusal.Change.String()))
		h.refusal, h.hasStopAt = nil, false
	}
	for _, c := range changes {
		refuse := !c.Kind.Additive() || h.cfg.Mode == ModeStop
		if refuse {
			ok, err := matched(c)
			if err != nil {
				return err
			}
			if ok {
				c.matched = true
				pending = append(pending, c)
				continue
			}
			if h.refusal == nil || h.refusal.Change.Object != c.Object || h.refusal.Change.Kind != c.Kind {
				// A refused change of an object (Table 0) takes effect at the
				// position alone: no relation description names it.
				h.refusal = &RefusedError{Change: c, Mode: h.cfg.Mode}
				h.stopCounted = false
				h.refusedRel = ""
				if t := cat.Tables[c.Table]; t != nil {
					h.refusedRel = t.Qualified()
				} else if t := h.known.Tables[c.Table]; t != nil {
					h.refusedRel = t.Qualified()
				}
				if h.cfg.Capture == state.CaptureTrigger {
					// The DDL committed before this snapshot, so before the
					// next tick: its batch is at most tick+1.
					h.stopAfter, h.hasStopAt = position.Batch(tick+1), true
				} else {
					h.stopAfter, h.hasStopAt = position.LSN(lsn), true
				}
				h.log.Warn("schema change seen that the stream does not apply: it stops once the changes made before it are applied",
					zap.String("change", c.String()))
				h.cfg.Metrics.add("seen")
			}
			continue
		}
		pending = append(pending, c)
	}
	if h.refusal != nil {
		// Only the additive changes of other tables are applied while a
		// refusal waits: the refused table stays as the target has it.
		var keep []Change
		for _, c := range pending {
			if c.subject() != h.refusal.Change.subject() || c.matched {
				keep = append(keep, c)
			}
		}
		pending = keep
	}
	for _, c := range pending {
		if !c.matched {
			h.log.Info("schema change seen on the source", zap.String("change", c.String()))
			h.cfg.Metrics.add("seen")
		}
	}
	h.polled, h.pending = cat, pending
	return nil
}

// The fingerprints sum the catalog rows ReadCatalog depends on: a DDL
// writes new rows into them (an in-place update, such as VACUUM's
// relpages, does not; freezing does and costs one full read). They are a
// few sequential scans without any deparsing, much cheaper than the full
// read on a large schema (bench/schemapoll). Only rows of objects made
// after initdb (oid 16384 and up, FirstNormalObjectId) are summed where
// the row says whose it is: every object ReadCatalog reads is one, and the
// thousands of built-in functions, types and catalog columns are skipped.
// Namespaces are summed whole (public has a built-in oid). The oid is
// compared as an int8 so that the test is no index condition: a range
// scan of an index over nearly every row costs more than the sequential
// scan (bench/schemapoll measured the index scans 1.4-1.6 times slower).
//
// rowsFingerprintSQL covers what decides how the target takes a row
// change: the tables, their columns, partitions and schemas, their
// constraints and unique indexes, and enum labels. objectsFingerprintSQL
// covers the rest: defaults, types, functions, views, sequences (see
// "Ordering" in doc.go for why a batch needs only the first).
const rowsFingerprintSQL = `SELECT concat_ws(':',
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_class WHERE oid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attribute WHERE attrelid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_index WHERE indrelid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_inherits WHERE inhrelid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_constraint WHERE oid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_namespace),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_enum WHERE enumtypid::int8 >= 16384))`

const objectsFingerprintSQL = `SELECT concat_ws(':',
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attrdef WHERE adrelid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_type WHERE oid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_proc WHERE oid::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_rewrite WHERE ev_class::int8 >= 16384),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_sequence WHERE seqrelid::int8 >= 16384))`

// Fingerprint is a digest of the catalog rows ReadCatalog depends on:
// unchanged, so is what ReadCatalog would read (up to a freeze, which
// changes it for nothing). With rowsOnly, of the rows that decide how the
// target takes a row change only.
func Fingerprint(ctx context.Context, tx pgx.Tx, rowsOnly bool) (string, error) {
	var rows, objects string
	if err := tx.QueryRow(ctx, rowsFingerprintSQL).Scan(&rows); err != nil || rowsOnly {
		return rows, err
	}
	err := tx.QueryRow(ctx, objectsFingerprintSQL).Scan(&objects)
	return rows + "|" + objects, err
}

// fullReadEvery bounds how long the fingerprint alone may vouch for the
// catalog.
const fullReadEvery = time.Minute

// matchedOnTarget reports whether the target already shows the change: the
// operator made it there by hand (the fix of a refusal, or of --ddl stop).
// The aligned target catalog must then differ from the source in nothing
// but indexes for that table.
func matchedOnTarget(c Change, tgt, src *Catalog) bool {
	if c.Kind == CreateTable || c.Kind == CreateIndex || c.Kind == DropIndex {
		return false // a table needs its rows copied; an index is built by the stream
	}
	for _, d := range Diff(tgt, src) {
		if d.Kind == CreateIndex || d.Kind == DropIndex {
			continue
		}
		// A constraint the target has NOT VALID (a foreign key of a
		// chunked copy waiting to be validated) holds back no other
		// change of its table.
		if d.Kind == ValidateConstraint && (c.Kind != ValidateConstraint || d.Object != c.Object) {
			continue
		}
		if c.Table != 0 && d.Table == c.Table || d.Object == c.Object {
			return false
		}
		if c.Kind == DropTable || c.Kind == RenameTable {
			if t := tgt.Tables[d.Table]; t != nil && "table "+t.display() == c.Object {
				return false
			}
		}
	}
	return true
}

// withoutPendingForeignKeys leaves out the validation of a foreign key
// that a chunked copy made NOT VALID on the target (replicator.pending_fks):
// the key is valid on the source from the start, and is validated on the
// target once the stream has caught up with the copy's chunks
// (pkg/snapshot ValidateForeignKeys), not at the first poll, when its rows
// may not hold yet. The catalog the target reflects takes it as valid.
func (h *Handler) withoutPendingForeignKeys(ctx context.Context, cs []Change, cat *Catalog) ([]Change, error) {
	var out []Change
	recorded := -1 // whether replicator.pending_fks exists, once asked
	for _, c := range cs {
		t := cat.Tables[c.Table]
		if c.Kind != ValidateConstraint || t == nil || recorded == 0 {
			out = append(out, c)
			continue
		}
		if recorded < 0 {
			var exists bool
			if err := h.dst.QueryRow(ctx, `SELECT to_regclass('replicator.pending_fks') IS NOT NULL`).Scan(&exists); err != nil {
				return nil, fmt.Errorf("target: read replicator.pending_fks: %w", err)
			}
			if recorded = 0; exists {
				recorded = 1
			}
			if !exists {
				out = append(out, c)
				continue
			}
		}
		var pending bool
		err := h.dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM replicator.pending_fks WHERE to_regclass(table_name) = to_regclass($1)
			AND constraint_name IN ($2, quote_ident($2)))`, t.Qualified(), c.Constraint).Scan(&pending)
		if err != nil {
			return nil, fmt.Errorf("target: read replicator.pending_fks: %w", err)
		}
		if !pending {
			out = append(out, c)
			continue
		}
		h.mu.Lock()
		if kt := h.known.Tables[c.Table]; kt != nil {
			ks := make(map[string]Constraint, len(kt.Constraints))
			for name, k := range kt.Constraints {
				ks[name] = k
			}
			k := ks[c.Constraint]
			k.Valid = true
			ks[c.Constraint] = k
			n := *kt
			n.Constraints = ks
			h.known.Tables[c.Table] = &n
		}
		h.mu.Unlock()
	}
	return out, nil
}

func (h *Handler) withoutBuilding(cs []Change) []Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Change
	for _, c := range cs {
		if c.Kind == CreateIndex && h.building[buildKey(c)] {
			continue
		}
		out = append(out, c)
	}
	return out
}

func buildKey(c Change) string { return fmt.Sprint(c.Table, "\x00", c.Index) }

func (h *Handler) failedBuild() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.buildErr
}

// errNoTable is the cause when a table the change needs is not in the
// catalog the poll read.
var errNoTable = errors.New("the table is no longer on the source")
