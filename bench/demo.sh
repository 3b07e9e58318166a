#!/usr/bin/env bash
# make demo: the main job on the embedded default. Starts the mock Kafka
# cluster (its own process) and a memcached on free loopback ports, produces
# records, runs k2mc -e, checks a sample of keys, and stops what it started.
# K2MC_KAFKA=real (make demo KAFKA=real): the same on a real Apache Kafka
# broker (tests/kafka/kafka-broker, K2MC_KAFKA_VERSION, jars from make kafka),
# to which k2mc-mock -b only produces.
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA=${K2MC_KAFKA:-mock}
case $KAFKA in
mock | real) ;;
*) echo "demo: K2MC_KAFKA=$KAFKA: expected mock or real" >&2; exit 2 ;;
esac

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

produce=(--topic "events:$PARTITIONS" --produce "$RECORDS" --keys "$KEYS"
	--value-size "$VALUE_SIZE" --tombstones 2 --expect "$work/expect.txt")
if [ "$KAFKA" = real ]; then
	# The launcher stays until SIGTERM, then stops its broker JVM and removes
	# its log directory; the JVM also dies with the launcher (its head).
	tests/kafka/kafka-broker >"$work/broker.out" 2>"$work/broker.err" &
	launcher=$!
	pids+=($launcher)
	wait_for 180 bash -c "grep -q '^ready\$' '$work/broker.out' || ! kill -0 $launcher"
	grep -q '^ready$' "$work/broker.out" ||
		{ echo "demo: the Kafka broker did not start:" >&2; cat "$work/broker.err" >&2; exit 1; }
	bootstrap=$(sed -n 's/^bootstrap=//p' "$work/broker.out")
	echo "demo: Apache Kafka $(sed -n 's/^version=//p' "$work/broker.out") at $bootstrap" \
		"(broker pid $(sed -n 's/^pid=\([0-9]*\).*/\1/p' "$work/broker.out"), ready" \
		"$(sed -n 's/^start_ms=//p' "$work/broker.out") ms after its start)"
	echo "demo: producing $RECORDS records over $KEYS keys to $PARTITIONS partitions"
	# -b: creates the topic on the broker, produces, and exits once acknowledged
	build/k2mc-mock -b "$bootstrap" "${produce[@]}" --exit-after-produce >"$work/mock.out"
	# librdkafka's fetch defaults: a real broker answers a fetch as soon as
	# records are there
	fetch=()
else
	build/k2mc-mock "${produce[@]}" >"$work/mock.out" &
	pids+=($!)
	wait_for 30 grep -q '^bootstrap=' "$work/mock.out"
	bootstrap=$(sed -n 's/^bootstrap=//p' "$work/mock.out")
	echo "demo: mock Kafka cluster at $bootstrap; producing $RECORDS records over $KEYS keys" \
		"to $PARTITIONS partitions"
	wait_for 120 grep -q '^expect=' "$work/mock.out"
	# The mock broker holds each fetch for the whole fetch.wait.max.ms (500 ms
	# by default) even when records are there; a real broker answers at once.
	fetch=(-X fetch.wait.max.ms=10)
fi
grep '^produced=' "$work/mock.out" | sed 's/^/demo: /'

args=(-b "$bootstrap" -t events -G demo -m "127.0.0.1:$mc_port" --writers "$WRITERS"
	"${fetch[@]}" -e)
echo "demo: k2mc ${args[*]}"
build/k2mc "${args[@]}" --stats-interval-ms 1000

echo "demo: checking a sample of keys against the last record of each key"
build/k2mc-verify -m "127.0.0.1:$mc_port" --expect "$work/expect.txt" --sample 100
