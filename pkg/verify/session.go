package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"replicator/pkg/pgutil"
	"replicator/pkg/position"
	"replicator/pkg/state"
)

// sessionSettings pin everything that changes the text of a row, so the same
// row hashes the same on both sides. The sessions are read-only: verify never
// writes to either database.
var sessionSettings = map[string]string{
	"TimeZone":                      "UTC",
	"DateStyle":                     "ISO, MDY",
	"IntervalStyle":                 "postgres",
	"extra_float_digits":            "3",
	"bytea_output":                  "hex",
	"lc_monetary":                   "C",
	"default_transaction_read_only": "on",
	"application_name":              "replicator-verify",

	// Plan settings. Parallel workers are off for the session's many
	// small queries; the first pass turns them on for its own reads
	// (parallelScanSQL). JIT compilation saved under 5% of a first pass,
	// within the noise of the measurement. Group counts of width_bucket
	// and hash buckets are unknown to the planner, which then sorts
	// millions of rows on disk to group a few hundred: discourage sorting,
	// and let hash aggregation have memory.
	"jit":                             "off",
	"max_parallel_workers_per_gather": "0",
	"enable_sort":                     "off",
	"work_mem":                        "32MB",
}

var setSessionSQL = func() string {
	keys := make([]string, 0, len(sessionSettings))
	for k := range sessionSettings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "SET %s = '%s'; ", k, sessionSettings[k])
	}
	return b.String()
}()

// side is one database with its connection pool.
type side struct {
	name  string // "source" or "target"
	where string // host:port/db, no credentials
	pool  *pgxpool.Pool
}

func openSide(ctx context.Context, url, name string, conns int) (*side, error) {
	cc, err := pgutil.ParseConfig(url, name)
	if err != nil {
		return nil, err
	}
	pc, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &pgutil.ConnError{Side: name, Where: pgutil.Redact(url), Reason: "malformed connection URL", Err: err}
	}
	pc.MaxConns = int32(conns)
	// SET after connecting rather than startup parameters: poolers in
	// front of managed databases (PgBouncer, RDS Proxy) refuse unknown
	// startup parameters.
	pc.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, setSessionSQL)
		return err
	}
	where := fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, pgutil.DescribeConnError(err, name, cc.Host, cc.Port, cc.Database, cc.User)
	}
	s := &side{name: name, where: where, pool: pool}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, pgutil.DescribeConnError(err, name, cc.Host, cc.Port, cc.Database, cc.User)
	}
	return s, nil
}

// streamRunning reports whether a logical stream is consuming the
// migration's slot on the source. Trigger capture has no such sign (its
// consumer reads a table), so it counts as running.
func streamRunning(ctx context.Context, src *side, st *state.State) (slot string, running bool) {
	if st.Capture != state.CaptureLogical || st.SlotName == "" {
		return "", true
	}
	var active bool
	if err := src.pool.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, st.SlotName).Scan(&active); err != nil {
		return st.SlotName, false // no slot: nothing can be streaming
	}
	return st.SlotName, active
}

// streamState returns the target's replicator.state when a migration
// feeds it (nil when there is none): changes may then be in flight.
func streamState(ctx context.Context, tgt *side) (*state.State, error) {
	st, err := state.Load(ctx, tgt.pool)
	if errors.Is(err, state.ErrNoMigration) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return st, nil
}

// waitApplied records the source's current WAL position and waits until the
// target has applied it, so that both sides are compared at one point of the
// source's history. It returns a sentence for the report. The applied
// position only moves with commits of replicated tables, so on a source whose
// other databases keep writing it may never be reached; after timeout the
// comparison goes ahead and the re-checks absorb rows in flight.
func waitApplied(ctx context.Context, src, tgt *side, timeout time.Duration, log *zap.Logger) (string, error) {
	var cur string
	// A standby restored from the source's WAL archive reports how far it
	// has replayed.
	if err := src.pool.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
		ELSE pg_current_wal_lsn() END)::text`).Scan(&cur); err != nil {
		return "", fmt.Errorf("read the source's WAL position: %w", err)
	}
	want, err := position.ParseLSN(cur)
	if err != nil {
		return "", err
	}
	deadline := time.Now().Add(timeout)
	for {
		st, err := state.Load(ctx, tgt.pool)
		if err != nil {
			return "", err
		}
		if st.Capture == state.CaptureTrigger {
			return "a trigger-capture stream feeds the target; differences were re-checked", nil
		}
		if st.Applied.LSN() >= want.LSN() { // nothing applied yet: LSN 0
			return fmt.Sprintf("compared after the target applied source position %s (applied %s)", cur, st.Applied.LSN()), nil
		}
		if time.Now().After(deadline) {
			applied := "nothing"
			if !st.Applied.IsZero() {
				applied = st.Applied.LSN().String()
			}
			log.Warn("target has not applied the source's position; comparing anyway and re-checking differences",
				zap.String("source_lsn", cur), zap.String("applied_lsn", applied))
			return fmt.Sprintf("target had applied %s of source position %s after %s; differences were re-checked", applied, cur, timeout), nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
