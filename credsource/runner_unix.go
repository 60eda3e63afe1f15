//go:build unix

package credsource

import (
	"os/exec"
	"syscall"
)

// killGroupOnCancel starts the program in its own process group and, when its
// context ends, kills the whole group: a helper such as `sh -c '...'` often
// starts children that would otherwise outlive the timeout.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
			return cmd.Process.Kill()
		}
		return nil
	}
}
