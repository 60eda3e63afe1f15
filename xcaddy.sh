#!/usr/bin/env bash
# Builds ./caddy: Caddy v2.11.9 with this plugin, through xcaddy.
#
# The module is not published, so xcaddy is given a pinned pseudo version
# (@v0.0.0) replaced by this directory; GOPRIVATE keeps the Go module proxy
# from being asked for it.
set -euo pipefail
cd "$(dirname "$0")"

MODULE=github.com/caddy-llm-failover/caddy-llm-failover
CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
XCADDY_VERSION=${XCADDY_VERSION:-v0.4.5}
OUTPUT=${OUTPUT:-./caddy}

export GOPRIVATE="${GOPRIVATE:+$GOPRIVATE,}$MODULE"
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# xcaddy runs from the module cache; no global install needed.
go run "github.com/caddyserver/xcaddy/cmd/xcaddy@${XCADDY_VERSION}" build "$CADDY_VERSION" \
	--output "$OUTPUT" \
	--with "$MODULE@v0.0.0=./" \
	"$@"

"$OUTPUT" list-modules | grep -E '^(http\.handlers\.llm_failover|llm\.credentials\.)' >/dev/null ||
	{ echo "xcaddy.sh: built $OUTPUT but the llm_failover modules are missing" >&2; exit 1; }
echo "built $OUTPUT with $MODULE"
