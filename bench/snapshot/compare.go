package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"replicator/bench/benchkit"
)

// cpuTimes is the user and system CPU of a process tree, in seconds.
type cpuTimes struct{ user, sys float64 }

func (c cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{c.user - o.user, c.sys - o.sys} }
func (c cpuTimes) total() float64          { return c.user + c.sys }

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// every Linux this runs on).
const clockTicks = 100

// statTimes reads utime, stime, cutime and cstime of pid from /proc.
func statTimes(pid int) (self, children cpuTimes, ppid int, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuTimes{}, cpuTimes{}, 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after its closing parenthesis (field 3 is the state).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	n := func(i int) float64 { v, _ := strconv.ParseFloat(f[i-3], 64); return v / clockTicks }
	ppid, _ = strconv.Atoi(f[4-3])
	return cpuTimes{n(14), n(15)}, cpuTimes{n(16), n(17)}, ppid, nil
}

// clusterCPU is the CPU a cluster has used so far: its postmaster's own,
// every live child's (backends, checkpointer, walwriter, …), and that of
// the children it has reaped (the postmaster's cutime and cstime), so
// that backends of connections closed during a run are counted too.
func clusterCPU(dataDir string) (cpuTimes, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return cpuTimes{}, err
	}
	pm, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		return cpuTimes{}, err
	}
	self, reaped, _, err := statTimes(pm)
	if err != nil {
		return cpuTimes{}, err
	}
	sum := cpuTimes{self.user + reaped.user, self.sys + reaped.sys}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		own, _, ppid, err := statTimes(pid)
		if err != nil || ppid != pm {
			continue
		}
		sum.user += own.user
		sum.sys += own.sys
	}
	return sum, nil
}

// measured is one run's wall time and CPU by process.
type measured struct {
	wall                  time.Duration
	src, dst, replicator  cpuTimes
	loadBefore, loadAfter string
}

func name(args []string) string {
	if len(args) == 0 {
		return "(defaults)"
	}
	return strings.Join(args, " ")
}

// timeline writes, every second until stop is called, the cores each
// side used in that second (source cluster, target cluster, replicator)
// and the machine's idle and iowait cores, to a file named after
// the run (kept after the work directory is gone), so that where a run leaves cores idle can be read against its
// log's timestamps.
func timeline(ctx context.Context, logName, label, srcDir, dstDir string, pid int) (stop func()) {
	f, err := os.CreateTemp("", "snapshot-timeline-*.txt")
	if err != nil {
		return func() {}
	}
	fmt.Printf("timeline of %s: %s (log %s)\n", label, f.Name(), logName)
	fmt.Fprintf(f, "# %s\n# unix_s source target replicator idle iowait (cores busy in the second before)\n", label)
	machine := func() (idle, iowait float64) {
		b, _ := os.ReadFile("/proc/stat")
		fs := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(fs) > 5 {
			i, _ := strconv.ParseFloat(fs[4], 64)
			w, _ := strconv.ParseFloat(fs[5], 64)
			return i / clockTicks, w / clockTicks
		}
		return 0, 0
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer f.Close()
		s0, _ := clusterCPU(srcDir)
		d0, _ := clusterCPU(dstDir)
		r0, _, _, _ := statTimes(pid)
		i0, w0 := machine()
		t0 := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			s1, _ := clusterCPU(srcDir)
			d1, _ := clusterCPU(dstDir)
			r1, _, _, _ := statTimes(pid)
			i1, w1 := machine()
			t1 := time.Now()
			dt := t1.Sub(t0).Seconds()
			fmt.Fprintf(f, "%.0f %.2f %.2f %.2f %.2f %.2f\n", float64(t1.UnixMilli())/1000, s1.sub(s0).total()/dt, d1.sub(d0).total()/dt,
				r1.sub(r0).total()/dt, (i1-i0)/dt, (w1-w0)/dt)
			s0, d0, r0, i0, w0, t0 = s1, d1, r1, i1, w1, t1
		}
	}()
	return func() { close(done); <-finished }
}

// comparePairs runs `replicator snapshot` with the arguments of a and
// those of b side by side, pairs times, in the order A B, B A, A B, …,
// each into a fresh target database, row counts checked after each, and
// reports wall time and the CPU of the source cluster, the target cluster
// and the replicator process (user and system) per run, and the medians
// of the pairs' ratios b / a.
func comparePairs(ctx context.Context, bin, work, srcURL, srcDir, dstDir string, newTarget func() (string, func()), jobs, pairs int,
	a, b []string, check func(target string) error) error {
	one := func(extra []string) (measured, error) {
		target, drop := newTarget()
		defer drop()
		defer benchkit.Exec(ctx, srcURL, "SELECT pg_drop_replication_slot('replicator'); DROP PUBLICATION IF EXISTS replicator")
		warm(ctx, srcURL)
		var m measured
		m.loadBefore = benchkit.LoadAvg()
		s0, err := clusterCPU(srcDir)
		if err != nil {
			return m, err
		}
		d0, err := clusterCPU(dstDir)
		if err != nil {
			return m, err
		}
		args := append([]string{"snapshot", "--source", srcURL, "--target", target, "--jobs", fmt.Sprint(jobs),
			"--replica-identity-full", "--metrics-addr", "", "--log-format", "json"}, extra...)
		cmd := exec.CommandContext(ctx, bin, args...)
		// Each run's log is kept, next to its timeline, after the
		// benchmark's work directory is gone.
		log, err := os.CreateTemp("", "snapshot-compare-*.log")
		if err != nil {
			return m, err
		}
		defer log.Close()
		cmd.Stdout, cmd.Stderr = log, log
		start := time.Now()
		if err = cmd.Start(); err != nil {
			return m, err
		}
		stopTimeline := timeline(ctx, log.Name(), name(extra), srcDir, dstDir, cmd.Process.Pid)
		err = cmd.Wait()
		m.wall = time.Since(start)
		stopTimeline()
		if err != nil {
			return m, fmt.Errorf("replicator %s: %w (log in %s)", strings.Join(extra, " "), err, log.Name())
		}
		s1, _ := clusterCPU(srcDir)
		d1, _ := clusterCPU(dstDir)
		m.src, m.dst = s1.sub(s0), d1.sub(d0)
		m.replicator = cpuTimes{cmd.ProcessState.UserTime().Seconds(), cmd.ProcessState.SystemTime().Seconds()}
		m.loadAfter = benchkit.LoadAvg()
		return m, check(target)
	}
	// The first copy into a fresh cluster costs its target several
	// seconds more system time than any later one (seen in every
	// comparison here): one run of A, not counted, goes first.
	if m, err := one(a); err != nil {
		return fmt.Errorf("warm-up run: %w", err)
	} else {
		fmt.Printf("warm-up: %s wall %.1f s, target %.1f+%.1f s (not counted)\n", name(a), m.wall.Seconds(), m.dst.user, m.dst.sys)
	}
	var runsA, runsB []measured
	var wallR, srcR, dstR, repR, allR []float64
	for p := 0; p < pairs; p++ {
		order := [][]string{a, b}
		if p%2 == 1 {
			order = [][]string{b, a}
		}
		var ma, mb measured
		for i, args := range order {
			m, err := one(args)
			if err != nil {
				return fmt.Errorf("pair %d: %w", p+1, err)
			}
			fmt.Printf("pair %d: %-28s wall %6.1f s  source %5.1f+%4.1f s  target %5.1f+%4.1f s  replicator %4.1f+%4.1f s  (user+sys)  load %s → %s\n",
				p+1, name(args), m.wall.Seconds(), m.src.user, m.src.sys, m.dst.user, m.dst.sys, m.replicator.user, m.replicator.sys, m.loadBefore, m.loadAfter)
			if (p%2 == 0) == (i == 0) {
				ma = m
			} else {
				mb = m
			}
		}
		runsA, runsB = append(runsA, ma), append(runsB, mb)
		wallR = append(wallR, mb.wall.Seconds()/ma.wall.Seconds())
		srcR = append(srcR, mb.src.total()/ma.src.total())
		dstR = append(dstR, mb.dst.total()/ma.dst.total())
		repR = append(repR, mb.replicator.total()/ma.replicator.total())
		allR = append(allR, (mb.src.total()+mb.dst.total()+mb.replicator.total())/(ma.src.total()+ma.dst.total()+ma.replicator.total()))
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
	}
	medianOf := func(runs []measured, f func(measured) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		return median(v)
	}
	fmt.Printf("\nA = %s, B = %s: --jobs %d, %d pairs (A B, B A, …), load %s, %s\n", name(a), name(b), jobs, pairs, benchkit.LoadAvg(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	for _, s := range []struct {
		label string
		f     func(measured) float64
	}{
		{"wall s", func(m measured) float64 { return m.wall.Seconds() }},
		{"source user s", func(m measured) float64 { return m.src.user }},
		{"source sys s", func(m measured) float64 { return m.src.sys }},
		{"target user s", func(m measured) float64 { return m.dst.user }},
		{"target sys s", func(m measured) float64 { return m.dst.sys }},
		{"replicator user s", func(m measured) float64 { return m.replicator.user }},
		{"replicator sys s", func(m measured) float64 { return m.replicator.sys }},
	} {
		fmt.Printf("  median %-18s A %7.2f   B %7.2f\n", s.label, medianOf(runsA, s.f), medianOf(runsB, s.f))
	}
	fmt.Printf("  median pair ratios B/A: wall %.2f, source CPU %.2f, target CPU %.2f, replicator CPU %.2f, all CPU %.2f\n",
		median(wallR), median(srcR), median(dstR), median(repR), median(allR))
	return nil
}
