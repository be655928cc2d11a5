#!/usr/bin/env bash
# bench/matrix.sh (make bench): keyedge side by side with nginx and
# HAProxy (Debian's packages, installed when missing), same machine, same
# run, same certificates. Figures: bench/RESULTS.md.
#
# Every server under test runs on CPU 0 (one nginx worker, one HAProxy
# thread, keyedge with GOMAXPROCS 1 by its affinity), edgebench and the
# origin on CPU 1 (taskset). Every run starts a fresh server. Servers are
# interleaved round by round (A B C A B C ...), ROUNDS rounds; the
# tables give medians and min–max. TLS 1.3 only. Every server issues
# session tickets after a full handshake, as deployed: keyedge one, nginx
# and HAProxy (OpenSSL) two, stateless tickets (PEER_TICKETS=0 turns the
# peers' off; OpenSSL then still sends two stateful tickets, which with
# the session cache off can never resume). edgebench offers no session
# in the handshake scenarios, so every handshake is a full one; having
# no session cache, it sends no psk_key_exchange_modes either, and
# crypto/tls issues tickets only to clients that do (RFC 8446 4.2.9):
# in scenarios 1 and 2 keyedge sends none, the peers still two. All
# three proxy to the same origin (`edgebench -serve-origin`, 3-byte
# body).
#
#   1   full handshakes/s and per server CPU-second, client X25519 only:
#       keyedge 1 tenant, keyedge TENANTS tenants lazily loaded (Zipf
#       names), nginx and HAProxy with 1 certificate; ECDSA P-256, and
#       RSA-2048 (1 tenant / 1 certificate each, edgebench -sig rsa)
#   2   the same, the client offering X25519MLKEM768 first (nginx and
#       HAProxy on OpenSSL 3.0 have no ML-KEM: they negotiate X25519)
#   3   keep-alive: CONCURRENCY HTTP/1.1 connections, small responses
#       through each proxy to the origin
#   4   start-up time (to the first successful request for the last
#       tenant's name) and RSS with SIZES tenants: keyedge vs nginx (one
#       server block per certificate) and HAProxy (`crt` directory); a
#       server whose start-up time, scaled linearly from the size before,
#       would pass STARTUP_LIMIT seconds is not started at that size
#   5   keyless vs local signing: bench/keyless.sh
#   6   memory per cached tenant: keyedge's RSS and Go heap before and
#       after CACHE_N handshakes over CACHE_N distinct names (each loads a
#       tenant and opens its key), against the peers' RSS per certificate
#       between the two smallest SIZES of scenario 4
#   7   proxied requests per server CPU-second measured by a second,
#       independent client, h2load (Debian nghttp2-client, installed when
#       missing): HTTP/1.1 keep-alive (H1_CONNS connections, one request
#       at a time each) and HTTP/2 (H2_CONNS connections x H2_STREAMS
#       streams), 1 tenant, TLS 1.3, the same origin as scenario 3. The
#       server's CPU time is read from /proc/PID/stat (utime + stime, the
#       nginx master and worker together) just before and after each
#       h2load run, after a 1 s warm-up on the same connections' settings.
#   8   HTTP/3 beside HTTP/2, keyedge alone (Debian's nginx 1.22 has no
#       HTTP/3 module and its HAProxy 2.6 is built without QUIC; h2load
#       has no QUIC either, so edgebench is the client): full handshakes
#       per server CPU-second (scenario 1's client, X25519, ECDSA, a new
#       connection and one GET per handshake, -h2 over TCP, -h3 over
#       QUIC to the UDP port keyedge serves HTTP/3 on) and keep-alive
#       requests per server CPU-second (CONCURRENCY connections, one
#       request at a time each, -h2 / -h3), 1 tenant, interleaved h2 h3
#       h2 h3 each round; the h3/h2 ratios come from the same run.
#
# Environment (defaults; BENCH_QUICK=1 defaults in brackets):
#   ROUNDS 3 [3], DURATION 8s [2s], CONCURRENCY 16, TENANTS 100000
#   [10000], SIZES "1000 10000 100000" ["1000 10000"], CACHE_N 20000
#   [2000], STARTUP_LIMIT 60 [10], QUIET 0.3 [0] (before a run, wait up
#   to 10 s for the machine to use at most this many cores), MAX_OTHER
#   0.2 [0] (summaries leave out runs during which other processes used
#   more cores), PORT_BASE 18640, PEERS 1 (0: keyedge alone), H1_CONNS
#   32, H2_CONNS 16, H2_STREAMS 10, ONLY (unset: every scenario; else
#   the scenario numbers to run, e.g. "1" or "1 7"; "h2load" means 7,
#   "h3" 8),
#   BASE_BIN (unset; a keyedge binary to compare with: scenarios 1-3 and
#   7 run it too, with 1 tenant, as keyedge-base, interleaved, and
#   scenarios 1 and 2 with TENANTS tenants as well),
#   PEER_TICKETS 1 (0: nginx and HAProxy with session tickets off),
#   WARMUP (unset; a duration such as 60s: in scenarios 1 and 2 a server
#   with TENANTS tenants first takes handshakes by the same client for
#   that long (its own seed: other draws from the same Zipf names), not
#   measured, so the measured run sees the share of cold
#   tenants of an edge that has been serving rather than of one just
#   started; its label says so),
#   ACCESS_LOG (unset; json or text: keyedge, not keyedge-base, writes an
#   access log in that format to its run directory).
#   SPEED 0 (1: in scenario 7 a fixed loop runs on CPU 0 every 0.25 s
#   during each measured run, its own CPU time taken by perf stat; each
#   round reports the loop's median, and the summary each server's
#   requests per CPU-second at the median loop time over all runs. CPU 0
#   of the shared VM was seen to run any fixed work up to 1.8x slower
#   for seconds at a time, every server's CPU per request with it: see
#   bench/RESULTS.md, "HTTP/1.1: what varies between rounds").
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	duration=${DURATION:-2s} many=${TENANTS:-10000} sizes=${SIZES:-"1000 10000"}
	cache_n=${CACHE_N:-2000} startup_limit=${STARTUP_LIMIT:-10} quiet=${QUIET:-0} max_other=${MAX_OTHER:-0}
else
	duration=${DURATION:-8s} many=${TENANTS:-100000} sizes=${SIZES:-"1000 10000 100000"}
	cache_n=${CACHE_N:-20000} startup_limit=${STARTUP_LIMIT:-60} quiet=${QUIET:-0.3} max_other=${MAX_OTHER:-0.2}
fi
rounds=${ROUNDS:-3}
only=" ${ONLY:-1 2 3 4 5 6 7 8} "
only=${only// h2load / 7 }
only=${only// h3 / 8 }
# runs N: whether scenario N is to run (ONLY).
runs() { [[ $only == *" $1 "* ]]; }
for n in $only; do
	case $n in
	[1-8]) ;;
	*)
		echo "ONLY: unknown scenario \"$n\" (the scenarios are 1-8; h2load is 7, h3 8)" >&2
		exit 2
		;;
	esac
done
peer_tickets=${PEER_TICKETS:-1}
h1_conns=${H1_CONNS:-32} h2_conns=${H2_CONNS:-16} h2_streams=${H2_STREAMS:-10}
conc=${CONCURRENCY:-16}
port=${PORT_BASE:-18640}
mport=$((port + 10))
peers=${PEERS:-1}
base_bin=${BASE_BIN:-}
access_log=${ACCESS_LOG:-}
speed=${SPEED:-0}
if [ "$speed" = 1 ] && ! command -v perf >/dev/null; then
	echo "SPEED=1 needs perf" >&2
	exit 2
fi
res="$out/matrix"
[ "${BENCH_QUICK:-0}" = 1 ] && res="$out/matrix-quick" # keeps a full run's results
rm -rf "$res"
mkdir -p "$res"
started=$(date +%s)

echo "== machine"
print_machine
echo "runs:       $rounds rounds; $duration per load run, concurrency $conc; $many tenants for the many-tenant keystore; start-up at $sizes tenants"
echo "scenarios: $only; peers' session tickets: $([ "$peer_tickets" = 1 ] && echo on || echo off)${base_bin:+; base binary $base_bin}"

echo
echo "== build"
go build -o bin/ ./cmd/keyedge ./cmd/keyctl ./cmd/keyserver ./cmd/edgebench ./bench/pemexport
echo "bin/keyedge bin/keyctl bin/keyserver bin/edgebench bin/pemexport"

echo
echo "== peers"
if [ "$peers" = 1 ] && ! { command -v nginx && command -v haproxy && command -v h2load; } >/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "installing nginx, haproxy and h2load (apt-get)"
		apt-get update -qq >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy nghttp2-client >/dev/null
		# A package's own service, if its install started one, competes for
		# the CPUs: stop it (by its PID file, nothing broader).
		for f in /run/nginx.pid /run/haproxy.pid; do
			[ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
		done
	else
		echo "nginx, haproxy or h2load missing and cannot install them (not root, or no apt-get): keyedge alone"
		peers=0
	fi
fi
if [ "$peers" = 1 ]; then
	echo "nginx:      $(nginx -v 2>&1 | sed 's/^nginx version: //'); $(nginx -V 2>&1 | grep -o 'running with OpenSSL [^)]*')"
	echo "haproxy:    $(haproxy -v | head -1)"
	echo "h2load:     $(h2load --version)"
	echo "            $(haproxy -vv 2>/dev/null | grep 'Running on OpenSSL')"
	echo "ML-KEM:     OpenSSL $(openssl version | cut -d' ' -f2) has no ML-KEM groups, so nginx and HAProxy here offer X25519 at best"
fi

echo
echo "== keystores and PEM files (reused when already generated)"
k1="$out/edge-tenants-1"
kmany="$out/edge-tenants-$many"
krsa="$out/edge-tenants-rsa-1"
gen_tenants "$k1" 1
if runs 1 || runs 2 || runs 6; then
	gen_tenants "$kmany" "$many"
fi
if runs 1; then
	gen_tenants "$krsa" 1 --rsa-every 1 --domain rsa.keyedge.test
fi
if runs 4; then
	for n in $sizes; do
		gen_tenants "$out/edge-tenants-$n" "$n"
	done
fi
# pems DIR N DOMAIN: DIR/pem holds tenants t0…t<N-1>'s certificates and
# keys, exported from DIR's keystore, so the peers serve exactly what
# keyedge serves; DIR/pem.exported records N once done (not in DIR/pem,
# which HAProxy loads whole).
pems() {
	if ! grep -qx "$2" "$1/pem.exported" 2>/dev/null; then
		bin/pemexport -keystore "$1/keystore" -fleet-key "$1/fleet.key" -tenants "$2" -domain "$3" -out "$1/pem"
		echo "$2" >"$1/pem.exported"
	fi
}

# Servers. start_server KIND DIR N DOMAIN TYPE starts KIND (keyedge,
# nginx or haproxy) on CPU 0 serving tenants t0…t<N-1>.DOMAIN of the
# keystore in DIR (the peers: their TYPE PEM files from DIR/pem), sets
# srv_pid and cpu_pids (the processes whose CPU time counts: nginx's
# master and worker), and waits for its port.
srv_pid=
origin_pid=
cleanup() {
	for p in $srv_pid $origin_pid; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

start_server() {
	local kind=$1 dir=$2 n=$3 domain=$4 typ=$5
	local run="$res/$kind"
	mkdir -p "$run"
	case $kind in
	keyedge | keyedge-base)
		local bin=bin/keyedge
		[ "$kind" = keyedge-base ] && bin=$base_bin
		local extra=()
		[ -n "$access_log" ] && [ "$kind" = keyedge ] && extra=("access_log:" "  path: $run/access.log" "  format: $access_log")
		edge_config "$dir/matrix-edge.yaml" "$port" "$mport" 'min_tls_version: "1.3"' "${extra[@]}"
		"${pin0[@]}" "$bin" serve --config "$dir/matrix-edge.yaml" 2>>"$run/log" &
		srv_pid=$!
		;;
	nginx)
		pems "$dir" "$n" "$domain"
		nginx_conf "$run" "$dir/pem" "$n" "$domain" "$typ"
		"${pin0[@]}" nginx -p "$run" -e "$run/error.log" -c "$run/nginx.conf" 2>>"$run/log" &
		srv_pid=$!
		;;
	haproxy)
		pems "$dir" "$n" "$domain"
		haproxy_conf "$run" "$dir/pem" "$n" "$typ"
		"${pin0[@]}" haproxy -db -f "$run/haproxy.cfg" 2>>"$run/log" &
		srv_pid=$!
		;;
	esac
	cpu_pids=$srv_pid
}

# ready KIND DIR N DOMAIN: waits (up to 10 minutes, while the server
# runs) until the server started last answers a request for its last
# tenant, t<N-1>.DOMAIN, and prints the seconds since $t0 (Unix ns,
# taken just before the start).
ready() {
	local names="$res/last-name" secs=
	echo "t$(($3 - 1)).$4" >"$names"
	for _ in $(seq 300); do
		if ! kill -0 "$srv_pid" 2>/dev/null; then
			echo "$1 exited while starting: $res/$1/log" >&2
			tail -5 "$res/$1/log" >&2
			exit 1
		fi
		secs=$("${pin1[@]}" bin/edgebench -addr "127.0.0.1:$port" -names "$names" -ca "$2/testca.pem" -tls 1.3 \
			-ready-within 2s -started-at "$t0" -q 2>/dev/null | sed -n 's/^ready_seconds=//p')
		[ -n "$secs" ] && break
	done
	if [ -z "$secs" ]; then
		echo "$1 not serving $(cat "$names") after 10 minutes" >&2
		exit 1
	fi
	echo "$secs"
	if [ "$1" = nginx ]; then
		cpu_pids="$srv_pid,$(pgrep -d, -P "$srv_pid")"
	fi
}

stop_server() {
	kill -TERM "$srv_pid" 2>/dev/null || true
	wait "$srv_pid" 2>/dev/null || true
	srv_pid=
}

# nginx_conf RUN PEMDIR N DOMAIN TYPE: RUN/nginx.conf, one server block
# per tenant.
nginx_conf() {
	local run=$1 pem=$2 n=$3 domain=$4 typ=$5 tickets=on
	[ "$peer_tickets" = 1 ] || tickets=off
	mkdir -p "$run/tmp"
	{
		cat <<CONF
# written by bench/matrix.sh
daemon off;
master_process on;
worker_processes 1;
pid $run/nginx.pid;
error_log $run/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $run/tmp/body;
  proxy_temp_path $run/tmp/proxy;
  fastcgi_temp_path $run/tmp/fastcgi;
  uwsgi_temp_path $run/tmp/uwsgi;
  scgi_temp_path $run/tmp/scgi;
  server_names_hash_max_size 1048576;
  server_names_hash_bucket_size 128;
  keepalive_requests 10000000;
  ssl_protocols TLSv1.3;
  ssl_session_tickets $tickets;
  ssl_session_cache off;
  upstream origin { server $origin_addr; keepalive 32; }
CONF
		awk -v n="$n" -v port="$port" -v pem="$pem" -v domain="$domain" -v typ="$typ" 'BEGIN {
			for (i = 0; i < n; i++) {
				f = pem "/t" i "." domain "." typ ".pem"
				printf "  server {\n    listen 127.0.0.1:%d ssl http2;\n    server_name t%d.%s;\n", port, i, domain
				printf "    ssl_certificate %s;\n    ssl_certificate_key %s;\n", f, f
				printf "    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }\n  }\n"
			}
		}'
		echo "}"
	} >"$run/nginx.conf"
}

# haproxy_conf RUN PEMDIR N TYPE: RUN/haproxy.cfg, the certificates by
# `crt`: the one file when N is 1, else the directory.
haproxy_conf() {
	local run=$1 pem=$2 n=$3 typ=$4
	local crt=$pem tickets=
	[ "$peer_tickets" = 1 ] || tickets=" no-tls-tickets"
	if [ "$n" = 1 ]; then
		crt=$(ls "$pem"/t0.*."$typ".pem)
	fi
	cat >"$run/haproxy.cfg" <<CONF
# written by bench/matrix.sh
global
  nbthread 1
  maxconn 8000
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3$tickets
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend fe
  bind 127.0.0.1:$port ssl crt $crt alpn h2,http/1.1
  default_backend origin
backend origin
  http-reuse always
  server origin $origin_addr
CONF
}

"${pin1[@]}" bin/edgebench -serve-origin "$origin_addr" 2>"$res/origin.log" &
origin_pid=$!
wait_port "${origin_addr##*:}"

# Scenarios 1-3 and 8: "KIND|DIR|N|DOMAIN|TYPE|LABEL" per server.
hs=("keyedge|$k1|1|keyedge.test|ecdsa|keyedge, 1 tenant"
	"keyedge|$kmany|$many|keyedge.test|ecdsa|keyedge, $many tenants (Zipf)")
rsa=("keyedge|$krsa|1|rsa.keyedge.test|rsa|keyedge, 1 tenant")
ka=("keyedge|$k1|1|keyedge.test|ecdsa|keyedge, 1 tenant")
if [ -n "$base_bin" ]; then
	hs+=("keyedge-base|$k1|1|keyedge.test|ecdsa|keyedge-base, 1 tenant"
		"keyedge-base|$kmany|$many|keyedge.test|ecdsa|keyedge-base, $many tenants (Zipf)")
	rsa+=("keyedge-base|$krsa|1|rsa.keyedge.test|rsa|keyedge-base, 1 tenant")
	ka+=("keyedge-base|$k1|1|keyedge.test|ecdsa|keyedge-base, 1 tenant")
fi
if [ "$peers" = 1 ]; then
	hs+=("nginx|$k1|1|keyedge.test|ecdsa|nginx, 1 certificate" "haproxy|$k1|1|keyedge.test|ecdsa|HAProxy, 1 certificate")
	rsa+=("nginx|$krsa|1|rsa.keyedge.test|rsa|nginx, 1 certificate" "haproxy|$krsa|1|rsa.keyedge.test|rsa|HAProxy, 1 certificate")
	ka+=("nginx|$k1|1|keyedge.test|ecdsa|nginx, 1 certificate" "haproxy|$k1|1|keyedge.test|ecdsa|HAProxy, 1 certificate")
fi
h3=("keyedge|$k1|1|keyedge.test|ecdsa|keyedge, 1 tenant")
scenarios=("1 handshakes, X25519, ECDSA P-256" "1 handshakes, X25519, RSA-2048" "2 handshakes, X25519MLKEM768 offered" "3 keep-alive through the proxy"
	"8 handshakes, HTTP/2" "8 handshakes, HTTP/3" "8 keep-alive requests, HTTP/2" "8 keep-alive requests, HTTP/3")
scenario_flags=("-mode handshake -curves X25519 -sig ecdsa" "-mode handshake -curves X25519 -sig rsa"
	"-mode handshake -curves X25519MLKEM768,X25519 -sig ecdsa" "-mode keepalive -curves X25519"
	"-mode handshake -curves X25519 -sig ecdsa -h2" "-mode handshake -curves X25519 -sig ecdsa -h3"
	"-mode keepalive -curves X25519 -h2" "-mode keepalive -curves X25519 -h3")
scenario_servers=(hs rsa hs ka h3 h3 h3 h3)
# h3_pairs: scenario 8's HTTP/2 and HTTP/3 indices above, side by side.
h3_pairs=("4 5" "6 7")
declare -A files

# scenario_runs: the indices of the scenarios above that ONLY selects.
scenario_runs=()
for s in "${!scenarios[@]}"; do
	runs "${scenarios[$s]%% *}" && scenario_runs+=("$s")
done
echo "index server kind round per_cpu_s rate" >"$res/per-cpu.txt"
rounds13=$rounds
[ ${#scenario_runs[@]} = 0 ] && rounds13=0
for round in $(seq "$rounds13"); do
	echo
	echo "== scenarios 1-3 and 8, round $round of $rounds"
	for s in "${scenario_runs[@]}"; do
		declare -n list=${scenario_servers[$s]}
		for i in "${!list[@]}"; do
			IFS='|' read -r kind dir n domain typ label <<<"${list[$i]}"
			name="s$s-$kind-$i-r$round"
			metrics=()
			[[ $kind == keyedge* ]] && metrics=(-metrics "http://127.0.0.1:$mport/metrics")
			t0=$(date +%s%N)
			start_server "$kind" "$dir" "$n" "$domain" "$typ"
			ready "$kind" "$dir" "$n" "$domain" >/dev/null
			if [ -n "${WARMUP:-}" ] && [ "$n" -gt 1 ]; then
				label="${label%)}, after $WARMUP of warm-up)"
				# shellcheck disable=SC2086 # scenario_flags are words
				"${pin1[@]}" bin/edgebench -addr "127.0.0.1:$port" ${scenario_flags[$s]} -tls 1.3 \
					-tenants "$n" -domain "$domain" -dist zipf -c "$conc" -duration "$WARMUP" -ca "$dir/testca.pem" \
					-seed 2 -label warm-up -q >"$res/$name-warmup.txt" || {
					cat "$res/$name-warmup.txt"
					exit 1
				}
			fi
			# shellcheck disable=SC2086 # scenario_flags are words
			"${pin1[@]}" bin/edgebench -addr "127.0.0.1:$port" ${scenario_flags[$s]} -tls 1.3 \
				-tenants "$n" -domain "$domain" -dist zipf -c "$conc" -duration "$duration" -ca "$dir/testca.pem" \
				-server-pid "$cpu_pids" -origin-pid "$origin_pid" "${metrics[@]}" \
				-wait-quiet "$quiet" -wait-quiet-for 10s \
				-label "$label" -scenario "${scenarios[$s]}" -json "$res/$name.json" -q >"$res/$name.txt" || {
				cat "$res/$name.txt"
				exit 1
			}
			stop_server
			files[$s]+=" $res/$name.json"
			awk -v l="${scenarios[$s]}: $label" '/^  rate/ {r = $2 " " $3} /^  server cpu/ {c = $(NF-7)} /^  requests/ {e = $4 " errors"} END {printf "%-70s %s, %s per server CPU-s (handshakes or requests), %s\n", l, r, c, e}' "$res/$name.txt"
			awk -v s="$s" -v k="$kind" -v i="$i" -v r="$round" '/^  rate/ {rate = $2} /^  server cpu/ {c = $(NF-7)} END {print s, i, k, r, c, rate}' "$res/$name.txt" >>"$res/per-cpu.txt"
		done
		unset -n list
	done
done

# awk_med: an awk function, med(LIST): the median of the
# space-separated numbers in LIST, then "|" min "|" max.
awk_med='function med(list,   a, n, i, j, t) {
	n = split(list, a, " ")
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) {t = a[i]; a[i] = a[j]; a[j] = t}
	return (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) "|" a[1] "|" a[n]
}'

# ratio_summary: for scenarios 1-3 and 8, each server's median per server
# CPU-second and the ratios of keyedge's (1 tenant) and the base
# binary's to it, all from this run.
ratio_summary() {
	[ ${#scenario_runs[@]} = 0 ] && return
	echo
	echo "### 1-3 and 8 per server CPU-second and ratios (medians of $rounds rounds, this run)"
	echo
	echo "| scenario | server | per server CPU-s | keyedge / this | keyedge-base / this |"
	echo "|---|---|---:|---:|---:|"
	local s i kind dir n domain typ label
	for s in "${scenario_runs[@]}"; do
		declare -n list=${scenario_servers[$s]}
		for i in "${!list[@]}"; do
			IFS='|' read -r kind dir n domain typ label <<<"${list[$i]}"
			echo "$s|$i|$kind|${scenarios[$s]}|$label"
		done
		unset -n list
	done | awk -F'|' "$awk_med"'
		FNR == NR {k = $1 " " $2; key[++m] = k; scen[k] = $1; kind[k] = $3; name[k] = $4; label[k] = $5; next}
		FNR > 1 {split($0, f, " "); v[f[1] " " f[2]] = v[f[1] " " f[2]] " " f[5]}
		END {
			for (j = 1; j <= m; j++) {
				k = key[j]; split(med(v[k]), M, "|"); p[k] = M[1]
				if (kind[k] == "keyedge" && !(scen[k] in ke)) ke[scen[k]] = p[k]
				if (kind[k] == "keyedge-base" && !(scen[k] in kb)) kb[scen[k]] = p[k]
			}
			for (j = 1; j <= m; j++) {
				k = key[j]
				r1 = (p[k] > 0 && scen[k] in ke) ? sprintf("%.2f×", ke[scen[k]] / p[k]) : "–"
				r2 = (p[k] > 0 && scen[k] in kb) ? sprintf("%.2f×", kb[scen[k]] / p[k]) : "–"
				printf "| %s | %s | %.0f | %s | %s |\n", name[k], label[k], p[k], r1, r2
			}
		}' - "$res/per-cpu.txt"
}

# h3_summary: scenario 8's HTTP/3 figures over HTTP/2's, medians of
# the rounds of this run, and the ratio round by round (the two ran
# back to back).
h3_summary() {
	runs 8 || return 0
	echo
	echo "### 8 HTTP/3 beside HTTP/2, keyedge 1 tenant (median, min–max of $rounds rounds, this run)"
	echo
	echo "| workload | h2 /s | h3 /s | h2 per server CPU-s | h3 per server CPU-s | h3/h2 per CPU-s (median; per round) | h3/h2 rate |"
	echo "|---|---:|---:|---:|---:|---:|---:|"
	local pair a b
	for pair in "${h3_pairs[@]}"; do
		read -r a b <<<"$pair"
		awk -v a="$a" -v b="$b" -v label="${scenarios[$a]#8 }" "$awk_med"'
			NR > 1 && $1 == a {c2[$4] = $5; r2[$4] = $6}
			NR > 1 && $1 == b {c3[$4] = $5; r3[$4] = $6}
			END {
				for (k in c2) {C2 = C2 " " c2[k]; R2 = R2 " " r2[k]}
				for (k in c3) {C3 = C3 " " c3[k]; R3 = R3 " " r3[k]}
				for (k = 1; k in c2 && k in c3; k++) per = per sprintf(" %.2f", (c2[k] > 0 ? c3[k] / c2[k] : 0))
				split(med(C2), x2, "|"); split(med(C3), x3, "|"); split(med(R2), y2, "|"); split(med(R3), y3, "|")
				sub(/, HTTP\/2$/, "", label)
				printf "| %s | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %.2f×;%s | %.2f× |\n", label,
					y2[1], y2[2], y2[3], y3[1], y3[2], y3[3], x2[1], x2[2], x2[3], x3[1], x3[2], x3[3],
					(x2[1] > 0 ? x3[1] / x2[1] : 0), per, (y2[1] > 0 ? y3[1] / y2[1] : 0)
			}' "$res/per-cpu.txt"
	done
}

# summary13: scenarios 1-3's and 8's tables.
summary13() {
	local s
	for s in "${scenario_runs[@]}"; do
		echo
		echo "### ${scenarios[$s]}"
		echo
		# shellcheck disable=SC2086 # a list of files
		bin/edgebench -summarize -max-other-load "$max_other" -plot "$res/plot-s$s.svg" ${files[$s]}
	done
	ratio_summary
	h3_summary
}

if runs 7; then
	echo
	echo "== scenario 7: proxied requests per server CPU-second, h2load, $rounds rounds"
	# cpu_ticks PIDS: utime + stime of the comma-separated PIDS, in clock ticks.
	cpu_ticks() {
		local sum=0 p
		for p in ${1//,/ }; do
			sum=$((sum + $(awk '{print $14 + $15}' "/proc/$p/stat")))
		done
		echo "$sum"
	}
	h2load_workloads=("h1|--h1 -c $h1_conns -m 1|HTTP/1.1 keep-alive, $h1_conns connections"
		"h2|-c $h2_conns -m $h2_streams|HTTP/2, $h2_conns connections x $h2_streams streams")
	h2load_kinds=(keyedge)
	[ -n "$base_bin" ] && h2load_kinds+=(keyedge-base)
	[ "$peers" = 1 ] && h2load_kinds+=(nginx haproxy)
	# cpu0_loop SECS FILE: while SECS pass, the CPU time (ms) of a fixed
	# loop on CPU 0 every 0.25 s, one a line (SPEED).
	cpu0_loop() {
		local end=$((SECONDS + $1))
		while [ $SECONDS -lt "$end" ]; do
			perf stat -x, -e task-clock taskset -c 0 awk 'BEGIN {for (i = 0; i < 3e5; i++) s += i}' 2>&1 >/dev/null |
				awk -F, '/task-clock/ {printf "%.2f\n", $1}'
			sleep 0.25
		done >"$2"
	}
	secs=${duration%s}
	echo "workload kind round requests failed server_cpu_ticks seconds cpu0_loop_ms" >"$res/h2load.txt"
	for round in $(seq "$rounds"); do
		for w in "${h2load_workloads[@]}"; do
			IFS='|' read -r wname wflags wlabel <<<"$w"
			for kind in "${h2load_kinds[@]}"; do
				t0=$(date +%s%N)
				start_server "$kind" "$k1" 1 keyedge.test ecdsa
				ready "$kind" "$k1" 1 keyedge.test >/dev/null
				log="$res/h2load-$wname-$kind-r$round.txt"
				# shellcheck disable=SC2086 # wflags are words
				# timeout: an h2load warm-up was once seen to go on sending
				# well past its -D (against keyedge-base, cause unknown).
				"${pin1[@]}" timeout 30 h2load $wflags -D 1 --connect-to="127.0.0.1:$port" https://t0.keyedge.test/ >/dev/null 2>&1 || true
				loop_pid=
				[ "$speed" = 1 ] && { cpu0_loop "$secs" "$res/cpu0-loop-$wname-$kind-r$round.txt" & loop_pid=$!; }
				before=$(cpu_ticks "$cpu_pids")
				# shellcheck disable=SC2086
				"${pin1[@]}" timeout $((secs + 60)) h2load $wflags -D "$secs" --connect-to="127.0.0.1:$port" https://t0.keyedge.test/ >"$log" 2>&1 || {
					echo "h2load against $kind did not finish within $((secs + 60)) s (exit $?): $log" >&2
					exit 1
				}
				after=$(cpu_ticks "$cpu_pids")
				loop_ms=0
				if [ -n "$loop_pid" ]; then
					wait "$loop_pid"
					loop_ms=$(sort -n "$res/cpu0-loop-$wname-$kind-r$round.txt" | awk '{v[NR] = $1} END {print NR ? v[int((NR + 1) / 2)] : 0}')
				fi
				stop_server
				read -r ok failed < <(awk '/^requests:/ {print $8, $10}' "$log")
				echo "$wname $kind $round $ok $failed $((after - before)) $secs $loop_ms" >>"$res/h2load.txt"
				awk -v l="7 $wlabel: $kind" -v ok="$ok" -v f="$failed" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" -v s="$secs" -v lm="$loop_ms" \
					'BEGIN {printf "%-70s %.0f requests/s, %.0f per server CPU-s, %d failed%s\n", l, ok / s, t ? ok / (t / hz) : 0, f, (lm > 0 ? sprintf(", CPU 0 loop %.1f ms", lm) : "")}'
			done
		done
	done

fi
# h2load_summary: scenario 7's table, medians over the rounds, and the
# ratios of keyedge's medians to the peers'.
h2load_summary() {
	echo
	echo "### 7 proxied requests per server CPU-second, h2load (median, min–max of $rounds rounds)"
	echo
	echo "| workload | server | requests/s | per server CPU-s | failed | keyedge / this |"
	echo "|---|---|---:|---:|---:|---:|"
	awk -v hz="$(getconf CLK_TCK)" -v l1="${h2load_workloads[0]##*|}" -v l2="${h2load_workloads[1]##*|}" "$awk_med"'
		NR > 1 {k = $1 " " $2; r[k] = r[k] " " $4 / $7; c[k] = c[k] " " ($6 ? $4 / ($6 / hz) : 0); f[k] += $5
			if (!(k in seen)) {seen[k] = 1; order[++m] = k}}
		END {
			for (i = 1; i <= m; i++) {split(order[i], kn, " "); split(med(c[order[i]]), C, "|"); per[order[i]] = C[1]}
			for (i = 1; i <= m; i++) {
				split(order[i], kn, " "); split(med(r[order[i]]), R, "|"); split(med(c[order[i]]), C, "|")
				ratio = per[kn[1] " " kn[2]] ? sprintf("%.2f×", per[kn[1] " keyedge"] / per[kn[1] " " kn[2]]) : "–"
				printf "| %s | %s | %.0f (%.0f–%.0f) | %.0f (%.0f–%.0f) | %d | %s |\n", (kn[1] == "h1" ? l1 : l2), kn[2], R[1], R[2], R[3], C[1], C[2], C[3], f[order[i]], ratio
			}
		}' "$res/h2load.txt"
	[ "$speed" = 1 ] || return 0
	echo
	echo "At equal CPU 0 speed (SPEED=1): each round's requests per server CPU-s times its loop time over the median loop time of the workload's runs (median, min–max):"
	echo
	echo "| workload | server | CPU 0 loop ms | per server CPU-s at the median loop time | keyedge / this |"
	echo "|---|---|---:|---:|---:|"
	awk -v hz="$(getconf CLK_TCK)" -v l1="${h2load_workloads[0]##*|}" -v l2="${h2load_workloads[1]##*|}" "$awk_med"'
		NR > 1 && $6 && $8 > 0 {k = $1 " " $2; per[NR] = $4 / ($6 / hz); lm[NR] = $8; key[NR] = k; loops[$1] = loops[$1] " " $8; l[k] = l[k] " " $8
			if (!(k in seen)) {seen[k] = 1; order[++m] = k}}
		END {
			for (w in loops) {split(med(loops[w]), M, "|"); mid[w] = M[1]}
			for (i in per) {split(key[i], kn, " "); c[key[i]] = c[key[i]] " " per[i] * lm[i] / mid[kn[1]]}
			for (i = 1; i <= m; i++) {split(med(c[order[i]]), C, "|"); at[order[i]] = C[1]}
			for (i = 1; i <= m; i++) {
				split(order[i], kn, " "); split(med(c[order[i]]), C, "|"); split(med(l[order[i]]), L, "|")
				ratio = at[order[i]] ? sprintf("%.2f×", at[kn[1] " keyedge"] / at[order[i]]) : "–"
				printf "| %s | %s | %.1f (%.1f–%.1f) | %.0f (%.0f–%.0f) | %s |\n", (kn[1] == "h1" ? l1 : l2), kn[2], L[1], L[2], L[3], C[1], C[2], C[3], ratio
			}
		}' "$res/h2load.txt"
}
if runs 4; then
	echo
	echo "== scenario 4: start-up time and RSS, $rounds rounds"
	# A server whose start-up, scaled linearly to the next size, would take
	# more than STARTUP_LIMIT seconds is not started at that size.
	declare -A too_slow skip_from last_secs last_n
	echo "kind n round ready_seconds rss_kib" >"$res/startup.txt"
	for round in $(seq "$rounds"); do
		for n in $sizes; do
			kinds=(keyedge)
			[ "$peers" = 1 ] && kinds+=(nginx haproxy)
			for kind in "${kinds[@]}"; do
				if [ -n "${skip_from[$kind]:-}" ] && [ "$n" -ge "${skip_from[$kind]}" ]; then
					continue
				fi
				if [ -n "${last_n[$kind]:-}" ] && [ "$n" -gt "${last_n[$kind]}" ] &&
					awk -v s="${last_secs[$kind]}" -v a="${last_n[$kind]}" -v b="$n" -v l="$startup_limit" 'BEGIN {exit !(s * b / a > l)}'; then
					too_slow[$kind]="started in ${last_secs[$kind]} s with ${last_n[$kind]} tenants: at that rate $n would take more than $startup_limit s, so it was not started with $n or more"
					skip_from[$kind]=$n
					continue
				fi
				dir="$out/edge-tenants-$n"
				t0=$(date +%s%N)
				start_server "$kind" "$dir" "$n" keyedge.test ecdsa
				secs=$(ready "$kind" "$dir" "$n" keyedge.test)
				rss=$(rss_kib "$srv_pid")
				stop_server
				echo "$kind $n $round $secs $rss" | tee -a "$res/startup.txt"
				last_secs[$kind]=$secs last_n[$kind]=$n
			done
		done
	done
	for kind in "${!too_slow[@]}"; do
		echo "$kind ${too_slow[$kind]}" | tee -a "$res/startup-skipped.txt"
	done

fi
if runs 6; then
	echo
	echo "== scenario 6: memory per cached tenant (keyedge, $many-tenant keystore, $cache_n tenants loaded), $rounds rounds"
	heap() { curl -s "http://127.0.0.1:$mport/metrics" | awk '/^go_memstats_heap_inuse_bytes / {print $2}'; }
	echo "round rss_before_kib rss_after_kib heap_before heap_after misses" >"$res/cache.txt"
	for round in $(seq "$rounds"); do
		t0=$(date +%s%N)
		start_server keyedge "$kmany" "$many" keyedge.test ecdsa
		ready keyedge "$kmany" 1 keyedge.test >/dev/null
		rss0=$(rss_kib "$srv_pid") heap0=$(heap)
		"${pin1[@]}" bin/edgebench -addr "127.0.0.1:$port" -mode handshake -curves X25519 -tenants "$cache_n" -dist seq \
			-requests "$cache_n" -duration 600s -c "$conc" -ca "$kmany/testca.pem" -metrics "http://127.0.0.1:$mport/metrics" \
			-label "cache fill" -scenario "6 memory" -json "$res/cache-r$round.json" -q >"$res/cache-r$round.txt"
		rss1=$(rss_kib "$srv_pid") heap1=$(heap)
		misses=$(grep -o 'keyedge_keystore_lookups_total{result="miss"} +[0-9]*' "$res/cache-r$round.txt" | grep -o '[0-9]*$' || echo 0)
		stop_server
		echo "$round $rss0 $rss1 $heap0 $heap1 $misses" | tee -a "$res/cache.txt"
	done

fi
if runs 5; then
	echo
	echo "== scenario 5: keyless vs local signing (bench/keyless.sh)"
	DURATION=$duration ROUNDS=$rounds bash bench/keyless.sh >"$res/keyless.txt" 2>&1 || {
		tail -20 "$res/keyless.txt"
		exit 1
	}
	sed -n '/^== summary/,$p' "$res/keyless.txt"

fi
echo
echo "== summary: medians (min–max) over $rounds rounds; JSON, text and SVG plots in $res"
summary13 | tee "$res/summary.md"
{
	if runs 4; then
		echo
		echo "### 4 start-up: seconds to the first response for the last tenant, and RSS then (median, min–max of $rounds)"
		echo
		echo "| server | tenants | start-up s | RSS MiB | RSS per certificate KiB (vs the smallest size) |"
		echo "|---|---:|---:|---:|---:|"
		awk "$awk_med"'
			NR > 1 {k = $1 " " $2; s[k] = s[k] " " $4; r[k] = r[k] " " $5; if (!(k in seen)) {seen[k] = 1; order[++m] = k}}
			END {
				for (i = 1; i <= m; i++) {
					split(order[i], kn, " "); split(med(s[order[i]]), S, "|"); split(med(r[order[i]]), R, "|")
					if (!(kn[1] in base)) {base[kn[1]] = R[1]; basen[kn[1]] = kn[2]; per = "–"}
					else per = sprintf("%.1f", (R[1] - base[kn[1]]) / (kn[2] - basen[kn[1]]))
					printf "| %s | %d | %.3f (%.3f–%.3f) | %.1f (%.1f–%.1f) | %s |\n", kn[1], kn[2], S[1], S[2], S[3], R[1] / 1024, R[2] / 1024, R[3] / 1024, per
				}
			}' "$res/startup.txt"
		[ -f "$res/startup-skipped.txt" ] && sed 's/^/- not measured further: /' "$res/startup-skipped.txt"
	fi
	if runs 6; then
		echo
		echo "### 6 keyedge memory per cached tenant ($cache_n distinct names, keys opened), per round"
		echo
		echo "| round | tenants loaded (keystore misses) | RSS before → after MiB | RSS per tenant KiB | Go heap in use before → after MiB | heap per tenant KiB |"
		echo "|---:|---:|---:|---:|---:|---:|"
		awk 'NR > 1 && $6 > 0 {printf "| %d | %d | %.1f → %.1f | %.2f | %.1f → %.1f | %.2f |\n", $1, $6, $2/1024, $3/1024, ($3-$2)/$6, $4/1048576, $5/1048576, ($5-$4)/1024/$6}' "$res/cache.txt"
	fi
	if runs 7; then
		h2load_summary
	fi
} | tee -a "$res/summary.md"
echo
echo "matrix took $(($(date +%s) - started)) s"
