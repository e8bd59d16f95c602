package apply

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/internal/testenv"
)

const faultDDL = `
CREATE TABLE ledger (id bigserial PRIMARY KEY, amount numeric NOT NULL, note text);
CREATE TABLE counters (id int PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE log_nopk (k int, v text);
ALTER TABLE log_nopk REPLICA IDENTITY FULL;
`

const faultSetup = `INSERT INTO counters SELECT g, 0 FROM generate_series(1, 50) g;
INSERT INTO ledger (amount) SELECT g FROM generate_series(1, 100) g;`

// writer runs source transactions until stopped: inserts, increments,
// rows without a key (duplicates included: a doubled insert would show),
// deletes, and now and then a large transaction. It reconnects when the
// source goes away.
type writer struct {
	stop context.CancelFunc
	done chan struct{}
	txns atomic.Int64
}

func startWriter(t *testing.T, url string) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		rng := rand.New(rand.NewSource(42))
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for i := 0; ctx.Err() == nil; i++ {
			if conn == nil {
				c, err := pgx.Connect(ctx, url)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				conn = c
			}
			batch := &pgx.Batch{}
			batch.Queue("BEGIN")
			batch.Queue("INSERT INTO ledger (amount, note) VALUES ($1, 'w')", rng.Intn(1000))
			batch.Queue("UPDATE counters SET n = n + 1 WHERE id = $1", 1+rng.Intn(50))
			batch.Queue("INSERT INTO log_nopk VALUES ($1, 'same')", rng.Intn(5))
			if i%7 == 0 {
				batch.Queue("DELETE FROM log_nopk WHERE ctid = (SELECT ctid FROM log_nopk WHERE k = $1 LIMIT 1)", rng.Intn(5))
			}
			if i%50 == 0 {
				batch.Queue("INSERT INTO ledger (amount, note) SELECT g, repeat('x', 200) FROM generate_series(1, 3000) g")
				batch.Queue("UPDATE counters SET n = n + 1")
			}
			batch.Queue("COMMIT")
			if err := conn.SendBatch(ctx, batch).Close(); err != nil {
				conn.Close(context.Background())
				conn = nil
				continue
			}
			w.txns.Add(1)
		}
	}()
	return w
}

func (w *writer) finish() int64 {
	w.stop()
	<-w.done
	return w.txns.Load()
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// replicatorBinary builds cmd/replicator once for the package's tests.
func replicatorBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "replicator-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "replicator")
		buildErr = testenv.BuildReplicator(binPath)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type proc struct {
	cmd  *exec.Cmd
	out  *strings.Builder
	done chan struct{}
}

func (p *pair) startProcess(t *testing.T, extra ...string) *proc {
	t.Helper()
	args := append([]string{"stream", "--source", p.srcURL, "--target", p.dstURL, "--log-format", "json"}, extra...)
	cmd := exec.Command(replicatorBinary(t), args...)
	out := &strings.Builder{}
	var mu sync.Mutex
	cmd.Stdout = io.Discard
	cmd.Stderr = writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr := &proc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(pr.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-pr.done })
	return pr
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestStreamKill9 kills the stream process with SIGKILL at several points
// while the source is written to, restarts it each time, and checks the
// target ends identical: nothing lost, nothing applied twice.
func TestStreamKill9(t *testing.T) {
	p := snapshotPair(t, faultDDL, faultSetup)
	w := startWriter(t, p.srcURL)
	defer w.finish()
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 4; i++ {
		pr := p.startProcess(t, "--metrics-addr", "")
		time.Sleep(time.Duration(300+rng.Intn(1200)) * time.Millisecond)
		pr.cmd.Process.Signal(syscall.SIGKILL)
		<-pr.done
		if !strings.Contains(pr.out.String(), "streaming from the source") && i > 0 {
			t.Logf("run %d log:\n%s", i, pr.out.String())
		}
	}
	if n := w.finish(); n < 20 {
		t.Fatalf("the writer committed only %d transactions", n)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pr := p.startProcess(t, "--metrics-addr", addr)
	p.waitCaughtUpProc(t, 90*time.Second, pr)
	// Caught up and idle, the lag poller's next sample reads 0.
	var metrics string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		metrics = scrape(t, "http://"+addr+"/metrics")
		if strings.Contains(metrics, "replicator_apply_lag_seconds 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("apply lag is not 0 15s after catching up, idle:\n%s", grepLines(metrics, "apply_lag"))
		}
	}
	pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the stream did not stop within 60s of SIGTERM")
	}
	if code := pr.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; log:\n%s", code, pr.out.String())
	}
	p.assertIdentical(t)
	for _, want := range []string{"replicator_source_lag_bytes", "replicator_apply_lag_seconds 0",
		"replicator_applied_transactions_total", `replicator_applied_changes_total{op="insert",table="public.ledger"}`,
		"replicator_apply_batch_changes_bucket", "replicator_last_applied_lsn", "replicator_stream_errors_total"} {
		if !strings.Contains(metrics, want) && !strings.Contains(metrics, strings.TrimSuffix(want, " 0")) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(pr.out.String(), testenv.Password) {
		t.Error("the log shows the password")
	}
}

func (p *pair) waitCaughtUpProc(t testing.TB, timeout time.Duration, pr *proc) {
	t.Helper()
	want := p.sourceLSN(t)
	deadline := time.Now().Add(timeout)
	for p.appliedLSN(t) < want {
		select {
		case <-pr.done:
			t.Fatalf("the stream exited before catching up; log:\n%s", pr.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("target applied %s, source at %s after %s; log:\n%s", p.appliedLSN(t), want, timeout, pr.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestStreamServerRestarts restarts the target and then the source while
// the stream runs; it reconnects by itself and ends identical.
func TestStreamServerRestarts(t *testing.T) {
	p := snapshotPair(t, faultDDL, faultSetup)
	r := p.start(t, p.config(t))
	w := startWriter(t, p.srcURL)
	defer w.finish()
	var checks, violations atomic.Int64
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() { defer close(watched); watchFlush(watchCtx, t, p, &checks, &violations) }()
	defer func() { stopWatch(); <-watched }()
	// Each restart comes once the stream applies the writer's
	// transactions again, i.e. has reconnected after the one before.
	p.waitApplying(t, r)
	restart(t, targetCluster(t), testenv.Crash)
	p.waitApplying(t, r)
	restart(t, srcPG, testenv.Fast)
	p.waitApplying(t, r)
	restart(t, srcPG, testenv.Immediate)
	p.waitApplying(t, r)
	if n := w.finish(); n < 10 {
		t.Fatalf("the writer committed only %d transactions", n)
	}
	p.waitCaughtUp(t, 90*time.Second, r)
	stopWatch()
	<-watched
	if err := r.stop(t); err != nil {
		t.Fatalf("stream: %v", err)
	}
	p.assertIdentical(t)
	t.Logf("confirmed flush position sampled %d times", checks.Load())
	if n := violations.Load(); n > 0 {
		t.Errorf("the slot confirmed more than the target had committed %d times", n)
	}
}

// waitApplying waits until the target's recorded position moves past
// where it is now: the stream is connected and applying (the source must
// be taking writes).
func (p *pair) waitApplying(t *testing.T, r *running) {
	t.Helper()
	from := p.appliedLSN(t)
	deadline := time.Now().Add(60 * time.Second)
	for p.appliedLSN(t) <= from {
		select {
		case <-r.done:
			t.Fatalf("the stream stopped: %v", r.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target's position stayed at %s for 60s", from)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart stops a cluster in mode and starts it again; after a crash the
// old backends may hold shared memory for a moment, so start is retried.
func restart(t *testing.T, pg *testenv.Postgres, mode testenv.StopMode) {
	t.Helper()
	if err := pg.Stop(mode); err != nil {
		t.Fatal(err)
	}
	var err error
	for i := 0; i < 50; i++ {
		if err = pg.Start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("restart the test cluster: %v", err)
}
