package cutover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// reverseProc is `replicator reverse` running as its own process, so a
// test can kill it with SIGKILL.
type reverseProc struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

func startReverse(t *testing.T, m *migration) *reverseProc {
	t.Helper()
	cmd := command(t, "reverse", "--source", m.srcURL, "--target", m.dstURL, "--metrics-addr", "")
	p := &reverseProc{cmd: cmd, out: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.kill(syscall.SIGTERM) })
	return p
}

func (p *reverseProc) kill(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// reverseApplied is the target batch the source recorded as applied,
// read here with a plain query.
func reverseApplied(t *testing.T, m *migration) int64 {
	v, err := strconv.ParseInt(query(t, m.src, `SELECT applied_batch FROM replicator.state`)[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitReverse waits until the reverse stream has applied a batch beyond
// the one applied now, twice (so what was committed before is in).
func waitReverse(t *testing.T, m *migration, p *reverseProc) {
	t.Helper()
	from := reverseApplied(t, m)
	for deadline := time.Now().Add(30 * time.Second); reverseApplied(t, m) < from+2; {
		select {
		case <-p.exited:
			t.Fatalf("replicator reverse exited: %s", tail(p.out.String(), 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reverse stream did not apply within 30s: %s", tail(p.out.String(), 20))
		}
	}
}

// targetApp writes to the target as the app does after the switch: rounds
// of transactions from several sessions at once, each an insert, an
// update and a delete of rows of its own, and a touch of settings.
type targetApp struct {
	inserted, updated, deleted []int64 // order ids
	mu                         sync.Mutex
	txns                       int
}

func (a *targetApp) round(t *testing.T, url string, round, sessions, perSession int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for s := 0; s < sessions; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for i := 0; i < perSession; i++ {
				// Rows of the copy, disjoint per round, session and step.
				upd := int64(1 + round*200 + s*perSession*2 + 2*i)
				del := upd + 1
				var ins int64
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					if err := tx.QueryRow(ctx, `INSERT INTO orders (customer, note, amount) VALUES ($1, $2, 9.99) RETURNING id`,
						900+s, fmt.Sprintf("aws r%d s%d i%d", round, s, i)).Scan(&ins); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `INSERT INTO events (order_id, kind) VALUES ($1, 'created on aws')`, ins); err != nil {
						return err
					}
					if tag, err := tx.Exec(ctx, `UPDATE orders SET note = 'updated on aws', amount = amount + 1 WHERE id = $1`, upd); err != nil || tag.RowsAffected() != 1 {
						return fmt.Errorf("update %d: %v (%d rows)", upd, err, tag.RowsAffected())
					}
					if tag, err := tx.Exec(ctx, `DELETE FROM orders WHERE id = $1`, del); err != nil || tag.RowsAffected() != 1 {
						return fmt.Errorf("delete %d: %v (%d rows)", del, err, tag.RowsAffected())
					}
					_, err := tx.Exec(ctx, `UPDATE settings SET value = $1 WHERE name = 'mode'`, fmt.Sprintf("aws %d", round))
					return err
				})
				if err != nil {
					errs <- err
					return
				}
				a.mu.Lock()
				a.inserted, a.updated, a.deleted = append(a.inserted, ins), append(a.updated, upd), append(a.deleted, del)
				a.txns++
				a.mu.Unlock()
			}
		}(s)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("app write on the target: %v", err)
	}
}

// check asserts, with queries of its own, that db holds every write.
func (a *targetApp) check(t *testing.T, db string) {
	t.Helper()
	if got := query(t, db, `SELECT count(*) FROM orders WHERE id = ANY($1) AND note LIKE 'aws r%'`, a.inserted); got[0] != strconv.Itoa(len(a.inserted)) {
		t.Errorf("%s: %s of the %d orders inserted on the target", db, got[0], len(a.inserted))
	}
	if got := query(t, db, `SELECT count(*) FROM events WHERE order_id = ANY($1) AND kind = 'created on aws'`, a.inserted); got[0] != strconv.Itoa(len(a.inserted)) {
		t.Errorf("%s: %s of the %d events inserted on the target", db, got[0], len(a.inserted))
	}
	if got := query(t, db, `SELECT count(*) FROM orders WHERE id = ANY($1) AND note = 'updated on aws'`, a.updated); got[0] != strconv.Itoa(len(a.updated)) {
		t.Errorf("%s: %s of the %d orders updated on the target", db, got[0], len(a.updated))
	}
	if got := query(t, db, `SELECT count(*) FROM orders WHERE id = ANY($1)`, a.deleted); got[0] != "0" {
		t.Errorf("%s: %s of the %d orders deleted on the target are still there", db, got[0], len(a.deleted))
	}
}

func sameTables(t *testing.T, a, b string) {
	t.Helper()
	as, bs := checksums(t, a), checksums(t, b)
	for tbl, sum := range as {
		if bs[tbl] != sum {
			t.Errorf("%s: %s has %s, %s has %s", tbl, a, sum, b, bs[tbl])
		}
	}
}

// The fallback window on Heroku's real setup (one login, no superuser,
// trigger capture): after the cutover the app writes to the target; a
// rollback with the reverse stream stopped is refused and changes
// nothing; with `replicator reverse` running, killed with SIGKILL and
// restarted between the app's writes, `cutover --rollback` leaves every
// one of them on the source, the two sides identical, the source's
// sequences past the target's, the source writable and the target fenced.
// The source's own trigger (disabled for the window, as its role cannot
// skip triggers per session) does not fire twice. After the rollback the
// forward stream carries the app's new writes to the target again, and
// the target's capture does not send them back.
func TestRollbackKeepsTargetWrites(t *testing.T) {
	ctx := context.Background()
	m := newHerokuMigration(t)
	// An app trigger on both sides: it fires on the target when the app
	// writes there; firing again on the source would change the row twice.
	touch := `CREATE FUNCTION settings_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.value := NEW.value || ' (touched)'; RETURN NEW; END $$;
		CREATE TRIGGER settings_touch BEFORE UPDATE ON settings FOR EACH ROW EXECUTE FUNCTION settings_touch();`
	owner := pg.Connect(t, m.src)
	if _, err := owner.Exec(ctx, "SET ROLE "+m.app+"; "+touch+" RESET ROLE"); err != nil {
		t.Fatal(err)
	}
	owner.Close(ctx)
	pg.Exec(t, m.dst, touch)

	stopForward := m.startTriggerStream(t)
	code, out, errOut := run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence")
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "fallback: capture on the target: done (3 tables") || !strings.Contains(out, "1 triggers of the source's own disabled") ||
		!strings.Contains(out, "replicator reverse --source") || !strings.Contains(out, "cutover --rollback") {
		t.Errorf("cutover output lacks the fallback lines:\n%s", out)
	}
	// Installed before the switch: the freeze line comes after it.
	if strings.Index(out, "fallback: capture") > strings.Index(out, "write freeze:") {
		t.Errorf("capture on the target was installed after the freeze ended:\n%s", out)
	}
	if got := query(t, m.dst, `SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'replicator\_capture%'`); got[0] != "12" {
		t.Errorf("capture triggers on the target: %s, want 12 (three row triggers and one truncate trigger on each of 3 tables)", got[0])
	}

	app := &targetApp{}
	app.round(t, m.dstURL, 0, 3, 4)

	// No reverse stream: refused, nothing changed.
	srcFence, srcSums := fenceState(t, m.src), checksums(t, m.src)
	code, out, errOut = run(t, "cutover", "--rollback", "--source", m.srcURL, "--target", m.dstURL)
	if code != 2 || !strings.Contains(errOut, "no reverse stream is running") || !strings.Contains(errOut, "replicator reverse --source") {
		t.Fatalf("rollback without a reverse stream: exit %d, want 2 naming `replicator reverse`\n%s\n%s", code, out, errOut)
	}
	if f := fenceState(t, m.dst); len(f) != 0 {
		t.Errorf("a refused rollback fenced the target: %v", f)
	}
	if f := fenceState(t, m.src); strings.Join(f, ",") != strings.Join(srcFence, ",") {
		t.Errorf("a refused rollback changed the source's fence: %v → %v", srcFence, f)
	}
	if got := query(t, m.src, `SELECT coalesce(to_regclass('replicator.cutover')::text, 'none')`); got[0] != "none" {
		t.Errorf("a refused rollback created its records on the source")
	}
	for tbl, sum := range checksums(t, m.src) {
		if srcSums[tbl] != sum {
			t.Errorf("a refused rollback changed %s on the source", tbl)
		}
	}

	// The reverse stream carries them; killed mid-stream and restarted,
	// it loses and doubles nothing.
	rev := startReverse(t, m)
	waitReverse(t, m, rev)
	app.round(t, m.dstURL, 1, 3, 4)
	rev.kill(syscall.SIGKILL)
	app.round(t, m.dstURL, 2, 3, 4)
	rev = startReverse(t, m)
	waitReverse(t, m, rev)
	app.round(t, m.dstURL, 3, 3, 4)

	code, out, errOut = run(t, "status", "--target", m.dstURL, "--source", m.srcURL)
	if code != 0 || !strings.Contains(out, "direction:       reverse") || !strings.Contains(out, "reverse stream:  running") {
		t.Errorf("status in the fallback window: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "cleanup", "--source", m.srcURL, "--target", m.dstURL, "--yes")
	if code != 2 || !strings.Contains(errOut, "stop `replicator reverse`") {
		t.Errorf("cleanup with the reverse stream running: exit %d, want 2 naming it\n%s\n%s", code, out, errOut)
	}

	code, out, errOut = run(t, "cutover", "--rollback", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s")
	if code != 0 {
		t.Fatalf("rollback: exit %d\n%s\n%s\nreverse: %s", code, out, errOut, tail(rev.out.String(), 20))
	}
	if !strings.Contains(out, "rollback write freeze: ") || !strings.Contains(out, "DATABASE_URL") || !strings.Contains(out, "force-new-deployment") {
		t.Errorf("rollback output lacks the freeze or the switch back:\n%s", out)
	}
	if app.txns != 48 {
		t.Fatalf("the app committed %d transactions on the target, want 48", app.txns)
	}
	app.check(t, m.src)
	sameTables(t, m.dst, m.src)
	if got := query(t, m.src, `SELECT value FROM settings WHERE name = 'mode'`); got[0] != "aws 3 (touched)" {
		t.Errorf("source settings: %q, want the target's value touched once", got[0])
	}
	if got := query(t, m.src, `SELECT tgenabled::text FROM pg_trigger WHERE tgname = 'settings_touch'`); got[0] != "O" {
		t.Errorf("the source's own trigger is %q after the rollback, want enabled (O)", got[0])
	}
	tseq, sseq := sequenceValues(t, m.dst), sequenceValues(t, m.src)
	for name, v := range tseq {
		if !strings.Contains(name, "countdown") && sseq[name] < v {
			t.Errorf("source sequence %s at %d, behind the target's %d", name, sseq[name], v)
		}
	}

	// The source takes writes; the target refuses them with the fence.
	if err := appWrite(ctx, m.appURL); err != nil {
		t.Errorf("after the rollback the app cannot write to the source: %v", err)
	}
	err := appWrite(ctx, m.dstURL)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.HasPrefix(pgErr.Message, FenceMessage) || !strings.Contains(pgErr.Message, "back to the source") {
		t.Errorf("a write to the target after the rollback gave %v, want the rollback fence's refusal", err)
	}

	// Forward again: the app's new writes reach the target through the
	// forward stream, and the target's capture does not record them.
	for i := 0; i < 5; i++ {
		if err := appWrite(ctx, m.appURL); err != nil {
			t.Fatal(err)
		}
	}
	want := query(t, m.src, `SELECT count(*) FROM orders WHERE note = 'after'`)[0]
	for deadline := time.Now().Add(30 * time.Second); query(t, m.dst, `SELECT count(*) FROM orders WHERE note = 'after'`)[0] != want; {
		if time.Now().After(deadline) {
			t.Fatalf("the forward stream did not carry the source's writes after the rollback")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := query(t, m.dst, `SELECT count(*) FROM replicator.changelog WHERE replicator.hstore_to_json(vals)->>'note' = 'after'`); got[0] != "0" {
		t.Errorf("the target's capture recorded %s of the forward stream's writes: they would be sent back", got[0])
	}
	if got := query(t, m.src, `SELECT count(*) FROM replicator.changelog WHERE replicator.hstore_to_json(vals)->>'note' LIKE 'aws r%' OR replicator.hstore_to_json(vals)->>'note' = 'updated on aws'`); got[0] != "0" {
		t.Errorf("the source's capture recorded %s of the reverse stream's writes: they would be sent forward again", got[0])
	}
	code, out, errOut = run(t, "status", "--target", m.dstURL)
	if code != 0 || !strings.Contains(out, "direction:       forward") || !strings.Contains(out, "rolled back") {
		t.Errorf("status after the rollback: exit %d\n%s\n%s", code, out, errOut)
	}

	// The end of the attempt: cleanup takes the target's capture and the
	// rollback's fence too.
	rev.kill(syscall.SIGTERM)
	stopForward()
	code, out, errOut = run(t, "cleanup", "--source", m.srcURL, "--target", m.dstURL, "--yes")
	if code != 0 {
		t.Fatalf("cleanup after the rollback: exit %d\n%s\n%s", code, out, errOut)
	}
	if got := query(t, m.dst, `SELECT count(*) FROM pg_trigger WHERE (tgname LIKE 'replicator\_capture%' OR tgname = 'replicator_fence')`); got[0] != "0" {
		t.Errorf("cleanup left %s capture or fence triggers on the target", got[0])
	}
	if got := query(t, m.dst, `SELECT count(*) FROM pg_namespace WHERE nspname IN ('replicator', 'replicator_fence')`); got[0] != "0" {
		t.Errorf("cleanup left %s replicator schemas on the target", got[0])
	}
	// An UPDATE, not appWrite's INSERT: the target's orders sequence
	// follows the source's only every few seconds while streaming (the
	// next cutover moves it past with its margin), so it may still be
	// behind the ids of the rows just carried.
	if _, err := pg.Connect(t, m.dst).Exec(ctx, `UPDATE settings SET value = 'after cleanup' WHERE name = 'mode'`); err != nil {
		t.Errorf("after cleanup the target refuses writes: %v", err)
	}
}

// With logical forward capture the forward stream's slot would decode the
// reverse stream's writes on the source and apply them to the target a
// second time: `replicator reverse` refuses while it runs, and the
// cutover's reverse bookkeeping on the source does not disturb it.
func TestReverseRefusedBesideLogicalStream(t *testing.T) {
	m := newMigration(t)
	m.startStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 20)
	code, out, errOut := run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence")
	app.halt()
	if code != 0 || !strings.Contains(out, "fallback: capture on the target: done") {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, "reverse", "--source", m.srcURL, "--target", m.dstURL, "--metrics-addr", "")
	if code != 2 || !strings.Contains(errOut, "still runs on the source's replication slot") || !strings.Contains(errOut, "stop it first") {
		t.Errorf("reverse beside a logical stream: exit %d, want 2 naming the forward stream\n%s\n%s", code, out, errOut)
	}
	// The forward stream is still alive and applying: its slot is active
	// and the target's own state is untouched by the source's.
	if got := query(t, m.src, `SELECT active FROM pg_replication_slots WHERE slot_name = 'replicator'`); len(got) != 1 || got[0] != "true" {
		t.Errorf("the forward stream stopped after the cutover's reverse install: slot active %v", got)
	}
	if got := query(t, m.dst, `SELECT capture FROM replicator.state`); got[0] != "logical" {
		t.Errorf("the target's state says capture %q, want logical", got[0])
	}
}
