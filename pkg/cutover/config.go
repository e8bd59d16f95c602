package cutover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/verify"
)

// Fence methods.
const (
	// FenceAuto picks FenceTrigger when the replicator's role may create
	// triggers on every user table (it owns them, as on Heroku), else
	// FenceRevoke; FenceRevoke too when AppRoles names the roles to fence.
	FenceAuto = "auto"
	// FenceTrigger puts a statement-level BEFORE trigger that refuses
	// writes on every user table: works when the app logs in with the
	// replicator's own role, and stops superusers too (see fence_trigger.go).
	FenceTrigger = "trigger"
	// FenceRevoke revokes write privileges on user tables from the app's
	// roles: precise, and the replicator's own role keeps working.
	FenceRevoke = "revoke"
	// FenceReadOnly sets default_transaction_read_only on the source
	// database: for apps whose role is the one the replicator uses too. A
	// session can still switch it off for itself; it stops ordinary apps.
	FenceReadOnly = "read-only"
)

// Verify modes.
const (
	// VerifyFull compares every table and sequence while streaming,
	// before the fence, and inside the freeze only what was written since
	// (verifylive.go): the freeze does not grow with the database.
	VerifyFull = "full"
	// VerifyFreeze compares every table and sequence inside the freeze:
	// the freeze lasts as long as a full verification.
	VerifyFreeze = "full-in-freeze"
	VerifyNone   = "none"
)

// Config is one cutover run. Durations of zero mean their default.
type Config struct {
	SourceURL string // required
	TargetURL string // required

	// MaxLag is the apply lag to wait for before fencing. Default 5s.
	MaxLag time.Duration
	// Timeout bounds each waiting step (lag, open write transactions after
	// the fence, the target applying the high-water mark). Default 10m.
	Timeout time.Duration
	// PollInterval is how often waiting steps look again. Default 500ms.
	PollInterval time.Duration
	// ProgressInterval is how often a waiting step prints a "waiting" line.
	// Default 2s.
	ProgressInterval time.Duration

	Fence       bool
	FenceMethod string // FenceAuto (default), FenceTrigger, FenceRevoke or FenceReadOnly
	// AppRoles are the roles to fence. Empty: every role that owns or holds
	// write privileges on a user table, except the replicator's own login
	// role.
	AppRoles []string

	DryRun bool
	// SequenceMargin is added to each source sequence value (0 or more; the
	// command's default is 1000).
	SequenceMargin int64
	Verify         string // VerifyFull (default), VerifyFreeze or VerifyNone
	// VerifyMetrics are the counters the final verification adds to,
	// built once per process with verify.NewMetrics; nil for none.
	VerifyMetrics *verify.Metrics

	// RedisSource and RedisTargetOptions, both or neither, add Redis to the
	// night: step 4 waits for the follower (`replicator redis sync
	// --follow`) to carry a marker over, step 6 verifies Redis too, and
	// both count in the write freeze.
	RedisSource        *redis.Options
	RedisTargetOptions *redis.Options

	// Route53Zone, RecordName, AppRecord and RedisTarget fill in the
	// switch step; placeholders are printed when they are empty.
	// RecordName is a DNS name of the app's own for the database (switched
	// with one plain CNAME); AppRecord is the app's public endpoint (e.g.
	// api.mydomain.com), the only one given weighted records.
	Route53Zone string
	RecordName  string
	AppRecord   string
	RedisTarget string

	// Version is the tool's version for the report (cmd passes it in).
	Version string
	// Report, when set, receives the run's report for the change ticket
	// at the end (report.go), in ReportFormat: ReportText (default) or
	// ReportMarkdown.
	Report       io.Writer
	ReportFormat string

	// afterLiveVerify, when set (tests only), runs after step 2's
	// verification while streaming, before the fence.
	afterLiveVerify func(context.Context) error
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.SourceURL == "" {
		return errors.New("cutover: no source URL: pass --source or set REPLICATOR_SOURCE_URL")
	}
	if c.TargetURL == "" {
		return errors.New("cutover: no target URL: pass --target or set REPLICATOR_TARGET_URL")
	}
	if c.MaxLag < 0 || c.Timeout < 0 || c.PollInterval < 0 || c.ProgressInterval < 0 {
		return errors.New("cutover: --max-lag and --timeout must not be negative")
	}
	if c.MaxLag == 0 {
		c.MaxLag = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Minute
	}
	if c.PollInterval == 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = 2 * time.Second
	}
	if c.SequenceMargin < 0 {
		return fmt.Errorf("cutover: --sequence-margin %d: use 0 or more", c.SequenceMargin)
	}
	switch c.FenceMethod {
	case "":
		c.FenceMethod = FenceAuto
	case FenceAuto, FenceTrigger, FenceRevoke, FenceReadOnly:
	default:
		return fmt.Errorf("cutover: --fence-method %q: use auto, trigger, revoke or read-only", c.FenceMethod)
	}
	switch c.Verify {
	case "":
		c.Verify = VerifyFull
	case VerifyFull, VerifyFreeze, VerifyNone:
	default:
		return fmt.Errorf("cutover: --verify %q: use full, full-in-freeze or none", c.Verify)
	}
	switch c.ReportFormat {
	case "":
		c.ReportFormat = ReportText
	case ReportText, ReportMarkdown:
	default:
		return fmt.Errorf("cutover: --format %q: use text or markdown", c.ReportFormat)
	}
	if (c.RedisSource == nil) != (c.RedisTargetOptions == nil) {
		return errors.New("cutover: pass both --redis-source and --redis-target to include Redis, or neither")
	}
	for _, r := range c.AppRoles {
		if strings.TrimSpace(r) == "" {
			return errors.New("cutover: --app-roles holds an empty name: list role names separated by commas")
		}
	}
	return nil
}
