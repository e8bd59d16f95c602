// Package report owns the header every markdown report of replicator
// starts with (verify, redis verify, audit, status, cutover), so that a
// report pasted into a change ticket says, the same way each time, which
// tool version made it, which servers it looked at (host and database,
// never credentials), when it started and ended, the position it compared
// and whether the source was fenced.
//
// Usage:
//
//	h := report.Header{Title: "Data verification", Version: version,
//		Sides: []report.Side{report.SideOf("source", srcURL), report.SideOf("target", dstURL)},
//		Started: start, Ended: time.Now(), Position: "source LSN 0/2A", Fenced: report.FenceState(ctx, target)}
//	h.WriteMarkdown(w)
//
// The cmd layer passes Version in; this package reads no flags or
// environment.
package report
