package failover

import (
	"context"
	"maps"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// attemptContext is an attempt's context: its own copy of Caddy's request
// variables, the credential the transport sets (provider mode) and, in
// wrap mode, what the selector needs. One value where a context.WithValue
// for each would do.
//
// No attempt shares its variables with anyone. An attempt's reverse_proxy
// transport may leave a dial running after the attempt ended (net/http
// keeps dialing for a later request), and that dial reads the variables
// it was given (caddyhttp.GetVar). The variable map is a plain map: the
// next attempt's writes (reverse_proxy's SetVar) and the handler's own
// (the {http.request.uuid} placeholder, read for log lines, stores the id
// it makes in the request's map) would race with that read.
type attemptContext struct {
	context.Context
	vars map[string]any
	cred *upstreamCredential
	wrap *wrapAttempt
}

// newAttemptContext returns a context for one attempt of the request
// whose context is parent, with its own copy of the request variables.
func newAttemptContext(parent context.Context) *attemptContext {
	vars, _ := parent.Value(caddyhttp.VarsCtxKey).(map[string]any)
	return &attemptContext{Context: parent, vars: maps.Clone(vars)}
}

// Value implements context.Context.
func (c *attemptContext) Value(key any) any {
	switch key {
	case caddyhttp.VarsCtxKey:
		if c.vars != nil {
			return c.vars
		}
	case upstreamCredentialKey{}:
		if c.cred != nil {
			return c.cred
		}
	case wrapAttemptKey{}:
		if c.wrap != nil {
			return c.wrap
		}
	}
	return c.Context.Value(key)
}
