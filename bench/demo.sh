#!/usr/bin/env bash
# make demo: the main job on the embedded default. Starts the mock Kafka
# cluster (its own process) and a memcached on free loopback ports, produces
# records, runs k2mc -e, checks a sample of keys, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

RECORDS=${RECORDS:-300000}
KEYS=${KEYS:-100000}
PARTITIONS=${PARTITIONS:-16}
VALUE_SIZE=${VALUE_SIZE:-100}
WRITERS=${WRITERS:-2}

work=$(mktemp -d /tmp/k2mc-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
	# bind port 0 and let the kernel choose; a race with another binder
	# is possible but memcached then fails loudly below
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # deadline_seconds command...
	local deadline=$((SECONDS + $1)); shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || { echo "demo: timed out waiting for: $*" >&2; return 1; }
		sleep 0.1
	done
}

mc_port=$(free_port)
memcached -u nobody -l 127.0.0.1 -p "$mc_port" -U 0 -m 1024 &
pids+=($!)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mc_port" 2>/dev/null
echo "demo: memcached on 127.0.0.1:$mc_port (pid ${pids[0]})"

build/k2mc-mock --topic "events:$PARTITIONS" --produce "$RECORDS" --keys "$KEYS" \
	--value-size "$VALUE_SIZE" --tombstones 2 --expect "$work/expect.txt" >"$work/mock.out" &
pids+=($!)
wait_for 30 grep -q '^bootstrap=' "$work/mock.out"
bootstrap=$(sed -n 's/^bootstrap=//p' "$work/mock.out")
echo "demo: mock Kafka cluster at $bootstrap; producing $RECORDS records over $KEYS keys" \
	"to $PARTITIONS partitions"
wait_for 120 grep -q '^expect=' "$work/mock.out"
grep '^produced=' "$work/mock.out" | sed 's/^/demo: /'

# The mock broker holds each fetch for the whole fetch.wait.max.ms (500 ms by
# default) even when records are there; a real broker answers at once.
args=(-b "$bootstrap" -t events -G demo -m "127.0.0.1:$mc_port" --writers "$WRITERS"
	-X fetch.wait.max.ms=10 -e)
echo "demo: k2mc ${args[*]}"
build/k2mc "${args[@]}" --stats-interval-ms 1000

echo "demo: checking a sample of keys against the last record of each key"
build/k2mc-verify -m "127.0.0.1:$mc_port" --expect "$work/expect.txt" --sample 100
