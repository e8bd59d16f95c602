package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"replicator/internal/testenv"
)

// verify's connections are cut mid-comparison (through a throttled TCP
// proxy): exit 2 with an error that says what happened and what to do,
// never exit 1 (differences) or 0, and no report file is left half-written.
func TestVerifyConnectionCut(t *testing.T) {
	pg := postgresCluster(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	const ddl = `CREATE TABLE items (id int PRIMARY KEY, v text); INSERT INTO items SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g`
	pg.Exec(t, src, ddl)
	pg.Exec(t, dst, ddl)
	px, err := testenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	px.SetLatency(30 * time.Millisecond) // every round trip slow: 20 chunks take a while
	u, _ := url.Parse(pg.URL(src))
	u.Host = px.Addr()
	report := t.TempDir() + "/report.txt"
	cut := make(chan bool, 1)
	go func() {
		// Cut once the source has run a chunk checksum: mid-comparison.
		conn := pg.Connect(t, "postgres")
		defer conn.Close(context.Background())
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			var n int
			conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%hashtextextended%'`, src).Scan(&n)
			if n > 0 {
				px.Cut()
				cut <- true
				return
			}
		}
		cut <- false
	}()
	r := runCLI(t, time.Minute, "verify", "--source", u.String(), "--target", pg.URL(dst), "--chunk-rows", "1000", "--jobs", "1", "--out", report, "--log-format", "json")
	if !<-cut {
		t.Fatalf("verify never ran a checksum on the source; output:\n%s", r.all())
	}
	line := errorLine(t, r, []string{testenv.Password}, "source", "connection was lost", "run `replicator verify` again")
	t.Logf("%s", line)
	if strings.Contains(line, "difference") {
		t.Errorf("a cut connection is reported as differences: %s", line)
	}
	if _, err := os.Stat(report); err == nil {
		t.Error("a report file was written although the comparison did not end")
	}
}
