package cutover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// The verification before the fence proves the copy; the check inside the
// freeze reads only the rows written since, and still finds a row changed
// on the target behind the stream's back and a source change the stream
// never carried. Once fixed, a rerun finishes, and the touched-row logs
// are gone from both sides.
func TestFreezeCheckFindsWritesAfterTheLiveVerification(t *testing.T) {
	ctx := context.Background()
	m := newHerokuMigration(t)
	// Rows enough that comparing them all is told apart from comparing
	// the written ones: the same on both sides, past the capture.
	bulk := `INSERT INTO events (id, order_id, kind) OVERRIDING SYSTEM VALUE SELECT i, i, 'bulk' FROM generate_series(100001, 200000) i`
	pg.Exec(t, m.dst, bulk)
	pg.Exec(t, m.src, bulk+`; DELETE FROM replicator.changelog`)
	m.startTriggerStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 20)

	planted := false
	cfg := Config{SourceURL: m.srcURL, TargetURL: m.dstURL, Fence: true, Timeout: 30 * time.Second,
		afterLiveVerify: func(ctx context.Context) error {
			planted = true
			pg.Exec(t, m.dst, `UPDATE events SET kind = 'changed on the target' WHERE id = 5`)
			// A source write whose captured change is lost before the
			// stream reads it.
			src, err := pgx.Connect(ctx, m.srcURL)
			if err != nil {
				return err
			}
			defer src.Close(ctx)
			return pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `UPDATE events SET kind = 'never carried' WHERE id = 6`); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, `DELETE FROM replicator.changelog WHERE txid = pg_current_xact_id()`)
				return err
			})
		}}
	var out bytes.Buffer
	err := Run(ctx, cfg, &out, zap.NewNop())
	if !errors.Is(err, ErrDifferences) {
		t.Fatalf("cutover with two planted differences: %v, want ErrDifferences\n%s", err, out.String())
	}
	if !planted {
		t.Fatal("the differences were not planted: step 2 did not verify while streaming")
	}
	text := out.String()
	if l := lineOf(text, 2); !strings.Contains(l, ": done") || !strings.Contains(l, "verified while streaming: 3 tables") {
		t.Errorf("step 2: %q, want verified while streaming\n%s", l, text)
	}
	if l := lineOf(text, 6); !strings.Contains(l, "FAILED") || !strings.Contains(l, "rows written since step 2's verification") {
		t.Errorf("step 6: %q, want FAILED from the rows written since step 2", l)
	}
	for _, want := range []string{"id=5", "id=6"} {
		if !strings.Contains(text, want) {
			t.Errorf("the report does not name row %s:\n%s", want, text)
		}
	}
	if strings.Contains(text, "step 7/") {
		t.Errorf("the switch was printed after differences:\n%s", text)
	}

	// Fixed by hand; the rerun checks only the logged rows again.
	app.halt()
	sc, tc := pg.Connect(t, m.src), pg.Connect(t, m.dst)
	if _, err := tc.Exec(ctx, `UPDATE events SET kind = 'created' WHERE id = 5; UPDATE events SET kind = 'never carried' WHERE id = 6`); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	cfg.afterLiveVerify = nil
	var rep bytes.Buffer
	cfg.Report, cfg.ReportFormat, cfg.Version = &rep, ReportMarkdown, "v9.9.9-test"
	if err := Run(ctx, cfg, &out, zap.NewNop()); err != nil {
		t.Fatalf("rerun after the fix: %v\n%s", err, out.String())
	}
	text = out.String()
	// The report for the change ticket: the common header, then the steps.
	for _, want := range []string{"## Cutover: switch ready", "| Tool | replicator v9.9.9-test |", "| Source | `127.0.0.1:", "| Target | `127.0.0.1:",
		"| Started | ", "| Ended | ", "| Position | source tick ", "| Source fenced | yes (since ", "| Write freeze | ", "- step 6/7: final verification: done"} {
		if !strings.Contains(rep.String(), want) {
			t.Errorf("the markdown report lacks %q:\n%s", want, rep.String())
		}
	}
	if strings.Contains(rep.String(), appPassword) {
		t.Errorf("the report holds a password:\n%s", rep.String())
	}
	if l := lineOf(text, 6); !strings.Contains(l, ": done") || !strings.Contains(l, "rows written since step 2's verification compared") {
		t.Errorf("rerun step 6: %q, want the touched rows compared", l)
	}
	if !strings.Contains(text, "write freeze: ") {
		t.Errorf("no write freeze line:\n%s", text)
	}
	// What the check inside the freeze read, as recorded: the rows the app
	// and the plants wrote since step 2, not the 2000+ stored ones.
	var detail []byte
	if err := tc.QueryRow(ctx, `SELECT detail FROM replicator.cutover WHERE step = 'verify'`).Scan(&detail); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		Touched  bool  `json:"touched_only"`
		Compared int64 `json:"rows_compared"`
	}
	if err := json.Unmarshal(detail, &rec); err != nil {
		t.Fatal(err)
	}
	var stored int64
	if err := sc.QueryRow(ctx, `SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM events) + (SELECT count(*) FROM settings)`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	// Each logged key is compared once: at most the rows written since
	// step 2 (three a commit of the app's, the two plants and the fixes).
	written := app.commits.Load()*3 + 4
	if !rec.Touched || rec.Compared == 0 || rec.Compared > written || rec.Compared >= stored/4 {
		t.Errorf("the check inside the freeze compared %d rows (touched only: %v) of %d stored; want only the rows written since step 2 (at most %d)",
			rec.Compared, rec.Touched, stored, written)
	}
	for _, db := range []string{m.src, m.dst} {
		if left := query(t, db, `SELECT count(*)::text FROM pg_trigger WHERE tgname LIKE 'replicator_verify%'`); left[0] != "0" {
			t.Errorf("%s: %s touched-row triggers left after the cutover", db, left[0])
		}
	}
}
