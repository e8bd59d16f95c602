package cutover

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The read-only fence, for apps that share the replicator's role; a
// difference is found by the verification while streaming, before
// anything is fenced; with --verify full-in-freeze, the final verification
// finds it inside the freeze, exits 1 and is not recorded, so the rerun
// verifies again; --unfence restores the database's own
// settings exactly, including one that was there before.
func TestReadOnlyFenceAndDifferences(t *testing.T) {
	m := newMigration(t)
	pg.Exec(t, "postgres", `ALTER DATABASE `+m.src+` SET default_transaction_read_only = off;
		ALTER DATABASE `+m.src+` SET work_mem = '8MB'`)
	settingsBefore := dbSettings(t, m.src)
	grantsBefore := tableGrants(t, m.src)
	m.startStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 30)
	// A row the stream does not carry: changed on the target only.
	pg.Exec(t, m.dst, `UPDATE settings SET value = 'changed on the target' WHERE name = 'mode'`)

	args := []string{"cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "45s", "--fence", "--fence-method", "read-only"}
	code, out, errOut := run(t, args...)
	if code != 1 || !strings.Contains(out, "DIFFERENCES FOUND") || !strings.Contains(lineOf(out, 2), "FAILED") || strings.Contains(out, "step 3/") {
		t.Fatalf("cutover with a difference: exit %d, want 1 from the verification while streaming, before the fence\n%s\n%s", code, out, errOut)
	}
	if s := dbSettings(t, m.src); !slices.Equal(s, settingsBefore) {
		t.Errorf("a difference found before the fence changed the source's settings: %v → %v", settingsBefore, s)
	}
	n := app.commits.Load()
	app.waitCommits(t, n+10) // not fenced: the app still writes

	args = append(args, "--verify", "full-in-freeze")
	code, out, errOut = run(t, args...)
	if code != 1 || !strings.Contains(out, "DIFFERENCES FOUND") || !strings.Contains(lineOf(out, 6), "FAILED") {
		t.Fatalf("cutover with a difference: exit %d, want 1 with the report\n%s\n%s", code, out, errOut)
	}
	if strings.Contains(out, "step 7/") {
		t.Errorf("the switch step was printed after differences:\n%s", out)
	}
	app.halt()
	var pgErr *pgconn.PgError
	if !errors.As(app.err, &pgErr) || pgErr.Code != pgerrcode.ReadOnlySQLTransaction {
		t.Errorf("the app stopped with %v, want a read-only transaction error", app.err)
	}
	if g := tableGrants(t, m.src); !slices.Equal(g, grantsBefore) {
		t.Errorf("the read-only fence changed grants: %v → %v", grantsBefore, g)
	}

	pg.Exec(t, m.dst, `UPDATE settings SET value = 'live' WHERE name = 'mode'`)
	code, out, errOut = run(t, args...)
	if code != 0 {
		t.Fatalf("rerun after the fix: exit %d\n%s\n%s", code, out, errOut)
	}
	for i, want := range map[int]string{3: ": skipped", 4: ": skipped", 5: ": skipped", 6: ": done", 7: ": done"} {
		if l := lineOf(out, i); !strings.Contains(l, want) {
			t.Errorf("rerun step %d: %q, want %s", i, l, want)
		}
	}

	// A session the app opened under the fence is read-only for life:
	// the unfence ends it.
	fencedSession, err := pgx.Connect(context.Background(), m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer fencedSession.Close(context.Background())
	code, out, errOut = run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
	if _, err := fencedSession.Exec(context.Background(), "SELECT 1"); err == nil {
		t.Errorf("a session opened read-only under the fence survived --unfence")
	}
	if code != 0 || !strings.Contains(out, "restored default_transaction_read_only") {
		t.Fatalf("unfence: exit %d\n%s\n%s", code, out, errOut)
	}
	if s := dbSettings(t, m.src); !slices.Equal(s, settingsBefore) {
		t.Errorf("unfence did not restore the database's settings exactly: %v → %v", settingsBefore, s)
	}
	c, err := pgx.Connect(context.Background(), m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(context.Background(), `INSERT INTO orders (customer) VALUES (3)`); err != nil {
		t.Errorf("after --unfence the app cannot write: %v", err)
	}
}
