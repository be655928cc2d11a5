#!/usr/bin/env bash
# bench/chromium.sh: an outside-in check of a running `keyedge demo` with
# headless Chromium, a client nobody here wrote (not part of make test or
# CI; installs chromium and libnss3-tools with apt-get when missing).
#
#   bin/keyedge demo --listen 127.0.0.1:15000 &   # prints its DEMO_DIR
#   bench/chromium.sh DEMO_DIR
#
# It points t2.keyedge.test at a browsercheck origin (PORT_BASE+1: a
# page, 64 MiB down and up, a WebSocket echo, a body cut off mid-way) and
# t3.keyedge.test at a closed port (PORT_BASE+2), with keyctl, in the
# demo's keystore; trusts the demo CA in an NSS database in a temp HOME;
# maps *.keyedge.test to the edge. Then, over HTTP/2 and over HTTP/3
# (--origin-to-force-quic-on: Chromium uses HTTP/3 found through Alt-Svc
# only with a publicly trusted certificate), it runs browsercheck's
# checks in a tab (DevTools on PORT_BASE+90), and loads a page of t1
# and t100 (RSA), an unknown name and t3, printing from Chromium's
# NetLog what was negotiated: TLS version, ALPN, key exchange group
# (X25519MLKEM768 expected), the certificate chosen by SNI, alerts.
# Exits non-zero if a check failed.
#
# Environment: PORT_BASE 15000 (the demo's --listen port).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

demo=$(cd "${1:?usage: bench/chromium.sh DEMO_DIR (printed by keyedge demo)}" && pwd)
port=${PORT_BASE:-15000}
tmp=$(mktemp -d /tmp/keyedge-chromium-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; }; }
need chromium chromium
need certutil libnss3-tools
go build -o "$tmp/" ./cmd/keyctl ./bench/browsercheck

"$tmp/browsercheck" origin "127.0.0.1:$((port + 1))" &
pids+=($!)
store=(--keystore "$demo/keystore" --fleet-key "$demo/fleet.key")
"$tmp/keyctl" origin set t2.keyedge.test "http://127.0.0.1:$((port + 1))" "${store[@]}" >/dev/null
"$tmp/keyctl" origin set t3.keyedge.test "http://127.0.0.1:$((port + 2))" "${store[@]}" >/dev/null
mkdir -p "$tmp/home/.pki/nssdb"
certutil -d "sql:$tmp/home/.pki/nssdb" -N --empty-password
certutil -d "sql:$tmp/home/.pki/nssdb" -A -t C,, -n "keyedge demo CA" -i "$demo/testca.pem"
sleep 2 # the edge follows the keystore's change journal

# chrome NAME ARGS...: headless Chromium with its NetLog in $tmp/NAME.json;
# it execs: call it in a subshell ($(...) or &).
chrome() {
	local name=$1
	shift
	HOME="$tmp/home" exec chromium --headless=new --no-sandbox --disable-gpu --no-first-run \
		--disable-background-networking --disable-component-update --disable-sync \
		--user-data-dir="$tmp/profile-$name" \
		--host-resolver-rules="MAP *.keyedge.test 127.0.0.1:$port" \
		--log-net-log="$tmp/$name.json" "$@" 2>>"$tmp/chromium.log"
}

# summary NAME: the NetLog's lines for *.keyedge.test.
summary() { "$tmp/browsercheck" netlog "$tmp/$1.json" | grep -v -E 'google(apis)?\.com' | uniq | sed 's/^/     /'; }

failed=0
for proto in h2 h3; do
	quic=()
	if [ "$proto" = h3 ]; then quic=(--origin-to-force-quic-on=t2.keyedge.test:443); fi
	echo "== t2.keyedge.test over $proto: browsercheck's checks in a tab"
	chrome "t2-$proto" "${quic[@]}" --remote-debugging-port=$((port + 90)) about:blank &
	cpid=$!
	for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + 90))/json/version" >/dev/null && break; sleep 0.2; done
	"$tmp/browsercheck" page "127.0.0.1:$((port + 90))" https://t2.keyedge.test/ || failed=1
	kill "$cpid"
	wait "$cpid" || true
	summary "t2-$proto" | grep -E 'TLS|QUIC (TLS|session)|certificate' | sort -u
done

# page NAME HOST PROTO: the DOM of https://HOST/ (or Chromium's error),
# and what the NetLog saw.
page() {
	local quic=()
	if [ "$3" = h3 ]; then quic=(--origin-to-force-quic-on="$2:443"); fi
	echo "== $2 over $3: $(chrome "$1" "${quic[@]}" --dump-dom "https://$2/" | sed -e 's/<[^>]*>//g' | tr -s '\n' ' ' | cut -c1-100)"
	summary "$1"
}
for proto in h2 h3; do
	page "t1-$proto" t1.keyedge.test "$proto"
	page "t100-$proto" t100.keyedge.test "$proto"
	page "unknown-$proto" unknown.keyedge.test "$proto"
	page "down-$proto" t3.keyedge.test "$proto"
done
exit $failed
