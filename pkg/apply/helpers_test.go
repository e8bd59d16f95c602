package apply

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"replicator/internal/testenv"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
	"replicator/pkg/wal"
)

// Two clusters: sources live on srcPG, targets on dstPG, so either side
// can be restarted on its own.
var srcPG, dstPG *testenv.Postgres

func TestMain(m *testing.M) {
	code := testenv.RunWithPostgres(m, &srcPG, testenv.PostgresOptions{})
	if dstPG != nil {
		dstPG.Close()
	}
	os.Exit(code)
}

// startTargetCluster starts the target cluster on first use (TestMain can
// hold only one through RunWithPostgres).
var dstOnce sync.Once

func targetCluster(t testing.TB) *testenv.Postgres {
	t.Helper()
	var err error
	dstOnce.Do(func() {
		dstPG, err = testenv.StartPostgres(testenv.PostgresOptions{})
	})
	if err != nil {
		t.Fatalf("start the target test cluster: %v", err)
	}
	if dstPG == nil {
		t.Fatal("the target test cluster failed to start earlier")
	}
	return dstPG
}

// pair is a source database and a target database holding a finished
// snapshot of it, as `replicator snapshot` leaves them.
type pair struct {
	src, dst       string
	srcURL, dstURL string
	slot           string
}

// snapshotPair plays the snapshot's part: on the source, ddl then setup
// (rows present before the snapshot), a FOR ALL TABLES publication and a
// pgoutput slot exporting its snapshot; the schema copied with pg_dump;
// the rows copied through the exported snapshot; the state recorded on
// the target as done.
func snapshotPair(t testing.TB, ddl, setup string) *pair {
	t.Helper()
	dst := targetCluster(t)
	p := &pair{src: srcPG.NewDatabase(t)}
	p.dst = dst.NewDatabase(t)
	p.srcURL, p.dstURL = srcPG.URL(p.src), dst.URL(p.dst)
	p.slot = "slot_" + p.src
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srcPG.Exec(t, p.src, ddl)
	if setup != "" {
		srcPG.Exec(t, p.src, setup)
	}
	srcPG.Exec(t, p.src, "CREATE PUBLICATION "+state.DefaultPublication+" FOR ALL TABLES")

	// Schema first (the slot's snapshot must stay open while data is read).
	bin, err := testenv.PostgresBinDir()
	if err != nil {
		t.Fatal(err)
	}
	dump := exec.Command(filepath.Join(bin, "pg_dump"), "--schema-only", "--no-publications", "--no-owner", p.srcURL)
	restore := exec.Command(filepath.Join(bin, "psql"), "-q", "-v", "ON_ERROR_STOP=1", p.dstURL)
	restore.Stdin, _ = dump.StdoutPipe()
	var derr, rerr strings.Builder
	dump.Stderr, restore.Stderr, restore.Stdout = &derr, &rerr, io.Discard
	if err := restore.Start(); err != nil {
		t.Fatal(err)
	}
	if err := dump.Run(); err != nil {
		t.Fatalf("pg_dump: %v: %s", err, derr.String())
	}
	if err := restore.Wait(); err != nil {
		t.Fatalf("psql restore: %v: %s", err, rerr.String())
	}

	repl, err := pgutil.ConnectReplication(ctx, p.srcURL, "source")
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, repl, p.slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		t.Fatalf("create slot: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), srcPG.URL("postgres"))
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for i := 0; i < 50; i++ {
			_, err := c.Exec(context.Background(), "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", p.slot)
			if err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	from, err := pgx.Connect(ctx, p.srcURL)
	if err != nil {
		t.Fatal(err)
	}
	defer from.Close(ctx)
	to, err := pgx.Connect(ctx, p.dstURL)
	if err != nil {
		t.Fatal(err)
	}
	defer to.Close(ctx)
	mustExec(t, from, "BEGIN ISOLATION LEVEL REPEATABLE READ")
	mustExec(t, from, fmt.Sprintf("SET TRANSACTION SNAPSHOT '%s'", slot.SnapshotName))
	mustExec(t, to, "SET session_replication_role = replica")
	var tables []string
	rows, err := from.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, tbl := range tables {
		pr, pw := io.Pipe()
		go func() {
			_, err := from.PgConn().CopyTo(ctx, pw, "COPY "+tbl+" TO STDOUT")
			pw.CloseWithError(err)
		}()
		if _, err := to.PgConn().CopyFrom(ctx, pr, "COPY "+tbl+" FROM STDIN"); err != nil {
			t.Fatalf("copy %s: %v", tbl, err)
		}
	}
	mustExec(t, from, "COMMIT")
	if err := state.Begin(ctx, to, &state.State{Capture: state.CaptureLogical, SlotName: p.slot,
		Publication: state.DefaultPublication, ConsistentLSN: slot.ConsistentPoint,
		SnapshotStatus: state.SnapshotCopying}); err != nil {
		t.Fatal(err)
	}
	if err := state.SetSnapshotStatus(ctx, to, state.SnapshotDone); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustExec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// testConfig is a stream configuration with quick status and backoff.
func (p *pair) config(t testing.TB) StreamConfig {
	return StreamConfig{SourceURL: p.srcURL, TargetURL: p.dstURL,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second, SourcePollInterval: 200 * time.Millisecond,
		Capture: wal.Config{StatusInterval: 200 * time.Millisecond, SpillDir: t.TempDir()}}
}

// running is a stream running in this process.
type running struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Stream returned
	err    error
}

func (p *pair) start(t testing.TB, cfg StreamConfig) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan struct{})}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	go func() {
		r.err = Stream(ctx, cfg, log)
		close(r.done)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop stops the stream as SIGTERM does and returns its error.
func (r *running) stop(t testing.TB) error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(60 * time.Second):
		t.Fatal("the stream did not stop within 60s of cancellation")
	}
	return nil
}

// sourceLSN is the source's current WAL end.
func (p *pair) sourceLSN(t testing.TB) pglogrepl.LSN {
	t.Helper()
	c := srcPG.Connect(t, p.src)
	var lsn pglogrepl.LSN
	if err := c.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	c.Close(context.Background())
	return lsn
}

// appliedLSN reads the target's recorded position (0 before the first).
func (p *pair) appliedLSN(t testing.TB) pglogrepl.LSN {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.dstURL)
	if err != nil {
		return 0 // the target may be restarting
	}
	defer c.Close(ctx)
	var s *string
	if err := c.QueryRow(ctx, "SELECT applied_lsn::text FROM replicator.state").Scan(&s); err != nil || s == nil {
		return 0
	}
	lsn, _ := pglogrepl.ParseLSN(*s)
	return lsn
}

// waitCaughtUp waits until the target has applied everything the source
// wrote so far, or fails after timeout.
func (p *pair) waitCaughtUp(t testing.TB, timeout time.Duration, r *running) {
	t.Helper()
	want := p.sourceLSN(t)
	deadline := time.Now().Add(timeout)
	for p.appliedLSN(t) < want {
		select {
		case <-r.done:
			t.Fatalf("the stream stopped before catching up: %v", r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("target applied %s, source at %s after %s", p.appliedLSN(t), want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checksums computes, independently of the code under test, a row count
// and an md5 of the sorted row texts of every table of db.
func checksums(t testing.TB, pg *testenv.Postgres, db string) map[string]string {
	t.Helper()
	c := pg.Connect(t, db)
	defer c.Close(context.Background())
	ctx := context.Background()
	rows, err := c.Query(ctx, `SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'replicator') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	for _, tbl := range tables {
		var n int64
		var sum string
		err := c.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text)), '')
			FROM ONLY %s t`, tbl)).Scan(&n, &sum)
		if err != nil {
			t.Fatalf("checksum %s: %v", tbl, err)
		}
		sums[tbl] = fmt.Sprintf("%d rows md5 %s", n, sum)
	}
	return sums
}

// assertIdentical compares every table of source and target.
func (p *pair) assertIdentical(t testing.TB) {
	t.Helper()
	a, b := checksums(t, srcPG, p.src), checksums(t, targetCluster(t), p.dst)
	if len(a) == 0 {
		t.Fatal("no tables found on the source")
	}
	for tbl, sum := range a {
		if b[tbl] != sum {
			t.Errorf("table %s differs: source %s, target %s", tbl, sum, b[tbl])
		}
	}
	for tbl := range b {
		if _, ok := a[tbl]; !ok {
			t.Errorf("table %s only on the target", tbl)
		}
	}
}

func zapNop() *zap.Logger { return zap.NewNop() }
