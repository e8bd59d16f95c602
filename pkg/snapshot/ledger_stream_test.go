package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"replicator/pkg/apply"
	"replicator/pkg/pgutil"
	"replicator/pkg/state"
	"replicator/pkg/status"
	"replicator/pkg/trigger"
)

// TestLedgerCopyThenStreamIsExact is the whole exactness argument run for
// real, in both capture modes: the capture point is created once, then the
// chunked copy runs (interrupted once and resumed, by two copies sharing
// the ledger) while the application writes — counters bumped inside and
// outside SAVEPOINTs, rows with TOASTed values updated without touching
// them, rows moved by their key up into chunks copied later and down into
// chunks copied earlier, inserts, deletes, a keyless table, partitioned
// tables keyed by one column and by two — and then the
// stream (apply.Stream, with the chunk filter) runs from the capture
// point. The target must end identical to the source.
func TestLedgerCopyThenStreamIsExact(t *testing.T) {
	for _, mode := range []string{CaptureLogical, CaptureTrigger} {
		t.Run(mode, func(t *testing.T) { ledgerCopyThenStream(t, mode) })
	}
}

func ledgerCopyThenStream(t *testing.T, mode string) {
	src, dst, cfg, tables := ledgerPair(t)
	bg := context.Background()
	log := testLogger(t)
	var st state.State
	switch mode {
	case CaptureLogical:
		pg.Exec(t, src, `ALTER TABLE loose REPLICA IDENTITY FULL; ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code_key; CREATE PUBLICATION `+state.DefaultPublication+` FOR ALL TABLES`)
		repl, err := pgutil.ConnectReplication(bg, cfg.SourceURL, "source")
		if err != nil {
			t.Fatal(err)
		}
		slot, err := pglogrepl.CreateReplicationSlot(bg, repl, cfg.SlotName, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{SnapshotAction: "NOEXPORT_SNAPSHOT"})
		repl.Close(bg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { dropSlot(cfg.SlotName) })
		st = state.State{Capture: state.CaptureLogical, SlotName: cfg.SlotName, Publication: state.DefaultPublication, ConsistentLSN: slot.ConsistentPoint}
	case CaptureTrigger:
		conn := pg.Connect(t, src)
		if _, err := trigger.Install(bg, conn, trigger.Config{}, log); err != nil {
			t.Fatal(err)
		}
		point, err := trigger.StartCapturePoint(bg, cfg.SourceURL, log)
		if err != nil {
			t.Fatal(err)
		}
		st = point.State()
		point.Release(bg)
	}
	st.SnapshotStatus = state.SnapshotCopying
	if err := state.Begin(bg, pg.Connect(t, dst), &st); err != nil {
		t.Fatal(err)
	}

	ctx, stopWriter := context.WithCancel(bg)
	writerDone := make(chan error, 1)
	go func() { writerDone <- ledgerWriter(ctx, cfg.SourceURL, mode) }()

	// First a copy interrupted once a few chunks are done, then two
	// copies sharing the rest.
	cctx, cancel := context.WithCancel(bg)
	watch := pg.Connect(t, dst)
	go func() {
		defer cancel()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			var done int
			if watch.QueryRow(bg, `SELECT count(snapshot) FROM replicator.chunks`).Scan(&done) == nil && done >= 3 {
				return
			}
		}
	}()
	first := cfg
	first.Jobs = 1
	if err := copyLedger(cctx, &first, tables, false, &reporter{}, log); err == nil {
		t.Fatal("the first copy was not interrupted")
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			c := cfg
			errs <- copyLedger(bg, &c, tables, false, &reporter{}, zap.NewNop())
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	if err := state.SetSnapshotStatus(bg, pg.Connect(t, dst), state.SnapshotDone); err != nil {
		t.Fatal(err)
	}

	sctx, stopStream := context.WithCancel(bg)
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- apply.Stream(sctx, apply.StreamConfig{SourceURL: cfg.SourceURL, TargetURL: cfg.TargetURL,
			Trigger: trigger.Config{TickInterval: 50 * time.Millisecond}}, log)
	}()
	want := tableSums(t, src)
	delete(want, "r replicator.changelog")
	delete(want, "r replicator.ticks")
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := withoutLedger(tableSums(t, dst))
		delete(got, "r replicator.state")
		if fmt.Sprint(got) == fmt.Sprint(want) {
			break
		}
		select {
		case err := <-streamDone:
			t.Fatalf("the stream stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			compareSums(t, want, got)
			t.Fatal("the target did not become identical to the source within 60 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopStream()
	<-streamDone
}

func dropSlot(name string) {
	conn, err := pgxConnect(pg.URL("postgres"))
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	for i := 0; i < 50; i++ {
		if _, err := conn.Exec(context.Background(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ledgerWriter is the application during the copy, until ctx ends.
// Logical capture does not send an unchanged TOASTed value even when the
// key moves, so under it the rows moved down (into chunks copied before
// them, where the stream must insert them whole) are small ones; trigger
// capture records a moved row whole.
func ledgerWriter(ctx context.Context, url, mode string) error {
	conn, err := pgxConnect(url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	bg := context.Background()
	var up, down int64
	for i := int64(0); ctx.Err() == nil; i++ {
		tx, err := conn.Begin(bg)
		if err != nil {
			return err
		}
		var stmts []string
		switch i % 6 {
		case 0: // a counter, maybe of a row with a TOASTed body left alone
			stmts = []string{fmt.Sprintf(`UPDATE docs SET n = n + 1 WHERE id = %d`, 50*(1+i%60))}
		case 1: // the same inside a subtransaction
			stmts = []string{`SAVEPOINT s`, fmt.Sprintf(`UPDATE docs SET n = n + 1 WHERE id = %d`, 1+(i*37)%3000), `RELEASE s`}
		case 2: // a row moved up into the last chunk, copied late
			stmts = []string{fmt.Sprintf(`UPDATE docs SET id = %d WHERE id = %d`, 1_000_000+up, 2000+up)}
			up++
		case 3: // a row moved down into the first chunk, copied early
			id := 1000 + down
			if mode == CaptureLogical && id%50 == 0 {
				id++
			}
			stmts = []string{fmt.Sprintf(`UPDATE docs SET id = %d WHERE id = %d`, -1-down, id)}
			down++
		case 4: // an insert and a delete
			stmts = []string{fmt.Sprintf(`INSERT INTO docs VALUES (%d, 0, 'new')`, 2_000_000+i),
				fmt.Sprintf(`DELETE FROM docs WHERE id = %d`, 500+i%400)}
		case 5: // the other tables
			stmts = []string{fmt.Sprintf(`UPDATE coded SET label = label || '.' WHERE code = %d`, 7*(1+i%500)),
				fmt.Sprintf(`INSERT INTO loose VALUES (%d, 'w%d')`, i%10, i),
				fmt.Sprintf(`DELETE FROM loose WHERE ctid = (SELECT ctid FROM loose WHERE a = %d LIMIT 1)`, (i+3)%10),
				// partitioned tables: trigger capture records these under
				// the root, the copy reads each partition on its own
				fmt.Sprintf(`UPDATE parts SET v = v + 1 WHERE id = %d`, 1+(i*13)%2000),
				fmt.Sprintf(`INSERT INTO parts VALUES (%d, 0)`, 3_000_000+i),
				fmt.Sprintf(`UPDATE events SET v = v + 1 WHERE id = %d`, 1+(i*7)%1000),
				fmt.Sprintf(`INSERT INTO events VALUES (%d, %d, 0)`, 10_000+i, i%10)}
		}
		for _, s := range stmts {
			if _, err := tx.Exec(bg, s); err != nil {
				tx.Rollback(bg)
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		if err := tx.Commit(bg); err != nil {
			return err
		}
	}
	return nil
}

// TestChunkedRunResumesThenStreams runs `snapshot` with Config.Chunked in
// both capture modes while the application writes: the first run is
// interrupted in the middle of its copy, the second resumes it (keeping
// the capture point and the chunks done, and saying so), and the stream
// from the capture point then makes the target identical to the source.
func TestChunkedRunResumesThenStreams(t *testing.T) {
	for _, mode := range []string{CaptureLogical, CaptureTrigger} {
		t.Run(mode, func(t *testing.T) {
			src, dst, cfg := pair(t)
			pg.Exec(t, src, ledgerTestDDL+ledgerTestRows+"ANALYZE;")
			if mode == CaptureLogical {
				pg.Exec(t, src, `ALTER TABLE loose REPLICA IDENTITY FULL; ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code_key`)
				t.Cleanup(func() { dropSlot(cfg.SlotName) })
			}
			cfg.Capture, cfg.ChunkBytes, cfg.Jobs = mode, 16<<10, 1
			bg := context.Background()
			ctx, stopWriter := context.WithCancel(bg)
			writerDone := make(chan error, 1)
			go func() { writerDone <- ledgerWriter(ctx, cfg.SourceURL, mode) }()

			rctx, cancel := context.WithCancel(bg)
			go func() {
				defer cancel()
				conn, err := pgxConnect(cfg.TargetURL)
				if err != nil {
					return
				}
				defer conn.Close(bg)
				for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					var done int
					if conn.QueryRow(bg, `SELECT count(snapshot) FROM replicator.chunks`).Scan(&done) == nil && done >= 3 {
						return
					}
				}
			}()
			if _, err := Run(rctx, cfg, testLogger(t)); err == nil {
				t.Fatal("the first run was not interrupted")
			}
			capturePoint := queryString(t, dst, `SELECT coalesce(consistent_lsn::text, snapshot_xmin) FROM replicator.state`)
			// status counts what the ledger holds, whoever copied it.
			total, kept := ledgerCounts(t, dst)
			st, err := status.Gather(bg, pg.Connect(t, dst), nil)
			if err != nil {
				t.Fatal(err)
			}
			if p := st.SnapshotTables; p == nil || p.ChunksDone != int64(kept) || p.ChunksTotal != int64(total) {
				t.Errorf("status shows %+v, the ledger %d of %d chunks done", p, kept, total)
			}
			// The chunks just committed give the copy's rate, and the
			// bytes left its ETA.
			var text strings.Builder
			st.WriteText(&text)
			if p := st.SnapshotTables; p == nil || p.BytesPerSecond <= 0 || !strings.Contains(text.String(), " MB/s, ETA ") {
				t.Errorf("status shows no rate and ETA for a copy that just committed chunks: %+v\n%s", p, text.String())
			}
			core, logs := observer.New(zapcore.InfoLevel)
			cfg.Jobs = 2
			res, err := Run(bg, cfg, zap.New(zapcore.NewTee(core, testLogger(t).Core())))
			if err != nil {
				t.Fatal(err)
			}
			if res.StartedOver {
				t.Error("the second run started over instead of resuming")
			}
			if logs.FilterMessageSnippet("resuming: ").Len() != 1 {
				t.Errorf("the second run did not say what it kept; logged: %v", logs.All())
			}
			if got := queryString(t, dst, `SELECT coalesce(consistent_lsn::text, snapshot_xmin) FROM replicator.state`); got != capturePoint {
				t.Errorf("the capture point moved from %s to %s: it must be created once", capturePoint, got)
			}
			stopWriter()
			if err := <-writerDone; err != nil {
				t.Fatal(err)
			}
			streamUntilIdentical(t, src, dst, cfg)
		})
	}
}

// streamUntilIdentical runs the stream until the target's tables equal
// the source's (60 s at most), then stops it.
func streamUntilIdentical(t *testing.T, src, dst string, cfg Config) {
	t.Helper()
	sctx, stopStream := context.WithCancel(context.Background())
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- apply.Stream(sctx, apply.StreamConfig{SourceURL: cfg.SourceURL, TargetURL: cfg.TargetURL,
			Trigger: trigger.Config{TickInterval: 50 * time.Millisecond}}, zap.NewNop())
	}()
	defer func() { stopStream(); <-streamDone }()
	want := tableSums(t, src)
	delete(want, "r replicator.changelog")
	delete(want, "r replicator.ticks")
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := withoutLedger(tableSums(t, dst))
		for k := range got {
			if strings.HasPrefix(k, "r replicator.") {
				delete(got, k)
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		select {
		case err := <-streamDone:
			streamDone <- err
			t.Fatalf("the stream stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			compareSums(t, want, got)
			t.Fatal("the target did not become identical to the source within 60 s")
		}
	}
}

// TestChunkedRunWithJoinedWorkers joins a second process's workers
// (Join) to a chunked Run while the application writes: both share the
// ledger, each chunk is copied once, the Run finishes, and the stream
// makes the target identical to the source. Join on a target without a
// chunked copy says what to do.
func TestChunkedRunWithJoinedWorkers(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, ledgerTestDDL+ledgerTestRows+"ANALYZE;")
	bg := context.Background()
	cfg.Capture, cfg.ChunkBytes, cfg.Jobs = CaptureTrigger, 16<<10, 1
	if err := Join(bg, cfg, testLogger(t)); !errors.Is(err, ErrNothingToJoin) || !strings.Contains(err.Error(), "replicator snapshot") {
		t.Errorf("Join before any copy: %v, want ErrNothingToJoin naming `replicator snapshot`", err)
	}
	ctx, stopWriter := context.WithCancel(bg)
	writerDone := make(chan error, 1)
	go func() { writerDone <- ledgerWriter(ctx, cfg.SourceURL, CaptureTrigger) }()
	runDone := make(chan error, 1)
	go func() {
		_, err := Run(bg, cfg, testLogger(t))
		runDone <- err
	}()
	watch := pg.Connect(t, dst)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		var planned int
		if watch.QueryRow(bg, `SELECT count(*) FROM replicator.chunks`).Scan(&planned) == nil && planned > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run planned no chunks within 30 s")
		}
	}
	joined := cfg
	joined.Jobs = 2
	if err := Join(bg, joined, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	total, done := ledgerCounts(t, dst)
	if done != total {
		t.Fatalf("%d of %d chunks done after the run", done, total)
	}
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	streamUntilIdentical(t, src, dst, cfg)
}

// TestStartOverDropsTheLedger: a chunked run interrupted and then started
// over by a run under one snapshot leaves no chunk ledger behind, whose
// snapshots the stream would otherwise filter by.
func TestStartOverDropsTheLedger(t *testing.T) {
	src, dst, cfg := pair(t)
	pg.Exec(t, src, ledgerTestDDL+ledgerTestRows+"ALTER TABLE loose REPLICA IDENTITY FULL; ALTER TABLE coded REPLICA IDENTITY USING INDEX coded_code_key; ANALYZE;")
	t.Cleanup(func() { dropSlot(cfg.SlotName) })
	bg := context.Background()
	cfg.ChunkBytes, cfg.Jobs = 16<<10, 1
	rctx, cancel := context.WithCancel(bg)
	go func() {
		defer cancel()
		conn, err := pgxConnect(cfg.TargetURL)
		if err != nil {
			return
		}
		defer conn.Close(bg)
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			var done int
			if conn.QueryRow(bg, `SELECT count(snapshot) FROM replicator.chunks`).Scan(&done) == nil && done >= 1 {
				return
			}
		}
	}()
	if _, err := Run(rctx, cfg, testLogger(t)); err == nil {
		t.Fatal("the chunked run was not interrupted")
	}
	cfg.OneSnapshot = true
	res, err := Run(bg, cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if !res.StartedOver {
		t.Error("the run under one snapshot did not start over")
	}
	if got := queryString(t, dst, `SELECT coalesce(to_regclass('replicator.chunks')::text, 'none')`); got != "none" {
		t.Errorf("the interrupted run's chunk ledger is still there (%s)", got)
	}
	want, got := tableSums(t, src), tableSums(t, dst)
	for k := range got {
		if strings.HasPrefix(k, "r replicator.") {
			delete(got, k)
		}
	}
	compareSums(t, want, got)
}
