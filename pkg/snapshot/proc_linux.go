package snapshot

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes pg_dump and pg_restore end when this process is
// killed (kill -9 included), so that a rerun never races a leftover
// pg_restore still building the previous run's indexes.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
