package verify

import (
	"context"
	"fmt"
	"math/big"
	"math/bits"
	"sort"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Hash-bucket mode: for tables without a primary key, and for large keyed
// tables whose key ranges cannot use the index (text keys under a non-C
// collation) or, with a composite key, lie scattered on disk (where each
// range would read blocks from all over the table). Each side is read once, split into ctid block
// ranges read in parallel; every row falls into a bucket by the hash of its
// key (or of the whole row), and bucket counts and sums are added up here.
// Only the rows of mismatched buckets are fetched again and compared.

// bucketAgg is one bucket's count and hash sum on one side.
type bucketAgg struct {
	count int64
	sum   big.Int
}

// bucketCount sizes buckets at about half of LeafRows rows each, a power of
// two, at most 1<<16 (the sums held here).
func (c *comparer) bucketCount(est int64) int64 {
	want := est / max(c.cfg.LeafRows/2, 1)
	if want <= 1 {
		return 1
	}
	n := int64(1) << bits.Len64(uint64(want-1))
	return min(n, 1<<16)
}

// bucketExpr returns the SQL of a row's bucket: the hash of its key, or of
// the whole row when there is no key.
func (t *tableRun) bucketExpr() string {
	cols := t.p.cols
	if t.key != nil {
		cols = t.key
	}
	return fmt.Sprintf("(%s & %d)", rowHash(cols), t.buckets-1)
}

// blockRanges splits a side's table into about n ctid ranges. Servers
// before 14 have no TID range scan: one range then.
func blockRanges(s *side, pages int64, n int64) []string {
	if n <= 1 || pages <= 1 || s.version < 140000 {
		return []string{"true"}
	}
	step := max(pages/n, 1)
	var out []string
	for lo := int64(0); lo < pages; lo += step {
		switch {
		case lo == 0:
			out = append(out, fmt.Sprintf("ctid < '(%d,0)'::tid", step))
		case lo+step >= pages:
			out = append(out, fmt.Sprintf("ctid >= '(%d,0)'::tid", lo))
		default:
			out = append(out, fmt.Sprintf("ctid >= '(%d,0)'::tid AND ctid < '(%d,0)'::tid", lo, lo+step))
		}
	}
	if len(out) == 1 {
		return []string{"true"}
	}
	return out
}

// pieceRows is about how many rows one query of a first pass reads: pieces
// this large make the planning and start-up of a query negligible, and are
// still small enough to spread a large table over all jobs.
const pieceRows = 1_000_000

// scanGroups reads the table once per side, split into ctid block ranges
// read in parallel, and adds up the count and hash sum of each group
// (group is an SQL expression giving a row's group number).
func (c *comparer) scanGroups(ctx context.Context, t *tableRun, group string, args []any) ([2]map[int64]*bucketAgg, error) {
	est := max(t.p.src.estRows(), t.p.tgt.estRows())
	pieces := max(est/pieceRows, 2*int64(c.cfg.Jobs))
	aggs := [2]map[int64]*bucketAgg{{}, {}}
	var mu sync.Mutex
	rowHash := rowHash(t.p.cols)
	// scan reads one piece of side i, adding its groups to aggs[i].
	scan := func(ctx context.Context, i int, s *side, where string) error {
		// OFFSET 0 keeps the subquery whole, so rows are hashed before
		// they are grouped: otherwise the planner may sort whole rows
		// (spilling to disk) to group a small range.
		q := fmt.Sprintf(`SELECT g, count(*), sum(h)::text FROM (SELECT %s AS g, %s AS h FROM %s WHERE %s OFFSET 0) s GROUP BY g`,
			group, rowHash, t.from, where)
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("checksum %s on the %s: %w", t.name, s.name, err)
		}
		defer rows.Close()
		var b, n int64
		var sum string
		for rows.Next() {
			if err := rows.Scan(&b, &n, &sum); err != nil {
				return fmt.Errorf("checksum %s on the %s: %w", t.name, s.name, err)
			}
			v, ok := new(big.Int).SetString(sum, 10)
			if !ok {
				return fmt.Errorf("checksum %s on the %s: unexpected sum %q", t.name, s.name, sum)
			}
			mu.Lock()
			a := aggs[i][b]
			if a == nil {
				a = &bucketAgg{}
				aggs[i][b] = a
			}
			a.count += n
			a.sum.Add(&a.sum, v)
			mu.Unlock()
		}
		return rows.Err()
	}
	// Each side reads Jobs pieces at a time, both sides at once: on
	// separate servers the comparison takes as long as the slower side.
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range []*side{c.src, c.tgt} {
		rel := t.p.src
		if s == c.tgt {
			rel = t.p.tgt
		}
		g.Go(func() error {
			sg, sctx := errgroup.WithContext(gctx)
			sg.SetLimit(c.cfg.Jobs)
			for _, where := range blockRanges(s, rel.pages, pieces) {
				sg.Go(func() error { return scan(sctx, i, s, where) })
			}
			return sg.Wait()
		})
	}
	return aggs, g.Wait()
}

// same reports whether two groups (nil: empty) agree.
func same(a, b *bucketAgg) bool {
	if a == nil {
		a = &bucketAgg{}
	}
	if b == nil {
		b = &bucketAgg{}
	}
	return a.count == b.count && a.sum.Cmp(&b.sum) == 0
}

func (c *comparer) compareBuckets(ctx context.Context, t *tableRun) error {
	est := max(t.p.src.estRows(), t.p.tgt.estRows())
	t.buckets = c.bucketCount(est)
	t.res.Chunks = int(t.buckets)
	bucket := t.bucketExpr()
	aggs, err := c.scanGroups(ctx, t, bucket, nil)
	if err != nil {
		return err
	}
	var mismatched []int64
	var nSrc, nTgt int64
	for b := int64(0); b < t.buckets; b++ {
		if s := aggs[0][b]; s != nil {
			nSrc += s.count
		}
		if d := aggs[1][b]; d != nil {
			nTgt += d.count
		}
		if !same(aggs[0][b], aggs[1][b]) {
			mismatched = append(mismatched, b)
		}
	}
	c.countRows(t, nSrc, nTgt)
	if len(mismatched) == 0 {
		return nil
	}
	for range mismatched {
		t.chunkMismatched()
	}
	c.metrics.chunksMismatched.Add(float64(len(mismatched)))
	return t.probe(ctx, func(ctx context.Context, emit func(RowDiff)) error {
		return c.compareBucketRows(ctx, t, mismatched, emit)
	})
}

// bucketRows is one bucket's rows as one side streams them.
type bucketRows struct {
	bucket int64
	keyed  []keyedRow
	multi  []multisetRow
}

// compareBucketRows streams the rows of the given buckets from both sides,
// ordered by bucket, and compares them one bucket at a time, so memory
// holds one bucket per side.
func (c *comparer) compareBucketRows(ctx context.Context, t *tableRun, buckets []int64, emit func(RowDiff)) error {
	bucket := t.bucketExpr()
	want := make(map[int64]bool, len(buckets))
	for _, b := range buckets {
		want[b] = true
	}
	// An ANY filter is checked per row; past a few hundred buckets reading
	// everything and skipping here is cheaper.
	filter, args := "true", []any(nil)
	if len(buckets) <= 256 {
		filter, args = "b = ANY($1)", []any{buckets}
	}
	var q string
	if t.key != nil {
		q = fmt.Sprintf(`SELECT b, k, h FROM (SELECT %s AS b, ARRAY[%s] AS k, %s AS h FROM %s) s WHERE %s ORDER BY b`,
			bucket, keyTexts(t.key), columnHashes(t.p.cols), t.from, filter)
	} else {
		// Rows without a key are told apart by their 64-bit hash, and
		// shown by their text; copies of a row are counted.
		q = fmt.Sprintf(`SELECT b, h, count(*), min(left(rt, 200)) FROM (SELECT (h & %d) AS b, h, rt
			FROM (SELECT %s AS h, %s AS rt FROM %s) r) s WHERE %s GROUP BY b, h ORDER BY b`,
			t.buckets-1, rowHash(t.p.cols), rowText(t.p.cols), t.from, filter)
	}
	g, gctx := errgroup.WithContext(ctx)
	chans := [2]chan bucketRows{make(chan bucketRows, 1), make(chan bucketRows, 1)}
	for i, s := range []*side{c.src, c.tgt} {
		g.Go(func() error {
			defer close(chans[i])
			err := c.streamBuckets(gctx, s, q, args, t.key != nil, want, chans[i])
			if err != nil {
				return fmt.Errorf("fetch rows of %s on the %s: %w", t.name, s.name, err)
			}
			return nil
		})
	}
	g.Go(func() error {
		a, aok := <-chans[0]
		b, bok := <-chans[1]
		for aok || bok {
			var sa, sb bucketRows
			switch {
			case aok && (!bok || a.bucket < b.bucket):
				sa = a
				a, aok = <-chans[0]
			case bok && (!aok || b.bucket < a.bucket):
				sb = b
				b, bok = <-chans[1]
			default:
				sa, sb = a, b
				a, aok = <-chans[0]
				b, bok = <-chans[1]
			}
			var diffs []RowDiff
			if t.key != nil {
				diffs = diffKeyed(t.key, t.p.cols, sa.keyed, sb.keyed)
			} else {
				diffs = diffMultiset(sa.multi, sb.multi)
				sort.Slice(diffs, func(i, j int) bool { return diffs[i].Row < diffs[j].Row })
			}
			for _, d := range diffs {
				emit(d)
			}
		}
		return nil
	})
	return g.Wait()
}

// streamBuckets sends one side's rows grouped by bucket, skipping buckets
// not wanted.
func (c *comparer) streamBuckets(ctx context.Context, s *side, q string, args []any, keyed bool, want map[int64]bool, out chan<- bucketRows) error {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cur := bucketRows{bucket: -1}
	send := func() error {
		if cur.bucket < 0 {
			return nil
		}
		select {
		case out <- cur:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for rows.Next() {
		var b int64
		var kr keyedRow
		var mr multisetRow
		if keyed {
			err = rows.Scan(&b, &kr.key, &kr.hashes)
		} else {
			err = rows.Scan(&b, &mr.hash, &mr.count, &mr.text)
		}
		if err != nil {
			return err
		}
		if !want[b] {
			continue
		}
		if b != cur.bucket {
			if err := send(); err != nil {
				return err
			}
			cur = bucketRows{bucket: b}
		}
		if keyed {
			cur.keyed = append(cur.keyed, kr)
		} else {
			cur.multi = append(cur.multi, mr)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return send()
}
