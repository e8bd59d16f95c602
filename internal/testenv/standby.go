package testenv

import (
	"fmt"
	"os"
	"path/filepath"
)

// StartStandby makes a hot standby of p (pg_basebackup -R: streaming
// replication from p) in a new temporary directory and starts it on a free
// port. It accepts read-only connections with the same users and
// passwords; the caller closes it.
func (p *Postgres) StartStandby() (*Postgres, error) {
	base, err := os.MkdirTemp("", "replicator-pg-standby-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(base, 0o755); err != nil {
		return nil, err
	}
	if err := p.su.chown(base); err != nil {
		return nil, err
	}
	s := &Postgres{BinDir: p.BinDir, DataDir: filepath.Join(base, "data"), opts: p.opts, su: p.su, base: base}
	backup := p.su.command(filepath.Join(p.BinDir, "pg_basebackup"), "-D", s.DataDir, "-R", "-X", "stream",
		"--no-sync", "-c", "fast", "-d", p.URL("postgres"))
	if out, err := backup.CombinedOutput(); err != nil {
		os.RemoveAll(base)
		return nil, fmt.Errorf("pg_basebackup of the cluster on port %d: %w\n%s", p.Port, err, out)
	}
	// The copied postgresql.conf points at p's socket directory; the
	// settings appended now win.
	if err := s.writeConf(); err != nil {
		s.Close()
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if s.Port, err = FreePort(); err != nil {
			s.Close()
			return nil, err
		}
		if err = s.Start(); err == nil {
			return s, nil
		}
		if attempt == 3 {
			s.Close()
			return nil, err
		}
	}
}

// GiveToServerUser makes path owned by the OS user the servers run as (when
// the tests run as root), e.g. a TLS key the server must read with mode
// 0600.
func GiveToServerUser(path string) error {
	su, err := lookupServerUser()
	if err != nil {
		return err
	}
	return su.chown(path)
}
