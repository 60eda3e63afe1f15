package credsource

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// Preflight is implemented by sources that can tell at start, without
// reading the secret, that their credential cannot work on this machine:
// an unset variable, a missing file, a Keychain without the `security`
// program. The handler logs one warning per provider at provision; the
// provider still starts, since the credential may appear later.
type Preflight interface {
	// Preflight returns what is wrong and what to set, or nil. The
	// message names a variable or a path, never a secret.
	Preflight() error
}

// Preflight reports an unset variable.
func (e *Env) Preflight() error {
	if strings.TrimSpace(os.Getenv(e.Var)) == "" {
		return fmt.Errorf("environment variable %s is not set in the proxy's environment: set it before starting Caddy", e.Var)
	}
	return nil
}

// Preflight reports a missing or unreadable file.
func (f *File) Preflight() error {
	return fileUsable(f.Path, "credential file")
}

// Preflight reports a system without the `security` program.
func (k *Keychain) Preflight() error {
	_, err := securityPath()
	return err
}

// Preflight reports a missing credentials file, or a Keychain store
// without the `security` program.
func (c *Claude) Preflight() error {
	if c.Keychain != nil {
		_, err := securityPath()
		return err
	}
	path := c.File
	if path == "" {
		path = defaultClaudeCredentialsPath()
	}
	return fileUsable(path, "Claude Code credentials file")
}

func fileUsable(path, what string) error {
	expanded, err := expandHome(path)
	if err != nil {
		return err
	}
	f, err := os.Open(expanded)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s does not exist", what, expanded)
	}
	if err != nil {
		return fmt.Errorf("%s %s cannot be read: %v", what, expanded, err)
	}
	return f.Close()
}

// Interface guards
var (
	_ Preflight = (*Env)(nil)
	_ Preflight = (*File)(nil)
	_ Preflight = (*Keychain)(nil)
	_ Preflight = (*Claude)(nil)
)
