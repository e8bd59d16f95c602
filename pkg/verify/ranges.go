package verify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Key-range mode: chunks are primary-key ranges planned on the source,
// checksummed on both sides at once, and bisected by key when they differ.

// planRanges cuts the key space into ranges of about ChunkRows rows, from
// the quantiles of a block sample of the source's keys. Only the boundaries
// reach this process; the sample is sorted by the server.
func (c *comparer) planRanges(ctx context.Context, t *tableRun) ([]keyRange, error) {
	est := t.p.src.estRows()
	// At most 1024 ranges: width_bucket walks its array of bounds for
	// variable-width keys, and every range is a group of the first pass.
	chunks := min(est/c.cfg.ChunkRows, 1024)
	if chunks < 2 {
		return []keyRange{{}}, nil
	}
	// Rows of a block are neighbours in key order on the tables this mode
	// is used for, so a block sample needs many blocks per chunk, not just
	// many rows: otherwise the boundaries clump together and chunks come
	// out uneven. At most ~1M keys are sampled (sorted by the server).
	pages := max(t.p.src.pages, 1)
	pct := 100 * max(float64(chunks*20)/float64(est), float64(chunks*4)/float64(pages))
	pct = math.Min(pct, 100*1e6/float64(est))
	pct = math.Min(pct, 100)
	step := max(int64(float64(est)*pct/100)/chunks, 1)
	q := fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS rn
		FROM %s TABLESAMPLE SYSTEM (%g)) s WHERE rn %% %d = 0 ORDER BY rn`,
		strings.Join(kNames(len(t.key)), ", "), aliasedKeyTexts(t.key), strings.Join(keyExprs(t.key), ", "), t.from, pct, step)
	bounds, err := c.keyList(ctx, c.src, q, nil, len(t.key))
	if err != nil {
		return nil, fmt.Errorf("plan chunks of %s on the source: %w", t.name, err)
	}
	return rangesBetween(bounds), nil
}

func kNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("k%d", i)
	}
	return out
}

func aliasedKeyTexts(key []column) string {
	parts := strings.Split(keyTexts(key), ", ")
	for i := range parts {
		parts[i] += fmt.Sprintf(" AS k%d", i)
	}
	return strings.Join(parts, ", ")
}

// rangesBetween turns sorted boundaries into ranges covering all keys:
// range i ends where range i+1 starts.
func rangesBetween(bounds [][]string) []keyRange {
	out := make([]keyRange, 0, len(bounds)+1)
	var lo []string
	for _, b := range bounds {
		out = append(out, keyRange{lo: lo, hi: b})
		lo = b
	}
	return append(out, keyRange{lo: lo})
}

func (c *comparer) keyList(ctx context.Context, s *side, q string, args []any, n int) ([][]string, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		k := make([]string, n)
		ptrs := make([]any, n)
		for i := range k {
			ptrs[i] = &k[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// summary is a chunk's count and hash sum on one side.
type summary struct {
	count int64
	sum   string // numeric, as text
}

func (c *comparer) rangeSummary(ctx context.Context, s *side, t *tableRun, r keyRange) (summary, error) {
	var args []any
	q := fmt.Sprintf(`SELECT count(*), coalesce(sum(%s), 0)::text FROM %s WHERE %s`,
		rowHash(t.p.cols), t.from, r.where(t.key, &args))
	var out summary
	if err := s.pool.QueryRow(ctx, q, args...).Scan(&out.count, &out.sum); err != nil {
		return out, fmt.Errorf("checksum %s on the %s: %w", t.name, s.name, err)
	}
	return out, nil
}

// bothSummaries checksums one range on both sides at the same time.
func (c *comparer) bothSummaries(ctx context.Context, t *tableRun, r keyRange) (src, tgt summary, err error) {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { src, err = c.rangeSummary(gctx, c.src, t, r); return })
	g.Go(func() (err error) { tgt, err = c.rangeSummary(gctx, c.tgt, t, r); return })
	err = g.Wait()
	return
}

// compareRanges runs the key-range comparison of one table.
func (c *comparer) compareRanges(ctx context.Context, t *tableRun) error {
	start := time.Now()
	ranges, err := c.planRanges(ctx, t)
	if err != nil {
		return err
	}
	c.log.Debug("planned key ranges", zap.String("table", t.name), zap.Int("ranges", len(ranges)), zap.Duration("took", time.Since(start)))
	t.res.Chunks = len(ranges)
	if len(t.key) == 1 && len(ranges) > 1 {
		err := c.compareRangesByScan(ctx, t, ranges)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !pgerrcode.IsSyntaxErrororAccessRuleViolation(pgErr.Code) || t.res.SourceRows+t.res.TargetRows > 0 {
			return err
		}
		// The key type cannot go through width_bucket (no array cast
		// from text, say): checksum range by range instead.
		c.log.Debug("first pass by width_bucket not possible; scanning range by range", zap.String("table", t.name), zap.Error(err))
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Jobs)
	for _, r := range ranges {
		g.Go(func() error {
			s, d, err := c.bothSummaries(gctx, t, r)
			if err != nil {
				return err
			}
			c.countRows(t, s.count, d.count)
			if s == d {
				return nil
			}
			t.chunkMismatched()
			c.metrics.mismatched(1)
			return c.bisect(gctx, t, r, s.count, d.count, 0)
		})
	}
	return g.Wait()
}

// compareRangesByScan checksums all key ranges of a table with a
// single-column key in one parallel sequential read per side, placing each
// row in its range with width_bucket: a sequential
// scan is several times cheaper per row than one index range scan per
// chunk. Only mismatched ranges are then bisected through the index.
func (c *comparer) compareRangesByScan(ctx context.Context, t *tableRun, ranges []keyRange) error {
	bounds := make([]string, 0, len(ranges)-1)
	for _, r := range ranges[1:] {
		bounds = append(bounds, r.lo[0])
	}
	// width_bucket(k, bounds) is the number of bounds <= k: the index of
	// the half-open range [lo, hi) holding k.
	group := fmt.Sprintf("width_bucket(%s, $1::text[]::%s[])", keyExprs(t.key)[0], t.key[0].typ)
	args := []any{bounds}
	rangeOf := func(g int64) keyRange { return ranges[g] }
	grid, gridOK := keyGrid(t.key[0], bounds)
	if gridOK {
		group, args, rangeOf = grid.expr(t.key[0]), nil, grid.rangeOf
	}
	start := time.Now()
	aggs, err := c.scanGroups(ctx, t, group, args)
	if err != nil {
		return err
	}
	c.log.Debug("first pass", zap.String("table", t.name), zap.Duration("took", time.Since(start)))
	groups := make([]int64, len(ranges))
	for i := range groups {
		groups[i] = int64(i)
	}
	if gridOK { // the cells holding rows on either side
		groups = groups[:0]
		for i := range aggs {
			for g := range aggs[i] {
				if i == 0 || aggs[0][g] == nil {
					groups = append(groups, g)
				}
			}
		}
		slices.Sort(groups)
		t.res.Chunks = len(groups)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Jobs)
	for _, i := range groups {
		r := rangeOf(i)
		s, d := aggs[0][i], aggs[1][i]
		var ns, nd int64
		if s != nil {
			ns = s.count
		}
		if d != nil {
			nd = d.count
		}
		c.countRows(t, ns, nd)
		if same(s, d) {
			continue
		}
		t.chunkMismatched()
		c.metrics.mismatched(1)
		g.Go(func() error { return c.bisect(gctx, t, r, ns, nd, 0) })
	}
	return g.Wait()
}

// grid cuts an integer key's values into cells of equal width by
// truncated division: cell g holds the keys k with k / width = g, so cell 0
// holds -(width-1) .. width-1 and every other cell width values.
type grid struct {
	width    int64
	min, max int64 // the key type's range
}

// keyGrid returns a grid for an integer key whose planned bounds show its
// values spread evenly enough that no cell holds more than four planned
// ranges' rows (serial keys, even with gaps), with as many cells between
// the first and the last bound as there are planned ranges. A row's cell is
// then one division, where width_bucket's binary search through the bounds
// made the first pass about 15% more expensive. bounds are the planned
// ranges' lower bounds but the first's (which has none), in order.
func keyGrid(key column, bounds []string) (grid, bool) {
	gr := grid{min: math.MinInt64, max: math.MaxInt64}
	switch {
	case !key.sameType || len(bounds) < 2:
		return gr, false
	case key.typOID == 21: // smallint
		gr.min, gr.max = math.MinInt16, math.MaxInt16
	case key.typOID == 23: // integer
		gr.min, gr.max = math.MinInt32, math.MaxInt32
	case key.typOID != 20: // bigint
		return gr, false
	}
	first, err1 := strconv.ParseInt(bounds[0], 10, 64)
	last, err2 := strconv.ParseInt(bounds[len(bounds)-1], 10, 64)
	if err1 != nil || err2 != nil || last <= first {
		return gr, false
	}
	inner := int64(len(bounds) - 1)
	span := new(big.Int).Sub(big.NewInt(last), big.NewInt(first))
	w := new(big.Int).Div(new(big.Int).Add(span, big.NewInt(inner-1)), big.NewInt(inner))
	if !w.IsInt64() {
		return gr, false
	}
	gr.width = w.Int64()
	perCell := map[int64]int{}
	for _, b := range bounds {
		v, err := strconv.ParseInt(b, 10, 64)
		if err != nil {
			return gr, false
		}
		if perCell[v/gr.width]++; perCell[v/gr.width] > 4 {
			return gr, false
		}
	}
	return gr, true
}

// expr is the SQL of a row's cell.
func (gr grid) expr(key column) string {
	k := keyExprs([]column{key})[0]
	if key.typOID == 20 || gr.width > math.MaxInt32 {
		return fmt.Sprintf("(%s::int8 / %d)", k, gr.width)
	}
	return fmt.Sprintf("(%s / %d)", k, gr.width) // in int4 arithmetic
}

// rangeOf is cell g as a key range; a bound beyond the key type's range
// is left open.
func (gr grid) rangeOf(g int64) keyRange {
	lo := new(big.Int).Mul(big.NewInt(g), big.NewInt(gr.width))
	hi := new(big.Int).Add(lo, big.NewInt(gr.width))
	switch {
	case g == 0:
		lo.Sub(big.NewInt(1), big.NewInt(gr.width))
	case g < 0:
		hi.Add(lo, big.NewInt(1))
		lo.Sub(hi, big.NewInt(gr.width))
	}
	bound := func(v *big.Int) []string {
		if !v.IsInt64() || v.Int64() <= gr.min || v.Int64() > gr.max {
			return nil
		}
		return []string{v.String()}
	}
	return keyRange{lo: bound(lo), hi: bound(hi)}
}

// bisect narrows a mismatched range down to ranges of at most LeafRows
// rows, whose rows are then compared. Split points come from the side
// holding more rows of the range, so every part is smaller on that side.
func (c *comparer) bisect(ctx context.Context, t *tableRun, r keyRange, nSrc, nTgt int64, depth int) error {
	n, s := nSrc, c.src
	if nTgt > nSrc {
		n, s = nTgt, c.tgt
	}
	if n <= c.cfg.LeafRows || depth >= 8 {
		return t.probe(ctx, func(ctx context.Context, emit func(RowDiff)) error { return c.compareLeaf(ctx, t, r, emit) })
	}
	step := max((n+int64(c.cfg.Fanout)-1)/int64(c.cfg.Fanout), c.cfg.LeafRows)
	// One scan of the larger side both cuts the range into parts of step
	// rows and checksums them; the other side then checksums the same parts.
	filters := make([]string, len(t.key))
	for i := range t.key {
		filters[i] = fmt.Sprintf("min(k%d) FILTER (WHERE (rn - 1) %% %d = 0)", i, step)
	}
	var args []any
	q := fmt.Sprintf(`SELECT (rn - 1) / %d AS part, count(*), coalesce(sum(h), 0)::text, %s
		FROM (SELECT %s, %s AS h, row_number() OVER (ORDER BY %s) AS rn FROM %s WHERE %s) s
		GROUP BY part ORDER BY part`,
		step, strings.Join(filters, ", "), aliasedKeyTexts(t.key), rowHash(t.p.cols),
		strings.Join(keyExprs(t.key), ", "), t.from, r.where(t.key, &args))
	t0 := time.Now()
	var parts []keyRange
	var sums []summary
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("bisect %s on the %s: %w", t.name, s.name, err)
	}
	for rows.Next() {
		var part int64
		var sm summary
		first := make([]*string, len(t.key)) // the part's first key
		dest := []any{&part, &sm.count, &sm.sum}
		for i := range first {
			dest = append(dest, &first[i])
		}
		if err := rows.Scan(dest...); err != nil {
			rows.Close()
			return fmt.Errorf("bisect %s on the %s: %w", t.name, s.name, err)
		}
		p := keyRange{lo: r.lo, hi: r.hi}
		if len(parts) > 0 {
			p.lo = make([]string, len(first))
			for i, v := range first {
				p.lo[i] = *v
			}
			parts[len(parts)-1].hi = p.lo
		}
		parts, sums = append(parts, p), append(sums, sm)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("bisect %s on the %s: %w", t.name, s.name, err)
	}
	if len(parts) == 0 { // the rows went away meanwhile
		parts, sums = []keyRange{r}, []summary{{sum: "0"}}
	}
	other := c.tgt
	if s == c.tgt {
		other = c.src
	}
	others, err := c.multiSummary(ctx, other, t, parts)
	if err != nil {
		return err
	}
	c.log.Debug("bisect", zap.Duration("took", time.Since(t0)), zap.Int64("rows", n), zap.Int("parts", len(parts)))
	src, tgt := sums, others
	if s == c.tgt {
		src, tgt = others, sums
	}
	for i, p := range parts {
		if src[i] != tgt[i] {
			if err := c.bisect(ctx, t, p, src[i].count, tgt[i].count, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// multiSummary checksums several ranges in one round trip: each range is
// its own index range scan, joined with UNION ALL.
func (c *comparer) multiSummary(ctx context.Context, s *side, t *tableRun, parts []keyRange) ([]summary, error) {
	var args []any
	qs := make([]string, len(parts))
	hash := rowHash(t.p.cols)
	for i, p := range parts {
		qs[i] = fmt.Sprintf("SELECT %d AS i, count(*) AS n, coalesce(sum(%s), 0)::text AS s FROM %s WHERE %s",
			i, hash, t.from, p.where(t.key, &args))
	}
	rows, err := s.pool.Query(ctx, strings.Join(qs, " UNION ALL "), args...)
	if err != nil {
		return nil, fmt.Errorf("checksum parts of %s on the %s: %w", t.name, s.name, err)
	}
	defer rows.Close()
	out := make([]summary, len(parts))
	for rows.Next() {
		var i int
		var sm summary
		if err := rows.Scan(&i, &sm.count, &sm.sum); err != nil {
			return nil, fmt.Errorf("checksum parts of %s on the %s: %w", t.name, s.name, err)
		}
		out[i] = sm
	}
	return out, rows.Err()
}

// compareLeaf fetches a small range's rows from both sides (key texts and
// per-column hashes) and compares them.
func (c *comparer) compareLeaf(ctx context.Context, t *tableRun, r keyRange, emit func(RowDiff)) error {
	var src, tgt []keyedRow
	g, gctx := errgroup.WithContext(ctx)
	fetch := func(s *side, out *[]keyedRow) error {
		var args []any
		q := fmt.Sprintf(`SELECT ARRAY[%s], %s FROM %s WHERE %s`,
			keyTexts(t.key), columnHashes(t.p.cols), t.from, r.where(t.key, &args))
		rows, err := s.pool.Query(gctx, q, args...)
		if err != nil {
			return fmt.Errorf("fetch rows of %s on the %s: %w", t.name, s.name, err)
		}
		defer rows.Close()
		for rows.Next() {
			var kr keyedRow
			if err := rows.Scan(&kr.key, &kr.hashes); err != nil {
				return fmt.Errorf("fetch rows of %s on the %s: %w", t.name, s.name, err)
			}
			*out = append(*out, kr)
		}
		return rows.Err()
	}
	g.Go(func() error { return fetch(c.src, &src) })
	g.Go(func() error { return fetch(c.tgt, &tgt) })
	if err := g.Wait(); err != nil {
		return err
	}
	for _, d := range diffKeyed(t.key, t.p.cols, src, tgt) {
		emit(d)
	}
	return nil
}
