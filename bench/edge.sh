#!/usr/bin/env bash
# bench/edge.sh: full TLS handshakes per second (and per server
# CPU-second) and keep-alive requests per second through a keyedge edge,
# with 1 tenant and with TENANTS tenants on disk, Zipf-distributed names,
# in the same run. Figures: bench/RESULTS.md.
#
# Two keystores are generated under bench/_out (reused when their
# GENERATED marker matches), each served by its own `keyedge serve`; a
# minimal origin (`edgebench -serve-origin`) answers behind both. The
# edges run on CPU 0, edgebench and the origin on CPU 1 (taskset, when
# present). Every run starts a fresh edge (empty keystore cache, warm
# page cache); a round runs every scenario against the 1-tenant keystore,
# then the many-tenant one:
#
#   handshake, hybrid   new connection + full handshake per request,
#                       client curves X25519MLKEM768,X25519,P-256
#   handshake, X25519   the same with the client offering X25519 only
#   keep-alive          CONCURRENCY persistent HTTP/1.1 connections
#
# The summary is a markdown table of medians and min–max over ROUNDS.
#
# Environment:
#   TENANTS      many-tenant keystore size (default 100000; BENCH_QUICK=1: 10000)
#   DURATION     length of each run (default 15s; BENCH_QUICK=1: 3s)
#   ROUNDS       rounds (default 3)
#   CONCURRENCY  edgebench -c (default 16)
#   SEED         seed of the Zipf name draws (default 1)
#   PORT_BASE    edges listen on PORT_BASE and +1, their metrics on +10
#                and +11 (default 18440)
#   ORIGIN_ADDR  the origin (default 127.0.0.1:18460, as in the generated
#                keystores; see bench/lib.sh)
#   QUIET        before each run, wait (up to QUIET_FOR, default 20s) until
#                the machine is using at most this many cores (default 0.3;
#                BENCH_QUICK=1: 0, no wait)
#   MAX_OTHER    repeat a run, up to RETRIES times (default 2; BENCH_QUICK=1:
#                0), when other processes used more than this many cores
#                during it (default 0.2; edgebench's other_cores, whose
#                noise on a quiet machine is about ±0.15)
#
# On a quiet machine a full run takes about 6 minutes (plus 1-2 minutes
# to generate the 100,000 tenants the first time), a quick one under 2.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	tenants=${TENANTS:-10000}
	duration=${DURATION:-3s}
	quiet=${QUIET:-0}
	retries=${RETRIES:-0}
else
	tenants=${TENANTS:-100000}
	duration=${DURATION:-15s}
	quiet=${QUIET:-0.3}
	retries=${RETRIES:-2}
fi
rounds=${ROUNDS:-3}
conc=${CONCURRENCY:-16}
seed=${SEED:-1}
base=${PORT_BASE:-18440}
quiet_for=${QUIET_FOR:-20s}
max_other=${MAX_OTHER:-0.2}
res="$out/edge-results"
rm -rf "$res"
mkdir -p "$res"

echo "== machine"
print_machine
echo "runs:       $rounds rounds x 3 scenarios x 2 keystores, $duration each, concurrency $conc, seed $seed"
echo "quiet:      wait up to $quiet_for for load <= $quiet cores before a run (0: no wait); repeat a run (up to $retries times) if others used > $max_other cores"

echo
echo "== build"
# What `make build` builds, less the commands this script does not run.
go build -o bin/ ./cmd/keyedge ./cmd/keyctl ./cmd/edgebench
echo "bin/keyedge bin/keyctl bin/edgebench"

echo
echo "== keystores"
kdirs=("$out/edge-tenants-1" "$out/edge-tenants-$tenants")
counts=(1 "$tenants")
labels=("1 tenant" "$tenants tenants")
ports=($((base)) $((base + 1)))
mports=($((base + 10)) $((base + 11)))
for i in 0 1; do
	gen_tenants "${kdirs[$i]}" "${counts[$i]}"
	edge_config "${kdirs[$i]}/edge.yaml" "${ports[$i]}" "${mports[$i]}"
done

edge_pid=
origin_pid=
cleanup() {
	for p in $edge_pid $origin_pid; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# start_edge I: a fresh `keyedge serve` for keystore I on CPU 0; its PID
# in edge_pid. Backgrounded here, not in a subshell, so $! is keyedge.
start_edge() {
	"${pin0[@]}" bin/keyedge serve --config "${kdirs[$1]}/edge.yaml" 2>>"$res/edge-${counts[$1]}.log" &
	edge_pid=$!
	wait_port "${ports[$1]}"
}

stop_edge() {
	kill -TERM "$edge_pid"
	wait "$edge_pid" || echo "edge $edge_pid exited with status $?" >&2
	edge_pid=
}

"${pin1[@]}" bin/edgebench -serve-origin "$origin_addr" 2>"$res/origin.log" &
origin_pid=$!
wait_port "${origin_addr##*:}"

scenarios=("handshake, hybrid" "handshake, X25519" "keep-alive")
scenario_flags=(
	"-mode handshake -curves X25519MLKEM768,X25519,P-256"
	"-mode handshake -curves X25519"
	"-mode keepalive -curves X25519MLKEM768,X25519,P-256"
)
files=()

# Every run (and every repeat of one) gets a fresh edge: its keystore
# cache starts empty, so runs are alike whatever ran before them.
for round in $(seq "$rounds"); do
	echo
	echo "== round $round of $rounds"
	for s in 0 1 2; do
		for i in 0 1; do
			name="s$s-k${counts[$i]}-r$round"
			echo
			echo "-- round $round, ${labels[$i]}, ${scenarios[$s]}: edgebench ${scenario_flags[$s]} -c $conc -duration $duration -tenants ${counts[$i]}"
			for attempt in $(seq $((retries + 1))); do
				start_edge "$i"
				status=0
				# shellcheck disable=SC2086 # scenario_flags are words
				"${pin1[@]}" bin/edgebench -addr "127.0.0.1:${ports[$i]}" ${scenario_flags[$s]} \
					-tenants "${counts[$i]}" -dist zipf -seed "$seed" -c "$conc" -duration "$duration" \
					-ca "${kdirs[$i]}/testca.pem" -server-pid "$edge_pid" -origin-pid "$origin_pid" \
					-metrics "http://127.0.0.1:${mports[$i]}/metrics" \
					-wait-quiet "$quiet" -wait-quiet-for "$quiet_for" -max-other-load "$max_other" \
					-label "${labels[$i]}" -scenario "${scenarios[$s]}" -json "$res/$name.json" -q \
					>"$res/$name.txt" || status=$?
				stop_edge
				cat "$res/$name.txt"
				if [ "$status" = 3 ]; then
					echo "$name attempt $attempt: other processes were busy" >>"$res/repeats.log"
					if [ "$attempt" -le "$retries" ]; then
						echo "(other processes were busy during the run: repeating it)"
						continue
					fi
				elif [ "$status" != 0 ]; then
					exit "$status"
				fi
				break
			done
		done
	done
done

# Results in table order: scenario, keystore, round.
for s in 0 1 2; do
	for i in 0 1; do
		for round in $(seq "$rounds"); do
			files+=("$res/s$s-k${counts[$i]}-r$round.json")
		done
	done
done

echo
echo "== edge logs (warnings and errors)"
for i in 0 1; do
	echo "${labels[$i]}: $(wc -l <"$res/edge-${counts[$i]}.log") lines"
	head -5 "$res/edge-${counts[$i]}.log" | sed 's/^/  /'
done

echo
if [ -f "$res/repeats.log" ]; then
	echo "== runs disturbed by other processes (> $max_other cores; repeated up to $retries times, the last attempt kept)"
	cat "$res/repeats.log"
else
	echo "== no run was disturbed by other processes (other load <= $max_other cores)"
fi

echo
echo "== summary: medians (min–max) over $rounds rounds, less runs disturbed by other processes; JSON and text per run in $res"
bin/edgebench -summarize -max-other-load "$max_other" "${files[@]}" | tee "$res/summary.md"
