#!/usr/bin/env bash
# bench/keystore.sh (make bench): generate a keystore of TENANTS test
# tenants and measure it with bench/keystorebench: Open time, cold and
# warm lookup latency, a cold tenant's first signature, heap per cached
# tenant. A 1,000-tenant keystore is measured the same way, so Open time
# can be compared across tenant counts. Figures: bench/RESULTS.md.
#
# Environment:
#   TENANTS      tenants to generate (default 1000000; BENCH_QUICK=1: 100000)
#   WORKDIR      where to generate them (default bench/_out/keystore-$TENANTS);
#                reused when its GENERATED marker records the same count
#   N            cold lookups per measurement (default 10000)
#   SIGN_N       cold lookup + key + sign measurements (default 5000)
#   CACHE        tenants loaded for the heap-per-tenant figure (default 100000)
#   SEED         seed of the random name samples (default 1)
#   DROP_CACHES  auto (default: when root with a writable
#                /proc/sys/vm/drop_caches), 1, or 0
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	tenants=${TENANTS:-100000}
else
	tenants=${TENANTS:-1000000}
fi
out="$root/bench/_out"
work=${WORKDIR:-$out/keystore-$tenants}
small="$out/keystore-1000"
n=${N:-10000}
sign_n=${SIGN_N:-5000}
cache=${CACHE:-100000}
seed=${SEED:-1}
mkdir -p "$out"

echo "== machine"
echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "cpus:       $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "memory:     $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "kernel:     $(uname -sr)"
echo "go:         $(go version)"
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

# gen DIR COUNT: a keystore of COUNT tenants in DIR/keystore, unless DIR
# already holds one (its GENERATED marker says count=COUNT).
gen() {
	local dir=$1 count=$2
	local marker="$dir/GENERATED"
	if [ -f "$marker" ] && grep -qx "count=$count" "$marker"; then
		echo "reusing $dir"
		sed 's/^/  /' "$marker"
		return
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	echo "generating $count tenants in $dir (keyctl gen-tenants --count $count --wildcard-every 10 --rsa-every 1000)"
	local start end
	start=$(date +%s.%N)
	if ! (cd "$dir" && "$root/bin/keyctl" init >/dev/null &&
		"$root/bin/keyctl" gen-tenants --count "$count" --wildcard-every 10 --rsa-every 1000 \
			>gen.out 2>gen.err); then
		tail -5 "$dir/gen.err" >&2
		echo "generation failed" >&2
		exit 1
	fi
	end=$(date +%s.%N)
	local secs files names bytes apparent
	secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
	files=$(find "$dir/keystore" -type f | wc -l)
	names=$(find "$dir/keystore/names" -type f | wc -l)
	bytes=$(du -s -B1 "$dir/keystore" | cut -f1)
	apparent=$(du -s -B1 --apparent-size "$dir/keystore" | cut -f1)
	{
		echo "count=$count"
		echo "generated_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "command=keyctl gen-tenants --count $count --wildcard-every 10 --rsa-every 1000"
		echo "wall_seconds=$secs"
		echo "tenants_per_second=$(awk -v n="$count" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')"
		echo "files=$files"
		echo "name_files=$names"
		echo "disk_bytes=$bytes ($(numfmt --to=iec "$bytes"))"
		echo "apparent_bytes=$apparent ($(numfmt --to=iec "$apparent"))"
		echo "keyctl: $(cat "$dir/gen.out")"
	} >"$marker"
	sed 's/^/  /' "$marker"
}

echo
echo "== generate"
gen "$small" 1000
gen "$work" "$tenants"

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
