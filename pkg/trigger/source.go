package trigger

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/position"
	"replicator/pkg/wal"
)

// SourceConfig configures Source, the adapter that feeds trigger batches
// to the same apply stage as logical capture.
type SourceConfig struct {
	Capture Config
	// Applied is the last batch the target committed (the id of
	// state.State.Applied): the first batch delivered is Applied+1.
	Applied int64
	// TxnMemory is how many bytes of one batch are held in memory before
	// the rest is spilled to disk. Default (0) 8 MiB.
	TxnMemory int64
	// SpillDir is where large batches are spilled. Default ("") the
	// system's temporary directory.
	SpillDir string
	// MetricsInterval is how often the capture lag and changelog size are
	// refreshed while nothing is purged. Default (0) 5s.
	MetricsInterval time.Duration
}

// Source is trigger capture as a wal.Source: each batch becomes one
// wal.Txn, so apply commits a target transaction holding whole batches
// only (apply never splits a Txn), and the position it records is the
// batch id.
//
// The Txn's End and Commit are the batch (position.Batch) and CommitTime
// the tick's time. A batch with no changes is a heartbeat: applying it
// records the position, so idle ticks do not pile up on the source. Each
// change's Pos is its changelog id (position.ChangelogID), which apply
// names in its errors.
//
// Three goroutines run until Close: the ticker, the batch reader (one
// batch read ahead of apply, so memory holds at most three batches'
// in-memory parts), and the purger, which deletes what Committed reports
// and refreshes the metrics.
type Source struct {
	capt *Capture
	cfg  SourceConfig
	log  *zap.Logger

	out       chan *wal.Txn
	done      chan struct{}
	err       error
	cancel    context.CancelFunc
	group     *errgroup.Group
	closeOnce sync.Once

	committed atomic.Int64
	kick      chan struct{}

	rels map[*Table]*wal.Relation // reader goroutine only
}

// OpenSource connects to the source and starts the ticker, the reader and
// the purger. sourceURL is never logged; m (nil: none) receives the
// capture metrics, the same *Metrics on every reconnect.
func OpenSource(ctx context.Context, sourceURL string, cfg SourceConfig, log *zap.Logger, m *Metrics) (*Source, error) {
	if cfg.TxnMemory == 0 {
		cfg.TxnMemory = 8 << 20
	}
	if cfg.MetricsInterval == 0 {
		cfg.MetricsInterval = 5 * time.Second
	}
	if cfg.TxnMemory < 0 || cfg.MetricsInterval < 0 || cfg.Applied < 0 {
		return nil, fmt.Errorf("trigger source: negative memory bound, interval or batch")
	}
	capt, err := New(ctx, sourceURL, cfg.Capture, log, m)
	if err != nil {
		return nil, err
	}
	// Fail here, not in a goroutine, when the position is not on the
	// source: a new capture point was taken since the target's copy.
	if _, err := capt.Purge(ctx, cfg.Applied); err != nil {
		capt.Close()
		return nil, err
	}
	// A tick now closes the batch of everything already waiting, so a
	// stream that starts on a backlog need not wait a tick interval.
	if _, err := capt.Tick(ctx); err != nil {
		capt.Close()
		return nil, err
	}
	s := &Source{capt: capt, cfg: cfg, log: log, out: make(chan *wal.Txn, 1), done: make(chan struct{}),
		kick: make(chan struct{}, 1), rels: map[*Table]*wal.Relation{}}
	s.committed.Store(cfg.Applied)
	gctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	g, gctx := errgroup.WithContext(gctx)
	s.group = g
	g.Go(func() error { return capt.RunTicker(gctx) })
	g.Go(func() error { return s.readLoop(gctx) })
	g.Go(func() error { return s.purgeLoop(gctx) })
	go func() {
		s.err = g.Wait()
		close(s.done)
	}()
	return s, nil
}

// Next returns the next batch as a transaction, waiting until its tick is
// taken and it is read. See wal.Source.
func (s *Source) Next(ctx context.Context) (*wal.Txn, error) {
	if t, err := s.Poll(); t != nil || err != nil {
		return t, err
	}
	select {
	case t := <-s.out:
		return t, nil
	case <-s.done:
		return s.Poll()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Poll returns the next batch if it is read, else nil. See wal.Source.
func (s *Source) Poll() (*wal.Txn, error) {
	select {
	case <-s.done:
		// The reader queued what it read before the group ended.
		select {
		case t := <-s.out:
			return t, nil
		default:
		}
		return nil, fmt.Errorf("trigger capture: %w", s.err)
	default:
	}
	select {
	case t := <-s.out:
		return t, nil
	default:
	}
	return nil, nil
}

// Pending reports whether a batch is read and waiting for Next.
func (s *Source) Pending() bool { return len(s.out) > 0 }

// Committed lets the purger delete the changelog rows of every batch up
// to txn's. It does not block.
func (s *Source) Committed(txn *wal.Txn) {
	s.committed.Store(txn.End.ID())
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Close stops the goroutines, closes batches read but not delivered, and
// the connections. It may be repeated.
func (s *Source) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		for {
			select {
			case t := <-s.out:
				t.Close()
				continue
			default:
			}
			break
		}
		s.capt.Close()
	})
}

func (s *Source) readLoop(ctx context.Context) error {
	next := s.cfg.Applied
	for {
		b, err := s.capt.NextBatch(ctx, next)
		if err != nil {
			return err
		}
		txn, err := s.read(ctx, b)
		if err != nil {
			return err
		}
		select {
		case s.out <- txn:
		case <-ctx.Done():
			txn.Close()
			return ctx.Err()
		}
		next = b.ID
	}
}

// read reads batch b whole into a transaction, spilling past TxnMemory.
// Decoding (the cursor's fetches, the jsonb values, the conversion) and
// building (spill encoding and writes) run on two goroutines, handing
// over pages bounded by count and bytes, so a large batch is read on two
// cores.
func (s *Source) read(ctx context.Context, b *Batch) (*wal.Txn, error) {
	began := time.Now()
	cur, err := s.capt.Open(ctx, b)
	if err != nil {
		return nil, err
	}
	defer cur.Close(context.WithoutCancel(ctx))
	bld := wal.NewTxnBuilder(s.cfg.SpillDir, s.cfg.TxnMemory)
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan []wal.Change, 2)
	var decodeErr error
	decoded := make(chan struct{})
	go func() {
		defer close(decoded)
		defer close(pages)
		decodeErr = s.decode(dctx, b, cur, pages)
	}()
	var addErr error
	for page := range pages {
		for i := 0; i < len(page) && addErr == nil; i++ {
			if addErr = bld.Add(page[i]); addErr != nil {
				cancel() // the decoder stops; the pages left are drained
			}
		}
	}
	<-decoded
	if addErr == nil {
		addErr = decodeErr
	}
	if addErr != nil {
		bld.Discard()
		return nil, addErr
	}
	txn := bld.Txn()
	if txn.Count >= 100000 {
		// A backlog: say how long reading it took, apply follows.
		s.log.Info("read a large batch from the changelog", zap.Int64("batch", b.ID), zap.Int("changes", txn.Count),
			zap.Int64("bytes", txn.Bytes), zap.Duration("took", time.Since(began).Round(time.Millisecond)))
	}
	txn.Commit, txn.End = position.Batch(b.ID), position.Batch(b.ID)
	txn.CommitTime = b.Time
	txn.Heartbeat = txn.Count == 0
	return txn, nil
}

// Page bounds of the hand-over from decode to the builder.
const (
	pageChanges = 256
	pageBytes   = 1 << 20
)

// decode reads the batch's changes in order, converts them and sends them
// to pages. The values it sends are its own: the cursor allocates every
// change's values anew (Cursor.values), so they outlive its Next.
func (s *Source) decode(ctx context.Context, b *Batch, cur *Cursor, pages chan<- []wal.Change) error {
	var page []wal.Change
	var size int
	push := func(c wal.Change) error {
		page = append(page, c)
		for _, v := range c.New {
			size += len(v.Text)
		}
		for _, v := range c.Old {
			size += len(v.Text)
		}
		if len(page) < pageChanges && size < pageBytes {
			return nil
		}
		return s.send(ctx, pages, &page, &size)
	}
	// Consecutive TRUNCATEs of one transaction (a TRUNCATE of several
	// tables, or one with CASCADE, records each table) become one
	// statement again: the target refuses to truncate a table referenced
	// by a foreign key unless the referencing table is truncated with it.
	var trunc *wal.Change
	var truncTx uint64
	flushTrunc := func() error {
		if trunc == nil {
			return nil
		}
		c := *trunc
		trunc = nil
		return push(c)
	}
	for cur.Next(ctx) {
		ch := cur.Change()
		if ch.Op == Truncate {
			if trunc != nil && truncTx == ch.TxID {
				trunc.Truncated = append(trunc.Truncated, s.relation(ch.Table))
				continue
			}
			if err := flushTrunc(); err != nil {
				return err
			}
			trunc = &wal.Change{Kind: wal.Truncate, Pos: position.ChangelogID(ch.ID), XID: ch.TxID, Truncated: []*wal.Relation{s.relation(ch.Table)}}
			truncTx = ch.TxID
			continue
		}
		if err := flushTrunc(); err != nil {
			return err
		}
		c, err := s.convert(ch)
		if err != nil {
			return fmt.Errorf("batch %d changelog id %d: %w", b.ID, ch.ID, err)
		}
		if err := push(c); err != nil {
			return err
		}
	}
	if err := cur.Err(); err != nil {
		return err
	}
	if err := flushTrunc(); err != nil {
		return err
	}
	return s.send(ctx, pages, &page, &size)
}

func (s *Source) send(ctx context.Context, pages chan<- []wal.Change, page *[]wal.Change, size *int) error {
	if len(*page) == 0 {
		return nil
	}
	select {
	case pages <- *page:
	case <-ctx.Done():
		return ctx.Err()
	}
	*page, *size = make([]wal.Change, 0, pageChanges), 0
	return nil
}

// relation is the wal description of a captured table; a table described
// anew (after its columns changed, see describe.go) is a new description.
func (s *Source) relation(t *Table) *wal.Relation {
	if r, ok := s.rels[t]; ok {
		return r
	}
	r := &wal.Relation{ID: t.ID, Namespace: t.Namespace, Name: t.Name, Identity: t.Identity,
		Columns: make([]wal.Column, len(t.Columns))}
	for i, c := range t.Columns {
		r.Columns[i] = wal.Column{Name: c.Name, Key: c.Key}
	}
	if len(s.rels) > 10000 {
		clear(s.rels)
	}
	s.rels[t] = r
	return r
}

// convert turns a captured change into the shape pgoutput gives apply:
//
//   - Insert: New is the row.
//   - Update under a key: New holds the changed columns plus every key
//     column (an unchanged key is taken from the recorded key), the rest
//     unchanged; Old is the old key only when the key changed, as
//     pgoutput sends it. Apply then treats an unchanged column exactly as
//     an unchanged TOAST value: it keeps the target's value.
//   - Update without a key (all-column identity, 'f'): Old is the whole
//     old row, as under REPLICA IDENTITY FULL.
//   - Delete: Old is the key (or the whole row without a key).
func (s *Source) convert(ch *Change) (wal.Change, error) {
	rel := s.relation(ch.Table)
	c := wal.Change{Rel: rel, Pos: position.ChangelogID(ch.ID), XID: ch.TxID, Partition: ch.Partition}
	switch ch.Op {
	case Insert:
		c.Kind, c.New = wal.Insert, values(ch.New)
	case Update:
		c.Kind = wal.Update
		c.New = values(ch.New)
		old := values(ch.Key)
		if len(old) != len(c.New) {
			return c, fmt.Errorf("update of %s: key and values have different column counts", ch.Table)
		}
		changed := rel.Identity == wal.IdentityFull
		for i, col := range rel.Columns {
			if !col.Key {
				continue
			}
			if c.New[i].Kind == wal.ValueUnchanged {
				c.New[i] = old[i]
			} else if c.New[i].Kind != old[i].Kind || string(c.New[i].Text) != string(old[i].Text) {
				changed = true
			}
		}
		if changed {
			c.Old = old
		}
	case Delete:
		c.Kind, c.Old = wal.Delete, values(ch.Key)
	default:
		return c, fmt.Errorf("unexpected operation %s on %s", ch.Op, ch.Table)
	}
	return c, nil
}

// values copies a row image; the kinds use the same letters.
func values(in []Value) []wal.Value {
	if in == nil {
		return nil
	}
	out := make([]wal.Value, len(in))
	for i, v := range in {
		out[i] = wal.Value{Kind: v.Kind, Text: v.Text}
	}
	return out
}

func (s *Source) purgeLoop(ctx context.Context) error {
	purged := s.cfg.Applied
	t := time.NewTicker(s.cfg.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.kick:
		case <-t.C:
		}
		applied := s.committed.Load()
		if applied > purged {
			if _, err := s.capt.Purge(ctx, applied); err != nil {
				return err
			}
			purged = applied
		} else if err := s.capt.UpdateMetrics(ctx, applied, false); err != nil {
			return err
		}
	}
}
