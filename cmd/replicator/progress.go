package main

import (
	"fmt"
	"io"
	"replicator/pkg/units"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"go.uber.org/zap"

	"replicator/pkg/snapshot"
)

// maxBars is how many tables get a bar of their own on a terminal (the
// largest ones); the total bar counts every table.
const maxBars = 12

// snapshotProgress renders snapshot.Progress events: bars per table and in
// total on a terminal, else a structured log line every interval.
type snapshotProgress struct {
	log      *zap.Logger
	out      io.Writer // terminal for bars; nil for log lines
	interval time.Duration

	mu       sync.Mutex
	phase    string
	tables   map[string]*tableProgress
	total    *mpb.Bar
	bars     *mpb.Progress
	estAll   int64
	doneTbl  atomic.Int64
	chunks   atomic.Int64 // done, of chunkAll
	chunkAll int64
	// keptBytes were copied by an interrupted run this one resumes: they
	// count as done but not towards the rate.
	keptBytes atomic.Int64
	rows      atomic.Int64
	bytes     atomic.Int64
	started   time.Time

	stopOnce sync.Once
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

type tableProgress struct {
	plan   snapshot.TablePlan
	rows   atomic.Int64
	bytes  atomic.Int64
	chunks atomic.Int64
	done   atomic.Bool
	// first is when this process first copied into the table (unix
	// nanoseconds; 0 before): the table's rate is measured from there.
	first atomic.Int64
	kept  atomic.Int64 // bytes an interrupted run copied
	bar   *mpb.Bar     // nil when the table has no bar of its own
}

// eta extrapolates the table's rate since this process first wrote into
// it to the bytes its size estimate says are left; 0 when done or not
// started.
func (tp *tableProgress) eta() time.Duration {
	first := tp.first.Load()
	done := tp.bytes.Load()
	copied := done - tp.kept.Load()
	if tp.done.Load() || first == 0 || copied <= 0 || tp.plan.EstBytes <= done {
		return 0
	}
	el := time.Since(time.Unix(0, first))
	return time.Duration(float64(el) * float64(tp.plan.EstBytes-done) / float64(copied)).Round(time.Second)
}

// chunksText is "3/10 chunks".
func (tp *tableProgress) chunksText() string {
	return fmt.Sprintf("%d/%d chunks", tp.chunks.Load(), tp.plan.Chunks)
}

func newSnapshotProgress(log *zap.Logger, terminal io.Writer, interval time.Duration) *snapshotProgress {
	p := &snapshotProgress{log: log, out: terminal, interval: interval, tables: map[string]*tableProgress{},
		stopCh: make(chan struct{}), started: time.Now()}
	if terminal == nil {
		p.wg.Add(1)
		go p.logLoop()
	}
	return p
}

func (p *snapshotProgress) Phase(name string) {
	p.mu.Lock()
	prev := p.phase
	p.phase = name
	p.mu.Unlock()
	if prev == "copy" {
		// The bars are done: finish drawing them before the next log line.
		p.finishBars(true)
	}
}

func (p *snapshotProgress) Plan(tables []snapshot.TablePlan) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.started = time.Now()
	sorted := append([]snapshot.TablePlan(nil), tables...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].EstBytes > sorted[j].EstBytes })
	for _, t := range sorted {
		p.tables[t.Name] = &tableProgress{plan: t}
		p.estAll += max(t.EstBytes, 1)
		p.chunkAll += int64(t.Chunks)
	}
	if p.out == nil {
		return
	}
	p.bars = mpb.New(mpb.WithOutput(p.out), mpb.WithAutoRefresh(), mpb.WithWidth(40), mpb.WithRefreshRate(200*time.Millisecond))
	for i, t := range sorted {
		if i == maxBars {
			break
		}
		tp := p.tables[t.Name]
		tp.bar = p.bars.AddBar(max(t.EstBytes, 1),
			mpb.PrependDecorators(decor.Name(truncate(t.Name, 36), decor.WC{W: 37, C: decor.DindentRight})),
			mpb.AppendDecorators(
				decor.Any(func(decor.Statistics) string { return tp.chunksText() }, decor.WC{W: 18}),
				decor.Any(func(decor.Statistics) string { return fmt.Sprintf("%d rows", tp.rows.Load()) }, decor.WC{W: 14}),
				decor.Any(func(decor.Statistics) string { return units.Bytes(tp.bytes.Load()) }, decor.WC{W: 11}),
				decor.Any(func(decor.Statistics) string {
					if eta := tp.eta(); eta > 0 {
						return "  ETA " + eta.String()
					}
					return ""
				}),
			))
	}
	p.total = p.bars.AddBar(max(p.estAll, 1), mpb.BarPriority(1<<30),
		mpb.PrependDecorators(decor.Name("total", decor.WC{W: 37, C: decor.DindentRight})),
		mpb.AppendDecorators(
			decor.Any(func(decor.Statistics) string { return fmt.Sprintf("%d/%d chunks", p.chunks.Load(), p.chunkAll) }, decor.WC{W: 18}),
			decor.Any(func(decor.Statistics) string { return fmt.Sprintf("%d rows", p.rows.Load()) }, decor.WC{W: 14}),
			decor.Any(func(decor.Statistics) string { return units.Bytes(p.bytes.Load()) }, decor.WC{W: 11}),
			decor.Any(func(decor.Statistics) string { return fmt.Sprintf("  %.1f MB/s", p.rate()/1e6) }),
			decor.Any(func(decor.Statistics) string { return "  ETA " + p.eta().String() }),
		))
}

func (p *snapshotProgress) Copied(table string, rows, bytes int64) {
	p.rows.Add(rows)
	p.bytes.Add(bytes)
	tp := p.tables[table] // the map is not written after Plan
	if tp == nil {
		return
	}
	tp.rows.Add(rows)
	if p.phaseNow() != "copy" {
		// Before the copy phase: what an interrupted run copied.
		tp.kept.Add(bytes)
		p.keptBytes.Add(bytes)
	} else if tp.first.Load() == 0 {
		tp.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	b := tp.bytes.Add(bytes)
	if tp.bar != nil {
		// The heap size is only an estimate of the COPY text: grow the
		// bar rather than let it complete early.
		if b >= tp.plan.EstBytes {
			tp.bar.SetTotal(b+1, false)
		}
		tp.bar.SetCurrent(b)
	}
	if p.total != nil {
		p.total.SetCurrent(min(p.bytes.Load(), p.estAll-1))
	}
}

func (p *snapshotProgress) ChunkDone(table string) {
	p.chunks.Add(1)
	if tp := p.tables[table]; tp != nil {
		tp.chunks.Add(1)
	}
}

func (p *snapshotProgress) TableDone(table string) {
	p.doneTbl.Add(1)
	tp := p.tables[table]
	if tp == nil {
		return
	}
	tp.done.Store(true)
	if tp.bar != nil {
		tp.bar.SetTotal(-1, true)
	}
}

func (p *snapshotProgress) phaseNow() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// rate is the bytes per second this process has copied since the copy
// began (what an interrupted run copied does not count).
func (p *snapshotProgress) rate() float64 {
	el := time.Since(p.started).Seconds()
	return float64(p.bytes.Load()-p.keptBytes.Load()) / max(el, 0.001)
}

// eta extrapolates from the bytes copied so far against the tables' heap
// sizes, a fair estimate of the COPY text to come.
func (p *snapshotProgress) eta() time.Duration {
	done := p.bytes.Load()
	rate := p.rate()
	if done <= 0 || p.estAll <= done || rate <= 0 {
		return 0
	}
	return time.Duration(float64(p.estAll-done) / rate * float64(time.Second)).Round(time.Second)
}

// inProgress describes the tables partly copied, largest first, at most
// maxBars of them: "public.a 3/10 chunks, 12.0 MiB of about 40.0 MiB,
// ETA 8s".
func (p *snapshotProgress) inProgress() []string {
	var out []string
	for _, tp := range p.sortedTables() {
		if tp.done.Load() || tp.chunks.Load() == 0 && tp.bytes.Load() == 0 {
			continue
		}
		s := fmt.Sprintf("%s %s, %s of about %s", tp.plan.Name, tp.chunksText(), units.Bytes(tp.bytes.Load()), units.Bytes(tp.plan.EstBytes))
		if eta := tp.eta(); eta > 0 {
			s += ", ETA " + eta.String()
		}
		if out = append(out, s); len(out) == maxBars {
			break
		}
	}
	return out
}

func (p *snapshotProgress) sortedTables() []*tableProgress {
	out := make([]*tableProgress, 0, len(p.tables))
	for _, tp := range p.tables {
		out = append(out, tp)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].plan.EstBytes != out[j].plan.EstBytes {
			return out[i].plan.EstBytes > out[j].plan.EstBytes
		}
		return out[i].plan.Name < out[j].plan.Name
	})
	return out
}

func (p *snapshotProgress) logLoop() {
	defer p.wg.Done()
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stopCh:
			return
		case <-t.C:
			p.mu.Lock()
			phase, n := p.phase, len(p.tables)
			p.mu.Unlock()
			if phase != "copy" {
				continue
			}
			p.log.Info("snapshot progress", zap.String("phase", phase),
				zap.Int64("tables_done", p.doneTbl.Load()), zap.Int("tables", n),
				zap.Int64("chunks_done", p.chunks.Load()), zap.Int64("chunks", p.chunkAll),
				zap.Int64("rows", p.rows.Load()), zap.Int64("bytes", p.bytes.Load()), zap.Int64("bytes_estimated", p.estAll),
				zap.Float64("mb_per_s", p.rate()/1e6), zap.Duration("eta", p.eta()),
				zap.Strings("tables_copying", p.inProgress()))
		}
	}
}

// stop ends the log loop and the bars; success completes the total bar.
func (p *snapshotProgress) stop(success bool) {
	p.stopOnce.Do(func() {
		close(p.stopCh)
		p.wg.Wait()
	})
	p.finishBars(success)
}

// finishBars completes (or abandons) the bars and waits until they are
// drawn for the last time. It may be called more than once.
func (p *snapshotProgress) finishBars(success bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bars == nil {
		return
	}
	for _, tp := range p.tables {
		if tp.bar != nil && !tp.bar.Completed() {
			if success {
				tp.bar.SetTotal(-1, true)
			} else {
				tp.bar.Abort(false)
			}
		}
	}
	if success {
		p.total.SetTotal(-1, true)
	} else {
		p.total.Abort(false)
	}
	p.bars.Wait()
	p.bars = nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
