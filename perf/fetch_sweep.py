#!/usr/bin/python3
"""Issue 25: where k2mc's Fetch requests and the broker's CPU come from.

Runs the bench's cost measurement (bench/bench.py: run_cost, on one real
Kafka broker, every topic produced before its readers) for the floor (a
plain librdkafka consumer that discards, build/kafka-ceiling) and for k2mc
with one librdkafka setting changed at a time (-X VARIANT), in turns, and
prints one table: Fetch requests per 1,000 records (counted in one more,
untimed, run with -X debug=fetch, the bench's method), the broker's CPU per
record served, k2mc's own CPU per record, wall time and peak RSS.

  perf/fetch_sweep.py [--partitions 8,64] [--records N] [--runs R]
                      [--only NAME,...] [--extra NAME=ARGS|env:VAR=VALUE]... [--floor-extra NAME=ARGS]...
                      [--before BIN]... [--k2mc BIN] [--no-fetch-count] [--kafka-version V]

--extra adds a k2mc row with those arguments, --floor-extra a floor row with
those -X, --before a row of another k2mc binary's defaults (the tree before a
change). The idle broker's CPU per second is measured first and printed.

Needs build/k2mc, build/k2mc-mock, build/kafka-ceiling, build/mc-ceiling and
the broker's jars (make kafka). Not a test: it prints what it measured.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
import bench as B  # noqa: E402

# seconds of an idle broker measured before the readers
IDLE_S = 5

# name -> k2mc arguments; each changes one thing against k2mc's defaults
VARIANTS = [("defaults", [])] + [
    # the prefetch threshold (queued.min.messages follows it as k2mc derives it: kbytes * 16)
    (f"queued.max.messages.kbytes={k}", [f"-Xqueued.max.messages.kbytes={k}",
                                         f"-Xqueued.min.messages={k * 16}"])
    for k in (256, 1024, 4096)] + [(s, [f"-X{s}"]) for s in (
    # one librdkafka property each
    "fetch.queue.backoff.ms=0", "fetch.queue.backoff.ms=100", "fetch.queue.backoff.ms=1000",
    "fetch.wait.max.ms=500", "fetch.wait.max.ms=10",
    "fetch.min.bytes=65536", "fetch.min.bytes=1048576",
    "fetch.max.bytes=4194304", "fetch.max.bytes=16777216", "fetch.max.bytes=52428800",
    "max.partition.fetch.bytes=262144", "max.partition.fetch.bytes=4194304")
]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--partitions", default="8,64")
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=ARGS",
                    help="one more k2mc row: NAME=space-separated arguments; an argument "
                    "env:VAR=VALUE sets VAR in k2mc's environment instead")
    ap.add_argument("--floor-extra", action="append", default=[], metavar="NAME=ARGS",
                    help="one more floor row (kafka-ceiling): NAME=space-separated -X arguments")
    ap.add_argument("--k2mc", help="the k2mc binary (default build/k2mc)")
    ap.add_argument("--before", metavar="BIN", action="append", default=[],
                    help="one more row first: k2mc's defaults on another binary (the tree "
                    "before; repeatable)")
    ap.add_argument("--no-fetch-count", action="store_true")
    ap.add_argument("--kafka-version", default=B.KAFKA_DEFAULT_VERSION)
    args = ap.parse_args(argv)
    variants = VARIANTS
    if args.only:
        want = args.only.split(",")
        variants = [v for v in VARIANTS if v[0] in want]
    envs = {}
    for e in args.extra:
        name, _, rest = e.partition("=")
        words = rest.split()
        envs[name] = dict(w[4:].split("=", 1) for w in words if w.startswith("env:"))
        variants.append((name, [w for w in words if not w.startswith("env:")]))
    tools = B.Tools("build")
    logroot = B.tempfile.mkdtemp(prefix="k2mc-fetch-sweep.")
    kafka = B.Kafka("real", args.kafka_version, logroot, tools.mock)
    kafka.start()
    bench = B.Bench(argparse.Namespace(), tools, logroot, kafka)
    # what the broker burns with no client at all, to weigh the readers' wall time by
    c0, t0 = kafka.cpu_s(), B.time.monotonic()
    B.time.sleep(IDLE_S)
    idle = (kafka.cpu_s() - c0) / (B.time.monotonic() - t0)
    B.log(f"fetch sweep: the idle broker burns {idle:.3f} CPU-s per second")
    out = []
    try:
        for p in (int(x) for x in args.partitions.split(",")):
            kw = dict(partitions=p, records=args.records, value_size=100)
            cases = [B.CostCase("kafka-ceiling", "floor (kafka-ceiling, librdkafka defaults)",
                                count_fetches=not args.no_fetch_count, **kw)]
            for e in args.floor_extra:
                name, _, rest = e.partition("=")
                cases.append(B.CostCase("kafka-ceiling", f"floor, {name}", args=rest.split(),
                                        count_fetches=not args.no_fetch_count, **kw))
            for before in args.before:
                cases.append(B.CostCase("k2mc", f"defaults of {before}", k2mc=before,
                                        count_fetches=not args.no_fetch_count, **kw))
            cases += [B.CostCase("k2mc", name, args=a, k2mc=args.k2mc, env=envs.get(name),
                                 count_fetches=not args.no_fetch_count, **kw)
                      for name, a in variants]
            B.log(f"fetch sweep: {p} partitions, {args.records} records, x {args.runs}")
            B.run_cost_cases(bench, cases, args.runs)
            out.append((p, cases))
    finally:
        kafka.stop()
    print(f"\nKafka {args.kafka_version}, {args.records:,} records of 100 B over 1M keys, "
          f"topic produced before the run; median of {args.runs}; load average at end "
          f"{os.getloadavg()[0]:.2f}; the idle broker burns {idle:.3f} CPU-s per second\n")
    print("| partitions | k2mc | Fetch / 1k records | broker CPU µs/record | CPU µs/record | "
          "wall s | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for p, cases in out:
        for c in cases:
            m = c.median
            if not m.get("ok"):
                print(f"| {p} | {c.name} | failed | | | | |")
                continue
            fc = m.get("fetch_per_1000_counted")
            vals = [r["cpu_us_per_record"] for r in c.runs if r.get("ok")]
            spread = (f" ({min(vals):.3f}-{max(vals):.3f})" if len(vals) > 1 else "")
            print(f"| {p} | {c.name} | {fc if fc is not None else '-'} | "
                  f"{m.get('broker_cpu_us_per_record', 0):.3f} | "
                  f"{m['cpu_us_per_record']:.3f}{spread} | {m.get('wall_s', 0):.2f} | "
                  f"{(m.get('hwm_kib') or 0) / 1024:.0f} |")
    for f in bench.failures:
        print("FAILED:", f)
    print(f"logs in {logroot}")
    return 1 if bench.failures else 0


if __name__ == "__main__":
    B.signal.signal(B.signal.SIGTERM, B.on_sigterm)
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        B.stop_all()
