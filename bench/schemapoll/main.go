// Command schemapoll measures what the stream's schema-change detection
// costs on the source: one catalog poll (schemachange.ReadCatalog in a
// REPEATABLE READ transaction, what `stream` runs every --schema-poll and
// before each trigger-capture batch) beside the obvious alternative, a
// schema-only pg_dump of the same database diffed between runs, on a
// schema of -tables tables (5 columns, a primary key and one more index
// each, every fifth partitioned in four). Runs alternate A B B A; the
// median of the pairs' ratios is printed with the machine's load. The
// fingerprint, which is all a poll reads while nothing changed, and its
// rows part, which is what trigger capture reads before each batch, are
// each timed beside the previous fingerprint (which every batch read),
// A B B A as well.
//
//	go run ./bench/schemapoll -tables 1000 -pairs 10
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/bench/benchkit"
	"replicator/internal/testenv"
	"replicator/pkg/schemachange"
)

func main() {
	tables := flag.Int("tables", 1000, "tables in the captured schema")
	pairs := flag.Int("pairs", 10, "A B B A rounds (each gives two ratios)")
	flag.Parse()
	if err := run(*tables, *pairs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(tables, pairs int) error {
	ctx := context.Background()
	pg, err := testenv.StartPostgres(testenv.PostgresOptions{})
	if err != nil {
		return err
	}
	defer pg.Close()
	url := pg.URL("postgres")
	var ddl strings.Builder
	for i := range tables {
		if i%5 == 0 {
			fmt.Fprintf(&ddl, "CREATE TABLE t%d (id bigint, k int NOT NULL, a text DEFAULT 'x', b numeric(10,2), c timestamptz DEFAULT now(), PRIMARY KEY (id, k)) PARTITION BY RANGE (k);", i)
			for p := range 4 {
				fmt.Fprintf(&ddl, "CREATE TABLE t%d_%d PARTITION OF t%d FOR VALUES FROM (%d) TO (%d);", i, p, i, p*100, (p+1)*100)
			}
		} else {
			fmt.Fprintf(&ddl, "CREATE TABLE t%d (id bigserial PRIMARY KEY, k int NOT NULL, a text DEFAULT 'x', b numeric(10,2), c timestamptz DEFAULT now());", i)
		}
		fmt.Fprintf(&ddl, "CREATE INDEX t%d_k ON t%d (k);", i, i)
	}
	if err := benchkit.Exec(ctx, url, ddl.String()); err != nil {
		return err
	}
	bin, err := testenv.PostgresBinDir()
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	poll := func() (time.Duration, error) {
		began := time.Now()
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			c, err := schemachange.ReadCatalog(ctx, tx)
			if err == nil && len(c.Tables) == 0 {
				err = fmt.Errorf("no table read")
			}
			return err
		})
		return time.Since(began), err
	}
	dump := func() (time.Duration, error) {
		began := time.Now()
		out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--schema-only", url).Output()
		if err == nil && len(out) == 0 {
			err = fmt.Errorf("empty dump")
		}
		return time.Since(began), err
	}
	fingerprint := func(rowsOnly bool) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			began := time.Now()
			err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
				_, err := schemachange.Fingerprint(ctx, tx, rowsOnly)
				return err
			})
			return time.Since(began), err
		}
	}
	previous := func() (time.Duration, error) {
		began := time.Now()
		var fp string
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, previousFingerprintSQL).Scan(&fp)
		})
		return time.Since(began), err
	}
	batch, prevs, batchRatios, err := abba(pairs, fingerprint(true), previous)
	if err != nil {
		return err
	}
	fps, _, fpRatios, err := abba(pairs, fingerprint(false), previous)
	if err != nil {
		return err
	}
	polls, dumps, ratios, err := abba(pairs, poll, dump)
	if err != nil {
		return err
	}
	fmt.Printf("tables %d (+%d partitions), %d pairs A B B A, load %s\n", tables, tables/5*4, pairs, benchkit.LoadAvg())
	fmt.Printf("catalog poll: median %s (min %s, max %s)\n", polls[len(polls)/2].Round(time.Millisecond), polls[0].Round(time.Millisecond), polls[len(polls)-1].Round(time.Millisecond))
	fmt.Printf("pg_dump -s:   median %s (min %s, max %s)\n", dumps[len(dumps)/2].Round(time.Millisecond), dumps[0].Round(time.Millisecond), dumps[len(dumps)-1].Round(time.Millisecond))
	fmt.Printf("median ratio poll / pg_dump: %.3f\n", ratios[len(ratios)/2])
	show := func(what string, ds []time.Duration) {
		fmt.Printf("%-52s median %s (min %s, max %s)\n", what, ds[len(ds)/2].Round(100*time.Microsecond),
			ds[0].Round(100*time.Microsecond), ds[len(ds)-1].Round(100*time.Microsecond))
	}
	show("batch check (rows part of the fingerprint):", batch)
	show("interval poll that finds nothing (whole fingerprint):", fps)
	show("previous fingerprint (what every batch read):", prevs)
	fmt.Printf("median ratio batch check / previous: %.3f\n", batchRatios[len(batchRatios)/2])
	fmt.Printf("median ratio whole fingerprint / previous: %.3f\n", fpRatios[len(fpRatios)/2])
	fmt.Printf("load at the end: %s\n", benchkit.LoadAvg())
	return nil
}

// abba runs a and b in pairs A B B A and returns each one's durations
// sorted and the sorted ratios a/b of the pairs.
func abba(pairs int, a, b func() (time.Duration, error)) (as, bs []time.Duration, ratios []float64, err error) {
	for range pairs {
		var d [4]time.Duration
		for i, f := range []func() (time.Duration, error){a, b, b, a} {
			if d[i], err = f(); err != nil {
				return nil, nil, nil, err
			}
		}
		as, bs = append(as, d[0], d[3]), append(bs, d[1], d[2])
		ratios = append(ratios, float64(d[0])/float64(d[1]), float64(d[3])/float64(d[2]))
	}
	sort.Slice(as, func(i, j int) bool { return as[i] < as[j] })
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	sort.Float64s(ratios)
	return as, bs, ratios, nil
}

// previousFingerprintSQL is the fingerprint as it was before it covered
// types, functions, views and sequences and skipped built-in rows: the
// same sums over whole catalogs.
const previousFingerprintSQL = `SELECT concat_ws(':',
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_class),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attribute),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_attrdef),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_index),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_inherits),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_constraint),
	(SELECT count(*) || '/' || coalesce(sum(xmin::text::bigint), 0) FROM pg_namespace))`
