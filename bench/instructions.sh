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
# GODEBUG=cpu.rdtscp=off: valgrind 3.19 does not decode RDTSCP, which Go's
# runtime uses for cputicks (lock spinning, in sysmon too); with it off the
# runtime uses a fenced RDTSC. asyncpreemptoff=1: the runtime's preemption
# signals trip an assertion in callgrind's signal handling. GOMAXPROCS=1
# keeps the runs comparable. A run that fails anyway is run again, up to 8
# times, and says so.
set -euo pipefail
cd "$(dirname "$0")"
rounds=${1:-3}
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/bench" .
libs=(raw raw-keyed saferetry go-retryablehttp go-retryablehttp-keyed)

count() { # lib n: instructions of one whole run
	local lib=$1 n=$2 try collected
	for try in 1 2 3 4 5 6 7 8; do
		if GODEBUG=cpu.rdtscp=off,asyncpreemptoff=1 GOMAXPROCS=1 valgrind --tool=callgrind --callgrind-out-file="$work/cg" \
			"$work/bench" -only "$lib" -n "$n" >"$work/log" 2>&1 &&
			! grep -qi 'unrecognised instruction' "$work/log"; then
			collected=$(awk '/Collected/ {gsub(",", "", $4); print $4}' "$work/log")
			if [ -n "$collected" ]; then
				echo "$collected"
				return
			fi
		fi
		echo "instructions.sh: $lib -n $n: run $try failed, running it again" >&2
	done
	echo "instructions.sh: $lib -n $n failed 8 times; last log:" >&2
	cat "$work/log" >&2
	exit 1
}

[ "$rounds" -ge 1 ] 2>/dev/null || { echo "instructions.sh: rounds must be a number, 1 or more" >&2; exit 2; }
for r in $(seq "$rounds"); do
	for lib in "${libs[@]}"; do
		small=$(count "$lib" 500)
		large=$(count "$lib" 3500)
		if [ "$large" -le "$small" ]; then
			echo "instructions.sh: $lib: 3,500 requests counted $large, 500 counted $small" >&2
			exit 1
		fi
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
