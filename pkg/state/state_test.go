package state

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/position"
)

// One server for the package, a database per test.
var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

func target(t *testing.T) *pgx.Conn {
	t.Helper()
	conn := pg.Connect(t, pg.NewDatabase(t))
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func load(t *testing.T, conn *pgx.Conn) *State {
	t.Helper()
	st, err := Load(context.Background(), conn)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestLoadWithoutMigration(t *testing.T) {
	ctx := context.Background()
	conn := target(t)
	if _, err := Load(ctx, conn); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("no schema: %v, want ErrNoMigration", err)
	}
	if err := EnsureSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := EnsureSchema(ctx, conn); err != nil {
		t.Fatalf("EnsureSchema repeated: %v", err)
	}
	if _, err := Load(ctx, conn); !errors.Is(err, ErrNoMigration) {
		t.Fatalf("empty table: %v, want ErrNoMigration", err)
	}
}

func TestBeginLoad(t *testing.T) {
	ctx := context.Background()
	conn := target(t)
	before := time.Now().Add(-time.Minute)
	in := &State{Capture: CaptureLogical, SlotName: "slot_a", Publication: "pub_a", ConsistentLSN: "0/16B3748",
		SnapshotStatus: SnapshotCopying}
	if err := Begin(ctx, conn, in); err != nil {
		t.Fatal(err)
	}
	st := load(t, conn)
	if st.Capture != CaptureLogical || st.SlotName != "slot_a" || st.Publication != "pub_a" || st.ConsistentLSN != "0/16B3748" ||
		st.SnapshotStatus != SnapshotCopying || st.SnapshotXmin != "" {
		t.Errorf("loaded %+v", st)
	}
	if !st.Applied.IsZero() || !st.AppliedCommitTime.IsZero() || st.LastError != "" {
		t.Errorf("a new migration has applied %v at %s, error %q", st.Applied, st.AppliedCommitTime, st.LastError)
	}
	if st.StartedAt.Before(before) || st.UpdatedAt.Before(before) {
		t.Errorf("started %s, updated %s", st.StartedAt, st.UpdatedAt)
	}

	// A second Begin replaces the migration, applied position included.
	if err := RecordApplied(ctx, conn, position.LSN(0x2000000), time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := Begin(ctx, conn, &State{Capture: CaptureTrigger, SnapshotXmin: "100:105:101,103", SnapshotStatus: SnapshotCopying}); err != nil {
		t.Fatal(err)
	}
	st = load(t, conn)
	if st.Capture != CaptureTrigger || st.SnapshotXmin != "100:105:101,103" || st.SlotName != "" || st.ConsistentLSN != "" {
		t.Errorf("after a second Begin: %+v", st)
	}
	if st.Applied != position.Batch(0) {
		t.Errorf("after a second Begin the applied position is %v, want batch 0", st.Applied)
	}
}

// Each capture's position goes in and comes out typed, with its commit
// time; it is written inside the caller's transaction and rolls back
// with it.
func TestRecordApplied(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		capture string
		first   position.Position
		second  position.Position
	}{
		{CaptureLogical, position.LSN(0x16B3748), position.LSN(0x1_0000_0028)},
		{CaptureTrigger, position.Batch(7), position.Batch(1 << 33)},
	} {
		t.Run(c.capture, func(t *testing.T) {
			conn := target(t)
			if err := Begin(ctx, conn, &State{Capture: c.capture, SnapshotStatus: SnapshotDone}); err != nil {
				t.Fatal(err)
			}
			if err := RecordError(ctx, conn, "an earlier failure"); err != nil {
				t.Fatal(err)
			}
			commit := time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)
			if err := RecordApplied(ctx, conn, c.first, commit); err != nil {
				t.Fatal(err)
			}
			st := load(t, conn)
			if st.Applied != c.first || !st.AppliedCommitTime.Equal(commit) || st.AppliedAt.IsZero() {
				t.Errorf("applied %v at commit %s (applied at %s), want %v at %s", st.Applied, st.AppliedCommitTime, st.AppliedAt, c.first, commit)
			}
			if st.LastError != "" {
				t.Errorf("a recorded position leaves the last error %q", st.LastError)
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := RecordApplied(ctx, tx, c.second, commit.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if st := load(t, conn); st.Applied != c.first {
				t.Errorf("after a rolled back record: %v, want %v", st.Applied, c.first)
			}
			if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				return RecordApplied(ctx, tx, c.second, commit.Add(time.Second))
			}); err != nil {
				t.Fatal(err)
			}
			if st := load(t, conn); st.Applied != c.second || !st.AppliedCommitTime.Equal(commit.Add(time.Second)) {
				t.Errorf("after a committed record: %v at %s, want %v", st.Applied, st.AppliedCommitTime, c.second)
			}
		})
	}
}

func TestRecordAppliedRefusesOtherPositions(t *testing.T) {
	ctx := context.Background()
	conn := target(t)
	if err := Begin(ctx, conn, &State{Capture: CaptureTrigger, SnapshotStatus: SnapshotDone}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []position.Position{{}, position.ChangelogID(42)} {
		if err := RecordApplied(ctx, conn, p, time.Now()); err == nil || !strings.Contains(err.Error(), p.String()) {
			t.Errorf("recording %v: %v, want an error naming it", p, err)
		}
	}
}

func TestSetSnapshotStatusAndRecordError(t *testing.T) {
	ctx := context.Background()
	conn := target(t)
	if err := Begin(ctx, conn, &State{Capture: CaptureLogical, SnapshotStatus: SnapshotCopying}); err != nil {
		t.Fatal(err)
	}
	first := load(t, conn)
	if err := SetSnapshotStatus(ctx, conn, SnapshotDone); err != nil {
		t.Fatal(err)
	}
	if err := RecordError(ctx, conn, "apply insert on public.t: duplicate key"); err != nil {
		t.Fatal(err)
	}
	st := load(t, conn)
	if st.SnapshotStatus != SnapshotDone || st.LastError != "apply insert on public.t: duplicate key" {
		t.Errorf("status %q, last error %q", st.SnapshotStatus, st.LastError)
	}
	if st.UpdatedAt.Before(first.UpdatedAt) || !st.StartedAt.Equal(first.StartedAt) {
		t.Errorf("updated %s (was %s), started %s (was %s)", st.UpdatedAt, first.UpdatedAt, st.StartedAt, first.StartedAt)
	}
}
