package status

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
	"replicator/pkg/position"
	"replicator/pkg/state"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{}))
}

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
	for _, want := range []string{"capture:         logical", "applied up to:   " + lsn, "MiB of source WAL not yet applied"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text status lacks %q:\n%s", want, out.String())
		}
	}
}
