#!/usr/bin/env bash
# make demo (until the edge lands): a keystore of 1,000 generated tenants
# in a temp dir, and what keyctl shows about a few of them.
set -euo pipefail
bin="$(cd "$(dirname "$0")/.." && pwd)/bin"
dir="$(mktemp -d -t keyedge-demo.XXXXXX)"
cd "$dir"
echo "demo keystore in $dir"
"$bin/keyctl" init
"$bin/keyctl" gen-tenants --count 1000 --wildcard-every 10 --rsa-every 100
for n in t1.keyedge.test t100.keyedge.test www.t10.keyedge.test; do
	echo; echo "\$ keyctl show $n"; "$bin/keyctl" show "$n"
done
echo; echo "\$ keyctl ls (first 3 of $("$bin/keyctl" ls | wc -l))"; "$bin/keyctl" ls | sed -n 1,3p
echo; echo "try: cd $dir && $bin/keyctl show t42.keyedge.test"
