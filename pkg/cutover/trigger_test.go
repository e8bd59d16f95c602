package cutover

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"replicator/pkg/apply"
	"replicator/pkg/state"
	"replicator/pkg/trigger"
)

// Trigger capture (Heroku sources): the high-water mark is a tick, and the
// cutover waits for the target to apply its batch. The stream is
// apply.Stream in this process, as `replicator stream` runs it; the source
// takes no writes during the test, so the batches are empty and applying
// them only records their positions.
func TestTriggerCaptureCutover(t *testing.T) {
	ctx := context.Background()
	m := &migration{src: pg.NewDatabase(t), dst: pg.NewDatabase(t)}
	m.srcURL, m.dstURL = pg.URL(m.src), pg.URL(m.dst)
	m.app = "app_" + m.src
	pg.Exec(t, "postgres", "CREATE ROLE "+m.app+" LOGIN PASSWORD '"+appPassword+"'")
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, m.srcURL); err == nil {
			c.Exec(ctx, "DROP OWNED BY "+m.app)
			c.Close(ctx)
		}
		if c, err := pgx.Connect(ctx, pg.URL("postgres")); err == nil {
			c.Exec(ctx, "DROP ROLE IF EXISTS "+m.app)
			c.Close(ctx)
		}
	})
	m.appURL = pg.URLAs(m.app, appPassword, m.src)
	pg.Exec(t, m.src, appSchema)
	pg.Exec(t, m.src, "GRANT SELECT, INSERT, UPDATE, DELETE ON orders, events TO "+m.app+"; GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "+m.app)

	// The copy, before the triggers exist (nothing writes meanwhile).
	src, dst := pg.Connect(t, m.src), pg.Connect(t, m.dst)
	m.copyAndCapture(t, m.srcURL, src)

	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() {
		stopped <- apply.Stream(runCtx, apply.StreamConfig{SourceURL: m.srcURL, TargetURL: m.dstURL,
			Trigger: trigger.Config{TickInterval: 100 * time.Millisecond}}, zap.NewNop())
	}()
	streamDone := false
	t.Cleanup(func() {
		stop()
		if streamDone {
			return
		}
		if err := <-stopped; err != nil {
			t.Errorf("stream: %v", err)
		}
	})
	// The stream is running once it has applied a few ticks' batches.
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := state.Load(ctx, dst)
		if err != nil {
			t.Fatal(err)
		}
		if st.Applied.ID() >= 2 {
			break
		}
		select {
		case err := <-stopped:
			streamDone = true
			t.Fatalf("the stream ended before applying a batch: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream applied batch %d after 30s, want 2", st.Applied.ID())
		}
	}

	grantsBefore := tableGrants(t, m.src)
	args := []string{"cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "30s", "--fence"}
	code, out, errOut := run(t, append(args, "--fence-method", "read-only")...)
	if code != 2 || !strings.Contains(errOut, "--fence-method trigger") {
		t.Errorf("read-only fence under trigger capture: exit %d, want 2 pointing to trigger\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = run(t, append(args, "--fence-method", "revoke")...)
	if code != 0 {
		t.Fatalf("cutover: exit %d\n%s\n%s", code, out, errOut)
	}
	if l := lineOf(out, 1); !strings.Contains(l, "trigger capture") {
		t.Errorf("step 1: %q", l)
	}
	if l := lineOf(out, 4); !strings.Contains(l, ": done") || !strings.Contains(l, "tick") {
		t.Errorf("step 4: %q, want done at a tick", l)
	}
	ac, err := pgx.Connect(ctx, m.appURL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ac.Exec(ctx, `INSERT INTO orders (customer) VALUES (1)`)
	ac.Close(ctx)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.InsufficientPrivilege {
		t.Errorf("after the fence the app's INSERT gave %v, want permission denied", err)
	}
	srcSeq, dstSeq := sequenceValues(t, m.src), sequenceValues(t, m.dst)
	if dstSeq["public.orders_id_seq"] < srcSeq["public.orders_id_seq"]+1000 || dstSeq["public.invoice_no"] < srcSeq["public.invoice_no"]+1000 {
		t.Errorf("sequences: source %v, target %v", srcSeq, dstSeq)
	}
	code, out, errOut = run(t, "cutover", "--unfence", "--source", m.srcURL, "--target", m.dstURL)
	if code != 0 {
		t.Fatalf("unfence: exit %d\n%s\n%s", code, out, errOut)
	}
	if g := tableGrants(t, m.src); !slices.Equal(g, grantsBefore) {
		t.Errorf("unfence did not restore the grants exactly:\nbefore %v\nafter  %v", grantsBefore, g)
	}
}
