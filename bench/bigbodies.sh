#!/usr/bin/env bash
# Memory under big request bodies: N concurrent requests of SIZE bytes each
# through llm_failover to an upstream that answers only after LATENCY, while
# the Caddy process's resident memory is sampled from /proc/PID/status.
# request_buffer_total (default 256MiB) bounds what the bodies hold
# together; the figure wanted is a peak RSS (VmHWM) under that budget plus
# 100 MiB. Loopback only; needs only Go.
#
#   bench/bigbodies.sh                 60 x 30 MiB, upstream latency 10s
#   CADDY=./caddy bench/bigbodies.sh   use a binary built by ./xcaddy.sh
#
# Environment: N (60), SIZE (31457280), LATENCY (10s), BUDGET (Caddyfile
# request_buffer_total; empty: the default), EXTRA (more lines inside
# llm_failover), CADDY (a built caddy; default: go build ./bench/cmd/caddy),
# OUT (bench/out/bigbodies), PORT_BASE (19500), SAMPLE (seconds between RSS
# samples, 0.05), PROFILE=1 (GC trace in caddy.log, allocs.pprof). Prints one summary line and leaves rss.tsv (time, VmRSS
# kB), load.json, Caddyfile and caddy.log in OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out/bigbodies}
mkdir -p "$OUT/bin"
OUT=$(cd "$OUT" && pwd)
N=${N:-60}
SIZE=${SIZE:-31457280}
LATENCY=${LATENCY:-10s}
BUDGET=${BUDGET:-}
EXTRA=${EXTRA:-}
SAMPLE=${SAMPLE:-0.05}
PORT_BASE=${PORT_BASE:-19500}
ADMIN=127.0.0.1:$((PORT_BASE + 19))
SITE=127.0.0.1:$((PORT_BASE + 1))
UP=127.0.0.1:$((PORT_BASE + 100))

FAKE_PID=
CADDY_PID=
SAMPLER_PID=
cleanup() {
	local pid
	for pid in $SAMPLER_PID $CADDY_PID $FAKE_PID; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

go build -o "$OUT/bin/fakeupstream" ./bench/fakeupstream
go build -o "$OUT/bin/load" ./bench/load
if [[ -n ${CADDY:-} ]]; then
	CADDY_BIN=$(cd "$(dirname "$CADDY")" && pwd)/$(basename "$CADDY")
else
	go build -o "$OUT/bin/caddy" ./bench/cmd/caddy
	CADDY_BIN=$OUT/bin/caddy
fi

budget_line=
if [[ -n $BUDGET ]]; then
	budget_line="request_buffer_total $BUDGET"
fi
cat >"$OUT/Caddyfile" <<EOF
{
	admin $ADMIN
	auto_https off
	persist_config off
}
http://$SITE {
	llm_failover {
		$budget_line
		$EXTRA
		provider slow {
			upstream http://$UP
		}
	}
}
EOF

"$OUT/bin/fakeupstream" -listen "$UP" -latency "$LATENCY" >"$OUT/fakeupstream.log" 2>&1 &
FAKE_PID=$!
if [[ ${PROFILE:-0} == 1 ]]; then
	export GODEBUG=gctrace=1 # each GC's heap sizes, in caddy.log
fi
"$CADDY_BIN" run --config "$OUT/Caddyfile" --adapter caddyfile >"$OUT/caddy.log" 2>&1 &
unset GODEBUG
CADDY_PID=$!
"$OUT/bin/load" wait "$UP" "$SITE" "$ADMIN"

# resident memory, sampled until stopped
: >"$OUT/rss.tsv"
(
	start=$(date +%s.%N)
	while kill -0 "$CADDY_PID" 2>/dev/null; do
		rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$CADDY_PID/status" 2>/dev/null || true)
		printf '%.2f\t%s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$rss" >>"$OUT/rss.tsv"
		sleep "$SAMPLE"
	done
) &
SAMPLER_PID=$!

idle=$(awk '/^VmRSS:/ {print $2}' "/proc/$CADDY_PID/status")
start=$(date +%s.%N)
"$OUT/bin/load" -target "big=http://$SITE/v1/messages" -c "$N" -n "$N" -warmup 0 \
	-body-size "$SIZE" -timeout 5m -json >"$OUT/load.json" || true
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
if [[ ${PROFILE:-0} == 1 ]]; then
	# every allocation since Caddy started: who allocated the bytes
	"$OUT/bin/load" fetch "http://$ADMIN/debug/pprof/allocs" "$OUT/allocs.pprof"
fi
sleep 1
hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$CADDY_PID/status")
after=$(awk '/^VmRSS:/ {print $2}' "/proc/$CADDY_PID/status")
statuses=$(grep -o '"status":{[^}]*}' "$OUT/load.json" | head -1 | sed 's/"status"://')
printf 'bigbodies: %d x %d B, upstream latency %s, budget %s: peak RSS (VmHWM) %d MiB, idle before %d MiB, after %d MiB; statuses %s; %.1fs\n' \
	"$N" "$SIZE" "$LATENCY" "${BUDGET:-default}" $((hwm / 1024)) $((idle / 1024)) $((after / 1024)) "$statuses" "$elapsed"
