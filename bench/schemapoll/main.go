// Command schemapoll measures what the stream's schema-change detection
// costs on the source: one catalog poll (schemachange.ReadCatalog in a
// REPEATABLE READ transaction, what `stream` runs every --schema-poll and
// before each trigger-capture batch) beside the obvious alternative, a
// schema-only pg_dump of the same database diffed between runs, on a
// schema of -tables tables (5 columns, a primary key and one more index
// each, every fifth partitioned in four). Runs alternate A B B A; the
// median of the pairs' ratios is printed with the machine's load. The
// fingerprint query, which is all a poll reads while nothing changed, is
// timed on its own.
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
	fingerprint := func() (time.Duration, error) {
		began := time.Now()
		err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			_, err := schemachange.Fingerprint(ctx, tx)
			return err
		})
		return time.Since(began), err
	}
	var fps []time.Duration
	for range 2 * pairs {
		d, err := fingerprint()
		if err != nil {
			return err
		}
		fps = append(fps, d)
	}
	sort.Slice(fps, func(i, j int) bool { return fps[i] < fps[j] })
	var ratios []float64
	var polls, dumps []time.Duration
	for range pairs {
		var a1, b1, b2, a2 time.Duration
		if a1, err = poll(); err != nil {
			return err
		}
		if b1, err = dump(); err != nil {
			return err
		}
		if b2, err = dump(); err != nil {
			return err
		}
		if a2, err = poll(); err != nil {
			return err
		}
		ratios = append(ratios, float64(a1)/float64(b1), float64(a2)/float64(b2))
		polls, dumps = append(polls, a1, a2), append(dumps, b1, b2)
	}
	sort.Float64s(ratios)
	sort.Slice(polls, func(i, j int) bool { return polls[i] < polls[j] })
	sort.Slice(dumps, func(i, j int) bool { return dumps[i] < dumps[j] })
	fmt.Printf("tables %d (+%d partitions), %d pairs A B B A, load %s\n", tables, tables/5*4, pairs, benchkit.LoadAvg())
	fmt.Printf("catalog poll: median %s (min %s, max %s)\n", polls[len(polls)/2].Round(time.Millisecond), polls[0].Round(time.Millisecond), polls[len(polls)-1].Round(time.Millisecond))
	fmt.Printf("pg_dump -s:   median %s (min %s, max %s)\n", dumps[len(dumps)/2].Round(time.Millisecond), dumps[0].Round(time.Millisecond), dumps[len(dumps)-1].Round(time.Millisecond))
	fmt.Printf("median ratio poll / pg_dump: %.3f\n", ratios[len(ratios)/2])
	fmt.Printf("fingerprint (a poll that finds nothing changed): median %s (min %s, max %s)\n", fps[len(fps)/2].Round(100*time.Microsecond),
		fps[0].Round(100*time.Microsecond), fps[len(fps)-1].Round(100*time.Microsecond))
	return nil
}
