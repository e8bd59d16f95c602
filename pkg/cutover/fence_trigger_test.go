package cutover

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// The trigger fence covers every kind of write on every user table,
// partitions named directly included, for any role (a superuser here);
// the replicator's own sessions pass with replicator.fence_bypass or in
// replica role; its undo leaves the catalog as it was.
func TestTriggerFenceCoversEveryWrite(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	pg.Exec(t, db, `CREATE TABLE plain (id int PRIMARY KEY, v text);
		CREATE TABLE parted (id int, at date) PARTITION BY RANGE (at);
		CREATE TABLE parted_2026 PARTITION OF parted FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
		CREATE VIEW plain_v AS SELECT * FROM plain;
		INSERT INTO plain VALUES (1, 'a'); INSERT INTO parted VALUES (1, '2026-05-01')`)
	triggersBefore := query(t, db, `SELECT count(*) FROM pg_trigger`)
	src := pg.Connect(t, db)
	cfg := Config{SourceURL: "x", TargetURL: "y"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	plan, err := planFence(ctx, src, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if plan.rec.Method != FenceTrigger || strings.Join(plan.rec.Tables, ",") != "public.parted,public.parted_2026,public.plain" {
		t.Fatalf("plan: method %s on %v, want trigger on the three tables", plan.rec.Method, plan.rec.Tables)
	}
	if _, err := applyFence(ctx, src, &plan.rec); err != nil {
		t.Fatal(err)
	}
	app := pg.Connect(t, db)
	for _, q := range []string{`INSERT INTO plain VALUES (2, 'b')`, `UPDATE plain SET v = 'x'`, `DELETE FROM plain`, `TRUNCATE plain`,
		`INSERT INTO parted VALUES (2, '2026-06-01')`, `INSERT INTO parted_2026 VALUES (3, '2026-06-01')`, `TRUNCATE parted`,
		`UPDATE plain_v SET v = 'y'`, `COPY plain FROM STDIN`} {
		_, err := app.Exec(ctx, q)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.ReadOnlySQLTransaction || !strings.HasPrefix(pgErr.Message, FenceMessage) {
			t.Errorf("%s under the fence: %v, want the fence's refusal", q, err)
		}
	}
	if got := query(t, db, `SELECT (SELECT count(*) FROM plain) || ' ' || (SELECT count(*) FROM parted)`); got[0] != "1 1" {
		t.Errorf("rows after refused writes: %s, want 1 1", got[0])
	}
	// The replicator's own sessions pass.
	if _, err := app.Exec(ctx, `SET replicator.fence_bypass = on; INSERT INTO plain VALUES (10, 'reverse'); RESET replicator.fence_bypass`); err != nil {
		t.Errorf("with replicator.fence_bypass: %v", err)
	}
	if _, err := app.Exec(ctx, `SET session_replication_role = replica; INSERT INTO parted_2026 VALUES (11, '2026-07-01'); RESET session_replication_role`); err != nil {
		t.Errorf("in replica role: %v", err)
	}
	// Fencing again changes nothing.
	if _, err := applyFence(ctx, src, &plan.rec); err != nil {
		t.Fatalf("second fence: %v", err)
	}
	if got := query(t, db, `SELECT count(*) FROM pg_trigger WHERE tgname = 'replicator_fence'`); got[0] != "3" {
		t.Errorf("fence triggers after fencing twice: %s, want 3", got[0])
	}
	restored, gone, _, err := undoFence(ctx, src, &plan.rec)
	if err != nil || restored != 3 || len(gone) != 0 {
		t.Fatalf("undo: restored %d, gone %v, err %v", restored, gone, err)
	}
	if got := query(t, db, `SELECT count(*) FROM pg_trigger`); got[0] != triggersBefore[0] {
		t.Errorf("triggers after undo: %s, before the fence %s", got[0], triggersBefore[0])
	}
	if got := query(t, db, `SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator_fence'`); got[0] != "0" {
		t.Errorf("schema replicator_fence left after undo")
	}
	if _, err := app.Exec(ctx, `INSERT INTO plain VALUES (3, 'c'); TRUNCATE parted`); err != nil {
		t.Errorf("after undo: %v", err)
	}
}
