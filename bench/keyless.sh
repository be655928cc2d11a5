#!/usr/bin/env bash
# bench/keyless.sh: what signing through a key server costs. Full TLS
# handshakes per second, per CPU-second of the serving side (the edge,
# plus the key server when keyless), and handshake latency, for one
# ECDSA P-256 tenant signed locally and one signed by a key server
# process over mutual TLS on loopback; and signatures per second and per
# key server CPU-second driven straight at the key server (edgebench
# -mode keyless, the edge's client, ECDSA P-256 and RSA-2048 keys). All
# in the same run, interleaved round by round. Figures: bench/RESULTS.md.
#
# The edge and the key server run on CPU 0, edgebench and the origin on
# CPU 1 (taskset, when present), so the serving side's CPU is measured
# apart from the client's.
#
# Environment: DURATION (default 10s; BENCH_QUICK=1: 3s), ROUNDS
# (default 3), CONCURRENCY (default 16), PORT_BASE (default 18540).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [ "${BENCH_QUICK:-0}" = 1 ]; then duration=${DURATION:-3s}; else duration=${DURATION:-10s}; fi
rounds=${ROUNDS:-3}
conc=${CONCURRENCY:-16}
base=${PORT_BASE:-18540}
edge_port=$base ks_port=$((base + 1)) metrics_port=$((base + 10)) origin_addr="127.0.0.1:$((base + 20))"
out="$root/bench/_out/keyless"
res="$out/results"

echo "== machine"
print_machine
echo "servers:    the edge and the key server share CPU 0 (when pinned)"
echo "runs:       $rounds rounds x {local, keyless handshakes; keyless signing ECDSA, RSA}, $duration each, concurrency $conc"

go build -o bin/ ./cmd/keyedge ./cmd/keyctl ./cmd/keyserver ./cmd/edgebench ./bench/pemexport

rm -rf "$out"
mkdir -p "$out/keys" "$res"
chmod 700 "$out/keys"
cd "$out"
# The edge's keystore: one local tenant; one keyless tenant, whose key
# only the key server's directory holds. Identities from one CA.
"$root/bin/keyctl" init >/dev/null
"$root/bin/keyctl" gen-tenants --count 1 --domain local.test --origin "http://$origin_addr" >/dev/null
"$root/bin/keyctl" identity keyless.test --ca testca --out keys/tenant >/dev/null
# An RSA-2048 key for the signing runs: a generated tenant's, as a PEM
# file (chain and key) in the key server's directory.
mkdir rsa
(cd rsa && "$root/bin/keyctl" init >/dev/null &&
	"$root/bin/keyctl" gen-tenants --count 1 --rsa-every 1 --domain rsa.keyless.test --origin "http://$origin_addr" >/dev/null)
"$root/bin/pemexport" -keystore rsa/keystore -fleet-key rsa/fleet.key -tenants 1 -domain rsa.keyless.test -out keys >/dev/null
mv keys/t0.rsa.keyless.test.rsa.pem keys/rsa.pem
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
wait_port "${origin_addr##*:}"
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
	for key in tenant rsa; do
		name="sign-$key-r$round"
		label="ECDSA P-256 key"
		[ "$key" = rsa ] && label="RSA-2048 key"
		echo
		echo "-- round $round, keyless signing straight at the key server, key keys/$key.pem"
		"${pin1[@]}" "$root/bin/edgebench" -mode keyless -key-server "127.0.0.1:$ks_port" \
			-identity-cert edge.bench.pem -identity-key edge.bench.key -key-server-ca identity-ca.pem \
			-key-cert "keys/$key.pem" -c "$conc" -duration "$duration" -server-pid "$ks_pid" \
			-label "$label" -scenario "keyless signatures" -json "$res/$name.json" -q | tee "$res/$name.txt"
		files+=("$res/$name.json")
	done
done

echo
echo "== summary (per server CPU-s counts the edge, and for keyless the key server too; for keyless signatures, the key server alone)"
"$root/bin/edgebench" -summarize -plot "$res/keyless.svg" "${files[@]}" | tee "$res/summary.md"
