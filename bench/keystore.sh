#!/usr/bin/env bash
# bench/keystore.sh (make bench-million; make bench with TENANTS=100000): generate a keystore of TENANTS test
# tenants and measure it with bench/keystorebench: Open time, cold and
# warm lookup latency, a cold tenant's first signature, heap per cached
# tenant. A 1,000-tenant keystore is measured the same way, so Open time
# can be compared across tenant counts. Figures: bench/RESULTS.md.
#
# Environment:
#   TENANTS      tenants to generate (default 1000000; BENCH_QUICK=1: 100000)
#   WORKDIR      where to generate them (default bench/_out/keystore-$TENANTS);
#                reused when its GENERATED marker records the same count,
#                origin and flags
#   N            cold lookups per measurement (default 10000)
#   SIGN_N       cold lookup + key + sign measurements (default 5000)
#   CACHE        tenants loaded for the heap-per-tenant figure (default 100000)
#   SEED         seed of the random name samples (default 1)
#   DROP_CACHES  auto (default: when root with a writable
#                /proc/sys/vm/drop_caches), 1, or 0
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	tenants=${TENANTS:-100000}
else
	tenants=${TENANTS:-1000000}
fi
work=${WORKDIR:-$out/keystore-$tenants}
small="$out/keystore-1000"
n=${N:-10000}
sign_n=${SIGN_N:-5000}
cache=${CACHE:-100000}
seed=${SEED:-1}

echo "== machine"
print_machine
echo "filesystem: $(df -T "$out" | awk 'NR==2 {print $2 " on " $1 ", " $7}')"

drop=${DROP_CACHES:-auto}
if [ "$drop" = auto ]; then
	drop=0
	# -w is false on a read-only /proc/sys; nothing is dropped here, so
	# the first figures are taken with the page cache as it is.
	if [ "$(id -u)" = 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
		drop=1
	fi
fi
if [ "$drop" = 1 ]; then
	echo "page cache: can be dropped: cold figures are measured with it warm and with it dropped (disk)"
	dropflag=-drop-caches
else
	echo "page cache: cannot be dropped here: page cache warm, no disk-cold figures"
	dropflag=
fi

echo
echo "== build"
go build -o bin/keyctl ./cmd/keyctl
echo "bin/keyctl"

echo
echo "== generate"
gen_tenants "$small" 1000 --wildcard-every 10 --rsa-every 1000
gen_tenants "$work" "$tenants" --wildcard-every 10 --rsa-every 1000

echo
echo "== measure"
# Built here rather than above so a rerun over an existing keystore
# measures the current code.
go build -o bin/keystorebench ./bench/keystorebench
# measure DIR COUNT NAME [flags]: run keystorebench, keep its table and JSON.
measure() {
	local dir=$1 count=$2 name=$3
	shift 3
	echo
	echo "-- $count tenants: bin/keystorebench -keystore $dir/keystore -names $count $* $dropflag"
	bin/keystorebench -keystore "$dir/keystore" -fleet-key "$dir/fleet.key" -names "$count" \
		-seed "$seed" -json "$out/$name.json" -label "$count tenants" "$@" $dropflag | tee "$out/$name.txt"
}
measure "$small" 1000 keystore-1000 -n 1000 -sign-n 1000 -cache 990 -cache-keys 990
measure "$work" "$tenants" "keystore-$tenants" -n "$n" -sign-n "$sign_n" -cache "$cache"

echo
echo "== summary (JSON and tables in $out)"
for f in "$out/keystore-1000.txt" "$out/keystore-$tenants.txt"; do
	grep '^summary:' "$f"
done
