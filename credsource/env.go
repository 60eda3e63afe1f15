package credsource

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(Env{})
}

// Env reads the credential from an environment variable at request time.
// Only the variable's name is stored in the config.
//
// Caddyfile: `credential env VAR`
type Env struct {
	// Var is the name of the environment variable that holds the credential.
	Var string `json:"var"`
}

// CaddyModule returns the Caddy module information.
func (Env) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".env",
		New: func() caddy.Module { return new(Env) },
	}
}

// Validate checks the configuration.
func (e *Env) Validate() error {
	if e.Var == "" {
		return fmt.Errorf("env credential: a variable name is required")
	}
	return nil
}

// Credential reads the variable now, so a changed environment (or a test)
// is seen without a reload.
func (e *Env) Credential(context.Context) (Credential, error) {
	v := strings.TrimSpace(os.Getenv(e.Var))
	if v == "" {
		return Credential{}, fmt.Errorf("environment variable %s is not set or empty: %w", e.Var, ErrMissing)
	}
	return Credential{Secret: v, Version: Fingerprint(v)}, nil
}

// Status reports whether the variable is set.
func (e *Env) Status() Status {
	if strings.TrimSpace(os.Getenv(e.Var)) == "" {
		return Status{State: StateMissing, Reason: "environment variable " + e.Var + " is not set"}
	}
	return Status{State: StateOK}
}

// Refused re-reads the variable: a different value means a retry may work.
func (e *Env) Refused(_ context.Context, version string) bool {
	v := strings.TrimSpace(os.Getenv(e.Var))
	return v != "" && Fingerprint(v) != version
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential env VAR
func (e *Env) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if !d.NextArg() {
		return d.Err("env needs the name of an environment variable: env ANTHROPIC_API_KEY")
	}
	e.Var = d.Val()
	if d.NextArg() {
		return d.Errf("env takes one variable name, got %q too: env ANTHROPIC_API_KEY", d.Val())
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("env credential takes no block")
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*Env)(nil)
	_ Refresher             = (*Env)(nil)
	_ StatusReporter        = (*Env)(nil)
	_ caddy.Validator       = (*Env)(nil)
	_ caddyfile.Unmarshaler = (*Env)(nil)
)
