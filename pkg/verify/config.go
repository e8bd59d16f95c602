package verify

import (
	"errors"
	"fmt"
	"path"
	"time"
)

// Config says what to compare and how hard to work. The zero value of every
// field but Source and Target means its default.
type Config struct {
	Source string // source Postgres URL (required)
	Target string // target Postgres URL (required)

	// Tables limits the comparison to tables whose "schema.name" or "name"
	// matches one of these glob patterns (path.Match syntax). A partitioned
	// table's name selects its partitions. Empty: every table. The schema
	// comparison follows the same selection. Large objects are compared
	// only when it is empty.
	Tables []string

	// Jobs is how many processes work on each side: a table's first read
	// is a parallel query of Jobs processes (the session and Jobs-1
	// parallel workers, as many as the server can spare), and then Jobs
	// chunks are compared at a time, each with one connection per side.
	// Default 4.
	Jobs int
	// ChunkRows is the planned number of rows per chunk. Default 10000 (at most 1024 chunks per table).
	ChunkRows int64
	// LeafRows is the size, in rows, below which a mismatched chunk is no
	// longer bisected but fetched and compared row by row. It bounds the
	// rows held in memory per job. Default 1000.
	LeafRows int64
	// Fanout is how many parts a mismatched chunk is split into per step.
	// Default 64.
	Fanout int
	// MaxRowsReported caps the differing rows listed per table (all are
	// counted). Default 100.
	MaxRowsReported int

	// WaitTimeout bounds the wait for the target to apply the source's
	// current position when a stream is running. Default 1m; negative: do
	// not wait.
	WaitTimeout time.Duration
	// RecheckDelay is the pause before differences are re-checked while a
	// stream is running. Default 2s.
	RecheckDelay time.Duration
	// Rechecks is how many times differences are re-checked while a stream
	// is running. Default 2; negative: never.
	Rechecks int

	// Touched compares, of each table, only the rows that the touched-row
	// logs started by Track on both sides name: the rows written on either
	// side since the logs started. It is only a proof when every row was
	// proven identical after the logs started (a full run begun after
	// Track); cutover does that before the fence, and this inside it.
	// Tables without a primary key, truncated, or created since are
	// compared whole. Without a log on both sides Run returns
	// ErrNoTouchedLog.
	Touched bool
	// InFlightLogged, for a full run while a stream applies and the
	// touched-row logs run: a difference that persists through the
	// re-checks on a row either log names is a row still being written
	// (a hot row), which an incremental run compares again once writes
	// have stopped. Such rows are counted in Report.InFlight and listed
	// there, not as differences.
	InFlightLogged bool

	// Metrics are the Prometheus counters the comparison adds to, built
	// once per process with NewMetrics; nil for none.
	Metrics *Metrics
}

func (c *Config) withDefaults() Config {
	d := *c
	if d.Jobs == 0 {
		d.Jobs = 4
	}
	if d.ChunkRows == 0 {
		d.ChunkRows = 10000
	}
	if d.LeafRows == 0 {
		d.LeafRows = 1000
	}
	if d.Fanout == 0 {
		d.Fanout = 64
	}
	if d.MaxRowsReported == 0 {
		d.MaxRowsReported = 100
	}
	if d.WaitTimeout == 0 {
		d.WaitTimeout = time.Minute
	}
	if d.RecheckDelay == 0 {
		d.RecheckDelay = 2 * time.Second
	}
	if d.Rechecks == 0 {
		d.Rechecks = 2
	}
	return d
}

// Validate reports the first unusable setting.
func (c *Config) Validate() error {
	if c.Source == "" {
		return errors.New("verify: no source URL: pass --source or set REPLICATOR_SOURCE_URL")
	}
	if c.Target == "" {
		return errors.New("verify: no target URL: pass --target or set REPLICATOR_TARGET_URL")
	}
	if c.Jobs < 0 || c.Jobs > 64 {
		return fmt.Errorf("verify: --jobs %d: use 1 to 64", c.Jobs)
	}
	if c.ChunkRows < 0 || c.LeafRows < 0 || c.Fanout < 0 || c.Fanout == 1 {
		return errors.New("verify: chunk sizes must be positive and the fanout at least 2")
	}
	for _, p := range c.Tables {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("verify: --tables pattern %q is malformed: use names with * and ? wildcards, e.g. public.orders or sales.*", p)
		}
	}
	return nil
}
