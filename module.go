// Package llmfailover registers every module of caddy-llm-failover, so a
// single `xcaddy build --with github.com/caddy-llm-failover/caddy-llm-failover`
// builds them all into Caddy.
package llmfailover

import (
	// the llm.credentials.* sources
	_ "github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	// the llm_failover handler and its Caddyfile directive
	_ "github.com/caddy-llm-failover/caddy-llm-failover/failover"
)
