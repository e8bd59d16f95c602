package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"replicator/internal/testenv"
)

var (
	pg  *testenv.Postgres
	rds *testenv.Redis
)

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWithRedis(func() int {
		return testenv.RunWithPostgres(m, &pg, testenv.PostgresOptions{})
	}, &rds, testenv.RedisOptions{}))
}

func TestPostgresAuditFindsWhatGetsInTheWay(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	pg.Exec(t, db, `CREATE EXTENSION hstore;
		CREATE SCHEMA "Sales";
		CREATE TABLE "Sales"."Order Lines" (id bigserial PRIMARY KEY, v text);
		INSERT INTO "Sales"."Order Lines" (v) SELECT repeat('x', 200) FROM generate_series(1, 5000);
		CREATE TABLE logs (at timestamptz, msg text);
		CREATE TABLE logs_full (at timestamptz, msg text); ALTER TABLE logs_full REPLICA IDENTITY FULL;
		CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v text);
		CREATE TABLE ev (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
		CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
		CREATE TABLE lost_ident (a int NOT NULL); CREATE UNIQUE INDEX lost_ident_a ON lost_ident (a);
		ALTER TABLE lost_ident REPLICA IDENTITY USING INDEX lost_ident_a; DROP INDEX lost_ident_a;
		CREATE TABLE ext_tab (id int); ALTER EXTENSION hstore ADD TABLE ext_tab;
		CREATE SEQUENCE ext_seq; ALTER EXTENSION hstore ADD SEQUENCE ext_seq;
		SELECT lo_create(0);
		CREATE TABLE "line
break|pipe" (id int PRIMARY KEY);
		ALTER DATABASE `+db+` SET search_path = public, "Sales";
		ALTER ROLE postgres IN DATABASE `+db+` SET work_mem = '8MB';
		ANALYZE`)
	conn := pg.Connect(t, db)
	rep, err := Postgres(ctx, conn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// lost_ident's replica identity index was dropped: as keyless as NOTHING.
	if want := `public.logs,public.lost_ident`; strings.Join(rep.NoReplicaKey, ",") != want {
		t.Errorf("tables without key = %v, want only %s (logs_full has REPLICA IDENTITY FULL, ev is partitioned with a key)", rep.NoReplicaKey, want)
	}
	// An extension's own table and sequence are the extension's, not the app's.
	for _, tb := range rep.Tables {
		if strings.Contains(tb.Name, "ext_tab") {
			t.Errorf("the extension's table is listed: %+v", tb)
		}
	}
	if strings.Join(rep.Unlogged, ",") != "public.cache" {
		t.Errorf("unlogged = %v", rep.Unlogged)
	}
	if rep.LargeObjects != 1 || rep.Sequences != 1 {
		t.Errorf("large objects %d, sequences %d; want 1 and 1 (the extension's sequence is not the app's)", rep.LargeObjects, rep.Sequences)
	}
	if rep.Tables[0].Name != `"Sales"."Order Lines"` || rep.Tables[0].Rows != 5000 {
		t.Errorf("largest table = %+v, want \"Sales\".\"Order Lines\" with 5000 rows", rep.Tables[0])
	}
	var hstore *Extension
	for i := range rep.Extensions {
		if rep.Extensions[i].Name == "hstore" {
			hstore = &rep.Extensions[i]
		}
	}
	if hstore == nil || !hstore.OnRDS {
		t.Errorf("hstore = %+v, want listed and offered by RDS", hstore)
	}
	if rep.Capture.Mode != "logical" {
		t.Errorf("capture for a superuser on wal_level=logical = %+v, want logical", rep.Capture)
	}

	// The same database seen by a role that owns tables but may not
	// replicate: trigger capture, and the reason says why.
	pg.Exec(t, db, `CREATE ROLE app LOGIN PASSWORD 'app-pw'; GRANT CREATE ON DATABASE `+db+` TO app`)
	t.Cleanup(func() { pg.Exec(t, "postgres", "DROP OWNED BY app CASCADE; DROP ROLE IF EXISTS app") })
	app, err := pgx.Connect(ctx, pg.URLAs("app", "app-pw", db))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	rep2, err := Postgres(ctx, app, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Capture.Mode != "trigger" || !strings.Contains(rep2.Capture.Reason, "REPLICATION") {
		t.Errorf("capture for a plain role = %+v, want trigger naming the REPLICATION attribute", rep2.Capture)
	}

	var out bytes.Buffer
	if err := (&Report{Postgres: rep}).Write(&out, "markdown"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Migration audit", "public.logs", "--replica-identity-full", "| \"Sales\".\"Order Lines\" | 5000 |",
		"later changes to them are not carried", "verify compares them",
		"carried to the target database by the snapshot: search_path", "not carried", "work_mem (role postgres)",
		`| public."line\nbreak\|pipe" | 0 |`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "8MB") {
		t.Errorf("markdown shows a setting's value:\n%s", out.String())
	}
}

func TestRedisAudit(t *testing.T) {
	ctx := context.Background()
	c0, c3 := rds.Client(0), rds.Client(3)
	defer c0.Close()
	defer c3.Close()
	c0.FlushAll(ctx)
	c0.Set(ctx, "small", "v", 0)
	c0.Set(ctx, "big", strings.Repeat("x", 100000), 0)
	c0.HSet(ctx, "h", "a", "1", "b", "2")
	c3.RPush(ctx, "l", "1", "2")
	c3.Expire(ctx, "l", 3600e9)
	rep, err := Redis(ctx, &redis.Options{Addr: rds.Addr()}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Keyspace) != 2 || rep.Keyspace[0].Keys != 3 || rep.Keyspace[1].DB != 3 || rep.Keyspace[1].Expires != 1 {
		t.Errorf("keyspace = %+v, want db0 with 3 keys and db3 with 1 expiring", rep.Keyspace)
	}
	if rep.SampledKeys != 4 || rep.TypeMix["string"] != 2 || rep.TypeMix["hash"] != 1 || rep.TypeMix["list"] != 1 {
		t.Errorf("type mix = %v of %d", rep.TypeMix, rep.SampledKeys)
	}
	if rep.BiggestKeys[0].Key != "big" || rep.BiggestKeys[0].Bytes < 100000 {
		t.Errorf("biggest key = %+v, want big", rep.BiggestKeys[0])
	}
	if !rep.ReplicationCommands {
		t.Error("PSYNC not detected on a plain redis-server")
	}
	b, _ := json.Marshal(rep)
	if !strings.Contains(string(b), `"psync_available":true`) {
		t.Errorf("json: %s", b)
	}
}

func TestHerokuConfigNeverPrintsValues(t *testing.T) {
	in := `=== shop-prod Config Vars
DATABASE_URL:               postgres://u:pgSECRETpw@ec2-1.compute.amazonaws.com:5432/d8
REDIS_URL:                  rediss://:redisSECRETpw@ec2-2.compute.amazonaws.com:25690
SECRET_KEY_BASE:            keybaseSECRETvalue
HEROKU_SLUG_COMMIT:         abc123
`
	for _, input := range []string{in, "DATABASE_URL='postgres://u:pgSECRETpw@h/d'\nSECRET_KEY_BASE='keybaseSECRETvalue'\n",
		`{"DATABASE_URL": "postgres://u:pgSECRETpw@h/d", "SECRET_KEY_BASE": "keybaseSECRETvalue"}`} {
		cfg, err := ParseHerokuConfig(strings.NewReader(input))
		if err != nil {
			t.Fatal(err)
		}
		cmds := strings.Join(cfg.SSMCommands("", ""), "\n")
		if strings.Contains(cmds, "pgSECRETpw") || strings.Contains(cmds, "redisSECRETpw") || strings.Contains(cmds, "keybaseSECRETvalue") {
			t.Fatalf("a value leaked into the commands:\n%s", cmds)
		}
		if !strings.Contains(cmds, `--name "/`) || !strings.Contains(cmds, `"$NEW_DATABASE_URL"`) ||
			!strings.Contains(cmds, `config:get SECRET_KEY_BASE`) {
			t.Fatalf("commands do not move DATABASE_URL to the new endpoint or SECRET_KEY_BASE from heroku:\n%s", cmds)
		}
	}
	cfg, _ := ParseHerokuConfig(strings.NewReader(in))
	cmds := strings.Join(cfg.SSMCommands("", ""), "\n")
	if !strings.Contains(cmds, `"/shop-prod/REDIS_URL" --value "$NEW_REDIS_URL"`) || !strings.Contains(cmds, "HEROKU_SLUG_COMMIT is managed by Heroku") {
		t.Fatalf("commands:\n%s", cmds)
	}
	if _, err := ParseHerokuConfig(strings.NewReader("nothing here\n")); err == nil {
		t.Fatal("no error for input without variables")
	}
}
