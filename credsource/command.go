package credsource

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Command{})
}

// Command runs a helper program and uses its standard output, trimmed, as
// the credential, like Claude Code's apiKeyHelper. The program is executed
// directly, without a shell; write one yourself when you need it
// (`sh -c "..."`; note that the Caddyfile quotes with double quotes or
// backticks, not single quotes).
//
// The value is cached for a TTL and concurrent requests share one run. A
// refused credential makes the helper run again at once. A run that exits
// non-zero, prints nothing or outlives the timeout is an error that quotes
// the helper's stderr (never its stdout). A failure is remembered for one
// second, so a burst of requests does not start a failing helper once each.
//
// The helper inherits Caddy's environment and working directory; its stdin
// is empty.
//
// Caddyfile:
//
//	credential command PROGRAM [ARGS...] {
//	    ttl 5m
//	    timeout 10s
//	}
type Command struct {
	// Command is the program and its arguments. A program name without a
	// path separator is looked up on PATH; a leading `~/` is the home
	// directory.
	Command []string `json:"command"`

	// TTL is how long the helper's output is reused before it runs again.
	// Default: 5m (as Claude Code's apiKeyHelper). 0 runs it for every
	// request.
	TTL *caddy.Duration `json:"ttl,omitempty"`

	// Timeout is how long one run may take before the helper (and, on
	// Unix, every process it started) is killed. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	cachedSource
}

// CaddyModule returns the Caddy module information.
func (Command) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".command",
		New: func() caddy.Module { return new(Command) },
	}
}

// Provision sets up the source.
func (c *Command) Provision(ctx caddy.Context) error {
	c.setup(ctx.Logger())
	return nil
}

func (c *Command) setup(logger *zap.Logger) {
	c.start(logger, c.run, c.TTL, c.name())
}

// Validate checks the configuration.
func (c *Command) Validate() error {
	if len(c.Command) == 0 || c.Command[0] == "" {
		return fmt.Errorf("command credential: a program is required")
	}
	if c.TTL != nil && *c.TTL < 0 {
		return fmt.Errorf("command credential: ttl must not be negative")
	}
	if c.Timeout < 0 {
		return fmt.Errorf("command credential: timeout must not be negative")
	}
	return nil
}

func (c *Command) name() string {
	if len(c.Command) == 0 {
		return "credential command"
	}
	return "credential command " + c.Command[0]
}

func (c *Command) run(ctx context.Context) (string, error) {
	argv := append([]string(nil), c.Command...)
	prog, err := expandHome(argv[0])
	if err != nil {
		return "", fmt.Errorf("%s: %w", c.name(), err)
	}
	argv[0] = prog
	timeout := time.Duration(c.Timeout)
	if timeout <= 0 {
		timeout = defaultCommandTimeout
	}
	out, err := runCommand(ctx, timeout, argv)
	if err != nil {
		return "", fmt.Errorf("credential command: %w", err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("%s printed nothing: %w", c.name(), ErrMissing)
	}
	return v, nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential command PROGRAM [ARGS...] {
//	    ttl DURATION
//	    timeout DURATION
//	}
func (c *Command) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	c.Command = d.RemainingArgs()
	if len(c.Command) == 0 {
		return d.Err("command needs the program that prints the key, and its arguments: command pass show anthropic")
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "ttl":
			ttl, err := parseDurationArg(d, true)
			if err != nil {
				return err
			}
			c.TTL = &ttl
		case "timeout":
			timeout, err := parseDurationArg(d, false)
			if err != nil {
				return err
			}
			c.Timeout = timeout
		default:
			return d.Errf("unknown command credential option %q", d.Val())
		}
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*Command)(nil)
	_ Refresher             = (*Command)(nil)
	_ ReadySource           = (*Command)(nil)
	_ Warmer                = (*Command)(nil)
	_ StatusReporter        = (*Command)(nil)
	_ caddy.Provisioner     = (*Command)(nil)
	_ caddy.Validator       = (*Command)(nil)
	_ caddyfile.Unmarshaler = (*Command)(nil)
)
