package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// streamLockKey is the session advisory lock a stream holds on the target
// database for as long as it runs: two streams into one target would apply
// the same changes twice and fight over the applied position. Advisory
// locks are per database.
const streamLockKey = state.StreamLockKey

// StreamLockedError is a target another stream already feeds. Pid, Host
// and Since are what that stream recorded when it took the lock.
type StreamLockedError struct {
	Pid   int
	Host  string
	Since time.Time
	// Own is set when the holder is this very process, or a process of
	// this host that no longer runs (killed with -9): a session the server
	// has not yet noticed is gone (a cut connection). It is retried, since
	// the lock goes with that session.
	Own bool
}

func (e *StreamLockedError) Error() string {
	if e.Pid == 0 {
		return "another stream is running on this target (it recorded no pid, host or start time): stop it first; only one stream may feed a target"
	}
	return fmt.Sprintf("another stream is running (pid %d, host %s, since %s): stop it first (SIGTERM); only one stream may feed a target",
		e.Pid, e.Host, e.Since.UTC().Format(time.RFC3339))
}

// lockStream takes the target's stream lock on conn (held until conn
// closes) and records who holds it in replicator.stream_owner. When
// another session holds it, it returns a *StreamLockedError naming that
// stream.
func lockStream(ctx context.Context, conn *pgx.Conn) error {
	host, _ := os.Hostname()
	// The table first, so that a second stream finds it whenever it finds
	// the lock taken (it then names the holder, or says it recorded none
	// yet, never fails on a missing table).
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS replicator.stream_owner (
			id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), pid int NOT NULL, host text NOT NULL, since timestamptz NOT NULL)`); err != nil {
		return fmt.Errorf("create replicator.stream_owner on the target: %w", err)
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, streamLockKey).Scan(&got); err != nil {
		return fmt.Errorf("take the stream lock on the target: %w", err)
	}
	if !got {
		le := &StreamLockedError{}
		err := conn.QueryRow(ctx, `SELECT pid, host, since FROM replicator.stream_owner WHERE id = 1`).Scan(&le.Pid, &le.Host, &le.Since)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("another stream holds the target's stream lock; reading who: %w", err)
		}
		le.Own = le.Host == host && (le.Pid == os.Getpid() || !processAlive(le.Pid))
		return le
	}
	_, err := conn.Exec(ctx, `INSERT INTO replicator.stream_owner (id, pid, host, since) VALUES (1, `+fmt.Sprint(os.Getpid())+`, `+pgutil.QuoteLiteral(host)+`, now())
		ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, since = EXCLUDED.since`)
	if err != nil {
		return fmt.Errorf("record the stream lock's holder in replicator.stream_owner on the target: %w", err)
	}
	return nil
}

// LockStream takes the target's stream lock on conn, as Stream does, for a
// process that will feed the target before its stream starts: `run`
// holds it through its snapshot, so that a second run or stream is refused
// with a *StreamLockedError naming it. Unlock it (pg_advisory_unlock of
// state.StreamLockKey, or close conn) before calling Stream, which takes
// it on its own session.
func LockStream(ctx context.Context, conn *pgx.Conn) error { return lockStream(ctx, conn) }

// processAlive reports whether process pid runs on this host. A stream
// killed with -9 leaves its session, and the lock with it, until the
// server notices the closed connection: a restarted stream waits for that
// rather than refusing.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return err == nil || errors.Is(err, syscall.EPERM) // EPERM: alive, another user's
}
