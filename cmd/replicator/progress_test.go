package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"replicator/pkg/snapshot"
	"replicator/pkg/units"
)

// Off a terminal, progress is a structured log line on an interval with
// the rows, bytes, chunks and tables done so far, up to the totals, and
// each table partly copied with its chunks and bytes.
func TestSnapshotProgressLogLines(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	logged := make(chan struct{}, 1)
	log := zap.New(core, zap.Hooks(func(e zapcore.Entry) error {
		if e.Message == "snapshot progress" {
			select {
			case logged <- struct{}{}:
			default:
			}
		}
		return nil
	}))
	// untilLine waits for a progress line with tables_done = done and
	// returns its fields.
	untilLine := func(done int64) map[string]any {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case <-logged:
				all := logs.FilterMessage("snapshot progress").All()
				if f := all[len(all)-1].ContextMap(); f["tables_done"] == done {
					return f
				}
			case <-timeout:
				t.Fatalf("no progress line with %d tables done; lines: %v", done, logs.FilterMessage("snapshot progress").All())
			}
		}
	}
	a, b := `"public"."a"`, `"public"."b"`
	p := newSnapshotProgress(log, nil, 10*time.Millisecond)
	p.Plan([]snapshot.TablePlan{{Name: a, EstBytes: 500, Chunks: 1}, {Name: b, EstBytes: 3000, Chunks: 2}})
	p.Phase("copy")
	p.Copied(a, 10, 500)
	p.ChunkDone(a)
	p.TableDone(a)
	p.Copied(b, 20, 1500)
	p.ChunkDone(b)
	f := untilLine(1)
	if f["phase"] != "copy" || f["tables"] != int64(2) || f["rows"] != int64(30) || f["bytes"] != int64(2000) ||
		f["bytes_estimated"] != int64(3500) || f["chunks_done"] != int64(2) || f["chunks"] != int64(3) {
		t.Errorf("progress line after the first table = %v, want 1 of 2 tables, 2 of 3 chunks, 30 rows, 2000 of 3500 bytes", f)
	}
	if copying, _ := f["tables_copying"].([]any); len(copying) != 1 || !strings.HasPrefix(fmt.Sprint(copying[0]), b+" 1/2 chunks, "+units.Bytes(1500)+" of about "+units.Bytes(3000)) {
		t.Errorf("tables being copied = %v, want only %s at 1/2 chunks", f["tables_copying"], b)
	}
	p.Copied(b, 25, 1500)
	p.ChunkDone(b)
	p.TableDone(b)
	f = untilLine(2)
	if f["tables"] != int64(2) || f["rows"] != int64(55) || f["bytes"] != int64(3500) || f["eta"] != time.Duration(0) || f["chunks_done"] != int64(3) {
		t.Errorf("progress line at the end of the copy = %v, want 2 of 2 tables, 3 of 3 chunks, 55 rows, 3500 bytes, no ETA left", f)
	}
	p.Phase("indexes")
	p.stop(true)
}

// ansi matches the terminal control sequences the bars redraw with.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// On a terminal, the largest tables have a bar each with their rows and
// bytes, the total bar counts every table, and at the end of the copy
// every bar is full: what a person watching the copy sees.
func TestSnapshotProgressBars(t *testing.T) {
	screen, term := openPTY(t, 160, 60)
	var drawn bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&drawn, screen); close(read) }() // ends when term is closed

	type tbl struct {
		name        string
		est         int64
		rows, bytes int64 // copied, in three chunks
	}
	var tables []tbl
	var plan []snapshot.TablePlan
	for i := range maxBars + 1 { // one more than get a bar
		tb := tbl{name: fmt.Sprintf(`"public"."t%02d"`, i), est: int64(100000 - i*1000), rows: int64(30 * (i + 1)), bytes: int64(90000 - i*900)}
		if i == 0 {
			tb.bytes = 3 * tb.est // more than estimated: the bar grows, and is still full at the end
		}
		tables = append(tables, tb)
		plan = append(plan, snapshot.TablePlan{Name: tb.name, EstBytes: tb.est, Chunks: 3})
	}
	p := newSnapshotProgress(zap.NewNop(), term, time.Second)
	p.Phase("copy")
	p.Plan(plan)
	var rows, bytes int64
	for chunk := range 3 {
		for _, tb := range tables {
			p.Copied(tb.name, tb.rows/3, tb.bytes/3)
			p.ChunkDone(tb.name)
			if chunk == 2 {
				p.TableDone(tb.name)
			}
		}
	}
	for _, tb := range tables {
		rows, bytes = rows+tb.rows, bytes+tb.bytes
	}
	p.Phase("indexes")
	p.stop(true)
	term.Close()
	<-read

	// The last frame drawn: one line per bar, the largest table first,
	// then the total.
	var lines []string
	for _, l := range strings.Split(ansi.ReplaceAllString(drawn.String(), ""), "\n") {
		if l = strings.TrimRight(l, "\r "); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) < maxBars+1 {
		t.Fatalf("drew %d lines, want at least %d:\n%s", len(lines), maxBars+1, drawn.String())
	}
	frame := lines[len(lines)-maxBars-1:]
	full := regexp.MustCompile(`\[=+\]`)
	for i, tb := range tables[:maxBars] {
		l := frame[i]
		if !strings.HasPrefix(l, tb.name) || !full.MatchString(l) ||
			!strings.Contains(l, fmt.Sprintf(" %d rows", tb.rows)) || !strings.Contains(l, " "+units.Bytes(tb.bytes)) || !strings.Contains(l, " 3/3 chunks") {
			t.Errorf("bar %d = %q, want %s full with 3/3 chunks, %d rows and %s", i, l, tb.name, tb.rows, units.Bytes(tb.bytes))
		}
	}
	last := tables[maxBars].name
	if strings.Contains(drawn.String(), last) {
		t.Errorf("the smallest table %s has a bar, but only the %d largest should", last, maxBars)
	}
	total := frame[maxBars]
	if !strings.HasPrefix(total, "total") || !full.MatchString(total) || !strings.Contains(total, fmt.Sprintf(" %d rows", rows)) ||
		!strings.Contains(total, " "+units.Bytes(bytes)) || !strings.HasSuffix(total, "ETA 0s") || !strings.Contains(total, fmt.Sprintf(" %d/%d chunks", 3*len(tables), 3*len(tables))) ||
		!strings.Contains(total, " MB/s") {
		t.Errorf("total bar = %q, want full with every table's chunks, %d rows and %s, a rate, ETA 0s", total, rows, units.Bytes(bytes))
	}
}
