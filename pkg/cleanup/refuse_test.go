package cleanup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"replicator/pkg/state"
)

// While a trigger-capture stream applies, or the source carries a cutover
// fence, cleanup refuses and removes nothing; forced, it removes the rest
// but never the fence nor its record.
func TestCleanupRefusesWhileFencedOrStreaming(t *testing.T) {
	ctx := context.Background()
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE app (id int PRIMARY KEY);
		CREATE SCHEMA replicator; CREATE TABLE replicator.ticks (id bigint PRIMARY KEY, at timestamptz NOT NULL);
		INSERT INTO replicator.ticks VALUES (1, now() - interval '1 hour')`)
	sconn, tconn := pg.Connect(t, src), pg.Connect(t, dst)
	if err := state.Begin(ctx, tconn, &state.State{Capture: state.CaptureTrigger, SnapshotStatus: state.SnapshotDone}); err != nil {
		t.Fatal(err)
	}
	count := func(db, q string) string { return strings.Join(queryRows(t, db, q), ",") }

	// A stream holds its lock on the target (as apply.Stream does for as
	// long as it runs), however long ago it last applied a batch.
	pg.Exec(t, dst, `UPDATE replicator.state SET applied_at = now() - interval '1 hour'`)
	streamConn := pg.Connect(t, dst)
	if _, err := streamConn.Exec(ctx, `SELECT pg_advisory_lock($1)`, state.StreamLockKey); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, sconn, tconn); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "a stream is running") {
		t.Fatalf("cleanup while streaming: %v, want ErrBusy naming the stream", err)
	}
	streamConn.Close(ctx) // the stream stopped: its lock went with its session
	// A stream that applied a batch a moment ago and stopped is stopped.
	pg.Exec(t, dst, `UPDATE replicator.state SET applied_at = now()`)
	if b, err := CheckBusy(ctx, sconn, tconn); err != nil || len(b.Reasons) != 0 {
		t.Fatalf("stopped stream: busy %+v, %v; want nothing in use", b, err)
	}

	// The source is fenced: trigger and record.
	pg.Exec(t, src, `CREATE SCHEMA replicator_fence;
		CREATE FUNCTION replicator_fence.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'fenced'; END $$;
		CREATE TRIGGER replicator_fence BEFORE INSERT ON app FOR EACH STATEMENT EXECUTE FUNCTION replicator_fence.refuse()`)
	pg.Exec(t, dst, `CREATE TABLE replicator.cutover (step text PRIMARY KEY, status text, detail jsonb);
		INSERT INTO replicator.cutover VALUES ('fence', 'done', '{"method":"trigger"}')`)
	_, err := Run(ctx, sconn, tconn)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "--unfence") || !strings.Contains(err.Error(), "--force would remove the rest but leave") {
		t.Fatalf("cleanup while fenced: %v, want ErrBusy naming --unfence and what --force leaves", err)
	}
	if got := count(src, `SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator'`); got != "1" {
		t.Fatalf("a refused cleanup removed schema replicator on the source")
	}

	done, err := RunWith(ctx, sconn, tconn, Options{Force: true})
	if err != nil {
		t.Fatalf("forced cleanup: %v", err)
	}
	if len(done) == 0 {
		t.Errorf("forced cleanup removed nothing")
	}
	if got := count(src, `SELECT count(*) FROM pg_trigger WHERE tgname = 'replicator_fence'`); got != "1" {
		t.Errorf("forced cleanup lifted the fence")
	}
	if got := count(src, `SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator'`); got != "0" {
		t.Errorf("forced cleanup left schema replicator on the source")
	}
	if got := count(dst, `SELECT count(*) FROM replicator.cutover WHERE step = 'fence'`); got != "1" {
		t.Errorf("forced cleanup removed the fence record")
	}
	if got := count(dst, `SELECT count(*) FROM pg_class WHERE relname = 'state' AND relnamespace = 'replicator'::regnamespace`); got != "0" {
		t.Errorf("forced cleanup left replicator.state on the target")
	}
}

func queryRows(t *testing.T, db, q string) []string {
	t.Helper()
	c := pg.Connect(t, db)
	defer c.Close(context.Background())
	var out []string
	rows, err := c.Query(context.Background(), q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v any
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, strings.TrimSpace(strings.ReplaceAll(fmtAny(v), "\n", " ")))
	}
	return out
}

func fmtAny(v any) string { return strings.TrimSpace(fmt.Sprint(v)) }
