package credsource

import (
	"context"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(Passthrough{})
}

// Passthrough forwards the client's own Authorization / x-api-key header to
// the provider unchanged. It is the only way a client's credential ever
// reaches a provider: every other source has the client's credential removed
// first. Claude Code logged in with a subscription sends its own OAuth token
// and keeps it fresh, so this is all a subscription provider needs.
//
// Caddyfile: `credential passthrough`
type Passthrough struct{}

// CaddyModule returns the Caddy module information.
func (Passthrough) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".passthrough",
		New: func() caddy.Module { return new(Passthrough) },
	}
}

// Credential returns an empty credential: the client's own is used.
func (Passthrough) Credential(context.Context) (Credential, error) { return Credential{}, nil }

// PassesClientCredential marks this source as a passthrough.
func (Passthrough) PassesClientCredential() bool { return true }

// Status says the credential is the client's.
func (Passthrough) Status() Status {
	return Status{State: StatePassthrough, Reason: "the client's own credential is forwarded"}
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential passthrough
func (p *Passthrough) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("passthrough credential takes no block")
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*Passthrough)(nil)
	_ ClientPassthrough     = (*Passthrough)(nil)
	_ StatusReporter        = (*Passthrough)(nil)
	_ caddyfile.Unmarshaler = (*Passthrough)(nil)
)
