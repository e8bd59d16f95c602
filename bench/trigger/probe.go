package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/bench/benchkit"
)

// probe looks for where a captured pgbench transaction's server time goes
// beyond its instructions: for each client count, a run of each database
// (stream off) with the cluster's WAL (pg_stat_wal: records, full-page
// images and bytes per transaction), the server CPU per transaction, and
// the wait events of the run's backends sampled every 5 ms from
// pg_stat_activity (share of the samples of active backends; "CPU" when
// none). sql, when not empty, is run in the captured database first (an
// experiment such as autovacuum off for the changelog).
func probe(o options, clients []int, sql string) error {
	ctx := context.Background()
	src, capt, err := setUp(ctx, o, map[string]string{"track_wal_io_timing": "on"})
	if err != nil {
		return err
	}
	defer src.Close()
	defer capt.Close()
	pgbench := filepath.Join(src.BinDir, "pgbench")
	captured := src.URL("captured")
	if sql != "" {
		if err := benchkit.Exec(ctx, captured, sql); err != nil {
			return err
		}
	}
	mon, err := pgx.Connect(ctx, src.URL("postgres"))
	if err != nil {
		return err
	}
	defer mon.Close(ctx)
	var applied int64
	fmt.Printf("\n| clients | database | tps | server CPU ms/txn | WAL records/txn | FPI/txn | WAL bytes/txn | WAL write+sync ms/txn | autovacuum, autoanalyze of the changelog | wait events (share of active samples) | load |\n|---|---|---:|---:|---:|---:|---:|---:|---|---|---|\n")
	for _, c := range clients {
		oc := o
		oc.clients = c
		if oc.jobs > c {
			oc.jobs = c
		}
		for p := 0; p < o.pairs; p++ {
			order := []string{"plain", "captured"}
			if p%2 == 1 {
				order = []string{"captured", "plain"}
			}
			for _, db := range order {
				if err := benchkit.Exec(ctx, src.URL(db), "CHECKPOINT"); err != nil {
					return err
				}
				w0, err := walStats(ctx, mon)
				if err != nil {
					return err
				}
				av0 := changelogVacuums(ctx, captured)
				sctx, stop := context.WithCancel(ctx)
				var waits map[string]int
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); waits = sampleWaits(sctx, src.URL("postgres"), db) }()
				res, err := pgbenchRun(ctx, src.DataDir, src.URL(db), pgbench, oc)
				stop()
				wg.Wait()
				if err != nil {
					return err
				}
				w1, err := walStats(ctx, mon)
				if err != nil {
					return err
				}
				av1 := changelogVacuums(ctx, captured)
				n := float64(res.txns)
				fmt.Printf("| %d | %s | %.0f | %.3f | %.2f | %.3f | %.0f | %.4f | %s | %s | %s |\n", c, db, res.tps, res.cpuPerTxn(),
					(w1[0]-w0[0])/n, (w1[1]-w0[1])/n, (w1[2]-w0[2])/n, (w1[3]-w0[3])/n, vacDelta(av0, av1), topWaits(waits, 6), res.load)
				if db == "captured" {
					if applied, err = drain(ctx, capt, applied); err != nil {
						return err
					}
				}
			}
		}
	}
	fmt.Println("load at the end:", benchkit.LoadAvg())
	return nil
}

// walStats reads pg_stat_wal: records, full-page images, bytes, and the
// milliseconds spent writing and syncing WAL.
func walStats(ctx context.Context, conn *pgx.Conn) ([4]float64, error) {
	var w [4]float64
	err := conn.QueryRow(ctx, `SELECT wal_records::float8, wal_fpi::float8, wal_bytes::float8, wal_write_time + wal_sync_time FROM pg_stat_wal`).Scan(&w[0], &w[1], &w[2], &w[3])
	return w, err
}

func changelogVacuums(ctx context.Context, url string) [2]int64 {
	var v [2]int64
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return v
	}
	defer conn.Close(ctx)
	conn.QueryRow(ctx, `SELECT autovacuum_count, autoanalyze_count FROM pg_stat_user_tables WHERE relid = 'replicator.changelog'::regclass`).Scan(&v[0], &v[1])
	return v
}

func vacDelta(a, b [2]int64) string { return fmt.Sprintf("%d, %d", b[0]-a[0], b[1]-a[1]) }

// sampleWaits samples the wait events of db's active client backends
// until ctx ends.
func sampleWaits(ctx context.Context, url, db string) map[string]int {
	out := map[string]int{}
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sample waits:", err)
		return out
	}
	defer conn.Close(context.Background())
	for ctx.Err() == nil {
		rows, err := conn.Query(context.Background(), `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity
			WHERE datname = $1 AND backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()`, db)
		if err != nil {
			return out
		}
		for rows.Next() {
			var w string
			if rows.Scan(&w) == nil {
				out[w]++
			}
		}
		rows.Close()
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	return out
}

func topWaits(w map[string]int, n int) string {
	total := 0
	type kv struct {
		k string
		v int
	}
	var s []kv
	for k, v := range w {
		total += v
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v > s[j].v })
	var parts []string
	for i, e := range s {
		if i == n {
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f%%", e.k, 100*float64(e.v)/float64(total)))
	}
	return strings.Join(parts, ", ")
}
