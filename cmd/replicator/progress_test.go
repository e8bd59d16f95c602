package main

import (
	"bytes"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"replicator/pkg/snapshot"
)

// Off a terminal, progress is a structured log line on an interval with
// the rows, bytes and tables done so far.
func TestSnapshotProgressLogLines(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p := newSnapshotProgress(zap.New(core), nil, 10*time.Millisecond)
	p.Phase("copy")
	p.Plan([]snapshot.TablePlan{{Name: `"public"."a"`, EstBytes: 1000}, {Name: `"public"."b"`, EstBytes: 1000}})
	p.Copied(`"public"."a"`, 10, 500)
	p.TableDone(`"public"."a"`)
	deadline := time.Now().Add(5 * time.Second)
	for logs.FilterMessage("snapshot progress").Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	p.stop(true)
	entries := logs.FilterMessage("snapshot progress").All()
	if len(entries) == 0 {
		t.Fatal("no progress line logged")
	}
	f := entries[len(entries)-1].ContextMap()
	if f["rows"] != int64(10) || f["bytes"] != int64(500) || f["tables_done"] != int64(1) || f["tables"] != int64(2) {
		t.Errorf("progress line fields = %v", f)
	}
}

// On a terminal, bars are drawn and finish cleanly.
func TestSnapshotProgressBars(t *testing.T) {
	var out bytes.Buffer
	p := newSnapshotProgress(zap.NewNop(), &out, time.Second)
	p.Plan([]snapshot.TablePlan{{Name: `"public"."a"`, EstBytes: 100}})
	p.Phase("copy")
	p.Copied(`"public"."a"`, 3, 150) // more than estimated: the bar grows
	p.TableDone(`"public"."a"`)
	p.Phase("indexes")
	p.stop(true)
	// Off a real terminal mpb cannot tell the width and cuts the
	// decorators; the bars themselves must be there.
	if !bytes.Contains(out.Bytes(), []byte(`"public"."a"`)) || !bytes.Contains(out.Bytes(), []byte("total")) {
		t.Errorf("bars output lacks the table or the total:\n%s", out.String())
	}
}
