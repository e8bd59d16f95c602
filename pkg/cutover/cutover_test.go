package cutover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The whole of migration night against a live app: refused without a
// stream; a dry run that changes nothing; the fenced cutover; a rerun that
// skips what is done; and the rollback that restores exactly the app's
// write rights.
func TestCutoverWithLiveApp(t *testing.T) {
	m := newMigration(t)
	args := []string{"cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "45s", "--fence-method", "revoke"}

	// No stream running: refused, naming what to start.
	code, out, errOut := run(t, append(args, "--fence")...)
	if code != 2 || !strings.Contains(errOut, "no stream is running") || !strings.Contains(errOut, "replicator stream") {
		t.Fatalf("cutover without a stream: exit %d, want 2 naming `replicator stream`\n%s\n%s", code, out, errOut)
	}
	if got := query(t, m.dst, `SELECT coalesce(to_regclass('replicator.cutover')::text, 'none')`); got[0] != "none" {
		t.Errorf("a refused cutover created its table")
	}

	m.startStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 50)

	// Dry run: the plan, and nothing changed anywhere.
	grantsBefore, settingsBefore := tableGrants(t, m.src), dbSettings(t, m.src)
	seqBefore := sequenceValues(t, m.dst)
	code, out, errOut = run(t, append(args, "--fence", "--dry-run")...)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, ": done (commands below)") {
		t.Errorf("a dry run says the switch is done:\n%s", out)
	}
	for _, want := range []string{"current lag", "would revoke", m.app + ": 6 privileges on 2 tables", "would move public.invoice_no",
		"would move public.countdown", "/DATABASE_URL'", "replicator cutover --unfence",
		"switch the application: dry run (would switch", "would compare every table while streaming"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out)
		}
	}
	if g := tableGrants(t, m.src); !slices.Equal(g, grantsBefore) {
		t.Errorf("dry run changed grants:\nbefore %v\nafter  %v", grantsBefore, g)
	}
	if s := dbSettings(t, m.src); !slices.Equal(s, settingsBefore) {
		t.Errorf("dry run changed database settings: %v → %v", settingsBefore, s)
	}
	// The stream itself moves target sequences up to the source's value
	// while it runs; only cutover moves them past it (by the margin).
	seqSource, seqAfter := sequenceValues(t, m.src), sequenceValues(t, m.dst)
	for name, before := range seqBefore {
		if v := seqAfter[name]; v < min(before, seqSource[name]) || v > max(before, seqSource[name]) {
			t.Errorf("dry run moved target sequence %s past the source: %d → %d (source %d)", name, before, v, seqSource[name])
		}
	}
	if got := query(t, m.dst, `SELECT coalesce(to_regclass('replicator.cutover')::text, 'none')`); got[0] != "none" {
		t.Errorf("dry run created the cutover table")
	}
	n := app.commits.Load()
	app.waitCommits(t, n+20) // the app still writes

	// Two more app sessions: one idle, one inside a write transaction
	// that has not committed; the fence must end both.
	ctx := context.Background()
	idle, err := pgx.Connect(ctx, m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close(ctx)
	open, err := pgx.Connect(ctx, m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	if _, err := open.Exec(ctx, `BEGIN; INSERT INTO orders (customer, note) VALUES (-1, 'uncommitted')`); err != nil {
		t.Fatal(err)
	}

	// The cutover, fenced, while the app writes.
	code, out, errOut = run(t, append(args, "--fence", "--max-lag", "5s", "--route53-zone", "Z123", "--record-name", "db.example.com", "--app-record", "api.example.com")...)
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	for i := 1; i <= 7; i++ {
		if l := lineOf(out, i); !strings.Contains(l, ": done") {
			t.Errorf("step %d: %q, want done; output:\n%s", i, l, out)
		}
	}
	for _, want := range []string{"--hosted-zone-id Z123", `"Weight":10`, `"Weight":100`, `"Name":"api.example.com"`, `"Name":"db.example.com","Type":"CNAME","TTL":60`,
		"/DATABASE_URL' --type SecureString --overwrite --value 'postgres://postgres:<PASSWORD>@127.0.0.1", "--force-new-deployment", "write freeze: "} {
		if !strings.Contains(out, want) {
			t.Errorf("switch step lacks %q:\n%s", want, out)
		}
	}

	// The app is fenced: it was refused, and so is any new write.
	app.halt()
	var pgErr *pgconn.PgError
	if !errors.As(app.err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
		t.Errorf("the app stopped with %v, want permission denied", app.err)
	}
	if app.commits.Load() <= n+20 {
		t.Errorf("the app committed %d transactions in all", app.commits.Load())
	}
	for name, c := range map[string]*pgx.Conn{"idle": idle, "in a write transaction": open} {
		if _, err := c.Exec(ctx, "SELECT 1"); err == nil {
			t.Errorf("the app's session %s survived the fence", name)
		}
	}
	if l := lineOf(out, 3); !strings.Contains(l, "ended 2 sessions") && !strings.Contains(l, "ended 3 sessions") {
		t.Errorf("fence step: %q, want 2 or 3 sessions ended (idle, open transaction, maybe the writer)", l)
	}
	ac, err := pgx.Connect(context.Background(), m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.Exec(context.Background(), `INSERT INTO orders (customer) VALUES (1)`)
	ac.Close(context.Background())
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
		t.Errorf("after the fence the app's INSERT gave %v, want permission denied", err)
	}

	// Every row the app committed is on the target.
	srcSums, dstSums := checksums(t, m.src), checksums(t, m.dst)
	if len(srcSums) != 3 {
		t.Fatalf("source tables: %v", srcSums)
	}
	for tbl, sum := range srcSums {
		if dstSums[tbl] != sum {
			t.Errorf("%s: source %s, target %s", tbl, sum, dstSums[tbl])
		}
	}
	if got := query(t, m.dst, `SELECT count(*) - 2000 FROM orders WHERE customer >= 0`); got[0] != fmt.Sprint(app.commits.Load()) {
		t.Errorf("target holds %s of the app's %d new orders", got[0], app.commits.Load())
	}

	// Sequences at least the source's value plus the margin (countdown
	// descends: at most minus the margin).
	srcSeq, dstSeq := sequenceValues(t, m.src), sequenceValues(t, m.dst)
	for name, sv := range srcSeq {
		dv, ok := dstSeq[name]
		switch {
		case !ok:
			t.Errorf("sequence %s missing on the target", name)
		case name == "public.countdown" && dv > sv-1000:
			t.Errorf("%s: target %d, source %d: want at most source - 1000", name, dv, sv)
		case name != "public.countdown" && dv < sv+1000:
			t.Errorf("%s: target %d, source %d: want at least source + 1000", name, dv, sv)
		}
	}

	// Rerun: what is done is skipped; sequences are not moved again.
	grantsFenced := tableGrants(t, m.src)
	code, out, errOut = run(t, append(args, "--fence")...)
	if code != 0 {
		t.Fatalf("rerun: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, i := range []int{2, 3, 4, 5, 6} {
		if l := lineOf(out, i); !strings.Contains(l, ": skipped") {
			t.Errorf("rerun step %d: %q, want skipped", i, l)
		}
	}
	if s := sequenceValues(t, m.dst); fmt.Sprint(s) != fmt.Sprint(dstSeq) {
		t.Errorf("rerun moved sequences again: %v → %v", dstSeq, s)
	}
	if g := tableGrants(t, m.src); !slices.Equal(g, grantsFenced) {
		t.Errorf("rerun changed grants: %v → %v", grantsFenced, g)
	}

	// Rollback: exactly the privileges from before, and the app writes.
	code, out, errOut = run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
	if code != 0 || !strings.Contains(out, "granted back 6 privileges") {
		t.Fatalf("unfence: exit %d\n%s\n%s", code, out, errOut)
	}
	if g := tableGrants(t, m.src); !slices.Equal(g, grantsBefore) {
		t.Errorf("unfence did not restore the grants exactly:\nbefore %v\nafter  %v", grantsBefore, g)
	}
	if s := dbSettings(t, m.src); !slices.Equal(s, settingsBefore) {
		t.Errorf("unfence changed database settings: %v → %v", settingsBefore, s)
	}
	pg.Exec(t, m.src, "SET ROLE "+m.app+"; INSERT INTO orders (customer) VALUES (7); RESET ROLE")
	code, out, _ = run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
	if code != 0 || !strings.Contains(out, "skipped") {
		t.Errorf("second unfence: exit %d, want skipped:\n%s", code, out)
	}
}
