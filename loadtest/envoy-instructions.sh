#!/usr/bin/env bash
# envoy-instructions.sh counts the instructions Envoy executes per request through the load
# test's stack, with one server behind its ext_proc filter, under valgrind's cachegrind.
#
# Envoy's CPU time per request moves by several percent from run to run on a shared machine;
# the count of instructions it executes for the same requests moves by a few tenths of a
# percent at most, so differences of 1% between answers can be read from a single run. Instructions are
# not time (cache misses, branch mispredictions and the kernel's work are not in them), so the
# count ranks what Envoy does for each answer, and CPU time stays the figure of the published
# comparisons (docs/benchmarks.md).
#
# Usage: loadtest/envoy-instructions.sh SERVER [loadtest run flags...]
#   SERVER is partroute, noop or floor; the flags are partroute loadtest run's (-set-by,
#   -proto, -floor-spread, -replica-settings, ...). It runs the stack twice, with N1 and then N2
#   measured requests at RATE per second, each time with a fresh Envoy under cachegrind, and
#   prints the difference of the two totals over N2 - N1: the instructions of one request, with
#   Envoy's start, its warm-up and its shutdown cancelled out. Envoy's idle work over the longer
#   run's extra seconds stays in (about 0.2 million instructions a second here, 5,000 a request
#   at 40 per second, the same in every arm).
#
# Run it from the repository root. Environment: PARTROUTE (default bin/partroute), ENVOY_BIN
# (the Envoy binary, as for the tests; default the one `make envoy` installs), N1 (100), N2
# (600), RATE (40), VALGRIND (valgrind).
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 SERVER [partroute loadtest run flags...]" >&2
	exit 2
fi
server=$1
shift

partroute=${PARTROUTE:-bin/partroute}
n1=${N1:-100}
n2=${N2:-600}
rate=${RATE:-40}
valgrind=${VALGRIND:-valgrind}
envoy=${ENVOY_BIN:-}
if [ -z "$envoy" ]; then
	envoy=$(ls .cache/envoy/lib/python3*/site-packages/envoy/_bin/envoy 2>/dev/null | head -n 1 || true)
fi
if [ -z "$envoy" ] || [ ! -x "$envoy" ]; then
	echo "$0: no Envoy binary${envoy:+ at $envoy}: run make envoy, or set ENVOY_BIN" >&2
	exit 1
fi
if ! command -v "$valgrind" >/dev/null; then
	echo "$0: no $valgrind on the PATH: install valgrind (apt-get install valgrind)" >&2
	exit 1
fi
if [ ! -x "$partroute" ]; then
	echo "$0: no $partroute: run make build, or set PARTROUTE" >&2
	exit 1
fi
if [ "$n2" -le "$n1" ]; then
	echo "$0: N2 ($n2) must be above N1 ($n1)" >&2
	exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The load test starts Envoy from ENVOY_BIN: a wrapper that runs it under cachegrind, which
# writes its totals when Envoy exits. Only instructions are counted (no cache simulation),
# which keeps Envoy fast enough to start within the load test's minute.
cat >"$work/envoy" <<EOF
#!/bin/sh
exec "$valgrind" --tool=cachegrind --cache-sim=no --cachegrind-out-file="$work/out.\$\$" "$envoy" "\$@"
EOF
chmod +x "$work/envoy"

# total runs the stack for n measured requests and prints the instructions Envoy executed.
total() {
	local n=$1 log="$work/run-$1.txt"
	shift
	rm -f "$work"/out.*
	if ! ENVOY_BIN="$work/envoy" "$partroute" loadtest run -quiet -target http -server "$server" \
		-mode open -rate "$rate" -c 8 -warmup 1s -n "$n" -d 10m "$@" >"$log" 2>&1; then
		echo "$0: partroute loadtest run failed:" >&2
		cat "$log" >&2
		exit 1
	fi
	# The report's row of the run: name, mode, load, requests, errors, ...
	local errors
	errors=$(awk '$1 ~ /^envoy\+/ && $2 == "open" { print $5 }' "$log")
	if [ "$errors" != "0" ]; then
		echo "$0: the run had ${errors:-an unknown number of} errors:" >&2
		cat "$log" >&2
		exit 1
	fi
	local out
	out=$(ls "$work"/out.* 2>/dev/null | head -n 1 || true)
	if [ -z "$out" ]; then
		echo "$0: cachegrind wrote no totals (did Envoy exit cleanly?); the run's output:" >&2
		cat "$log" >&2
		exit 1
	fi
	awk '$1 == "summary:" { print $2 }' "$out"
}

t1=$(total "$n1" "$@")
t2=$(total "$n2" "$@")
per=$(( (t2 - t1) / (n2 - n1) ))
echo "$server${*:+ $*}: $per instructions per request (Envoy, $((n2 - n1)) requests at $rate/s; totals $t1 and $t2)"
