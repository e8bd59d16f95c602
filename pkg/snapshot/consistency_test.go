package snapshot

import (
	"context"
	"sync"
	"testing"
)

// writeOnCopy writes to the source once, when the copy phase begins: the
// slot and the exported snapshot exist, every worker has imported it.
type writeOnCopy struct {
	once  sync.Once
	write func()
}

func (w *writeOnCopy) Phase(name string) {
	if name == "copy" {
		w.once.Do(w.write)
	}
}
func (w *writeOnCopy) Plan([]TablePlan)            {}
func (w *writeOnCopy) Copied(string, int64, int64) {}
func (w *writeOnCopy) TableDone(string)            {}
func (w *writeOnCopy) ChunkDone(string)            {}

// Rows written on the source after the slot was created are not in the
// copy, and the slot holds exactly those changes for the stream: the copy
// is the source as of the slot's consistent point, no more, no less.
func TestSnapshotConsistentWithSlot(t *testing.T) {
	src, dst, cfg := pair(t)
	cfg.OneSnapshot = true // the chunked copy's exactness is TestLedgerCopyThenStreamIsExact's
	pg.Exec(t, src, `
		CREATE TABLE acct (id int PRIMARY KEY, balance int NOT NULL, note text);
		INSERT INTO acct SELECT i, 100, repeat('n', 200) FROM generate_series(1, 20000) i;`)
	before := tableSums(t, src)

	writes := &writeOnCopy{write: func() {
		// Committed after the consistent point: must reach the target
		// through the stream only.
		pg.Exec(t, src, `INSERT INTO acct SELECT i, 1, 'late' FROM generate_series(20001, 20100) i`)
		pg.Exec(t, src, `UPDATE acct SET balance = balance + 1 WHERE id <= 50`)
		pg.Exec(t, src, `DELETE FROM acct WHERE id > 19990 AND id <= 20000`)
	}}
	cfg.Progress = writes
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	after := tableSums(t, src)
	if after[`r "public"."acct"`] == before[`r "public"."acct"`] {
		t.Fatal("the concurrent writes did not happen")
	}
	compareSums(t, before, tableSums(t, dst))

	// The slot decodes exactly the later changes: 100 inserts, 50
	// updates, 10 deletes (pgoutput message kinds I, U, D).
	var ins, upd, del int
	err := pg.Connect(t, src).QueryRow(context.Background(), `
		SELECT count(*) FILTER (WHERE get_byte(data, 0) = ascii('I')),
		       count(*) FILTER (WHERE get_byte(data, 0) = ascii('U')),
		       count(*) FILTER (WHERE get_byte(data, 0) = ascii('D'))
		FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', 'replicator')`,
		cfg.SlotName).Scan(&ins, &upd, &del)
	if err != nil {
		t.Fatal(err)
	}
	if ins != 100 || upd != 50 || del != 10 {
		t.Errorf("slot holds %d inserts, %d updates, %d deletes; want 100, 50, 10", ins, upd, del)
	}
}

// A TRUNCATE on the source during the copy waits for the copy's snapshot
// to end: the copy has every row of the snapshot, never an empty table.
func TestSnapshotTruncateDuringCopyWaits(t *testing.T) {
	src, dst, cfg := pair(t)
	cfg.OneSnapshot = true
	pg.Exec(t, src, `
		CREATE TABLE items (id int PRIMARY KEY, v text);
		INSERT INTO items SELECT i, repeat('v', 100) FROM generate_series(1, 20000) i;`)
	want := tableSums(t, src)
	truncated := make(chan error, 1)
	cfg.Progress = &writeOnCopy{write: func() {
		go func() {
			conn, err := pgxConnect(pg.URL(src))
			if err != nil {
				truncated <- err
				return
			}
			defer conn.Close(context.Background())
			_, err = conn.Exec(context.Background(), "TRUNCATE items")
			truncated <- err
		}()
	}}
	if _, err := Run(context.Background(), cfg, testLogger(t)); err != nil {
		t.Fatal(err)
	}
	compareSums(t, want, tableSums(t, dst))
	if err := <-truncated; err != nil {
		t.Fatal(err)
	}
	if n := queryString(t, src, "SELECT count(*)::text FROM items"); n != "0" {
		t.Errorf("the TRUNCATE did not happen after the copy (%s rows left)", n)
	}
}
