// Package benchkit holds what the side-by-side benchmarks in bench/ share:
// running a command while measuring its wall time and peak RSS, and
// printing a table of results with ratios against the replicator.
//
// Benchmarks are programs (go run ./bench/<name>), never part of the test
// suite: timings depend on the machine and are recorded in bench/README.md.
package benchkit

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Result is one measured run.
type Result struct {
	Name    string
	Wall    time.Duration
	PeakRSS int64 // bytes; 0 when not measured (e.g. a server-side method)
	Note    string
}

// Run runs a command, streaming its output to log, and returns its wall
// time and peak resident set size (from the kernel's rusage of the child).
func Run(ctx context.Context, log io.Writer, env []string, name string, args ...string) (time.Duration, int64, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var tail bytes.Buffer
	w := io.MultiWriter(log, &tail)
	cmd.Stdout, cmd.Stderr = w, w
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var rss int64
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			rss = ru.Maxrss * 1024 // Linux reports KiB
		}
	}
	if err != nil {
		out := tail.String()
		if len(out) > 2000 {
			out = out[len(out)-2000:]
		}
		return wall, rss, fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return wall, rss, nil
}

// Print writes results as a table; ratio is each wall time over base's.
func Print(w io.Writer, base string, results []Result) {
	var baseWall time.Duration
	for _, r := range results {
		if r.Name == base {
			baseWall = r.Wall
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "| method\t| wall time\t| ratio to %s\t| peak RSS\t| note\t|\n", base)
	fmt.Fprintf(tw, "|---\t|---\t|---\t|---\t|---\t|\n")
	for _, r := range results {
		ratio := "-"
		if baseWall > 0 && r.Wall > 0 {
			ratio = fmt.Sprintf("%.2f", float64(r.Wall)/float64(baseWall))
		}
		rss := "-"
		if r.PeakRSS > 0 {
			rss = fmt.Sprintf("%d MB", r.PeakRSS>>20)
		}
		fmt.Fprintf(tw, "| %s\t| %.1f s\t| %s\t| %s\t| %s\t|\n", r.Name, r.Wall.Seconds(), ratio, rss, r.Note)
	}
	tw.Flush()
}

// LoadAvg is the 1-minute load average, printed with results so a reader
// can tell a quiet machine from a busy one.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}
