package apply

import (
	"context"
	"strings"
	"testing"
)

// TestXidSnapshotMatchesPostgres checks Visible against PostgreSQL's own
// pg_visible_in_snapshot for transactions committed before a snapshot,
// running while it is taken (one of them inside a SAVEPOINT that wrote),
// and started after it, and FullXID against the server's xid8.
func TestXidSnapshotMatchesPostgres(t *testing.T) {
	ctx := context.Background()
	db := srcPG.NewDatabase(t)
	srcPG.Exec(t, db, `CREATE TABLE t (id int PRIMARY KEY)`)
	before := srcPG.Connect(t, db)
	running := srcPG.Connect(t, db)
	sub := srcPG.Connect(t, db)
	after := srcPG.Connect(t, db)
	taker := srcPG.Connect(t, db)
	var xBefore, xRunning, xSub, xAfter uint64
	var xRunning32 uint32
	mustExec(t, before, "BEGIN")
	mustExec(t, before, "INSERT INTO t VALUES (1)")
	if err := before.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xBefore); err != nil {
		t.Fatal(err)
	}
	mustExec(t, before, "COMMIT")
	mustExec(t, running, "BEGIN")
	if err := running.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint, pg_current_xact_id()::xid::text::bigint").Scan(&xRunning, &xRunning32); err != nil {
		t.Fatal(err)
	}
	mustExec(t, sub, "BEGIN")
	mustExec(t, sub, "SAVEPOINT a")
	mustExec(t, sub, "INSERT INTO t VALUES (2)")
	if err := sub.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xSub); err != nil {
		t.Fatal(err)
	}
	var snapText string
	if err := taker.QueryRow(ctx, "SELECT pg_current_snapshot()::text").Scan(&snapText); err != nil {
		t.Fatal(err)
	}
	mustExec(t, running, "COMMIT")
	mustExec(t, sub, "RELEASE a")
	mustExec(t, sub, "COMMIT")
	mustExec(t, after, "BEGIN")
	if err := after.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xAfter); err != nil {
		t.Fatal(err)
	}
	mustExec(t, after, "COMMIT")

	snap, err := ParseXidSnapshot(snapText)
	if err != nil {
		t.Fatal(err)
	}
	if snap.String() != snapText {
		t.Errorf("snapshot %q prints back as %q", snapText, snap.String())
	}
	cases := map[string]uint64{"committed before": xBefore, "running": xRunning, "savepoint's top level": xSub, "started after": xAfter}
	want := map[string]bool{"committed before": true, "running": false, "savepoint's top level": false, "started after": false}
	for name, x := range cases {
		var pgSays bool
		if err := taker.QueryRow(ctx, "SELECT pg_visible_in_snapshot($1::bigint::text::xid8, $2::pg_snapshot)", int64(x), snapText).Scan(&pgSays); err != nil {
			t.Fatal(err)
		}
		if got := snap.Visible(x); got != pgSays || got != want[name] {
			t.Errorf("%s transaction %d in %s: Visible says %v, PostgreSQL %v, want %v", name, x, snapText, got, pgSays, want[name])
		}
	}
	if got := FullXID(xRunning32, snap.Xmax); got != xRunning {
		t.Errorf("FullXID(%d, %d) = %d, want %d", xRunning32, snap.Xmax, got, xRunning)
	}
}

func TestFullXIDAcrossEpochs(t *testing.T) {
	const epoch1 = uint64(1) << 32
	for _, c := range []struct {
		xid  uint32
		ref  uint64
		want uint64
	}{
		{xid: 10, ref: epoch1 + 5, want: epoch1 + 10},                               // just after the reference, same epoch
		{xid: 0xFFFFFFF0, ref: epoch1 + 5, want: epoch1 - 16},                       // before it, previous epoch
		{xid: 3, ref: epoch1 - 2, want: epoch1 + 3},                                 // after it, next epoch
		{xid: 1000, ref: 2000, want: 1000},                                          // epoch 0
		{xid: 0x80000010, ref: 3*epoch1 + 0x10, want: 3*epoch1 + 0x10 - 0x80000000}, // 2^31 away: the earlier one
	} {
		if got := FullXID(c.xid, c.ref); got != c.want {
			t.Errorf("FullXID(%d, %d) = %d, want %d", c.xid, c.ref, got, c.want)
		}
	}
}

func TestParseXidSnapshotRejects(t *testing.T) {
	for _, s := range []string{"", "1:2", "5:3:", "1:5:7", "a:5:", "1:5:2,x"} {
		if _, err := ParseXidSnapshot(s); err == nil || !strings.Contains(err.Error(), "snapshot") {
			t.Errorf("ParseXidSnapshot(%q) = %v, want an error naming the snapshot", s, err)
		}
	}
}

// TestChunkFilterDecide walks every case of a row moved by its key
// between two chunks copied at different moments, plus a table copied
// whole and a truncate seen by one chunk only.
func TestChunkFilterDecide(t *testing.T) {
	early := XidSnapshot{Xmin: 100, Xmax: 100}                    // sees transactions below 100
	late := XidSnapshot{Xmin: 200, Xmax: 210, Xip: []uint64{205}} // sees below 210 except 205
	f, err := NewChunkFilter(map[string][]KeyRange{
		`public.a`: {{LoOpen: true, Hi: 1000, Snapshot: early}, {Lo: 1000, HiOpen: true, Snapshot: late}},
		`public.k`: {{Whole: true, Snapshot: late}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		table      string
		oldK, newK int64
		xid        uint64
		want       Decision
	}{
		{"before both copies", "public.a", 5, 2000, 50, Skip},
		{"after both copies", "public.a", 5, 2000, 300, Apply},
		{"running while the late chunk was copied", "public.a", 2000, 2000, 205, Apply},
		{"moved from the early chunk into the late one", "public.a", 5, 2000, 150, DeleteOld},
		{"moved from the late chunk into the early one", "public.a", 2000, 5, 150, InsertNew},
		{"key below every planned one", "public.a", -1 << 62, -1 << 62, 150, Apply},
		{"key above every planned one", "public.a", 1 << 62, 1 << 62, 150, Skip},
		{"keyless table, seen", "public.k", 0, 0, 150, Skip},
		{"table not copied in chunks", "public.other", 1, 1, 50, Apply},
	} {
		if got := f.Decide(c.table, c.oldK, c.newK, c.xid); got != c.want {
			t.Errorf("%s: Decide = %d, want %d", c.name, got, c.want)
		}
	}
	if apply, err := f.Truncate("public.a", 50); err != nil || apply {
		t.Errorf("truncate seen by both chunks: apply=%v err=%v, want skipped", apply, err)
	}
	if apply, err := f.Truncate("public.a", 300); err != nil || !apply {
		t.Errorf("truncate after both chunks: apply=%v err=%v, want applied", apply, err)
	}
	if _, err := f.Truncate("public.a", 150); err == nil || !strings.Contains(err.Error(), "public.a") {
		t.Errorf("truncate between the chunks: err=%v, want an error naming the table", err)
	}
	if _, err := NewChunkFilter(map[string][]KeyRange{"public.g": {{LoOpen: true, Hi: 10}, {Lo: 11, HiOpen: true}}}); err == nil {
		t.Error("chunks leaving a gap were accepted")
	}
}
