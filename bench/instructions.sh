#!/usr/bin/env bash
# Instructions per request on the happy path (1 KiB JSON POST, keep-alive,
# loopback, server in the same process), counted by valgrind's callgrind,
# a figure that does not move with the machine's load.
#
#   cd bench && ./instructions.sh [rounds]
#
# Each library sends 500 and then 3,500 sequential requests; the difference
# of the two counts / 3,000 is the cost of one request, start-up and
# shut-down cancelled out. The libraries take turns within each round;
# the script prints each round and then the median per library and its
# ratio to raw net/http and to raw net/http with a key set by hand.
# GOMAXPROCS=1: valgrind 3.19 cannot run Go's RDTSCP under contention; a
# run that meets an instruction valgrind does not know is run again.
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-3}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/bench" .
libs=(raw raw-keyed saferetry go-retryablehttp go-retryablehttp-keyed)

count() { # lib n: instructions of one whole run
	local lib=$1 n=$2 try
	for try in 1 2 3 4 5 6 7 8; do
		if GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
			"$work/bench" -only "$lib" -n "$n" >"$work/log" 2>&1 &&
			! grep -qi 'unrecognised instruction' "$work/log"; then
			grep 'Collected' "$work/log" | awk '{gsub(",", "", $4); print $4}'
			return
		fi
	done
	echo "instructions.sh: $lib -n $n failed 8 times; last log:" >&2
	cat "$work/log" >&2
	exit 1
}

for r in $(seq "$rounds"); do
	for lib in "${libs[@]}"; do
		small=$(count "$lib" 500)
		large=$(count "$lib" 3500)
		per=$(((large - small) / 3000))
		echo "round $r $lib $per"
		echo "$lib $per" >>"$work/all"
	done
done

awk '
	{ v[$1] = v[$1] " " $2 }
	END {
		n = split("raw raw-keyed saferetry go-retryablehttp go-retryablehttp-keyed", order, " ")
		for (i = 1; i <= n; i++) {
			k = split(substr(v[order[i]], 2), xs, " ")
			# median by insertion sort
			for (a = 2; a <= k; a++) { x = xs[a]; b = a - 1; while (b >= 1 && xs[b] > x) { xs[b+1] = xs[b]; b-- } xs[b+1] = x }
			med[order[i]] = (k % 2) ? xs[(k+1)/2] : (xs[k/2] + xs[k/2+1]) / 2
			lo[order[i]] = xs[1]; hi[order[i]] = xs[k]
		}
		printf "\n| client | instructions per request, median [min–max] | × raw | × raw + key |\n|---|---:|---:|---:|\n"
		for (i = 1; i <= n; i++) {
			l = order[i]
			printf "| %s | %d [%d–%d] | %.3f | %.3f |\n", l, med[l], lo[l], hi[l], med[l] / med["raw"], med[l] / med["raw-keyed"]
		}
	}' "$work/all"
