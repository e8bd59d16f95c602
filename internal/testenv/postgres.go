package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Password is the superuser password of every test cluster. Tests that check
// credentials are never printed grep output for it.
const Password = "s3cret-Test-Pw"

// PostgresOptions configures a test cluster. The zero value is a cluster
// with wal_level=logical, enough slots and senders for parallel tests, and
// durability switched off for speed (fsync=off: a kill -9 of the server
// still recovers, only an OS crash could lose data).
type PostgresOptions struct {
	// WalLevel is "logical" when empty. "replica" makes a source that cannot
	// do logical decoding, as Heroku Postgres looks to its customers.
	WalLevel string
	// Settings are extra postgresql.conf lines, name → value.
	Settings map[string]string
}

// Postgres is one running (or stopped) throwaway cluster.
type Postgres struct {
	BinDir  string
	DataDir string
	Port    int

	opts    PostgresOptions
	su      *serverUser
	base    string
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	dbCount atomic.Int64
}

// StartPostgres runs initdb in a new temporary directory and starts the
// server on a free loopback port.
func StartPostgres(opts PostgresOptions) (*Postgres, error) {
	bin, err := PostgresBinDir()
	if err != nil {
		return nil, err
	}
	su, err := lookupServerUser()
	if err != nil {
		return nil, err
	}
	base, err := os.MkdirTemp("", "replicator-pg-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	if err := su.chown(base); err != nil {
		return nil, err
	}
	p := &Postgres{BinDir: bin, DataDir: filepath.Join(base, "data"), opts: opts, su: su, base: base}
	pwfile := filepath.Join(base, "pwfile")
	if err := os.WriteFile(pwfile, []byte(Password+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := su.chown(pwfile); err != nil {
		return nil, err
	}
	initdb := su.command(filepath.Join(bin, "initdb"), "-D", p.DataDir, "-U", "postgres",
		"--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("initdb in %s: %w\n%s", p.DataDir, err, out)
	}
	if err := p.writeConf(); err != nil {
		return nil, err
	}
	// A port found free can be taken before the server binds it; try again
	// on a new port rather than fail the run.
	for attempt := 0; ; attempt++ {
		if p.Port, err = FreePort(); err != nil {
			return nil, err
		}
		if err = p.Start(); err == nil {
			return p, nil
		}
		if attempt == 3 {
			p.Close()
			return nil, err
		}
	}
}

func (p *Postgres) writeConf() error {
	wal := p.opts.WalLevel
	if wal == "" {
		wal = "logical"
	}
	conf := map[string]string{
		"wal_level":                         wal,
		"max_replication_slots":             "40",
		"max_wal_senders":                   "40",
		"max_connections":                   "300",
		"fsync":                             "off",
		"full_page_writes":                  "off",
		"shared_buffers":                    "128MB",
		"listen_addresses":                  "'127.0.0.1'",
		"unix_socket_directories":           "'" + p.base + "'",
		"logging_collector":                 "off",
		"log_min_messages":                  "warning",
		"max_worker_processes":              "16",
		"max_logical_replication_workers":   "8",
		"max_sync_workers_per_subscription": "4",
	}
	for k, v := range p.opts.Settings {
		conf[k] = v
	}
	var b strings.Builder
	for k, v := range conf {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(b.String())
	return err
}

// Start starts the server (after Stop or Kill) on the same port and data
// directory, and waits until it accepts connections.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return errors.New("postgres already running")
	}
	logf, err := os.OpenFile(filepath.Join(p.base, "server.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	cmd := p.su.command(filepath.Join(p.BinDir, "postgres"), "-D", p.DataDir, "-p", fmt.Sprint(p.Port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	p.cmd, p.exited = cmd, exited
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			p.cmd = nil
			return fmt.Errorf("postgres exited at start on port %d; log:\n%s", p.Port, p.LogTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres on port %d not ready after 60s: %v; log:\n%s", p.Port, err, p.LogTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StopMode is how a server is shut down.
type StopMode int

const (
	// Fast rolls back open transactions and shuts down cleanly (SIGINT).
	Fast StopMode = iota
	// Immediate quits without a checkpoint; the next start runs crash
	// recovery (SIGQUIT).
	Immediate
	// Crash is kill -9 of the postmaster and every backend.
	Crash
)

// Stop shuts the server down in the given mode and waits until it is gone.
func (p *Postgres) Stop(mode StopMode) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	// Backends call setsid(), so they are not in the postmaster's process
	// group: list them now, while they are still its children.
	backends := append(childrenOf(pid), pid)
	switch mode {
	case Fast:
		syscall.Kill(pid, syscall.SIGINT)
	case Immediate:
		syscall.Kill(pid, syscall.SIGQUIT)
	case Crash:
		for _, b := range backends {
			syscall.Kill(b, syscall.SIGKILL)
		}
	}
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		killGroup(pid, syscall.SIGKILL)
		<-p.exited
	}
	// Whatever the mode, the next start needs every backend gone from the
	// shared memory segment, so wait for each of them.
	p.cmd = nil
	return waitGone(backends, 30*time.Second)
}

// Restart stops the server in mode and starts it again.
func (p *Postgres) Restart(mode StopMode) error {
	if err := p.Stop(mode); err != nil {
		return err
	}
	return p.Start()
}

// Close stops the server and removes its files.
func (p *Postgres) Close() {
	p.Stop(Immediate)
	os.RemoveAll(p.base)
}

// URL is a connection URL for database db as the superuser, with password.
func (p *Postgres) URL(db string) string {
	return p.URLAs("postgres", Password, db)
}

// URLAs is a connection URL for database db as user/password.
func (p *Postgres) URLAs(user, password, db string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password),
		Host: fmt.Sprintf("127.0.0.1:%d", p.Port), Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// LogTail returns the last lines of the server log, for failure messages.
func (p *Postgres) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(p.base, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// NewDatabase creates an empty database for this test and drops it (with
// FORCE) when the test ends. It returns the database's name; URL(name) and
// Connect(t, name) reach it.
func (p *Postgres) NewDatabase(t testing.TB) string {
	t.Helper()
	name := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	name = fmt.Sprintf("t%d_%s", p.dbCount.Add(1), name)
	p.Exec(t, "postgres", fmt.Sprintf("CREATE DATABASE %q", name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, p.URL("postgres"))
		if err != nil {
			return // the server may have been stopped by the test
		}
		defer conn.Close(ctx)
		// Slots of this database keep it busy; drop them first.
		conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active`, name)
		conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %q WITH (FORCE)", name))
	})
	return name
}

// Connect opens a connection to db, closed when the test ends.
func (p *Postgres) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		t.Fatalf("connect to test database %s: %v", db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// Exec runs SQL statements in db and fails the test on error.
func (p *Postgres) Exec(t testing.TB, db string, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		t.Fatalf("connect to test database %s: %v", db, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec in %s: %v\nSQL: %s", db, err, sql)
	}
}

// PostgresMain is the whole TestMain of a package whose tests share one
// cluster with default options: RunWithPostgres, then exit with its code.
func PostgresMain(m *testing.M, pg **Postgres) { os.Exit(RunWithPostgres(m, pg, PostgresOptions{})) }

// RunWithPostgres is a TestMain helper: it starts one cluster shared by the
// package's tests, stores it in *pg, runs the tests and removes the cluster.
// A cluster that cannot start fails the package (exit 1), never skips it.
func RunWithPostgres(m *testing.M, pg **Postgres, opts PostgresOptions) int {
	p, err := StartPostgres(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a PostgreSQL test server: %v\n", err)
		return 1
	}
	*pg = p
	defer p.Close()
	return m.Run()
}
