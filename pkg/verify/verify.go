package verify

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// comparer holds what one verification run shares.
type comparer struct {
	cfg      Config
	src, tgt *side
	log      *zap.Logger
	metrics  *Metrics // nil: none
}

// probe re-runs one row-level comparison (a leaf key range or a set of
// buckets), emitting each differing row.
type probe func(ctx context.Context, emit func(RowDiff)) error

// tableRun is one table's comparison in progress.
type tableRun struct {
	p       *pair
	name    string // schema.name quoted as SQL needs it
	from    string // ONLY schema.name: a partition or inheritance parent's own rows
	key     []column
	buckets int64
	res     TableResult

	mu     sync.Mutex
	probes []probe
	diffs  []RowDiff // up to keepDiffs
	total  int64     // all differing rows found
	keep   int
}

func (t *tableRun) chunkMismatched() {
	t.mu.Lock()
	t.res.Mismatched++
	t.mu.Unlock()
}

func (c *comparer) countRows(t *tableRun, src, tgt int64) {
	t.mu.Lock()
	t.res.SourceRows += src
	t.res.TargetRows += tgt
	t.mu.Unlock()
	c.metrics.rowsRead(src, tgt)
}

// probe runs fn and remembers it when it found differences, so that they
// can be re-checked while a stream is running.
func (t *tableRun) probe(ctx context.Context, fn probe) error {
	found := false
	err := fn(ctx, func(d RowDiff) {
		found = true
		t.mu.Lock()
		t.total++
		if len(t.diffs) < t.keep {
			t.diffs = append(t.diffs, d)
		}
		t.mu.Unlock()
	})
	if found {
		t.mu.Lock()
		t.probes = append(t.probes, fn)
		t.mu.Unlock()
	}
	return err
}

// Run compares source and target as configured. Differences are in the
// report, not an error; the error is for what kept the comparison from
// finishing (connection, permissions, bad settings).
func Run(ctx context.Context, cfg Config, log *zap.Logger) (_ *Report, err error) {
	defer func() { err = withRetryHint(err) }()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = zap.NewNop()
	}
	started := time.Now()
	c := &comparer{cfg: cfg, log: log, metrics: cfg.Metrics}
	if c.src, err = openSide(ctx, cfg.Source, "source", cfg.Jobs+1); err != nil {
		return nil, err
	}
	defer c.src.pool.Close()
	if c.tgt, err = openSide(ctx, cfg.Target, "target", cfg.Jobs+1); err != nil {
		return nil, err
	}
	defer c.tgt.pool.Close()
	rep := &Report{Source: c.src.where, Target: c.tgt.where, StartedAt: started.UTC()}

	st, err := streamState(ctx, c.tgt)
	if err != nil {
		return nil, err
	}
	live := st != nil
	if live {
		if slot, running := streamRunning(ctx, c.src, st); !running {
			// Nothing moves the target: waiting for it would only run out
			// the timeout, and whatever differs now does differ.
			live = false
			rep.Consistent = fmt.Sprintf("no stream is running (replication slot %s is not in use): the target was compared as it stands, so changes made on the source since its last applied position show as differences", slot)
			log.Warn("no stream is running: comparing the target as it stands", zap.String("slot", slot))
		}
	}
	if live && cfg.WaitTimeout > 0 {
		if rep.Consistent, err = waitApplied(ctx, c.src, c.tgt, cfg.WaitTimeout, log); err != nil {
			return nil, err
		}
	} else if live {
		rep.Consistent = "a stream feeds the target; differences were re-checked"
	}
	if live && st.SnapshotStatus != state.SnapshotDone {
		rep.Consistent += "; the snapshot is not finished (" + st.SnapshotStatus + "), so tables still being copied differ"
	}
	rep.Position = "no stream: the target as it stands"
	if st != nil {
		// What the target held when the comparison began (after the wait).
		if now, err := streamState(ctx, c.tgt); err == nil && now != nil {
			rep.Position = "target had applied " + now.Applied.String() + " when the comparison began"
		}
	}

	var srcRels, tgtRels map[string]*relation
	var srcSeqs, tgtSeqs map[string]sequence
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { srcRels, err = loadRelations(gctx, c.src); return })
	g.Go(func() (err error) { tgtRels, err = loadRelations(gctx, c.tgt); return })
	g.Go(func() (err error) { srcSeqs, err = loadSequences(gctx, c.src); return })
	g.Go(func() (err error) { tgtSeqs, err = loadSequences(gctx, c.tgt); return })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	pairs, onlySrc, onlyTgt := pairTables(srcRels, tgtRels, cfg.Tables)
	if len(cfg.Tables) > 0 && len(pairs)+len(onlySrc)+len(onlyTgt) == 0 {
		return nil, fmt.Errorf("verify: no table matches --tables %s: list tables as schema.name or name, wildcards * and ? allowed", strings.Join(cfg.Tables, ","))
	}

	var runs []*tableRun
	for _, p := range pairs {
		t := &tableRun{p: p, name: pgutil.QualifiedName(p.src.schema, p.src.name), keep: 10 * cfg.MaxRowsReported}
		t.from = "ONLY " + t.name
		t.key = p.keyColumns()
		t.res = TableResult{Table: displayName(p.src.schema, p.src.name), Problems: p.problems}
		runs = append(runs, t)
	}
	var srcLog, tgtLog *touchedLog
	if cfg.Touched {
		if srcLog, err = readTouchedLog(ctx, c.src); err != nil {
			return nil, err
		}
		if tgtLog, err = readTouchedLog(ctx, c.tgt); err != nil {
			return nil, err
		}
		if !srcLog.present || !tgtLog.present {
			return nil, ErrNoTouchedLog
		}
		rep.Touched = true
	}
	// Tables one at a time, each with all jobs: a big table's chunks keep
	// every job busy, and a small one finishes quickly.
	for _, t := range runs {
		compare := c.compareTable
		if cfg.Touched {
			compare = func(ctx context.Context, t *tableRun) error { return c.compareTouched(ctx, t, srcLog, tgtLog) }
		}
		if err := compare(ctx, t); err != nil {
			return nil, err
		}
	}
	if live && cfg.Rechecks > 0 {
		if err := c.recheck(ctx, runs); err != nil {
			return nil, err
		}
	}
	if cfg.InFlightLogged {
		if err := c.setAsideLogged(ctx, runs, rep); err != nil {
			return nil, err
		}
	}
	for _, t := range runs {
		rep.Tables = append(rep.Tables, t.finish(cfg.MaxRowsReported, live))
	}
	for _, q := range onlySrc {
		r := srcRels[q]
		rep.Tables = append(rep.Tables, TableResult{Table: displayName(r.schema, r.name), Mode: "-",
			Problems: []string{"table is missing on the target"}})
	}
	for _, q := range onlyTgt {
		r := tgtRels[q]
		rep.Tables = append(rep.Tables, TableResult{Table: displayName(r.schema, r.name), Mode: "-",
			Problems: []string{"table exists only on the target"}})
	}
	sort.SliceStable(rep.Tables, func(i, j int) bool { return rep.Tables[i].Table < rep.Tables[j].Table })
	rep.Sequences = compareSequences(srcSeqs, tgtSeqs, cfg.Tables)
	for _, t := range rep.Tables {
		rep.TablesChecked++
		if t.Identical {
			rep.TablesIdentical++
		} else {
			rep.TablesDifferent++
		}
		rep.SourceRows += t.SourceRows
		rep.TargetRows += t.TargetRows
		rep.RowsCompared += t.RowsCompared
		if t.Whole {
			rep.TablesWhole++
		}
		for _, n := range t.Differences {
			rep.RowsDiffering += n
		}
	}
	for _, s := range rep.Sequences {
		if s.Behind {
			rep.SequencesBehind++
		}
	}
	rep.SequencesFinal = cutoverMovedSequences(ctx, c.tgt)
	if len(cfg.Tables) == 0 {
		if rep.LargeObjects, err = compareLargeObjects(ctx, c.src, c.tgt); err != nil {
			return nil, err
		}
	}
	if rep.MaterializedViews, err = compareMatViews(ctx, c.src, c.tgt, cfg.Tables); err != nil {
		return nil, err
	}
	var counts schemaCounts
	if rep.Schema, counts, err = c.schemaDifferences(ctx, live); err != nil {
		return nil, err
	}
	rep.SchemaTables, rep.SchemaObjects, rep.ObjectsSkipped = counts.tables, counts.objects, len(cfg.Tables) > 0
	rep.Duration = time.Since(started)
	rep.Seconds = rep.Duration.Seconds()
	log.Info("verify finished", zap.Int("tables", rep.TablesChecked), zap.Int("different", rep.TablesDifferent),
		zap.Int64("rows_differing", rep.RowsDiffering), zap.Duration("took", rep.Duration))
	return rep, nil
}

// compareTable picks the mode and runs it.
func (c *comparer) compareTable(ctx context.Context, t *tableRun) error {
	start := time.Now()
	defer func() { t.res.SecondsChecking = math.Round(time.Since(start).Seconds()*10) / 10 }()
	if t.key == nil {
		t.res.Mode = "multiset"
		return c.compareBuckets(ctx, t)
	}
	names := make([]string, len(t.key))
	for i, k := range t.key {
		names[i] = quoteIfNeeded(k.name)
	}
	t.res.Key = strings.Join(names, ", ")
	if c.scattered(ctx, t) {
		t.res.Mode = "hash buckets"
		return c.compareBuckets(ctx, t)
	}
	t.res.Mode = "key ranges"
	return c.compareRanges(ctx, t)
}

// scattered reports whether key ranges would be slow on this table: it is
// large and either its key cannot use the index in byte order (text keys
// under a non-C collation: every bisection step would read the whole
// table) or, for a composite key whose ranges are each an index scan, its
// rows are not laid out in key order, so every range would read blocks
// from all over the table.
func (c *comparer) scattered(ctx context.Context, t *tableRun) bool {
	if t.p.src.estRows() < 4*c.cfg.ChunkRows {
		return false
	}
	for _, k := range t.key {
		if k.collatable && !k.cCollated {
			return true
		}
	}
	if len(t.key) == 1 {
		return false // first pass is sequential; only bisection uses the index
	}
	if err := loadCorrelation(ctx, c.src, t.p.src); err != nil {
		c.log.Debug("no key statistics; assuming key order", zap.String("table", t.name), zap.Error(err))
		return false
	}
	return t.p.src.correlation != nil && math.Abs(*t.p.src.correlation) < 0.5
}

// finish turns the run into its result.
func (t *tableRun) finish(show int, live bool) TableResult {
	r := t.res
	sort.SliceStable(t.diffs, func(i, j int) bool {
		if t.diffs[i].Key != t.diffs[j].Key {
			return t.diffs[i].Key < t.diffs[j].Key
		}
		return t.diffs[i].Row < t.diffs[j].Row
	})
	if t.total > 0 {
		r.Differences = map[string]int64{}
		counted := int64(0)
		for _, d := range t.diffs {
			n := max(d.Count, 1)
			r.Differences[d.Kind] += n
			counted++
		}
		if rest := t.total - counted; rest > 0 {
			r.Differences["not listed"] += rest
		}
	}
	if len(t.diffs) > show {
		r.Rows = t.diffs[:show]
	} else {
		r.Rows = t.diffs
	}
	r.RowsNotListed = t.total - int64(len(r.Rows))
	if t.total == 0 && r.SourceRows != r.TargetRows && !live {
		// Cannot happen when both sides hold still: a count difference
		// is always located as missing or extra rows. Say so rather
		// than call the table identical.
		r.Problems = append(r.Problems, fmt.Sprintf("row counts differ (%d on source, %d on target) but no differing row was located: was a database written during the comparison?", r.SourceRows, r.TargetRows))
	}
	// Chunks that differed while rows compared equal (or stopped differing
	// when re-checked) were changes in flight.
	r.Identical = t.total == 0 && len(r.Problems) == 0
	return r
}

// recheck re-runs the row comparisons that found differences, after a
// pause (and after the target applied the source's position again), and
// keeps only the differences found every time: a row in flight is not a
// difference.
func (c *comparer) recheck(ctx context.Context, runs []*tableRun) error {
	for round := 0; round < c.cfg.Rechecks; round++ {
		pending := false
		for _, t := range runs {
			pending = pending || len(t.probes) > 0
		}
		if !pending {
			return nil
		}
		c.log.Debug("differences found while a stream runs: re-checking them after a pause",
			zap.Int("round", round+1), zap.Duration("pause", c.cfg.RecheckDelay))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(c.cfg.RecheckDelay):
		}
		if c.cfg.WaitTimeout > 0 {
			if _, err := waitApplied(ctx, c.src, c.tgt, c.cfg.WaitTimeout, c.log); err != nil {
				return err
			}
		}
		for _, t := range runs {
			if len(t.probes) == 0 || t.total > int64(t.keep) {
				continue // too many to be rows in flight; keep them
			}
			now := map[string]RowDiff{}
			var keep []probe
			for _, p := range t.probes {
				found := false
				if err := p(ctx, func(d RowDiff) { now[d.identity()] = d; found = true }); err != nil {
					return err
				}
				if found {
					keep = append(keep, p)
				}
			}
			var still []RowDiff
			for _, d := range t.diffs {
				if n, ok := now[d.identity()]; ok {
					still = append(still, n)
				}
			}
			c.log.Info("re-checked differences", zap.String("table", t.name), zap.Int("before", len(t.diffs)), zap.Int("persisting", len(still)))
			t.diffs, t.total, t.probes = still, int64(len(still)), keep
		}
	}
	return nil
}

// compareSequences reports each sequence's position; a target behind the
// source (or missing) is a difference.
func compareSequences(src, tgt map[string]sequence, patterns []string) []SequenceResult {
	var out []SequenceResult
	for name, s := range src {
		if !matches(patterns, s.schema, s.rel, "") {
			continue
		}
		r := SequenceResult{Sequence: name, Source: s.value}
		t, ok := tgt[name]
		switch {
		case !ok:
			r.Behind, r.Problem = true, "missing on the target"
		default:
			r.Target = t.value
			// A sequence counting down is behind when it is greater.
			if s.value != nil && (t.value == nil || (!s.descending && *t.value < *s.value) || (s.descending && *t.value > *s.value)) {
				r.Behind = true
			}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sequence < out[j].Sequence })
	return out
}

// displayName shows schema.name quoted only where SQL needs it.
func displayName(schema, name string) string {
	return quoteIfNeeded(schema) + "." + quoteIfNeeded(name)
}
