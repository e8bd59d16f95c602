package audit

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/report"
)

// TestAuditEveryKindOfObject: a schema with each kind of object the
// migration must think about; each is found, and the markdown names it
// under the common report header.
func TestAuditEveryKindOfObject(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	// big is never analyzed (autovacuum may not run before the audit:
	// turned off for it), so its statistics say nothing of its rows.
	pg.Exec(t, db, `CREATE EXTENSION hstore; CREATE EXTENSION postgres_fdw;
		CREATE TABLE big (id serial PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
		INSERT INTO big (v) SELECT repeat('x', 500) FROM generate_series(1, 20000);
		CREATE SEQUENCE invoice_numbers;
		CREATE UNLOGGED TABLE cache (k text PRIMARY KEY);
		CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
		CREATE TRIGGER big_touch BEFORE UPDATE ON big FOR EACH ROW EXECUTE FUNCTION touch();
		CREATE SERVER legacy FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'legacy.internal', dbname 'old');
		CREATE FOREIGN TABLE legacy_orders (id int) SERVER legacy;
		CREATE MATERIALIZED VIEW big_count AS SELECT count(*) FROM big;
		CREATE TABLE prices (net numeric, gross numeric GENERATED ALWAYS AS (net * 1.2) STORED);
		SELECT lo_create(0);
		CREATE ROLE audit_reporting NOLOGIN; GRANT SELECT ON big TO audit_reporting;`)
	t.Cleanup(func() {
		pg.Exec(t, db, `DROP OWNED BY audit_reporting`)
		pg.Exec(t, "postgres", `DROP ROLE IF EXISTS audit_reporting`)
	})
	conn := pg.Connect(t, db)
	started := time.Now()
	rep, err := Postgres(ctx, conn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var big *Table
	for i := range rep.Tables {
		if rep.Tables[i].Name == "public.big" {
			big = &rep.Tables[i]
		}
	}
	if big == nil || big.Rows != 20000 || !strings.Contains(big.RowsSource, "never analyzed") {
		t.Errorf("never-analyzed table = %+v, want 20000 rows counted", big)
	}
	var standalone, owned bool
	for _, s := range rep.SequenceList {
		standalone = standalone || (s.Name == "public.invoice_numbers" && s.OwnedBy == "")
		owned = owned || (s.Name == "public.big_id_seq" && s.OwnedBy == "big.id")
	}
	if !standalone || !owned {
		t.Errorf("sequences = %+v, want invoice_numbers standalone and big_id_seq owned by big.id", rep.SequenceList)
	}
	o := rep.Objects
	if strings.Join(o.Triggers, ",") != "big: big_touch" || strings.Join(o.ForeignTables, ",") != "public.legacy_orders (server legacy)" ||
		strings.Join(o.MaterializedViews, ",") != "public.big_count" || strings.Join(o.GeneratedColumns, ",") != "public.prices.gross" {
		t.Errorf("objects = %+v", o)
	}
	if len(rep.Roles) != 1 || rep.Roles[0].Name != "audit_reporting" || rep.Roles[0].Grants != 1 {
		t.Errorf("roles = %+v, want audit_reporting with one grant", rep.Roles)
	}
	if rep.Connections.Max == 0 || rep.Connections.Total < 0 {
		t.Errorf("connections = %+v", rep.Connections)
	}

	var out bytes.Buffer
	h := report.Header{Version: "v1.0.0-test", Sides: []report.Side{report.SideOf("source", pg.URL(db))}, Started: started, Ended: time.Now(),
		Fenced: report.Fence{Known: true, Detail: "audit reads only"}}
	if err := (&Report{Postgres: rep, Header: &h}).Write(&out, "markdown"); err != nil {
		t.Fatal(err)
	}
	md := out.String()
	for _, want := range []string{"## Migration audit", "| Tool | replicator v1.0.0-test |", "/" + db + "` |", "| Started |", "| Ended |", "| Duration |",
		"| Position |", "| Source fenced | no (audit reads only) |",
		"## Extensions", "hstore ", "offered by RDS", "postgres_fdw",
		"## Sequences", "standalone (owned by no column, used by name): public.invoice_numbers",
		"large objects (1)", "unlogged tables (1): public.cache", "triggers (1): big: big_touch", "foreign tables (1): public.legacy_orders (server legacy)",
		"materialized views (1): public.big_count", "generated columns (1): public.prices.gross",
		"role audit_reporting", "## Connections", "max_connections",
		"| public.big | 20000 (counted (never analyzed)) |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}

// Redis: big keys are big by MEMORY USAGE; small keys are not called big;
// persistence is shown.
func TestRedisAuditBigKeysAndPersistence(t *testing.T) {
	ctx := context.Background()
	c := rds.Client(0)
	defer c.Close()
	c.FlushAll(ctx)
	c.Set(ctx, "tiny", "v", 0)
	pipe := c.Pipeline()
	for i := 0; i < 4000; i++ {
		pipe.HSet(ctx, "huge-hash", "field-"+strings.Repeat("f", 10)+string(rune('a'+i%26))+itoa(i), strings.Repeat("v", 300))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err := Redis(ctx, &redis.Options{Addr: rds.Addr()}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BiggestKeys[0].Key != "huge-hash" || rep.BiggestKeys[0].Bytes < BigKeyBytes {
		t.Fatalf("biggest = %+v, want huge-hash over 1 MiB", rep.BiggestKeys[0])
	}
	if rep.Persistence == "" || !strings.Contains(rep.Persistence, "AOF") {
		t.Errorf("persistence = %q", rep.Persistence)
	}
	var out bytes.Buffer
	(&Report{Redis: rep}).Write(&out, "text")
	if !strings.Contains(out.String(), `big key db0 "huge-hash"`) || strings.Contains(out.String(), `big key db0 "tiny"`) {
		t.Errorf("text:\n%s", out.String())
	}

	c.FlushAll(ctx)
	c.Set(ctx, "tiny", "v", 0)
	if rep, err = Redis(ctx, &redis.Options{Addr: rds.Addr()}, 100); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	(&Report{Redis: rep}).Write(&out, "text")
	if strings.Contains(out.String(), "big key db0") || !strings.Contains(out.String(), "no big keys") {
		t.Errorf("a small key reported as big:\n%s", out.String())
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// Sizing, tfvars and the Procfile mapping follow from the inventory.
func TestSizingTFVarsAndProcfile(t *testing.T) {
	p := &PostgresReport{SizeBytes: 120 << 30, Capture: Capture{Mode: "trigger"}, Connections: Connections{Total: 80, Max: 500}}
	r := &RedisReport{UsedMemory: 3 << 30, Keyspace: []RedisDB{{DB: 0, Keys: 10}, {DB: 2, Keys: 5}}}
	sz := Size(p, r)
	// 120 GiB: 180 GiB gp3 at 3000 IOPS; a quarter is 30 GiB of cache:
	// db.m6g.2xlarge (32 GiB). 3 GiB / 0.75 * 1.33 = 5.3 GiB: cache.m6g.large.
	if sz.RDSStorageGiB != 180 || sz.RDSIOPS != 3000 || sz.RDSInstanceClass != "db.m6g.2xlarge" || sz.CacheNodeType != "cache.m6g.large" || sz.CacheClusterMode {
		t.Errorf("sizing = %+v", sz)
	}
	if !strings.Contains(strings.Join(sz.Reasons, "\n"), "databases other than 0") {
		t.Errorf("no reason given for cluster mode disabled: %v", sz.Reasons)
	}
	tf := TFVars(&Report{Postgres: p, Redis: r}, sz, "shop")
	for _, want := range []string{`name                  = "replicator-shop"`, `ssm_prefix            = "/shop/replicator/"`, `capture = "trigger"`,
		`elasticache_security_group_id = "CHANGE-ME"`, `instance_class = "db.m6g.2xlarge"`, `node_type = "cache.m6g.large"`} {
		if !strings.Contains(tf, want) {
			t.Errorf("tfvars lacks %q:\n%s", want, tf)
		}
	}
	procs, err := ParseProcfile(strings.NewReader("web: bundle exec puma -C config/puma.rb\nworker: bundle exec sidekiq\nrelease: bin/rails db:migrate\n# comment\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(procs) != 3 || !strings.Contains(procs[0].AWS, "Application Load Balancer") || !strings.HasPrefix(procs[1].AWS, "ECS service") || !strings.Contains(procs[2].AWS, "one-off ECS task") {
		t.Errorf("procfile = %+v", procs)
	}
	var out bytes.Buffer
	(&Report{Postgres: p, Sizing: &sz, TFVars: tf, Processes: procs}).Write(&out, "markdown")
	for _, want := range []string{"## Sizing suggestion", "## terraform.tfvars for deploy/terraform", "```hcl", "| web | `bundle exec puma -C config/puma.rb` |", "EventBridge Scheduler"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := ParseProcfile(strings.NewReader("not a procfile\n")); err == nil {
		t.Error("no error for a file without process types")
	}
}
