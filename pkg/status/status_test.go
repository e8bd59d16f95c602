package status

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"replicator/internal/testenv"
	"replicator/pkg/position"
	"replicator/pkg/report"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

func TestStatusReportsLagAndSlot(t *testing.T) {
	ctx := context.Background()
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	sconn, tconn := pg.Connect(t, src), pg.Connect(t, dst)
	if _, err := Gather(ctx, tconn, nil); !errors.Is(err, state.ErrNoMigration) {
		t.Fatalf("status without state: %v, want ErrNoMigration", err)
	}
	// Slots are cluster-wide: this test's is named for its own database
	// (and dropped with it).
	slot := "slot_" + src
	var lsn string
	if err := sconn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&lsn); err != nil {
		t.Fatalf("create the slot: %v", err)
	}
	if err := state.Begin(ctx, tconn, &state.State{Capture: state.CaptureLogical, SlotName: slot,
		Publication: "replicator", ConsistentLSN: lsn, SnapshotStatus: state.SnapshotDone}); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, src, `CREATE TABLE filler AS SELECT g, repeat('x', 100) FROM generate_series(1, 10000) g`)
	commit := time.Now().Add(-3 * time.Second)
	applied, err := position.ParseLSN(lsn)
	if err != nil {
		t.Fatal(err)
	}
	if err := state.RecordApplied(ctx, tconn, applied, commit); err != nil {
		t.Fatal(err)
	}
	st, err := Gather(ctx, tconn, sconn)
	if err != nil {
		t.Fatal(err)
	}
	if st.SourceLagBytes == nil || *st.SourceLagBytes < 1_000_000 {
		t.Fatalf("source lag = %v, want > 1 MB after writing 10,000 rows", st.SourceLagBytes)
	}
	if st.ApplyLagSeconds == nil || *st.ApplyLagSeconds < 2.5 {
		t.Fatalf("apply lag = %v, want about 3 s", st.ApplyLagSeconds)
	}
	if st.Slot == nil || st.Slot.Name != slot || st.Slot.Active || st.Slot.RetainedWALBytes < 1_000_000 {
		t.Fatalf("slot = %+v", st.Slot)
	}
	var out bytes.Buffer
	st.WriteText(&out)
	for _, want := range []string{"capture:         logical", "applied up to:   source LSN " + lsn, "MiB of source WAL not yet applied"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text status lacks %q:\n%s", want, out.String())
		}
	}
}

// Trigger capture: lag is the changelog rows the applied tick does not
// cover, and positions read as batches and snapshots, not "803:803:".
func TestStatusTriggerLagAndPositions(t *testing.T) {
	ctx := context.Background()
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE items (id int PRIMARY KEY, v text)`)
	sconn, tconn := pg.Connect(t, src), pg.Connect(t, dst)
	if _, err := trigger.Install(ctx, sconn, trigger.Config{}, zap.NewNop()); err != nil {
		t.Fatal(err)
	}
	cp, err := trigger.StartCapturePoint(ctx, pg.URL(src), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cp.Release(ctx)
	st0 := cp.State()
	st0.SnapshotStatus = state.SnapshotDone
	if err := state.Begin(ctx, tconn, &st0); err != nil {
		t.Fatal(err)
	}
	pg.Exec(t, src, `INSERT INTO items SELECT g, 'x' FROM generate_series(1, 25) g`)

	st, err := Gather(ctx, tconn, sconn)
	if err != nil {
		t.Fatal(err)
	}
	if st.SourceLagChanges == nil || *st.SourceLagChanges != 25 {
		t.Fatalf("trigger lag = %v changes, want 25 (the rows written after the capture point)", st.SourceLagChanges)
	}
	if st.ApplyLagSeconds == nil {
		t.Fatal("no lag in seconds")
	}
	var out bytes.Buffer
	st.WriteText(&out)
	text := out.String()
	for _, want := range []string{"capture:         trigger", "25 captured changes not yet applied", "the copy's snapshot, source xid "} {
		if !strings.Contains(text, want) {
			t.Errorf("text status lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "pass --source") || strings.Contains(text, st0.SnapshotXmin) {
		t.Errorf("text status asks for --source or shows the raw snapshot %q:\n%s", st0.SnapshotXmin, text)
	}

	// Once a batch covering all of them is applied, there is no lag.
	pg.Exec(t, src, `INSERT INTO replicator.ticks (id, snap, at) VALUES (1, pg_current_snapshot(), clock_timestamp())`)
	if err := state.RecordApplied(ctx, tconn, position.Batch(1), time.Now()); err != nil {
		t.Fatal(err)
	}
	if st, err = Gather(ctx, tconn, sconn); err != nil {
		t.Fatal(err)
	}
	if *st.SourceLagChanges != 0 || *st.ApplyLagSeconds != 0 || st.Applied != "changelog batch 1" {
		t.Errorf("after batch 1: lag %d changes, %.1f s, applied %q; want 0, 0, changelog batch 1", *st.SourceLagChanges, *st.ApplyLagSeconds, st.Applied)
	}

	var md bytes.Buffer
	if err := st.WriteMarkdown(&md, report.Header{Version: "v9.9.9", Sides: []report.Side{report.SideOf("source", pg.URL(src)), report.SideOf("target", pg.URL(dst))},
		Started: time.Now().Add(-time.Second), Ended: time.Now(), Fenced: report.FenceState(ctx, tconn)}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Migration status", "| Tool | replicator v9.9.9 |", "| Source | `", "/" + src + "` |", "/" + dst + "` |",
		"| Started |", "| Ended |", "| Duration |", "| Position | changelog batch 1 |", "| Source fenced | no (no cutover recorded on the target) |",
		"| Lag | 0 captured changes not yet applied, 0.0 s |"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown status lacks %q:\n%s", want, md.String())
		}
	}
	if strings.Contains(md.String(), testenv.Password) {
		t.Errorf("markdown shows the password:\n%s", md.String())
	}
}

func TestSnapshotPoint(t *testing.T) {
	for in, want := range map[string]string{
		"803:803:":        "source xid 803, none in flight",
		"100:105:101,103": "source xid 105, 101 and 103 in flight",
		"":                "",
	} {
		if got := SnapshotPoint(in); got != want {
			t.Errorf("SnapshotPoint(%q) = %q, want %q", in, got, want)
		}
	}
}
