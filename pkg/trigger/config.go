package trigger

import (
	"errors"
	"fmt"
	"time"
)

// Config tunes trigger capture. The zero value of every field means its
// default; Validate fills the defaults in.
type Config struct {
	// TickInterval is how often the ticker records a snapshot, i.e. the
	// longest a committed change waits before it is in a batch. Default 1s.
	TickInterval time.Duration
	// PageRows is how many changelog rows one FETCH of a batch cursor
	// returns: the memory bound of reading a batch. Default 2,000.
	PageRows int
	// PurgeRows is how many changelog rows one purge transaction deletes at
	// most. Default 10,000.
	PurgeRows int
	// LockTimeout is how long Install waits for one table's lock (creating a
	// trigger waits for the table's running writers) before it retries.
	// Default 5s.
	LockTimeout time.Duration
	// LockRetries is how often Install retries a table whose lock it did not
	// get in LockTimeout. Default 10.
	LockRetries int
	// MetricsInterval is the least time between two refreshes of the
	// changelog-size gauge (a count on the source). Default 10s.
	MetricsInterval time.Duration
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.TickInterval < 0 || c.PageRows < 0 || c.PurgeRows < 0 || c.LockTimeout < 0 || c.LockRetries < 0 || c.MetricsInterval < 0 {
		return errors.New("trigger capture config: negative values are not allowed")
	}
	if c.TickInterval == 0 {
		c.TickInterval = time.Second
	}
	if c.TickInterval < 10*time.Millisecond {
		return fmt.Errorf("trigger capture config: tick interval %s is below 10ms", c.TickInterval)
	}
	if c.PageRows == 0 {
		c.PageRows = 2000
	}
	if c.PurgeRows == 0 {
		c.PurgeRows = 10000
	}
	if c.LockTimeout == 0 {
		c.LockTimeout = 5 * time.Second
	}
	if c.LockRetries == 0 {
		c.LockRetries = 10
	}
	if c.MetricsInterval == 0 {
		c.MetricsInterval = 10 * time.Second
	}
	return nil
}
