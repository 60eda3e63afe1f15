//go:build !unix

package credsource

import "os/exec"

// killGroupOnCancel leaves the default behaviour (kill the program itself)
// where process groups are not available.
func killGroupOnCancel(*exec.Cmd) {}
