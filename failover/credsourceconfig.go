package failover

import (
	"encoding/json"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

// Configuring a credential source, wherever one is named: a provider's
// credential, a client's key, the Redis password.

// unmarshalCredentialSource reads `<source> [<args...>]` or
// `<source> { ... }` at the dispenser's current argument (the source's
// name) into the source's module JSON, named by its "source" key.
func unmarshalCredentialSource(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	unm, err := caddyfile.UnmarshalModule(d, credsource.Namespace+"."+name)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, "source", name, nil), nil
}

// loadCredentialSource loads the credential source held in the field
// named field of the struct owner points to. who names the owner in
// errors ("provider a", "share"); loading says what failed to load.
func loadCredentialSource(ctx caddy.Context, owner any, field, who, loading string) (credsource.Source, error) {
	mod, err := ctx.LoadModule(owner, field)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %v", who, loading, err)
	}
	src, ok := mod.(credsource.Source)
	if !ok {
		return nil, fmt.Errorf("%s: module %T is not a credential source", who, mod)
	}
	return src, nil
}
