package cutover

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A stream that is reconnecting (its replication connection cut, as a
// deadlock with the target's DDL or a network blip does) leaves its slot
// inactive for a moment: cutover waits for it to come back instead of
// refusing at once with "no stream is running".
func TestCutoverWaitsForAReconnectingStream(t *testing.T) {
	m := newMigration(t)
	m.startStream(t)
	app := m.startWriter(t)
	app.waitCommits(t, 20)

	// Cut the stream's replication connection again and again for 3 s:
	// the stream retries after its backoff, and each time it is cut.
	ctx := context.Background()
	c := pg.Connect(t, m.src)
	cutting := make(chan struct{})
	go func() {
		defer close(cutting)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
			c.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'replicator' AND active_pid IS NOT NULL`)
			time.Sleep(20 * time.Millisecond) // the cutting's own pace, not a synchronisation
		}
	}()
	w := pg.Connect(t, m.src)
	for deadline := time.Now().Add(5 * time.Second); ; {
		var active bool
		w.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = 'replicator'`).Scan(&active)
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream's slot never went inactive")
		}
	}
	code, out, errOut := run(t, "cutover", "--source", m.srcURL, "--target", m.dstURL, "--timeout", "45s", "--fence", "--dry-run")
	<-cutting
	if code != 0 || strings.Contains(errOut, "no stream is running") || !strings.Contains(out, "slot replicator active") {
		t.Fatalf("cutover while the stream reconnects: exit %d, want 0 once the slot is active again\n%s\n%s", code, out, errOut)
	}
	app.halt()
}
