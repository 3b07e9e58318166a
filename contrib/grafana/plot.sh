#!/bin/bash
# make dashboard-png: a real run drawn as contrib/grafana/k2mc.json's panels.
#
#   contrib/grafana/plot.sh OUT.png [SECONDS]
#
# Starts two memcached servers and the mock Kafka cluster (build/k2mc-mock)
# on free loopback ports, produces into 8 partitions at a steady rate while
# build/k2mc loads them (--mc-eject, --stats-json), freezes the first server
# for 8 s (SIGSTOP: rings fill, lag and latency rise, the batch times out),
# later stops the second for good (connects refused; --mc-eject moves its
# keys), then lets k2mc catch up, stops everything it started (by PID), and
# draws OUT.png from the --stats-json with contrib/grafana/plot.py (gnuplot).
# Not a benchmark: the rates are whatever this machine gives.
set -euo pipefail
out=${1:?usage: plot.sh OUT.png [SECONDS]}
secs=${2:-60}
cd "$(dirname "$0")/../.."
k2mc=${K2MC_BIN:-build/k2mc}
mock=${K2MC_MOCK:-build/k2mc-mock}
work=$(mktemp -d /tmp/k2mc-plot.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
user=(); [ "$(id -u)" -ne 0 ] || user=(-u nobody)
pa=$(free_port); pb=$(free_port)
memcached "${user[@]}" -l 127.0.0.1 -p "$pa" -U 0 -m 256 & mca=$!; pids+=("$mca")
memcached "${user[@]}" -l 127.0.0.1 -p "$pb" -U 0 -m 256 & mcb=$!; pids+=("$mcb")
rate=20000
"$mock" --topic events:8 --produce $((rate * secs * 3 / 4)) --rate "$rate" --keys 200000 \
	--seed 13 > "$work/mock.out" 2> "$work/mock.err" & pids+=("$!")
for _ in $(seq 100); do grep -q '^bootstrap=' "$work/mock.out" 2>/dev/null && break; sleep 0.1; done
bootstrap=$(sed -n 's/^bootstrap=//p' "$work/mock.out" | head -1)
[ -n "$bootstrap" ] || { echo "plot.sh: the mock cluster did not start" >&2; exit 1; }
"$k2mc" -b "$bootstrap" -t events -G dashboard -m "127.0.0.1:$pa,127.0.0.1:$pb" --mc-eject \
	--stats-interval-ms 1000 --stats-json "$work/stats.json" 2> "$work/k2mc.err" & k=$!; pids+=("$k")
echo "plot.sh: running for about $((secs + 10)) s (log: $work/k2mc.err)"
sleep $((secs / 4))
kill -STOP "$mca"; sleep 8; kill -CONT "$mca"
sleep $((secs / 4))
kill "$mcb"
sleep $((secs / 2 - 8 + 10))
kill -TERM "$k"; wait "$k" || true
/usr/bin/python3 contrib/grafana/plot.py "$work/stats.json" "$out" \
	--title "k2mc: 8 partitions at ${rate} records/s; memcached A frozen 8 s, B stopped (--mc-eject)"
cp "$work/stats.json" "${out%.png}.stats.json"
