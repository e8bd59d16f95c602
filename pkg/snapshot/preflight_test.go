package snapshot

import (
	"context"
	"errors"
	"testing"

	"replicator/internal/testenv"
)

// runRefused runs a snapshot that preflight must refuse and checks the
// refusal names what it should and that nothing was written anywhere.
func runRefused(t *testing.T, cfg Config, src, dst string, mention ...string) *PreflightError {
	t.Helper()
	_, err := Run(context.Background(), cfg, testLogger(t))
	var pe *PreflightError
	if !errors.As(err, &pe) || !errors.Is(err, ErrPreflight) {
		t.Fatalf("err = %v, want a preflight refusal", err)
	}
	mustContain(t, err.Error(), mention...)
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'replicator'`); n != "0" {
		t.Error("preflight refused but schema replicator was created on the target")
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_publication`); n != "0" {
		t.Error("preflight refused but a publication was created on the source")
	}
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = $1`, cfg.SlotName); n != "0" {
		t.Error("preflight refused but the slot was created")
	}
	return pe
}

func TestPreflightRefusesTableWithoutKey(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE "no key" (a int); CREATE SCHEMA s2; CREATE TABLE s2.logs (line text)`)
	pe := runRefused(t, cfg, src, dst, `"public"."no key"`, `"s2"."logs"`, "--replica-identity-full")
	if len(pe.Problems) != 2 {
		t.Errorf("problems = %v, want the two tables without a key", pe.Problems)
	}
	for _, p := range pe.Problems {
		if p.Fix == "" {
			t.Errorf("problem %v has no fix", p)
		}
	}
}

// With --replica-identity-full exactly the tables without a key get
// REPLICA IDENTITY FULL, and they are copied.
func TestReplicaIdentityFullSetsExactlyThoseTables(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `
		CREATE TABLE keyed (id int PRIMARY KEY, v text);
		CREATE TABLE by_index (id int NOT NULL, v text);
		CREATE UNIQUE INDEX by_index_id ON by_index (id);
		ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_id;
		CREATE TABLE "no key" (a int, b text);
		CREATE TABLE nothing (a int) ;
		ALTER TABLE nothing REPLICA IDENTITY NOTHING;
		CREATE UNLOGGED TABLE scratch (a int);
		INSERT INTO "no key" SELECT i, 'x' FROM generate_series(1, 10) i;
		INSERT INTO nothing VALUES (1), (1);`)
	cfg.ReplicaIdentityFull = true
	want := tableSums(t, src)
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	got := queryString(t, src, `SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class
		WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'`)
	if got != "by_index=i,keyed=d,no key=f,nothing=f,scratch=d" {
		t.Errorf("replica identities on the source: %s", got)
	}
	compareSums(t, want, tableSums(t, dst))
}

func TestPreflightRefusesWalLevelReplica(t *testing.T) {
	rep, err := testenv.StartPostgres(testenv.PostgresOptions{WalLevel: "replica"})
	if err != nil {
		t.Fatal(err)
	}
	defer rep.Close()
	src := rep.NewDatabase(t)
	dst := pg.NewDatabase(t)
	cfg := Config{SourceURL: rep.URL(src), TargetURL: pg.URL(dst), SlotName: "s_walreplica", Capture: CaptureLogical}
	_, err = Run(context.Background(), cfg, testLogger(t))
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("err = %v, want a preflight refusal", err)
	}
	mustContain(t, err.Error(), "wal_level", `"replica"`, "wal_level = logical", "--capture trigger")
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'replicator'`); n != "0" {
		t.Error("schema replicator was created on the target")
	}
}

func TestPreflightRefusesUserWithoutReplication(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_norepl') THEN
			CREATE ROLE app_norepl LOGIN PASSWORD 'norepl-Pw-1';
		END IF; END $$;
		CREATE TABLE t (id int PRIMARY KEY);
		GRANT SELECT ON t TO app_norepl;`)
	cfg.SourceURL = pg.URLAs("app_norepl", "norepl-Pw-1", src)
	cfg.Capture = CaptureLogical
	runRefused(t, cfg, src, dst, `source user "app_norepl"`, "REPLICATION", `ALTER ROLE "app_norepl" REPLICATION`)
}

func TestPreflightRefusesSlotInUse(t *testing.T) {
	src, _, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE t (id int PRIMARY KEY)`)
	pg.Exec(t, src, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.SlotName)
	_, err := Run(context.Background(), cfg, testLogger(t))
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("err = %v, want a preflight refusal", err)
	}
	mustContain(t, err.Error(), `replication slot "`+cfg.SlotName+`"`, "already exists", "pg_drop_replication_slot")
}

func TestPreflightRefusesPublicationNotForAllTables(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION replicator FOR TABLE t`)
	_, err := Run(context.Background(), cfg, testLogger(t))
	if !errors.Is(err, ErrPreflight) {
		t.Fatalf("err = %v, want a preflight refusal", err)
	}
	mustContain(t, err.Error(), `publication "replicator"`, "DROP PUBLICATION")
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'replicator'`); n != "0" {
		t.Error("schema replicator was created on the target")
	}
}

// A target that already holds tables and no replicator state is never
// overwritten.
func TestPreflightRefusesTargetWithTables(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)`)
	pg.Exec(t, dst, `CREATE TABLE precious (id int); INSERT INTO precious VALUES (42)`)
	runRefused(t, cfg, src, dst, `"public"."precious"`, "no replicator state", "empty database")
	if n := queryString(t, dst, `SELECT count(*)::text FROM precious`); n != "1" {
		t.Error("the target's table was touched")
	}
}

// Trigger capture needs only table ownership (or TRIGGER): a role that
// may merely read the tables is refused before anything is installed.
func TestPreflightRefusesTriggerCaptureWithoutOwnership(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, `DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app_reader') THEN
			CREATE ROLE app_reader LOGIN PASSWORD 'reader-Pw-1';
		END IF; END $$;
		CREATE TABLE t (id int PRIMARY KEY);
		GRANT SELECT ON t TO app_reader;`)
	cfg.SourceURL = pg.URLAs("app_reader", "reader-Pw-1", src)
	cfg.Capture = CaptureTrigger
	runRefused(t, cfg, src, dst, `source user "app_reader"`, "TRIGGER", `"public"."t"`)
	if n := queryString(t, src, `SELECT count(*)::text FROM pg_namespace WHERE nspname = 'replicator'`); n != "0" {
		t.Error("preflight refused but schema replicator was created on the source")
	}
}
