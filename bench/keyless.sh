#!/usr/bin/env bash
# bench/keyless.sh: what signing through a key server costs. Full TLS
# handshakes per second, per CPU-second of the serving side (the edge,
# plus the key server when keyless), and handshake latency, for one
# ECDSA P-256 tenant signed locally and one signed by a key server
# process over mutual TLS on loopback, in the same run, interleaved
# round by round. Figures: bench/RESULTS.md.
#
# The edge and the key server run on CPU 0, edgebench and the origin on
# CPU 1 (taskset, when present), so the serving side's CPU is measured
# apart from the client's.
#
# Environment: DURATION (default 10s; BENCH_QUICK=1: 3s), ROUNDS
# (default 3), CONCURRENCY (default 16), PORT_BASE (default 18540).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "${BENCH_QUICK:-0}" = 1 ]; then duration=${DURATION:-3s}; else duration=${DURATION:-10s}; fi
rounds=${ROUNDS:-3}
conc=${CONCURRENCY:-16}
base=${PORT_BASE:-18540}
edge_port=$base ks_port=$((base + 1)) metrics_port=$((base + 10)) origin_addr="127.0.0.1:$((base + 20))"
out="$root/bench/_out/keyless"
res="$out/results"

if command -v taskset >/dev/null; then
	pinning="edge and key server on CPU 0; edgebench and the origin on CPU 1 (taskset)"
	pin0=(taskset -c 0)
	pin1=(taskset -c 1)
else
	pinning="none (no taskset)"
	pin0=()
	pin1=()
fi

echo "== machine"
echo "cpus:    $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "go:      $(go version)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) before the run"
echo "pinning: $pinning"
echo "runs:    $rounds rounds x {local, keyless}, handshake mode, $duration each, concurrency $conc"

go build -o bin/ ./cmd/keyedge ./cmd/keyctl ./cmd/keyserver ./cmd/edgebench

rm -rf "$out"
mkdir -p "$out/keys" "$res"
chmod 700 "$out/keys"
cd "$out"
# The edge's keystore: one local tenant; one keyless tenant, whose key
# only the key server's directory holds. Identities from one CA.
"$root/bin/keyctl" init >/dev/null
"$root/bin/keyctl" gen-tenants --count 1 --domain local.test --origin "http://$origin_addr" >/dev/null
"$root/bin/keyctl" identity keyless.test --ca testca --out keys/tenant >/dev/null
"$root/bin/keyctl" import --cert keys/tenant.pem --keyless --key-server "127.0.0.1:$ks_port" \
	--tenant keyless --origin "http://$origin_addr" >/dev/null
"$root/bin/keyctl" identity edge.bench >/dev/null
"$root/bin/keyctl" identity keyserver.bench --ip 127.0.0.1 --out keyserver >/dev/null
cat >keyserver.yaml <<YAML
listen: 127.0.0.1:$ks_port
cert_file: keyserver.pem
key_file: keyserver.key
client_ca_file: identity-ca.pem
keys_dir: keys
log_level: warn
authorize:
  - clients: ["dns:edge.bench"]
    keys: ["*"]
YAML
cat >edge.yaml <<YAML
listen: 127.0.0.1:$edge_port
metrics_listen: 127.0.0.1:$metrics_port
keystore: keystore
fleet_key_file: fleet.key
log_level: warn
keyless:
  cert_file: edge.bench.pem
  key_file: edge.bench.key
  ca_file: identity-ca.pem
YAML
echo t0.local.test >local.names
echo keyless.test >keyless.names

wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listening on 127.0.0.1:$1" >&2
	return 1
}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

"${pin1[@]}" "$root/bin/edgebench" -serve-origin "$origin_addr" 2>"$res/origin.log" &
pids+=($!)
"${pin0[@]}" "$root/bin/keyserver" --config keyserver.yaml 2>"$res/keyserver.log" &
ks_pid=$!
pids+=($ks_pid)
"${pin0[@]}" "$root/bin/keyedge" serve --config edge.yaml 2>"$res/edge.log" &
edge_pid=$!
pids+=($edge_pid)
wait_port $((base + 20))
wait_port "$ks_port"
wait_port "$edge_port"

files=()
for round in $(seq "$rounds"); do
	for route in local keyless; do
		server_pids=$edge_pid
		[ "$route" = keyless ] && server_pids="$edge_pid,$ks_pid"
		name="$route-r$round"
		echo
		echo "-- round $round, $route: edgebench -mode handshake -names $route.names -c $conc -duration $duration -server-pid $server_pids"
		"${pin1[@]}" "$root/bin/edgebench" -addr "127.0.0.1:$edge_port" -mode handshake -names "$route.names" \
			-c "$conc" -duration "$duration" -ca testca.pem -server-pid "$server_pids" \
			-metrics "http://127.0.0.1:$metrics_port/metrics" \
			-label "$route signing" -scenario "handshake" -json "$res/$name.json" -q | tee "$res/$name.txt"
		files+=("$res/$name.json")
	done
done

echo
echo "== summary (per server CPU-s counts the edge, and for keyless the key server too)"
"$root/bin/edgebench" -summarize "${files[@]}"
