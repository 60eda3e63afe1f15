package credsource

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Keychain{})
}

// securityItemNotFound is the exit status of macOS `security` when the item
// does not exist (errSecItemNotFound).
const securityItemNotFound = 44

// Keychain reads the credential from a generic password item of the macOS
// Keychain, with `security find-generic-password -s SERVICE [-a ACCOUNT] -w`.
// The value is cached for a TTL; a refused credential makes it read again at
// once. Only the service and account names are stored in the config.
//
// The `security` program is looked up on PATH each time it is run. The first
// read may make macOS ask whether `security` may use the item; answer
// "Always Allow" for unattended use.
//
// Caddyfile:
//
//	credential keychain SERVICE [ACCOUNT] {
//	    ttl 5m
//	}
type Keychain struct {
	// Service is the service name of the Keychain item ("Where" in
	// Keychain Access).
	Service string `json:"service"`

	// Account narrows the item to this account name; optional.
	Account string `json:"account,omitempty"`

	// TTL is how long a value read from the Keychain is reused before it
	// is read again. Default: 5m. 0 reads it on every request.
	TTL *caddy.Duration `json:"ttl,omitempty"`

	cachedSource
}

// CaddyModule returns the Caddy module information.
func (Keychain) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".keychain",
		New: func() caddy.Module { return new(Keychain) },
	}
}

// Provision sets up the source.
func (k *Keychain) Provision(ctx caddy.Context) error {
	k.setup(ctx.Logger())
	return nil
}

func (k *Keychain) setup(logger *zap.Logger) {
	k.start(logger, k.read, k.TTL, "keychain "+k.describe())
}

// Validate checks the configuration.
func (k *Keychain) Validate() error {
	if k.Service == "" {
		return fmt.Errorf("keychain credential: a service name is required")
	}
	if k.TTL != nil && *k.TTL < 0 {
		return fmt.Errorf("keychain credential: ttl must not be negative")
	}
	return nil
}

func (k *Keychain) describe() string {
	if k.Account != "" {
		return fmt.Sprintf("item %q (account %q)", k.Service, k.Account)
	}
	return fmt.Sprintf("item %q", k.Service)
}

func (k *Keychain) read(ctx context.Context) (string, error) {
	out, err := readKeychainItem(ctx, k.Service, k.Account)
	if err != nil {
		return "", fmt.Errorf("keychain %s: %w", k.describe(), err)
	}
	v := strings.TrimSpace(string(out))
	if v == "" {
		return "", fmt.Errorf("keychain %s is empty: %w", k.describe(), ErrMissing)
	}
	return v, nil
}

// securityPath finds the macOS `security` program on PATH.
func securityPath() (string, error) {
	p, err := exec.LookPath("security")
	if err != nil {
		return "", errors.New("the security program was not found on PATH (the Keychain is only available on macOS)")
	}
	return p, nil
}

// readKeychainItem returns the password of a generic Keychain item, as
// printed by `security find-generic-password -w` (with its newline). A
// missing item is reported as ErrMissing.
func readKeychainItem(ctx context.Context, service, account string) ([]byte, error) {
	security, err := securityPath()
	if err != nil {
		return nil, err
	}
	argv := []string{security, "find-generic-password", "-s", service}
	if account != "" {
		argv = append(argv, "-a", account)
	}
	argv = append(argv, "-w")
	out, err := runCommand(ctx, defaultCommandTimeout, argv)
	if err != nil {
		if exitCode(err) == securityItemNotFound {
			return nil, fmt.Errorf("item not found: %w", ErrMissing)
		}
		return nil, err
	}
	return out, nil
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential keychain SERVICE [ACCOUNT] {
//	    ttl DURATION
//	}
func (k *Keychain) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if !d.NextArg() {
		return d.Err("keychain needs the item's service name (and optionally its account): keychain anthropic-api-key")
	}
	k.Service = d.Val()
	if d.NextArg() {
		k.Account = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "ttl":
			ttl, err := parseDurationArg(d, true)
			if err != nil {
				return err
			}
			k.TTL = &ttl
		default:
			return d.Errf("unknown keychain credential option %q", d.Val())
		}
	}
	return nil
}

// parseDurationArg reads the single duration argument of the current
// subdirective. zeroOK allows "0".
func parseDurationArg(d *caddyfile.Dispenser, zeroOK bool) (caddy.Duration, error) {
	name := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil {
		return 0, d.Errf("%s: invalid duration %q: %v", name, d.Val(), err)
	}
	if dur < 0 || (dur == 0 && !zeroOK) {
		return 0, d.Errf("%s: duration must be positive, got %q", name, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// Interface guards
var (
	_ Source                = (*Keychain)(nil)
	_ Refresher             = (*Keychain)(nil)
	_ ReadySource           = (*Keychain)(nil)
	_ Warmer                = (*Keychain)(nil)
	_ StatusReporter        = (*Keychain)(nil)
	_ caddy.Provisioner     = (*Keychain)(nil)
	_ caddy.Validator       = (*Keychain)(nil)
	_ caddyfile.Unmarshaler = (*Keychain)(nil)
)
