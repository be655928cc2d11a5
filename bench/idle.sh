#!/usr/bin/env bash
# bench/idle.sh: memory per idle keep-alive TLS connection. N
# connections (bench/idleconns: TLS 1.3, X25519, a full handshake each),
# one request on each through the proxy to the origin, then all held
# open and idle; the server's RSS after minus its RSS before (after
# start-up and one request), divided by N. HTTP/1.1 and HTTP/2, keyedge
# beside nginx and HAProxy, same certificate (ECDSA P-256), same origin,
# interleaved round by round (keyedge nginx haproxy, h1 then h2).
# keyedge's Go figures (heap in use, goroutine stacks, goroutines) come
# from its /metrics, before and after. Figures: bench/RESULTS.md.
#
# Servers on CPU 0, idleconns and the origin on CPU 1 (taskset). Every
# measurement starts a fresh server. All connections come from
# 127.0.0.1, so keyedge runs with limits.max_conns_per_ip raised to
# 2 N (and max_conns to 4 N); the peers' connection limits and
# keep-alive timeouts are raised likewise (within `ulimit -Hn`, which must
# allow about 2 N + 2000: HAProxy takes two per maxconn).
#
# Environment: N 5000, ROUNDS 3, PROTOS "h1 h2", PEERS 1 (0: keyedge
# alone), SETTLE 2 (seconds between the last connection and the
# reading), PORT_BASE 19740 (the server; +10 its metrics, +20 the
# origin, whose address the keystore in bench/_out/idle-tenants-1 records), EDGE_YAML (extra lines for keyedge's
# edge.yaml, for A/B runs), LABEL (keyedge's label in the table),
# FORCE_GC 0 (1: keyedge's reading comes after four garbage collections,
# forced through its /debug/pprof/heap?gc=1, so its heap figures are the
# live heap and the stacks are what the collections left, not shrunk).
# The Go heap column is the heap in use, garbage and free spans with
# objects included; the allocated column is the heap's objects, live or
# not yet collected: live only with FORCE_GC=1.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

n=${N:-5000}
rounds=${ROUNDS:-3}
protos=${PROTOS:-"h1 h2"}
peers=${PEERS:-1}
settle=${SETTLE:-2}
port=${PORT_BASE:-19740}
mport=$((port + 10))
origin_addr=${ORIGIN_ADDR:-127.0.0.1:$((port + 20))}
label=${LABEL:-keyedge}
force_gc=${FORCE_GC:-0}
res="$out/idle"
rm -rf "$res"
mkdir -p "$res"

ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((2 * n + 2000)) ]; then
	echo "ulimit -n is $(ulimit -n): too few file descriptors for $n connections (the client and the server each need one per connection)" >&2
	exit 1
fi

echo "== machine"
print_machine
echo "runs:       $rounds rounds; $n connections per measurement; protocols $protos; file descriptors $(ulimit -n)"

go build -o bin/ ./cmd/keyedge ./cmd/keyctl ./cmd/edgebench ./bench/pemexport ./bench/idleconns

if [ "$peers" = 1 ] && ! { command -v nginx && command -v haproxy; } >/dev/null; then
	echo "nginx or haproxy missing: keyedge alone (bench/matrix.sh installs them)"
	peers=0
fi
if [ "$peers" = 1 ]; then
	echo "nginx:      $(nginx -v 2>&1 | sed 's/^nginx version: //')"
	echo "haproxy:    $(haproxy -v | head -1)"
fi

dir="$out/idle-tenants-1"
gen_tenants "$dir" 1 >/dev/null
name=t0.keyedge.test
if [ "$peers" = 1 ] && ! grep -qx 1 "$dir/pem.exported" 2>/dev/null; then
	bin/pemexport -keystore "$dir/keystore" -fleet-key "$dir/fleet.key" -tenants 1 -domain keyedge.test -out "$dir/pem"
	echo 1 >"$dir/pem.exported"
fi
pem="$dir/pem/$name.ecdsa.pem"

srv_pid= origin_pid= client_pid=
cleanup() {
	for p in $client_pid $srv_pid $origin_pid; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# Configurations: the peers' limits and timeouts sized for n idle
# connections held for minutes.
edge_config "$dir/idle-edge.yaml" "$port" "$mport" "  max_conns: $((4 * n))" "  max_conns_per_ip: $((2 * n))" \
	'min_tls_version: "1.3"' ${EDGE_YAML:+"$EDGE_YAML"}
[ "$force_gc" = 1 ] && echo "pprof: true" >>"$dir/idle-edge.yaml"
mkdir -p "$res/nginx/tmp"
cat >"$res/nginx/nginx.conf" <<CONF
# written by bench/idle.sh
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $((2 * n + 1000));
pid $res/nginx/nginx.pid;
error_log $res/nginx/error.log warn;
events { worker_connections $((2 * n + 1000)); }
http {
  access_log off;
  client_body_temp_path $res/nginx/tmp/body;
  proxy_temp_path $res/nginx/tmp/proxy;
  fastcgi_temp_path $res/nginx/tmp/fastcgi;
  uwsgi_temp_path $res/nginx/tmp/uwsgi;
  scgi_temp_path $res/nginx/tmp/scgi;
  keepalive_timeout 600s;
  ssl_protocols TLSv1.3;
  ssl_session_tickets off;
  ssl_session_cache off;
  upstream origin { server $origin_addr; keepalive 32; }
  server {
    listen 127.0.0.1:$port ssl http2;
    server_name $name;
    ssl_certificate $pem;
    ssl_certificate_key $pem;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
mkdir -p "$res/haproxy"
cat >"$res/haproxy/haproxy.cfg" <<CONF
# written by bench/idle.sh
global
  nbthread 1
  maxconn $((n + 1000))
  tune.ssl.cachesize 0
  ssl-default-bind-options ssl-min-ver TLSv1.3 no-tls-tickets
defaults
  mode http
  timeout connect 5s
  timeout client 600s
  timeout server 30s
  timeout http-keep-alive 600s
frontend fe
  bind 127.0.0.1:$port ssl crt $pem alpn h2,http/1.1
  default_backend origin
backend origin
  http-reuse always
  server origin $origin_addr
CONF

start_server() {
	case $1 in
	keyedge)
		"${pin0[@]}" bin/keyedge serve --config "$dir/idle-edge.yaml" 2>>"$res/keyedge.log" &
		;;
	nginx)
		"${pin0[@]}" nginx -p "$res/nginx" -e "$res/nginx/error.log" -c "$res/nginx/nginx.conf" 2>>"$res/nginx.log" &
		;;
	haproxy)
		"${pin0[@]}" haproxy -db -f "$res/haproxy/haproxy.cfg" 2>>"$res/haproxy.log" &
		;;
	esac
	srv_pid=$!
	echo "$name" >"$res/names"
	if ! "${pin1[@]}" bin/edgebench -addr "127.0.0.1:$port" -names "$res/names" -ca "$dir/testca.pem" -tls 1.3 \
		-ready-within 20s -q >/dev/null 2>&1; then
		echo "$1 not serving $name: $res/$1.log" >&2
		tail -5 "$res/$1.log" >&2
		exit 1
	fi
}

stop_server() {
	kill -TERM "$srv_pid" 2>/dev/null || true
	wait "$srv_pid" 2>/dev/null || true
	srv_pid=
}

# gostats: keyedge's heap in use, goroutine stacks in use (bytes),
# goroutines and heap allocated (bytes), from its /metrics.
gostats() {
	curl -s "http://127.0.0.1:$mport/metrics" | awk '
		/^go_memstats_heap_inuse_bytes / {h = $2} /^go_memstats_stack_inuse_bytes / {s = $2} /^go_goroutines / {g = $2}
		/^go_memstats_heap_alloc_bytes / {a = $2}
		END {printf "%d %d %d %d", h, s, g, a}'
}

# collect: four garbage collections in keyedge, for FORCE_GC=1 (a stack
# shrinks by half at most once per collection).
collect() {
	for _ in 1 2 3 4; do
		curl -sf -o /dev/null "http://127.0.0.1:$mport/debug/pprof/heap?gc=1"
	done
}

"${pin1[@]}" bin/edgebench -serve-origin "$origin_addr" 2>"$res/origin.log" &
origin_pid=$!
wait_port "${origin_addr##*:}"

kinds=(keyedge)
[ "$peers" = 1 ] && kinds+=(nginx haproxy)
echo "round proto server rss_before_kib rss_after_kib kib_per_conn heap_before heap_after stack_before stack_after goroutines_before goroutines_after alloc_before alloc_after" >"$res/idle.txt"
for round in $(seq "$rounds"); do
	for proto in $protos; do
		for kind in "${kinds[@]}"; do
			start_server "$kind"
			sleep 1
			[ "$kind" = keyedge ] && [ "$force_gc" = 1 ] && collect
			rss0=$(rss_kib "$srv_pid") go0="0 0 0 0"
			[ "$kind" = keyedge ] && go0=$(gostats)
			h2=()
			[ "$proto" = h2 ] && h2=(-h2)
			"${pin1[@]}" bin/idleconns -addr "127.0.0.1:$port" -name "$name" -ca "$dir/testca.pem" -n "$n" "${h2[@]}" \
				>"$res/client.out" 2>"$res/client.err" &
			client_pid=$!
			while ! grep -q '^open=' "$res/client.out"; do
				if ! kill -0 "$client_pid" 2>/dev/null; then
					echo "idleconns failed against $kind:" >&2
					cat "$res/client.err" >&2
					exit 1
				fi
				sleep 0.2
			done
			open=$(sed -n 's/^open=\([0-9]*\) .*/\1/p' "$res/client.out")
			if [ "$open" != "$n" ]; then
				echo "only $open of $n connections opened to $kind: $(cat "$res/client.out" "$res/client.err")" >&2
				exit 1
			fi
			sleep "$settle"
			[ "$kind" = keyedge ] && [ "$force_gc" = 1 ] && collect
			rss1=$(rss_kib "$srv_pid") go1="0 0 0 0"
			[ "$kind" = keyedge ] && go1=$(gostats)
			kill "$client_pid"
			wait "$client_pid" 2>/dev/null || true
			client_pid=
			if grep -q 'server closed' "$res/client.err"; then
				echo "$kind closed idle connections during the measurement: $(cat "$res/client.err")" >&2
				exit 1
			fi
			stop_server
			read -r h0 s0 g0 a0 <<<"$go0"
			read -r h1 s1 g1 a1 <<<"$go1"
			per=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN {printf "%.1f", (b - a) / n}')
			srvlabel=$kind
			[ "$kind" = keyedge ] && srvlabel=$label
			echo "$round $proto $srvlabel $rss0 $rss1 $per $h0 $h1 $s0 $s1 $g0 $g1 $a0 $a1" >>"$res/idle.txt"
			printf '%-8s %-3s %-28s RSS %6d → %6d KiB: %5s KiB per connection' "r$round" "$proto" "$srvlabel" "$rss0" "$rss1" "$per"
			[ "$kind" = keyedge ] && awk -v n="$n" -v h0="$h0" -v h1="$h1" -v s0="$s0" -v s1="$s1" -v g0="$g0" -v g1="$g1" -v a0="$a0" -v a1="$a1" \
				'BEGIN {printf "; heap %.1f (allocated %.1f), stacks %.1f KiB, %.2f goroutines per connection", (h1 - h0) / 1024 / n, (a1 - a0) / 1024 / n, (s1 - s0) / 1024 / n, (g1 - g0) / n}'
			echo
		done
	done
done

echo
echo "== summary: median (min–max) over $rounds rounds, $n idle connections, KiB per connection (RSS delta / N)"
echo
echo "| protocol | server | RSS KiB per connection | Go heap KiB per connection | Go heap allocated KiB per connection | goroutine stacks KiB per connection | goroutines per connection |"
echo "|---|---|---:|---:|---:|---:|---:|"
awk -v n="$n" 'NR > 1 {
		k = $2 "|" $3
		if (!(k in seen)) {seen[k] = 1; order[++m] = k}
		r[k] = r[k] " " $6
		if ($7 > 0) {h[k] = h[k] " " ($8 - $7) / 1024 / n; s[k] = s[k] " " ($10 - $9) / 1024 / n; g[k] = g[k] " " ($12 - $11) / n; al[k] = al[k] " " ($14 - $13) / 1024 / n}
	}
	function med(list, fmt,   a, c, i, j, t, mid) {
		c = split(list, a, " ")
		if (c == 0) return "–"
		for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (a[j] + 0 < a[i] + 0) {t = a[i]; a[i] = a[j]; a[j] = t}
		mid = c % 2 ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
		return sprintf(fmt " (" fmt "–" fmt ")", mid, a[1], a[c])
	}
	END {
		for (i = 1; i <= m; i++) {
			split(order[i], p, "|")
			printf "| %s | %s | %s | %s | %s | %s | %s |\n", p[1], p[2], med(r[order[i]], "%.1f"), med(h[order[i]], "%.1f"), med(al[order[i]], "%.1f"), med(s[order[i]], "%.1f"), med(g[order[i]], "%.2f")
		}
	}' "$res/idle.txt" | tee "$res/summary.md"
