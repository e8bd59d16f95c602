package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a test redis-server.
type RedisOptions struct {
	// Password, when set, is required of every client (requirepass).
	Password string
	// Args are extra redis-server arguments, e.g. "--repl-diskless-sync", "yes".
	Args []string
}

// Redis is one running (or stopped) throwaway redis-server. DEBUG is
// enabled so tests can compare with DEBUG DIGEST.
type Redis struct {
	Port int
	Dir  string

	opts   RedisOptions
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// RedisServerBin finds redis-server on PATH.
func RedisServerBin() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found on PATH: install it with `sudo apt-get install redis-server` or run `make deps`")
	}
	return p, nil
}

// StartRedis starts a redis-server on a free loopback port with its own
// working directory (where it writes dump.rdb when asked to).
func StartRedis(opts RedisOptions) (*Redis, error) {
	if _, err := RedisServerBin(); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "replicator-redis-")
	if err != nil {
		return nil, err
	}
	r := &Redis{Dir: dir, opts: opts}
	for attempt := 0; ; attempt++ {
		if r.Port, err = FreePort(); err != nil {
			return nil, err
		}
		if err = r.Start(); err == nil {
			return r, nil
		}
		if attempt == 3 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// Start starts the server (after Stop or Kill) on the same port and
// directory; it loads dump.rdb from Dir when one is there.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return errors.New("redis already running")
	}
	bin, err := RedisServerBin()
	if err != nil {
		return err
	}
	args := []string{"--port", fmt.Sprint(r.Port), "--bind", "127.0.0.1", "--dir", r.Dir,
		"--save", "", "--appendonly", "no", "--enable-debug-command", "yes",
		"--logfile", filepath.Join(r.Dir, "server.log"), "--daemonize", "no"}
	if r.opts.Password != "" {
		args = append(args, "--requirepass", r.opts.Password)
	}
	args = append(args, r.opts.Args...)
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	client := r.Client(0)
	defer client.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			r.cmd = nil
			return fmt.Errorf("redis-server exited at start on port %d; log:\n%s", r.Port, r.LogTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on port %d not ready after 30s: %v", r.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts the server down: Fast is SHUTDOWN NOSAVE by signal (SIGTERM
// with no save points configured), Crash and Immediate are kill -9.
func (r *Redis) Stop(mode StopMode) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	pid := r.cmd.Process.Pid
	if mode == Fast {
		syscall.Kill(pid, syscall.SIGTERM)
	} else {
		killGroup(pid, syscall.SIGKILL)
	}
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		killGroup(pid, syscall.SIGKILL)
		<-r.exited
	}
	r.cmd = nil
	return nil
}

// Restart stops the server in mode and starts it again.
func (r *Redis) Restart(mode StopMode) error {
	if err := r.Stop(mode); err != nil {
		return err
	}
	return r.Start()
}

// Close stops the server and removes its directory.
func (r *Redis) Close() {
	r.Stop(Crash)
	os.RemoveAll(r.Dir)
}

// Addr is host:port.
func (r *Redis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.Port) }

// URL is a redis:// URL for database db, with the password when one is set.
func (r *Redis) URL(db int) string {
	if r.opts.Password != "" {
		return fmt.Sprintf("redis://:%s@%s/%d", r.opts.Password, r.Addr(), db)
	}
	return fmt.Sprintf("redis://%s/%d", r.Addr(), db)
}

// Client is a go-redis client for database db; the caller closes it.
func (r *Redis) Client(db int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: r.Addr(), Password: r.opts.Password, DB: db,
		MaxRetries: -1, DialTimeout: 2 * time.Second})
}

// LogTail returns the last lines of the server log.
func (r *Redis) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(r.Dir, "server.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return strings.TrimSpace(string(b))
}

// RunWithRedis is a TestMain helper like RunWithPostgres.
func RunWithRedis(run func() int, r **Redis, opts RedisOptions) int {
	s, err := StartRedis(opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start a Redis test server: %v\n", err)
		return 1
	}
	*r = s
	defer s.Close()
	return run()
}
