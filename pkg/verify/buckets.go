package verify

import (
	"context"
	"fmt"
	"math/big"
	"math/bits"
	"sort"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// Hash-bucket mode: for tables without a primary key, and for large keyed
// tables whose key ranges cannot use the index (text keys under a non-C
// collation) or, with a composite key, lie scattered on disk (where each
// range would read blocks from all over the table). Each side is read once
// by a parallel query; every row falls into a bucket by the hash of its key
// (or of the whole row), and bucket counts and sums come back per bucket.
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

// parallelScanSQL lets one query read a whole table with workers: a
// parallel sequential scan, each worker grouping its share of the rows
// (partial hash aggregation) and the leader adding up the groups. Unlike
// ranges of blocks read by separate sessions, a sequential scan goes
// through a small ring of buffers, so it neither evicts the servers' cache
// nor makes each session fault in shared memory page by page, and the
// workers share out the blocks as they go.
func parallelScanSQL(jobs int) string {
	return fmt.Sprintf("SET LOCAL max_parallel_workers_per_gather = %d; SET LOCAL parallel_setup_cost = 0; "+
		"SET LOCAL parallel_tuple_cost = 0; SET LOCAL min_parallel_table_scan_size = 0", jobs-1)
}

// scanGroups reads the table once per side, both sides at once, each with
// a parallel query of Jobs processes, and adds up the count and hash sum
// of each group (group is an SQL expression giving a row's group number).
// Where the server has no parallel workers to spare, its side is read by
// one process.
func (c *comparer) scanGroups(ctx context.Context, t *tableRun, group string, args []any) ([2]map[int64]*bucketAgg, error) {
	aggs := [2]map[int64]*bucketAgg{{}, {}}
	q := fmt.Sprintf(`SELECT g, count(*), sum(h)::text FROM (SELECT %s AS g, %s AS h FROM %s) s GROUP BY g`,
		group, rowHash(t.p.cols), t.from)
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range []*side{c.src, c.tgt} {
		g.Go(func() error {
			err := pgx.BeginTxFunc(gctx, s.pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				if _, err := tx.Exec(gctx, parallelScanSQL(c.cfg.Jobs)); err != nil {
					return err
				}
				rows, err := tx.Query(gctx, q, args...)
				if err != nil {
					return err
				}
				defer rows.Close()
				var b, n int64
				var sum string
				for rows.Next() {
					if err := rows.Scan(&b, &n, &sum); err != nil {
						return err
					}
					a := &bucketAgg{count: n}
					if _, ok := a.sum.SetString(sum, 10); !ok {
						return fmt.Errorf("unexpected sum %q", sum)
					}
					aggs[i][b] = a
				}
				return rows.Err()
			})
			if err != nil {
				return fmt.Errorf("checksum %s on the %s: %w", t.name, s.name, err)
			}
			return nil
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
	c.metrics.mismatched(len(mismatched))
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
