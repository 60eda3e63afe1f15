#!/usr/bin/env bash
# Benchmark: llm_failover against a plain reverse_proxy, side by side in one
# Caddy, on loopback only. Needs only Go.
#
#   bench/run.sh               full run (~5.5 minutes on 2 cores after the first build)
#   QUICK=1 bench/run.sh       about 1.25 minutes
#   PROFILE=1 bench/run.sh     also saves CPU and allocation profiles of Caddy
#                              under load to $OUT (+1.2 minutes; see BENCHMARKS.md)
#
# Profiles: small = small JSON at 16 connections, big = 200 KB request
# bodies, resp = 100 KB JSON responses; cpu-SITE-SHAPE.pprof and
# allocs-SITE-SHAPE.pprof (allocations since Caddy started).
#
# Environment: OUT (default bench/out), PORT_BASE (default 19000), ROUNDS,
# DUR (seconds per target per round), STREAM_DUR (the same for the
# streaming scenario), STREAMS (open streams, default 1000).
#
# It builds three binaries (bench/cmd/caddy, bench/fakeupstream, bench/load),
# starts one fake upstream process listening on three ports (healthy; 429
# with Retry-After: 0; 429 with Retry-After: 3600) and ONE Caddy with five
# sites:
#   a  plain reverse_proxy to the healthy upstream
#   b  llm_failover with one provider, the healthy upstream
#   c  llm_failover: provider 1 answers 429 (cooldown 0, so it is tried on
#      every request), provider 2 healthy
#   d  llm_failover: provider 1 answers 429 with Retry-After: 3600 (cooling
#      after the first request), provider 2 healthy
#   e  llm_failover: only provider 2
# and loads them, interleaved round by round (a, b, a, b, ...). The memory
# scenario restarts Caddy fresh for each of a and b. Everything started here
# is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/bench/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BIN=$OUT/bin
mkdir -p "$BIN"

QUICK=${QUICK:-0}
PROFILE=${PROFILE:-0}
PORT_BASE=${PORT_BASE:-19000}
STREAMS=${STREAMS:-1000}
# Many short rounds rather than a few long ones: each round pairs a slice
# of a with the next slice of b, so a burst of other work on the machine
# spoils one pair (the table also shows the median of per-round ratios).
if [[ $QUICK == 1 ]]; then
	ROUNDS=${ROUNDS:-4}
	DUR=${DUR:-0.5}
	STREAM_DUR=${STREAM_DUR:-1}
	HOLD=${HOLD:-1}
else
	ROUNDS=${ROUNDS:-15}
	DUR=${DUR:-1}
	STREAM_DUR=${STREAM_DUR:-2} # streams last ~80 ms: longer slices
	HOLD=${HOLD:-3}
fi

ADMIN=127.0.0.1:$((PORT_BASE + 19))
SITE_A=127.0.0.1:$((PORT_BASE + 1))
SITE_B=127.0.0.1:$((PORT_BASE + 2))
SITE_C=127.0.0.1:$((PORT_BASE + 3))
SITE_D=127.0.0.1:$((PORT_BASE + 4))
SITE_E=127.0.0.1:$((PORT_BASE + 5))
SITE_F=127.0.0.1:$((PORT_BASE + 6))
SITE_G=127.0.0.1:$((PORT_BASE + 7))
UP_OK=127.0.0.1:$((PORT_BASE + 100))
UP_429=127.0.0.1:$((PORT_BASE + 101))
UP_COOL=127.0.0.1:$((PORT_BASE + 102))

# the processes this script started and has not stopped yet
FAKE_PID=
CADDY_PID=
BG_PID=
cleanup() {
	local pid
	for pid in $BG_PID $CADDY_PID $FAKE_PID; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in $BG_PID $CADDY_PID $FAKE_PID; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# 1000 open streams need about 2 descriptors each in Caddy (Go raises its
# own soft limit to the hard one; this covers shells with a low hard limit)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# every port must be free before the (long) build: name the one that is not
port_taken() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
for addr in "$ADMIN" "$SITE_A" "$SITE_B" "$SITE_C" "$SITE_D" "$SITE_E" "$SITE_F" "$SITE_G" "$UP_OK" "$UP_429" "$UP_COOL"; do
	if port_taken "$addr"; then
		echo "bench/run.sh: $addr is already in use; stop what listens there or set PORT_BASE (now $PORT_BASE)" >&2
		exit 1
	fi
done

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
log "building into $BIN"
go build -o "$BIN/caddy" ./bench/cmd/caddy
go build -o "$BIN/fakeupstream" ./bench/fakeupstream
go build -o "$BIN/load" ./bench/load
LOAD=$BIN/load

cat >"$OUT/Caddyfile" <<EOF
{
	admin $ADMIN
	auto_https off
	grace_period 1s
	log {
		level ERROR
	}
}

# (a) plain reverse_proxy
http://$SITE_A {
	reverse_proxy $UP_OK
}

# (b) llm_failover, one provider, the same upstream
http://$SITE_B {
	llm_failover {
		provider healthy_b {
			upstream http://$UP_OK
		}
	}
}

# (c) provider 1 answers 429 on every request; cooldown 0 so it is tried
# (and fails over) each time
http://$SITE_C {
	llm_failover {
		provider limited_c {
			upstream http://$UP_429
			cooldown rate_limit 0s
		}
		provider healthy_c {
			upstream http://$UP_OK
		}
	}
}

# (d) provider 1 answers 429 with Retry-After: 3600: cooling after one request
http://$SITE_D {
	llm_failover {
		provider limited_d {
			upstream http://$UP_COOL
		}
		provider healthy_d {
			upstream http://$UP_OK
		}
	}
}

# (e) only the healthy provider
http://$SITE_E {
	llm_failover {
		provider healthy_e {
			upstream http://$UP_OK
		}
	}
}

# (f) a client key (the one bench/load sends), no limits
http://$SITE_F {
	llm_failover {
		provider healthy_f {
			upstream http://$UP_OK
		}
		client bench {
			key env LLMF_BENCH_CLIENT_KEY
		}
	}
}

# (g) the same client with three limits it never reaches, and prices
http://$SITE_G {
	llm_failover {
		provider healthy_g {
			upstream http://$UP_OK
			price claude-* input 3 output 15
		}
		client bench {
			key env LLMF_BENCH_CLIENT_KEY
			limit tokens 1000000000000 per 5h
			limit requests 1000000000000 per 1h
			limit spend 1000000 per 1d
		}
	}
}
EOF

log "starting the fake upstream"
"$BIN/fakeupstream" -event-delay 1ms -events 50 -size 600 \
	-listen "$UP_OK" \
	-listen "$UP_429;status=429,retry-after=0" \
	-listen "$UP_COOL;status=429,retry-after=3600" \
	>"$OUT/fakeupstream.log" 2>&1 &
FAKE_PID=$!

start_caddy() {
	LLMF_BENCH_CLIENT_KEY=sk-ant-bench-not-a-key "$BIN/caddy" run --adapter caddyfile --config "$OUT/Caddyfile" >>"$OUT/caddy.log" 2>&1 &
	CADDY_PID=$!
	"$LOAD" wait "$ADMIN" "$SITE_A" "$SITE_B" "$SITE_C" "$SITE_D" "$SITE_E" "$SITE_F" "$SITE_G"
}
stop_caddy() {
	kill "$CADDY_PID" 2>/dev/null || true
	wait "$CADDY_PID" 2>/dev/null || true
	CADDY_PID=
}

: >"$OUT/caddy.log"
"$LOAD" wait "$UP_OK" "$UP_429" "$UP_COOL"
log "starting caddy"
start_caddy

RESULTS=$OUT/results.jsonl
: >"$RESULTS"
M=/v1/messages
COMMON=(-rounds "$ROUNDS" -d "${DUR}s" -out "$RESULTS")
# the caddy's CPU time per request is read from /proc while each target runs

log "scenario: small JSON, 1 connection"
"$LOAD" -scenario "small JSON" -c 1 "${COMMON[@]}" -pid "$CADDY_PID" -target a=http://$SITE_A$M -target b=http://$SITE_B$M
log "scenario: small JSON, 16 connections"
"$LOAD" -scenario "small JSON" -c 16 "${COMMON[@]}" -pid "$CADDY_PID" -target a=http://$SITE_A$M -target b=http://$SITE_B$M
log "scenario: 200 KB request body, 4 connections"
"$LOAD" -scenario "200 KB body" -c 4 -body-size 204800 "${COMMON[@]}" -pid "$CADDY_PID" -target a=http://$SITE_A$M -target b=http://$SITE_B$M
log "scenario: 100 KB JSON response, 4 connections"
"$LOAD" -scenario "100 KB response" -c 4 -header "X-Fake-Opts: size=102400" "${COMMON[@]}" -pid "$CADDY_PID" -target a=http://$SITE_A$M -target b=http://$SITE_B$M
log "scenario: stream of 50 events (1 ms apart), 8 connections"
"$LOAD" -scenario "stream 50 events" -c 8 -stream "${COMMON[@]}" -pid "$CADDY_PID" -d "${STREAM_DUR}s" -target a=http://$SITE_A$M -target b=http://$SITE_B$M
log "scenario: failover (429 then healthy), 1 connection"
"$LOAD" -scenario "failover 429→ok" -kind failover -c 1 "${COMMON[@]}" -pid "$CADDY_PID" \
	-target c=http://$SITE_C$M -target 429=http://$UP_429$M -expect 429=429 \
	-target healthy=http://$UP_OK$M -target b=http://$SITE_B$M
log "scenario: cooled provider skipped, 1 connection"
"$LOAD" -scenario "cooled path" -kind cooled -c 1 "${COMMON[@]}" -pid "$CADDY_PID" -target d=http://$SITE_D$M -target e=http://$SITE_E$M
log "scenario: a client with three limits vs without, 16 connections"
"$LOAD" -scenario "limits" -c 16 "${COMMON[@]}" -pid "$CADDY_PID" -target f=http://$SITE_F$M -target g=http://$SITE_G$M

if [[ $PROFILE == 1 ]]; then
	PSECS=$((QUICK == 1 ? 5 : 10))
	for site in a b; do
		url=http://$SITE_A$M
		[[ $site == b ]] && url=http://$SITE_B$M
		for shape in small big resp; do
			case $shape in
			small) args=(-c 16) ;;
			big) args=(-c 4 -body-size 204800) ;;
			resp) args=(-c 4 -header "X-Fake-Opts: size=102400") ;;
			esac
			log "profile: $site, $shape, ${PSECS}s"
			"$LOAD" -scenario "profile $site $shape" "${args[@]}" -d "$((PSECS + 2))s" -warmup 0 -target "$site=$url" >"$OUT/profile-$site-$shape.txt" &
			BG_PID=$!
			sleep 1
			"$LOAD" fetch "http://$ADMIN/debug/pprof/profile?seconds=$PSECS" "$OUT/cpu-$site-$shape.pprof"
			"$LOAD" fetch "http://$ADMIN/debug/pprof/allocs" "$OUT/allocs-$site-$shape.pprof"
			wait "$BG_PID" || true
			BG_PID=
		done
	done
	log "profiles in $OUT: go tool pprof -top $BIN/caddy $OUT/cpu-b-small.pprof"
fi

log "scenario: $STREAMS open streams (fresh caddy for each site)"
for site in b a; do
	stop_caddy
	start_caddy
	url=http://$SITE_A$M
	[[ $site == b ]] && url=http://$SITE_B$M
	"$LOAD" -scenario "$STREAMS open streams" -open-streams "$STREAMS" -pid "$CADDY_PID" -admin "$ADMIN" \
		-hold "${HOLD}s" -header "X-Fake-Opts: events=100000,event-delay=1s" -out "$RESULTS" -target "$site=$url"
done
stop_caddy

"$LOAD" table "$RESULTS" | tee "$OUT/table.md"
{
	echo
	echo "go: $(go version | cut -d' ' -f3-); cpus: $(nproc 2>/dev/null || echo ?); QUICK=$QUICK ROUNDS=$ROUNDS DUR=${DUR}s"
	echo "tree: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
} | tee -a "$OUT/table.md"
log "results: $RESULTS, table: $OUT/table.md"
