package failover

import (
	"context"
	"maps"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// withOwnVars returns ctx with its own copy of Caddy's request variables,
// for one attempt.
//
// An attempt's reverse_proxy transport may leave a dial running after the
// attempt ended (net/http keeps dialing for a later request), and that
// dial reads the variables it was given (caddyhttp.GetVar). The variable
// map is a plain map: the next attempt's writes (reverse_proxy's SetVar)
// and the handler's own (the {http.request.uuid} placeholder, read for
// log lines, stores the id it makes in the request's map) would race
// with that read. So no attempt shares its map with anyone.
func withOwnVars(ctx context.Context) context.Context {
	vars := ownVars(ctx)
	if vars == nil {
		return ctx
	}
	return context.WithValue(ctx, caddyhttp.VarsCtxKey, vars)
}

// ownVars returns a copy of ctx's request variables, or nil when it has
// none.
func ownVars(ctx context.Context) map[string]any {
	vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		return nil
	}
	return maps.Clone(vars)
}
