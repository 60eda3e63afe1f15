// Command caddy is Caddy v2 with the llm_failover plugin and Caddy's
// standard modules: the same binary xcaddy.sh builds, but built with a
// plain `go build ./bench/cmd/caddy` from this module, so the benchmark
// needs neither xcaddy nor a network beyond the Go module proxy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as a stock xcaddy build includes them
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// the plugin: every module of caddy-llm-failover
	_ "github.com/caddy-llm-failover/caddy-llm-failover"
)

func main() {
	caddycmd.Main()
}
