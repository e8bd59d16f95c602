package snapshot

import (
	"fmt"
	"regexp"
	"time"

	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// Capture modes accepted by Config.Capture.
const (
	CaptureAuto    = "auto"
	CaptureLogical = state.CaptureLogical
	CaptureTrigger = state.CaptureTrigger
)

// Config is what one snapshot run needs. The zero value of every optional
// field picks the default named in its comment.
type Config struct {
	// SourceURL and TargetURL are Postgres connection URLs. Required. They
	// may hold passwords: nothing in this package prints them.
	SourceURL string
	TargetURL string
	// Jobs is the number of parallel copy workers and index builders.
	// Default 4. Each job holds one source and one target connection.
	Jobs int
	// Capture is auto, logical or trigger. Default auto.
	Capture string
	// ReplicaIdentityFull sets REPLICA IDENTITY FULL on source tables that
	// have neither a primary key nor a replica identity, instead of
	// refusing to start.
	ReplicaIdentityFull bool
	// SlotName and Publication name what logical capture creates on the
	// source. Defaults state.DefaultSlot and state.DefaultPublication. The
	// slot name must be a plain lower-case identifier.
	SlotName    string
	Publication string
	// ChunkBytes is the size (heap and TOAST) of one copy chunk: a table
	// larger than this is split into block ranges copied by several
	// workers at once. Default 32 MiB; at least one 8 kB block.
	ChunkBytes int64
	// IndexMemoryMB is the target memory (MiB) the index builds after the
	// copy may use together: each of the Jobs builders gets
	// maintenance_work_mem = IndexMemoryMB / Jobs, at least 64. Default
	// 1024.
	IndexMemoryMB int
	// BinDir is where pg_dump and pg_restore live. Default: the newest
	// /usr/lib/postgresql/*/bin, else $PATH.
	BinDir string
	// Trigger tunes trigger capture's install (lock timeout and retries)
	// when Capture resolves to trigger.
	Trigger trigger.Config
	// OneSnapshot copies every table under the one snapshot exported
	// with the capture point, and starts an interrupted run over. Default
	// false: the chunked copy (ledger.go), each chunk under a short source
	// snapshot of its own recorded in the target's ledger, so no source
	// transaction stays open longer than one chunk, an interrupted run
	// resumes with the chunks not done, and each table's indexes are built
	// as soon as its data is complete.
	OneSnapshot bool
	// CopyFormat is auto or text. Default auto: each table whose
	// columns' types are all built in and the same on both sides (and
	// both servers of one major version) is copied in binary COPY
	// format, which costs both servers less CPU than text; the others as
	// text. text copies every table as text.
	CopyFormat string
	// Progress receives progress events; nil for none.
	Progress Progress
	// Metrics are the Prometheus counters the copy adds to, built once per
	// process with NewMetrics; nil for none.
	Metrics *Metrics

	// lockPerTable makes workers lock tables as they reach them, as they
	// do when the source's lock table is too small for up-front locks.
	lockPerTable bool
}

// Progress is told how the copy advances. Calls come from several
// goroutines at once; implementations must be safe for that and fast (they
// run on the copy path). The package never draws anything itself.
type Progress interface {
	// Phase announces a new phase: "preflight", "schema", "copy",
	// "indexes", "sequences", "analyze", "done".
	Phase(name string)
	// Plan lists the tables to copy with their estimated sizes, once,
	// before the first Copied call.
	Plan(tables []TablePlan)
	// Copied adds rows and bytes (of COPY data, text or binary) copied
	// into table.
	Copied(table string, rows, bytes int64)
	// ChunkDone says one more chunk of table is committed on the target
	// (or, on a resumed run, was committed by the interrupted one).
	ChunkDone(table string)
	// TableDone says every chunk of table is committed on the target.
	TableDone(table string)
}

// TablePlan is one table as the copy plans it.
type TablePlan struct {
	Name      string // schema-qualified, quoted as SQL would
	EstBytes  int64  // heap and TOAST size on the source
	EstRows   int64  // planner estimate; -1 when unknown
	Chunks    int
	Unlogged  bool
	Partition bool
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Validate checks the config and fills in defaults.
func (c *Config) Validate() error {
	if c.SourceURL == "" {
		return fmt.Errorf("no source URL: pass --source postgres://user:password@host:5432/db or set REPLICATOR_SOURCE_URL")
	}
	if c.TargetURL == "" {
		return fmt.Errorf("no target URL: pass --target postgres://user:password@host:5432/db or set REPLICATOR_TARGET_URL")
	}
	if c.Jobs == 0 {
		c.Jobs = 4
	}
	if c.Jobs < 1 || c.Jobs > 64 {
		return fmt.Errorf("--jobs %d is out of range: use 1 to 64", c.Jobs)
	}
	switch c.Capture {
	case "":
		c.Capture = CaptureAuto
	case CaptureAuto, CaptureLogical, CaptureTrigger:
	default:
		return fmt.Errorf("--capture %q is not known: use auto, logical or trigger", c.Capture)
	}
	switch c.CopyFormat {
	case "":
		c.CopyFormat = CopyFormatAuto
	case CopyFormatAuto, CopyFormatText:
	default:
		return fmt.Errorf("--copy-format %q is not known: use auto or text", c.CopyFormat)
	}
	if c.SlotName == "" {
		c.SlotName = state.DefaultSlot
	}
	if !slotName.MatchString(c.SlotName) {
		return fmt.Errorf("slot name %q is not valid: use lower-case letters, digits and underscores", c.SlotName)
	}
	if c.Publication == "" {
		c.Publication = state.DefaultPublication
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = 32 << 20
	}
	if c.IndexMemoryMB == 0 {
		c.IndexMemoryMB = 1024
	}
	if c.IndexMemoryMB < 0 {
		return fmt.Errorf("index memory %d MiB is negative", c.IndexMemoryMB)
	}
	if err := c.Trigger.Validate(); err != nil {
		return err
	}
	if c.ChunkBytes < 8192 {
		return fmt.Errorf("chunk size %d bytes is below one 8 kB block", c.ChunkBytes)
	}
	return nil
}

// Result says what a finished snapshot did.
type Result struct {
	Capture       string
	SlotName      string
	Publication   string
	ConsistentLSN string // where the stream starts (logical capture)
	SnapshotXmin  string // trigger capture: the copy's pg_current_snapshot(), tick 0
	// StartedOver is true when an interrupted earlier run was found and
	// its leftovers were dropped before this run copied everything again.
	StartedOver bool
	// Resumed is true when the run went on with an interrupted chunked
	// run's capture point and the chunks it had copied.
	Resumed   bool
	Tables    int
	Rows      int64
	Bytes     int64
	Sequences int
	Duration  time.Duration
}
