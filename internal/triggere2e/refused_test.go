package triggere2e

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A change the target refuses stops trigger capture's stream with an
// error that names the row and where the change is on the source: a
// changelog id, not a WAL position (trigger capture has none).
func TestRefusedChangeIsNamedByChangelogID(t *testing.T) {
	_, srcURL := appSource(t, heroku)
	dstDB := heroku.NewDatabase(t)
	dstURL := heroku.URL(dstDB)
	app := connect(t, srcURL)
	exec1(t, app, `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, 'v' FROM generate_series(1, 10) g`)
	runOK(t, "snapshot", "--source", srcURL, "--target", dstURL, "--capture", "trigger", "--metrics-addr", "")
	exec1(t, connect(t, dstURL), `DELETE FROM items WHERE id = 7`)
	exec1(t, app, `UPDATE items SET v = 'x' WHERE id = 7`)
	var id string
	if err := app.QueryRow(context.Background(), `SELECT max(id)::text FROM replicator.changelog`).Scan(&id); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := command(t, "stream", "--source", srcURL, "--target", dstURL, "--metrics-addr", "")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("the stream did not stop on a change the target cannot apply:\n%s", out)
	}
	if code := exitCode(err); code != 2 {
		t.Errorf("exit code %d, want 2\n%s", code, out)
	}
	text := string(out)
	for _, want := range []string{"items", "(id)=(7)", "changelog id " + id} {
		if !strings.Contains(text, want) {
			t.Errorf("output does not name %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "LSN") {
		t.Errorf("output speaks of an LSN, which trigger capture has not:\n%s", text)
	}
}
