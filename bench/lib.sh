# bench/lib.sh: shell shared by bench/edge.sh, bench/keyless.sh,
# bench/keystore.sh and bench/matrix.sh. Source it after `set -euo pipefail`; it sets $root
# (the repository), cd's there, and sets $out (bench/_out).
#
# Processes are started as command prefixes, not functions, so that $!
# is the server's PID: "${pin0[@]}" is `taskset -c 0` (the server's
# core) and "${pin1[@]}" `taskset -c 1` (the load generator's), or
# nothing without taskset.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="$root/bench/_out"
mkdir -p "$out"

# The benchmark origin's address. Generated keystores record it as their
# tenants' origin, so every script that reuses them serves it here.
origin_addr=${ORIGIN_ADDR:-127.0.0.1:18460}

if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
	pinning="server on CPU 0; load generator and origin on CPU 1 (taskset)"
	pin0=(taskset -c 0)
	pin1=(taskset -c 1)
else
	pinning="none (no taskset, or one CPU): every process on every CPU"
	pin0=()
	pin1=()
fi

# print_machine: what the figures were measured on.
print_machine() {
	echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cpus:       $(nproc) x $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
	echo "memory:     $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
	echo "kernel:     $(uname -sr)"
	echo "go:         $(go version)"
	echo "commit:     $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')"
	echo "clock tick: $(getconf CLK_TCK 2>/dev/null || echo '?') Hz"
	echo "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min) before the run"
	echo "pinning:    $pinning"
}

# wait_port PORT: until something listens on 127.0.0.1:PORT (10 s).
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listening on 127.0.0.1:$1" >&2
	return 1
}

# gen_tenants DIR COUNT [keyctl gen-tenants flags...]: a keystore
# (keyctl init + gen-tenants) of COUNT tenants whose origin is
# $origin_addr, in DIR; reused when DIR/GENERATED records the same
# count, origin and flags.
gen_tenants() {
	local dir=$1 count=$2
	shift 2
	local marker="$dir/GENERATED"
	if [ -f "$marker" ] && grep -qx "count=$count" "$marker" && grep -qx "origin=http://$origin_addr" "$marker" &&
		{ [ $# = 0 ] || grep -qx "flags=$*" "$marker"; }; then
		echo "reusing $dir"
		sed 's/^/  /' "$marker"
		return
	fi
	rm -rf "$dir"
	mkdir -p "$dir"
	echo "generating $count tenants in $dir"
	local start end
	start=$(date +%s.%N)
	if ! (cd "$dir" && "$root/bin/keyctl" init >/dev/null &&
		"$root/bin/keyctl" gen-tenants --count "$count" --origin "http://$origin_addr" "$@" >gen.out 2>gen.err); then
		tail -5 "$dir/gen.err" >&2
		echo "generation failed" >&2
		exit 1
	fi
	end=$(date +%s.%N)
	local secs bytes apparent
	secs=$(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}')
	bytes=$(du -s -B1 "$dir/keystore" | cut -f1)
	apparent=$(du -s -B1 --apparent-size "$dir/keystore" | cut -f1)
	{
		echo "count=$count"
		echo "origin=http://$origin_addr"
		[ $# = 0 ] || echo "flags=$*"
		echo "generated_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "command=keyctl gen-tenants --count $count --origin http://$origin_addr $*"
		echo "wall_seconds=$secs"
		echo "tenants_per_second=$(awk -v n="$count" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')"
		echo "files=$(find "$dir/keystore" -type f | wc -l)"
		echo "name_files=$(find "$dir/keystore/names" -type f | wc -l)"
		echo "disk_bytes=$bytes ($(numfmt --to=iec "$bytes"))"
		echo "apparent_bytes=$apparent ($(numfmt --to=iec "$apparent"))"
		echo "keyctl: $(cat "$dir/gen.out")"
	} >"$marker"
	sed 's/^/  /' "$marker"
}

# edge_config FILE PORT METRICS_PORT [YAML...]: an edge.yaml beside a
# generated keystore (keystore, fleet.key), logging warnings only; the
# extra arguments are appended as lines.
edge_config() {
	local file=$1 port=$2 mport=$3
	shift 3
	{
		echo "# written by bench/$(basename "$0")"
		echo "listen: 127.0.0.1:$port"
		echo "metrics_listen: 127.0.0.1:$mport"
		echo "keystore: keystore"
		echo "fleet_key_file: fleet.key"
		echo "log_level: warn"
		echo "limits:"
		echo "  drain_timeout: 2s"
		for line in "$@"; do echo "$line"; done
	} >"$file"
}

# rss_kib PID: resident memory of PID and its children, KiB.
rss_kib() {
	ps -o rss= -p "$1" --ppid "$1" | awk '{s += $1} END {print s + 0}'
}
