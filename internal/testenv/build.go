package testenv

import (
	"fmt"
	"os/exec"
)

// BuildReplicator builds the replicator command into path, for tests that
// run the real binary (kill -9, exit codes, everything it prints).
func BuildReplicator(path string) error {
	if out, err := exec.Command("go", "build", "-o", path, "replicator/cmd/replicator").CombinedOutput(); err != nil {
		return fmt.Errorf("build the replicator binary: %v\n%s", err, out)
	}
	return nil
}
