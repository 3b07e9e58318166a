#!/bin/sh
# The mock-cluster stall check of 9bdd0d3 (perf/FINDINGS.md, issue 20): 16
# partitions, 500,000 records of 100 B produced before k2mc starts, `k2mc -e
# -o beginning -q` into a fresh memcached -t 1; prints the summary's "since
# assignment" time and k2mc's CPU per record, one line per binary per round,
# the binaries in turns.
#
#   perf/mock_tail.sh ROUNDS K2MC_BIN... (run from the top of the tree)
set -eu
rounds=$1
shift
tmp=$(mktemp -d /tmp/k2mc-mock-tail.XXXXXX)
mcport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
r=1
n=0
while [ "$r" -le "$rounds" ]; do
	for bin in "$@"; do
		# a fresh file per run: nothing of an earlier mock's output is read
		n=$((n + 1))
		rm -f "$tmp/mock.out"
		build/k2mc-mock --topic events:16 --produce 500000 --keys 200000 -q \
			>"$tmp/mock.out" 2>"$tmp/mock.err" &
		mock=$!
		until grep -q '^produced=' "$tmp/mock.out" 2>/dev/null; do
			kill -0 "$mock" || { cat "$tmp/mock.err"; exit 1; }
			sleep 0.1
		done
		boot=$(sed -n 's/^bootstrap=//p' "$tmp/mock.out")
		memcached -u nobody -l 127.0.0.1 -p "$mcport" -U 0 -t 1 &
		mc=$!
		python3 -c 'import socket, sys, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit(1)' "$mcport"
		/usr/bin/time -f '%U %S' -o "$tmp/time" "$bin" -b "$boot" -t events -G tail-$r \
			-m "127.0.0.1:$mcport" -e -o beginning -q 2>"$tmp/k2mc.err" || { echo "k2mc -b '$boot' failed:"; head -5 "$tmp/k2mc.err"; }
		since=$(sed -n 's/.*; \([0-9.]*\)s since assignment.*/\1/p' "$tmp/k2mc.err")
		cpu=$(awk '{printf "%.3f", ($1 + $2) / 500000 * 1e6}' "$tmp/time")
		echo "round $r $bin: ${since}s since assignment, ${cpu} CPU-us/record"
		kill "$mc" "$mock"
		wait "$mc" "$mock" 2>/dev/null || true
	done
	r=$((r + 1))
done
rm -rf "$tmp"
