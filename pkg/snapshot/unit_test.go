package snapshot

import (
	"fmt"
	"strings"
	"testing"
)

func TestTOCEntrySkipped(t *testing.T) {
	skip := []string{"EXTENSION - hstore", "COMMENT - EXTENSION hstore", "SCHEMA - Odd Schema", "SCHEMA - public"}
	cases := map[string]bool{
		"3; 3079 16385 EXTENSION - hstore ":                          true,
		"4; 0 0 COMMENT - EXTENSION hstore ":                         true,
		"5; 2615 16390 SCHEMA - Odd Schema postgres":                 true,
		"6; 2615 16391 SCHEMA - Odd Schema Two postgres":             false,
		"7; 3079 16400 EXTENSION - hstore_plperl ":                   false,
		"8; 1259 16401 TABLE public hstore postgres":                 false,
		";4; 0 0 COMMENT - EXTENSION hstore ":                        false,
		"; Archive created at 2026-11-23 23:00:00 UTC":               false,
		"220; 1259 16410 TABLE Odd Schema Mixed Case Table postgres": false,
		// Capture triggers of trigger capture stay on the source.
		"300; 2620 16500 TRIGGER public Mixed Case replicator_capture app_1":      true,
		"301; 2620 16501 TRIGGER public orders replicator_capture_truncate app_1": true,
		"302; 2620 16502 TRIGGER public orders replicator_capture ":               true,
		"303; 2620 16503 TRIGGER public orders audit_changes app_1":               false,
		"305; 2620 16505 TRIGGER public orders replicator_capture_insert app_1":   true,
		"306; 2620 16506 TRIGGER public orders replicator_capture_update app_1":   true,
		"307; 2620 16507 TRIGGER public orders replicator_capture_delete ":        true,
		"304; 1259 16504 TABLE public replicator_capture app_1":                   false,
	}
	for line, want := range cases {
		if got := tocEntrySkipped(line, skip); got != want {
			t.Errorf("tocEntrySkipped(%q) = %v, want %v", line, got, want)
		}
	}
}

// pg_dump and pg_restore get the password through the environment, never
// on their command line.
func TestToolConnKeepsPasswordOffTheCommandLine(t *testing.T) {
	dsn, env := toolConn("postgres://app:s3cr%40t@db.example.com:5432/app?sslmode=require&pool_max_conns=4")
	if strings.Contains(dsn, "s3cr") || strings.Contains(dsn, "pool_max_conns") {
		t.Errorf("dsn %q holds the password or a pgx-only parameter", dsn)
	}
	if !strings.Contains(dsn, "sslmode=require") || !strings.Contains(dsn, "app@db.example.com:5432/app") {
		t.Errorf("dsn %q lost the user, host or sslmode", dsn)
	}
	if len(env) != 1 || env[0] != "PGPASSWORD=s3cr@t" {
		t.Errorf("env = %q, want the decoded password in PGPASSWORD", env)
	}
	dsn, env = toolConn("postgres://app@db/app?password=pw1")
	if strings.Contains(dsn, "pw1") || len(env) != 1 || env[0] != "PGPASSWORD=pw1" {
		t.Errorf("query password: dsn %q env %q", dsn, env)
	}
}

func TestPlanChunks(t *testing.T) {
	big := &table{Schema: "public", Name: "big", HeapBytes: 1000 * blockSize, Bytes: 1000 * blockSize}
	docs := &table{Schema: "public", Name: "docs", HeapBytes: 10 * blockSize, Bytes: 400 * blockSize} // mostly TOAST
	small := &table{Schema: "public", Name: "small", HeapBytes: 2 * blockSize, Bytes: 2 * blockSize}
	chunks, copies := planChunks([]*table{big, docs, small}, 100*blockSize, true)
	per := map[string][]chunk{}
	for _, c := range chunks {
		per[c.t.Name] = append(per[c.t.Name], c)
	}
	if n := len(per["big"]); n != 10 {
		t.Errorf("big: %d chunks, want 10", n)
	}
	// Ranges tile the table from block 0, the last one open-ended.
	var next int64
	for i, c := range per["big"] {
		if c.whole || c.lo != next {
			t.Fatalf("big chunk %d = %+v, want to start at %d", i, c, next)
		}
		next = c.hi
	}
	if next != 0 {
		t.Errorf("the last chunk of big ends at %d, want open-ended", next)
	}
	if n := len(per["docs"]); n != 4 {
		t.Errorf("docs (TOAST-heavy): %d chunks, want 4 by total size", n)
	}
	if c := per["small"]; len(c) != 1 || !c[0].whole {
		t.Errorf("small: %+v, want one whole-table chunk", c)
	}
	for _, tc := range copies {
		if int(tc.remaining.Load()) != len(per[tc.Name]) {
			t.Errorf("%s: remaining %d, chunks %d", tc.Name, tc.remaining.Load(), len(per[tc.Name]))
		}
	}
	if got := per["big"][1].sourceSQL(); !strings.Contains(got, `FROM ONLY "public"."big" WHERE ctid >= '(100,0)'::tid AND ctid < '(200,0)'::tid`) {
		t.Errorf("sourceSQL = %s", got)
	}
	// Before PostgreSQL 14 a range would read the whole table: no split.
	chunks, _ = planChunks([]*table{big}, 100*blockSize, false)
	if len(chunks) != 1 || !chunks[0].whole {
		t.Errorf("without TID range scans: %+v, want one whole chunk", chunks)
	}
}

// After a chunked copy the foreign keys of a plain table are added NOT
// VALID (deferrable or not) and named for the record, a partitioned
// table's (no ONLY) as it is, and nothing else changes.
func TestForeignKeysNotValid(t *testing.T) {
	script := `SET statement_timeout = 0;
--
-- Name: orders orders_user_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.orders
    ADD CONSTRAINT orders_user_fkey FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE DEFERRABLE;

--
-- Name: events events_user_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE public.events
    ADD CONSTRAINT events_user_fkey FOREIGN KEY (user_id) REFERENCES public.users(id);

--
-- Name: users users_touch; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER users_touch BEFORE UPDATE ON public.users FOR EACH ROW EXECUTE FUNCTION public.touch();
`
	got, keys := foreignKeysNotValid(script)
	want := strings.Replace(script, "ON DELETE CASCADE DEFERRABLE;", "ON DELETE CASCADE DEFERRABLE NOT VALID;", 1)
	if got != want {
		t.Errorf("rewritten script:\n%s\nwant:\n%s", got, want)
	}
	if fmt.Sprint(keys) != "[orders_user_fkey on public.orders]" {
		t.Errorf("foreign keys made NOT VALID: %v, want [orders_user_fkey on public.orders]", keys)
	}
}
