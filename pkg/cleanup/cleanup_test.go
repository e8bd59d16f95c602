package cleanup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) { testenv.PostgresMain(m, &pg) }

func TestCleanupRemovesEverythingAndReruns(t *testing.T) {
	ctx := context.Background()
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	pg.Exec(t, src, `CREATE TABLE app (id int PRIMARY KEY, v text);
		CREATE SCHEMA replicator; CREATE TABLE replicator.changelog (id bigserial, data jsonb);
		CREATE FUNCTION replicator.capture() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
		CREATE TRIGGER replicator_capture AFTER INSERT ON app FOR EACH ROW EXECUTE FUNCTION replicator.capture();
		CREATE TRIGGER app_own AFTER INSERT ON app FOR EACH ROW EXECUTE FUNCTION suppress_redundant_updates_trigger();
		CREATE PUBLICATION replicator FOR ALL TABLES`)
	pg.Exec(t, src, `SELECT pg_create_logical_replication_slot('replicator', 'pgoutput')`)
	sconn, tconn := pg.Connect(t, src), pg.Connect(t, dst)
	if err := state.Begin(ctx, tconn, &state.State{Capture: state.CaptureLogical, SlotName: "replicator",
		Publication: "replicator", SnapshotStatus: state.SnapshotDone}); err != nil {
		t.Fatal(err)
	}

	// While a stream consumes the slot, cleanup refuses and removes nothing.
	repl, err := pgutil.ConnectReplication(ctx, pg.URL(src), "source")
	if err != nil {
		t.Fatal(err)
	}
	if err := pglogrepl.StartReplication(ctx, repl, "replicator", 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names 'replicator'"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, sconn, tconn); !errors.Is(err, ErrSlotActive) || !strings.Contains(err.Error(), "stop `replicator stream`") {
		t.Fatalf("cleanup with an active slot: err = %v, want ErrSlotActive with the fix", err)
	}
	repl.Close(ctx)
	waitInactive(t, sconn)

	done, err := Run(ctx, sconn, tconn)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 5 { // slot, publication, 2 schemas, 1 capture trigger
		t.Fatalf("removed %v, want slot, publication, capture trigger and both schemas", done)
	}
	var left int
	sconn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE database = current_database())
		+ (SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_namespace WHERE nspname = 'replicator')
		+ (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator\_capture%')`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d replicator objects left on the source", left)
	}
	var appTrig int
	sconn.QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'app_own'`).Scan(&appTrig)
	if appTrig != 1 {
		t.Fatal("cleanup removed the application's own trigger")
	}
	if _, err := state.Load(ctx, tconn); !errors.Is(err, state.ErrNoMigration) {
		t.Fatalf("target state after cleanup: %v", err)
	}
	// Rerun: nothing left to remove, no error.
	if done, err := Run(ctx, sconn, tconn); err != nil || len(done) != 0 {
		t.Fatalf("rerun removed %v, err %v; want nothing, no error", done, err)
	}
}

// waitInactive waits until the server has noticed the closed replication
// connection and released the slot.
func waitInactive(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	for i := 0; i < 200; i++ {
		var active bool
		conn.QueryRow(context.Background(), `SELECT active FROM pg_replication_slots WHERE slot_name = 'replicator'`).Scan(&active)
		if !active {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatal("slot still active 5 s after its connection closed")
}
