package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// A table's indexes are built as soon as its data is complete, while
// other tables are still being copied (and built: a build waiting on a
// lock holds up no other table's); a build killed (kill -9) half-way
// leaves no index and no record behind, and the rerun resumes, builds it
// and ends identical to the source with every index and foreign key.
func TestCLIKill9DuringIndexBuildThenResume(t *testing.T) {
	src, dst, _ := pair(t)
	pg.Exec(t, src, `
		CREATE TABLE small (id int PRIMARY KEY, v text);
		INSERT INTO small SELECT i, 'v' || i FROM generate_series(1, 100) i;
		CREATE TABLE big (id bigserial PRIMARY KEY, payload text, ref int);
		INSERT INTO big (payload, ref) SELECT repeat(md5(i::text), 4), i % 7 FROM generate_series(1, 8000) i;
		CREATE INDEX big_ref ON big (ref);
		CREATE TABLE child (id int PRIMARY KEY, big_id bigint REFERENCES big (id));
		INSERT INTO child SELECT i, i FROM generate_series(1, 500) i;
		ANALYZE;`)
	want := tableSums(t, src)
	// Throttled once the tables exist, so that the copy lasts long
	// enough to hold a lock in time.
	px, err := testenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	args := []string{"--source", via(t, px, pg.URL(src)), "--target", pg.URL(dst), "--jobs", "2", "--chunk-mb", "1"}

	var stderr bytes.Buffer
	first := snapshotCmd(t, args...)
	first.Stderr = &stderr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- first.Wait() }()
	ctx := context.Background()
	// A session of the application's holds big on the target: the build
	// of its primary key (ACCESS EXCLUSIVE) waits behind it.
	holder := pg.Connect(t, dst)
	check := pg.Connect(t, dst)
	waitFor := func(what, query string) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			select {
			case err := <-exited:
				t.Fatalf("the run ended (%v) before %s; stderr:\n%s", err, what, stderr.String())
			default:
			}
			var ok bool
			if err := check.QueryRow(ctx, query).Scan(&ok); err == nil && ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("never saw %s; stderr:\n%s", what, stderr.String())
			}
		}
	}
	waitFor("table big created on the target", `SELECT to_regclass('public.big') IS NOT NULL`)
	px.SetBandwidth(256 << 10)
	if _, err := holder.Exec(ctx, `BEGIN; LOCK TABLE big IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	// big, the largest, is copied first; its build then waits behind the
	// holder while the other worker copies small and builds its indexes.
	waitFor("big's index build waiting", `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'big'::regclass AND NOT granted)`)
	waitFor("small's indexes built while big's build waits", `SELECT EXISTS (SELECT 1 FROM replicator.postdata WHERE table_name = '"public"."small"')
		AND NOT EXISTS (SELECT 1 FROM replicator.postdata WHERE table_name = '"public"."big"')
		AND EXISTS (SELECT 1 FROM pg_locks WHERE relation = 'big'::regclass AND NOT granted)`)
	first.Process.Signal(syscall.SIGKILL)
	<-exited
	if _, err := holder.Exec(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	// The killed run's backend gets the lock, then finds its client gone
	// and rolls the build back.
	waitFor("the killed run's sessions gone", `SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> `+fmt.Sprint(holder.PgConn().PID())+`)`)
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_indexes WHERE tablename = 'big'`); n != "0" {
		t.Errorf("after the kill the target has %s of big's indexes, want none (the build was rolled back)", n)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM replicator.postdata WHERE table_name = '"public"."big"'`); n != "0" {
		t.Errorf("big's indexes are recorded built after a killed build")
	}

	px.SetBandwidth(0)
	out, err := snapshotCmd(t, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rerun: %v\n%s", err, out)
	}
	mustContain(t, string(out), "resuming:", "resumed an interrupted run")
	compareSums(t, want, tableSums(t, dst))
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_indexes WHERE indexname IN ('small_pkey', 'big_pkey', 'big_ref', 'child_pkey')`); n != "4" {
		t.Errorf("target has %s of the 4 indexes", n)
	}
	if n := queryString(t, dst, `SELECT count(*)::text FROM pg_constraint WHERE contype = 'f' AND conrelid = 'child'::regclass`); n != "1" {
		t.Errorf("target has %s foreign keys on child, want 1", n)
	}
}
