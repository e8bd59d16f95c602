package pgutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"replicator/internal/testenv"
)

// Each case makes the error happen on a real server (or, for the codes,
// names it by its SQLSTATE), then asks IsConnectionLost about it, bare
// and wrapped as a caller would.
func TestIsConnectionLost(t *testing.T) {
	for _, c := range []struct {
		name  string
		lost  bool
		cause func(t *testing.T) error
	}{
		{"syntax error", false, func(t *testing.T) error { return exec(t, open(t), "SELEC 1") }},
		{"unique violation", false, func(t *testing.T) error {
			return exec(t, open(t), "CREATE TEMP TABLE u (k int PRIMARY KEY); INSERT INTO u VALUES (1), (1)")
		}},
		{"undefined table", false, func(t *testing.T) error { return exec(t, open(t), "SELECT * FROM no_such_table") }},
		{"wrong password", false, func(t *testing.T) error {
			_, err := Connect(context.Background(), pg.URLAs("postgres", "wrong", "postgres"), "source")
			return err
		}},
		{"no such database", false, func(t *testing.T) error {
			_, err := Connect(context.Background(), pg.URL("no_such_db"), "source")
			return err
		}},
		{"cancelled before the statement", false, func(t *testing.T) error {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := open(t).Exec(ctx, "SELECT 1")
			return err
		}},
		{"cancelled mid-statement", false, func(t *testing.T) error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			time.AfterFunc(200*time.Millisecond, cancel)
			_, err := open(t).Exec(ctx, "SELECT pg_sleep(10)")
			return err
		}},
		{"backend terminated", true, func(t *testing.T) error {
			victim := open(t)
			exec(t, open(t), fmt.Sprintf("SELECT pg_terminate_backend(%d)", victim.PgConn().PID()))
			return exec(t, victim, "SELECT 1")
		}},
		{"used after it was lost", true, func(t *testing.T) error {
			victim := open(t)
			exec(t, open(t), fmt.Sprintf("SELECT pg_terminate_backend(%d)", victim.PgConn().PID()))
			exec(t, victim, "SELECT 1")
			return exec(t, victim, "SELECT 1")
		}},
		{"network cut mid-statement", true, func(t *testing.T) error {
			px := proxy(t)
			return midStatement(t, openURL(t, via(px, pg.URL("postgres"))), px.Cut)
		}},
		{"statement timed out in the driver", true, func(t *testing.T) error {
			px := proxy(t)
			conn := openURL(t, via(px, pg.URL("postgres")))
			px.SetLatency(2 * time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err := conn.Exec(ctx, "SELECT 1")
			return err
		}},
		{"server refuses connections", true, func(t *testing.T) error {
			port, err := testenv.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			_, err = Connect(context.Background(), fmt.Sprintf("postgres://u:p@127.0.0.1:%d/db?sslmode=disable", port), "source")
			return err
		}},
		{"another backend crashed mid-statement", true, func(t *testing.T) error {
			// The postmaster resets every backend, then recovers.
			err := midStatement(t, open(t), func() {
				pid := open(t).PgConn().PID()
				if err := syscall.Kill(int(pid), syscall.SIGKILL); err != nil {
					t.Fatalf("kill backend %d: %v", pid, err)
				}
			})
			waitUp(t)
			return err
		}},
		{"server shutting down", true, func(t *testing.T) error {
			// A smart shutdown waits for open sessions and refuses new ones.
			open(t)
			b, err := os.ReadFile(filepath.Join(pg.DataDir, "postmaster.pid"))
			if err != nil {
				t.Fatal(err)
			}
			pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
				t.Fatalf("smart shutdown of postmaster %d: %v", pid, err)
			}
			waitFor(t, "the shutdown to refuse connections", func() bool {
				_, err = Connect(context.Background(), pg.URL("postgres"), "source")
				var pgErr *pgconn.PgError
				return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.CannotConnectNow
			})
			restart(t, testenv.Fast)
			return err
		}},
		{"server fast shutdown", true, func(t *testing.T) error {
			conn := open(t)
			restart(t, testenv.Fast)
			return exec(t, conn, "SELECT 1")
		}},
		{"server fast shutdown mid-statement", true, func(t *testing.T) error {
			return midStatement(t, open(t), func() { restart(t, testenv.Fast) })
		}},
		{"server immediate shutdown mid-statement", true, func(t *testing.T) error {
			return midStatement(t, open(t), func() { restart(t, testenv.Immediate) })
		}},
		{"server killed (kill -9) mid-statement", true, func(t *testing.T) error {
			return midStatement(t, open(t), func() { restart(t, testenv.Crash) })
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.cause(t)
			if err == nil {
				t.Fatal("the cause gave no error")
			}
			t.Logf("error: %v", err)
			if got := IsConnectionLost(err); got != c.lost {
				t.Errorf("IsConnectionLost(%v) = %v, want %v", err, got, c.lost)
			}
			if got := IsConnectionLost(fmt.Errorf("copy chunk 3: %w", err)); got != c.lost {
				t.Errorf("IsConnectionLost(wrapped %v) = %v, want %v", err, got, c.lost)
			}
		})
	}
}

func TestIsConnectionLostCode(t *testing.T) {
	for code, lost := range map[string]bool{
		pgerrcode.AdminShutdown:                   true,
		pgerrcode.CrashShutdown:                   true,
		pgerrcode.CannotConnectNow:                true,
		pgerrcode.ConnectionException:             true,
		pgerrcode.ConnectionDoesNotExist:          true,
		pgerrcode.ConnectionFailure:               true,
		pgerrcode.ProtocolViolation:               true,
		pgerrcode.QueryCanceled:                   false,
		pgerrcode.InvalidPassword:                 false,
		pgerrcode.UndefinedTable:                  false,
		pgerrcode.ObjectInUse:                     false,
		pgerrcode.SerializationFailure:            false,
		pgerrcode.IdleInTransactionSessionTimeout: false,
	} {
		if got := IsConnectionLostCode(code); got != lost {
			t.Errorf("IsConnectionLostCode(%s %s) = %v, want %v", code, pgerrcode.Name(code), got, lost)
		}
		if got := IsConnectionLost(&pgconn.PgError{Severity: "FATAL", Code: code}); got != lost {
			t.Errorf("IsConnectionLost(SQLSTATE %s) = %v, want %v", code, got, lost)
		}
	}
}

// open connects to database postgres; the connection is closed when the
// test ends.
func open(t *testing.T) *pgx.Conn { return openURL(t, pg.URL("postgres")) }

func openURL(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := Connect(context.Background(), url, "source")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := conn.Exec(ctx, sql)
	return err
}

func proxy(t *testing.T) *testenv.Proxy {
	t.Helper()
	px, err := testenv.StartProxy(fmt.Sprintf("127.0.0.1:%d", pg.Port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(px.Close)
	return px
}

// via is url with its host replaced by the proxy's address.
func via(px *testenv.Proxy, url string) string {
	return strings.Replace(url, fmt.Sprintf("127.0.0.1:%d", pg.Port), px.Addr(), 1)
}

// midStatement runs a long statement on conn, does fault while the server
// runs it, and returns the statement's error.
func midStatement(t *testing.T, conn *pgx.Conn, fault func()) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- exec(t, conn, "SELECT pg_sleep(10)") }()
	waitFor(t, "the statement to run", func() bool { return running(t, "pg_sleep(10)") })
	fault()
	return <-done
}

// running reports whether a statement holding text is being run.
func running(t *testing.T, text string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var n int
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, text).Scan(&n)
	return n > 0
}

// waitFor polls cond until it holds, for at most 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for %s", what)
		}
	}
}

// waitUp waits until the server takes connections again.
func waitUp(t *testing.T) {
	t.Helper()
	waitFor(t, "the server to take connections", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pg.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
		}
		return err == nil
	})
}

func restart(t *testing.T, mode testenv.StopMode) {
	t.Helper()
	if err := pg.Restart(mode); err != nil {
		t.Fatalf("restart the test server: %v", err)
	}
}
