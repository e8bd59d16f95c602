package apply

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"replicator/internal/testenv"
)

// waitExit waits for the stream process to exit on its own and returns its
// last stderr line.
func (pr *proc) waitExit(t *testing.T, timeout time.Duration) (code int, last string) {
	t.Helper()
	select {
	case <-pr.done:
	case <-time.After(timeout):
		t.Fatalf("the stream did not stop within %s; log:\n%s", timeout, pr.out.String())
	}
	out := strings.TrimSpace(pr.out.String())
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Errorf("the output shows a panic or stack trace:\n%s", out)
	}
	if strings.Contains(out, testenv.Password) {
		t.Errorf("the output shows the password:\n%s", out)
	}
	lines := strings.Split(out, "\n")
	return pr.cmd.ProcessState.ExitCode(), lines[len(lines)-1]
}

// The slot is dropped behind the stream's back (its walsender terminated
// first, as an operator would have to): the stream stops with exit 2 and
// an error that names the slot and what to do; the target keeps exactly
// what was applied before, and no later change.
func TestStreamSlotDroppedBehindItsBack(t *testing.T) {
	p := snapshotPair(t, faultDDL, faultSetup)
	pr := p.startProcess(t, "--metrics-addr", "")
	srcPG.Exec(t, p.src, `INSERT INTO ledger (amount, note) VALUES (1, 'mark'); INSERT INTO log_nopk VALUES (1, 'same'), (1, 'same')`)
	pr.waitTarget(t, p, `SELECT count(*) FROM ledger WHERE note = 'mark'`)
	before := checksums(t, srcPG, p.src)

	conn := srcPG.Connect(t, "postgres")
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn.Exec(context.Background(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, p.slot)
		// The stream reconnects after its backoff; drop in between.
		if _, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot($1)`, p.slot); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("could not drop the stream's slot within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	srcPG.Exec(t, p.src, `INSERT INTO ledger (amount) VALUES (2)`)

	code, last := pr.waitExit(t, 60*time.Second)
	if code != 2 {
		t.Errorf("exit code %d, want 2; log:\n%s", code, pr.out.String())
	}
	t.Logf("%s", last)
	for _, want := range []string{"replicator: ", p.slot, "does not exist", "replicator snapshot", "replicator cleanup"} {
		if !strings.Contains(last, want) {
			t.Errorf("the error does not name %q: %s", want, last)
		}
	}
	after := checksums(t, targetCluster(t), p.dst)
	for tbl, sum := range before {
		if after[tbl] != sum {
			t.Errorf("table %s on the target is %s, want what the source had when the slot was dropped: %s", tbl, after[tbl], sum)
		}
	}
}

// A column dropped on the target: the stream stops with exit 2 and an error
// naming the table and the column; the source transaction that needed it
// is not applied in part (its other table's row is not on the target) and
// the recorded position stays before it.
func TestStreamTargetColumnDropped(t *testing.T) {
	p := snapshotPair(t, `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text, extra text)`,
		`INSERT INTO a VALUES (1, 'a'); INSERT INTO b VALUES (1, 'b', 'e')`)
	pr := p.startProcess(t, "--metrics-addr", "")
	srcPG.Exec(t, p.src, `INSERT INTO a VALUES (2, 'a')`)
	pr.waitTarget(t, p, `SELECT count(*) FROM a WHERE id = 2`)
	targetCluster(t).Exec(t, p.dst, `ALTER TABLE b DROP COLUMN extra`)
	preCommit := commitBig(t, p, `INSERT INTO a VALUES (3, 'a')`, `INSERT INTO b VALUES (3, 'b', 'needs extra')`)

	code, last := pr.waitExit(t, 60*time.Second)
	if code != 2 {
		t.Errorf("exit code %d, want 2; log:\n%s", code, pr.out.String())
	}
	t.Logf("%s", last)
	for _, want := range []string{"replicator: ", "b", `"extra"`} {
		if !strings.Contains(last, want) {
			t.Errorf("the error does not name %q: %s", want, last)
		}
	}
	var n int
	if err := targetCluster(t).Connect(t, p.dst).QueryRow(context.Background(), `SELECT count(*) FROM a WHERE id = 3`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("the failed source transaction was applied in part: its row in a is on the target")
	}
	p.assertNotPast(t, preCommit)
}

// waitTarget waits until count query on the target is 1: a marker change
// was applied.
func (pr *proc) waitTarget(t *testing.T, p *pair, query string) {
	t.Helper()
	conn := targetCluster(t).Connect(t, p.dst)
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
		select {
		case <-pr.done:
			t.Fatalf("the stream exited; log:\n%s", pr.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not 1 after 60s; log:\n%s", query, pr.out.String())
		}
	}
}

// The target runs out of disk: a target table lives in a tablespace on a
// 4 MiB tmpfs, and a source transaction larger than that fills it. The
// stream stops with exit 2 and an error that names the table and the full
// disk; the transaction's change to another table is not applied, and
// nothing is acknowledged past it.
func TestStreamTargetDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a size-limited tmpfs for the target's tablespace")
	}
	// The server runs as its own OS user: the mount point's parent must be
	// open to it, which t.TempDir's is not.
	base, err := os.MkdirTemp("", "replicator-tablespace-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "disk")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 4 MiB tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	if err := testenv.GiveToServerUser(dir); err != nil {
		t.Fatal(err)
	}
	p := snapshotPair(t, `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE big (id int PRIMARY KEY, v text)`,
		`INSERT INTO a VALUES (1, 'a'); INSERT INTO big VALUES (1, 'b')`)
	dst := targetCluster(t)
	space := "small_" + p.dst
	dst.Exec(t, "postgres", fmt.Sprintf(`CREATE TABLESPACE %s LOCATION '%s'`, space, dir))
	t.Cleanup(func() {
		dst.Exec(t, p.dst, `DROP TABLE IF EXISTS big`)
		dst.Exec(t, "postgres", `DROP TABLESPACE IF EXISTS `+space)
	})
	dst.Exec(t, p.dst, `ALTER TABLE big SET TABLESPACE `+space)

	pr := p.startProcess(t, "--metrics-addr", "")
	srcPG.Exec(t, p.src, `INSERT INTO a VALUES (2, 'a')`)
	pr.waitTarget(t, p, `SELECT count(*) FROM a WHERE id = 2`)
	preCommit := commitBig(t, p, `INSERT INTO a VALUES (3, 'a')`,
		`INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(2, 40000) g`)

	code, last := pr.waitExit(t, 60*time.Second)
	if code != 2 {
		t.Errorf("exit code %d, want 2; log:\n%s", code, pr.out.String())
	}
	t.Logf("%s", last)
	for _, want := range []string{"replicator: ", "big", "No space left", "disk is full", "start `replicator stream` again"} {
		if !strings.Contains(last, want) {
			t.Errorf("the error does not name %q: %s", want, last)
		}
	}
	var n int
	if err := dst.Connect(t, p.dst).QueryRow(context.Background(), `SELECT count(*) FROM a WHERE id = 3`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Error("the failed source transaction was applied in part: its row in a is on the target")
	}
	p.assertNotPast(t, preCommit)

	// Room again (the table moved off the full disk): the stream resumes
	// with that transaction and ends identical.
	dst.Exec(t, p.dst, `ALTER TABLE big SET TABLESPACE pg_default`)
	pr = p.startProcess(t, "--metrics-addr", "")
	srcPG.Exec(t, p.src, `INSERT INTO a VALUES (4, 'a')`)
	pr.waitTarget(t, p, `SELECT count(*) FROM a WHERE id = 4`)
	p.assertIdentical(t)
}

// commitBig commits one source transaction of the given statements and
// returns the source's WAL position just before its commit record.
func commitBig(t *testing.T, p *pair, stmts ...string) pglogrepl.LSN {
	t.Helper()
	c := srcPG.Connect(t, p.src)
	defer c.Close(context.Background())
	mustExec(t, c, "BEGIN")
	for _, s := range stmts {
		mustExec(t, c, s)
	}
	var lsn pglogrepl.LSN
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	mustExec(t, c, "COMMIT")
	return lsn
}

// assertNotPast checks that neither the target's recorded position nor the
// slot's confirmed one is past a transaction whose commit record comes
// after preCommit: a restart must receive that transaction again.
func (p *pair) assertNotPast(t *testing.T, preCommit pglogrepl.LSN) {
	t.Helper()
	if got := p.appliedLSN(t); got > preCommit {
		t.Errorf("the target's recorded position %s is past the failed transaction's commit (after %s)", got, preCommit)
	}
	var confirmed pglogrepl.LSN
	c := srcPG.Connect(t, p.src)
	defer c.Close(context.Background())
	if err := c.QueryRow(context.Background(), `SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	if confirmed > preCommit {
		t.Errorf("the slot confirmed %s, past the failed transaction's commit (after %s)", confirmed, preCommit)
	}
}

// The slot is invalidated by the source (max_slot_wal_keep_size exceeded
// while the stream was stopped): the stream refuses to start, exit 2, with
// an error that names the slot and what to do.
func TestStreamSlotInvalidated(t *testing.T) {
	p := snapshotPair(t, faultDDL, faultSetup)
	// A cluster-wide setting: the package's tests run one at a time, and it
	// is reset when this one ends.
	srcPG.Exec(t, "postgres", `ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`)
	srcPG.Exec(t, "postgres", `SELECT pg_reload_conf()`)
	t.Cleanup(func() {
		srcPG.Exec(t, "postgres", `ALTER SYSTEM RESET max_slot_wal_keep_size`)
		srcPG.Exec(t, "postgres", `SELECT pg_reload_conf()`)
	})
	conn := srcPG.Connect(t, p.src)
	defer conn.Close(context.Background())
	for i := 0; ; i++ {
		var status string
		if err := conn.QueryRow(context.Background(), `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, p.slot).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if status == "lost" {
			break
		}
		if i == 30 {
			t.Fatalf("the slot's WAL status is still %q", status)
		}
		mustExec(t, conn, `INSERT INTO ledger (amount) VALUES (1)`)
		mustExec(t, conn, `SELECT pg_switch_wal()`)
		mustExec(t, conn, `CHECKPOINT`)
	}
	before := checksums(t, targetCluster(t), p.dst)

	pr := p.startProcess(t, "--metrics-addr", "")
	code, last := pr.waitExit(t, 60*time.Second)
	if code != 2 {
		t.Errorf("exit code %d, want 2; log:\n%s", code, pr.out.String())
	}
	t.Logf("%s", last)
	for _, want := range []string{"replicator: ", p.slot, "replicator cleanup", "replicator snapshot"} {
		if !strings.Contains(last, want) {
			t.Errorf("the error does not name %q: %s", want, last)
		}
	}
	after := checksums(t, targetCluster(t), p.dst)
	for tbl, sum := range before {
		if after[tbl] != sum {
			t.Errorf("table %s on the target changed from %s to %s", tbl, sum, after[tbl])
		}
	}
}
