#!/usr/bin/env bash
# Profiles one k2mc run: starts a memcached and the mock Kafka cluster (their
# own processes) on free loopback ports, produces RECORDS records, and runs
# k2mc -e under the chosen tool. Counts are per record so runs compare.
#   perf/profile.sh syscalls   strace -c -f: syscalls per record, by call
#   perf/profile.sh perf       perf record -g (cpu-clock): where the time goes, by thread
#                              (threads of one kind summed) and by symbol
#   perf/profile.sh callgrind  valgrind: instructions and malloc/free calls per record
# The topic is produced before k2mc starts (as in make bench's cost section):
# RECORDS (default 2430000) over PARTITIONS (64) with KEYS (1000000) keys fit
# the mock's 5 MiB per partition. K2MC=path picks the binary (build/k2mc,
# or build/k2mc-glibc for glibc's malloc), PRELOAD=lib an LD_PRELOAD for it,
# K2MC_ARGS extra arguments (e.g. "--ring-size 512 -Xcheck.crcs=true").
# KAFKA=real reads from one real Apache Kafka broker (tests/kafka/kafka-broker,
# KAFKA_VERSION, default 4.1.1; the jars of make kafka) instead of the mock,
# with librdkafka's fetch defaults; READER=floor profiles build/kafka-ceiling
# (a librdkafka consumer that discards) on the same records instead of k2mc.
# Not a benchmark: use make bench for rates.
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${1:-syscalls}
RECORDS=${RECORDS:-2430000}
PARTITIONS=${PARTITIONS:-64}
KEYS=${KEYS:-1000000}
WRITERS=${WRITERS:-2}
K2MC=${K2MC:-build/k2mc}
PRELOAD=${PRELOAD:-}
K2MC_ARGS=${K2MC_ARGS:-}
[ "$tool" = callgrind ] && RECORDS=${CG_RECORDS:-50000}

work=$(mktemp -d /tmp/k2mc-prof.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { local d=$((SECONDS + $1)); shift; until "$@"; do [ $SECONDS -lt $d ] || return 1; sleep 0.1; done; }

port=$(free_port)
memcached -u nobody -l 127.0.0.1 -p "$port" -U 0 -m 4096 -t 2 & pids+=($!)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
fetch=(-Xfetch.wait.max.ms=10)
if [ "${KAFKA:-mock}" = real ]; then
	/usr/bin/python3 tests/kafka/kafka-broker --version "${KAFKA_VERSION:-4.1.1}" \
		>"$work/broker.out" 2>"$work/broker.err" & pids+=($!)
	wait_for 180 grep -q '^ready' "$work/broker.out"
	bs=$(grep -o 'bootstrap=[^ ]*' "$work/broker.out" | head -1 | cut -d= -f2)
	build/k2mc-mock -b "$bs" --topic "p:$PARTITIONS" --produce "$RECORDS" --keys "$KEYS" -q \
		--exit-after-produce >"$work/mock.out"
	fetch=()
else
	build/k2mc-mock --topic "p:$PARTITIONS" --produce "$RECORDS" --keys "$KEYS" -q >"$work/mock.out" 2>/dev/null & pids+=($!)
	wait_for 120 grep -q '^produced=' "$work/mock.out"
	bs=$(sed -n 's/^bootstrap=//p' "$work/mock.out")
fi
# shellcheck disable=SC2206 # K2MC_ARGS is split on purpose
k2mc=(env ${PRELOAD:+LD_PRELOAD=$PRELOAD} "$K2MC" -b "$bs" -t p -G prof -m "127.0.0.1:$port"
	--writers "$WRITERS" -c "$RECORDS" -q "${fetch[@]}" $K2MC_ARGS)
[ "${READER:-k2mc}" = floor ] && k2mc=(build/kafka-ceiling -b "$bs" -t p -G prof -c "$RECORDS" "${fetch[@]}")

case "$tool" in
syscalls)
	strace -f -c -o "$work/strace.txt" "${k2mc[@]}" 2>&1 | grep -o 'consumed [0-9]*'
	# rows: % time, seconds, usecs/call, calls, [errors], syscall
	awk -v n="$RECORDS" 'NR>2 && $NF!="total" && $4+0>0 { t += $4;
		printf "%-16s %9d calls  %.4f per record\n", $NF, $4, $4/n }
	     END { printf "%-16s %9d calls  %.4f per record\n", "all syscalls", t, t/n }' \
		"$work/strace.txt" | sort -k2 -n -r | head -15
	;;
perf)
	perf record -q -g -o "$work/perf.data" -- "${k2mc[@]}" 2>&1 | grep -o 'consumed [0-9]*' || true
	# by thread, threads of one kind summed (k2mc-c/12 -> k2mc-c/*)
	perf report -i "$work/perf.data" --no-children --sort comm -g none 2>/dev/null | grep -v '^#' |
		awk 'NF >= 2 { sub(/%/, "", $1); n = $2; sub(/\/[0-9]+$/, "/*", n); c[n] += $1 }
		     END { for (k in c) printf "%7.2f%%  %s\n", c[k], k }' | sort -rn | head -8
	perf report -i "$work/perf.data" --no-children --sort comm,dso,sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
	;;
callgrind)
	valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "${k2mc[@]}" 2>&1 | grep -o 'consumed [0-9]*'
	total=$(callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
	echo "instructions per record: $((total / RECORDS))"
	callgrind_annotate --inclusive=no "$work/cg.out" 2>/dev/null | sed -n '/Ir/,$p' | head -30
	for f in malloc free calloc realloc; do
		calls=$(callgrind_annotate --inclusive=yes --tree=caller "$work/cg.out" 2>/dev/null |
			grep -E "^ *[0-9,]+ .*\* .*[^a-z_]$f[ '\(]" | head -1 || true)
		echo "$f: $calls"
	done
	;;
*) echo "usage: $0 syscalls|perf|callgrind" >&2; exit 2 ;;
esac
