#!/usr/bin/python3
"""What the templates cost k2mc end to end: the same prefilled topic read by
k2mc -e under different --key/--value settings (and, given --before BIN, by
another k2mc build with the default templates: today's hot path against the
one before templates), in turns, median of --runs. CPU per record is k2mc's
own user+sys time (wait4 on the child) over the records it wrote; the rate
is the summary line's (records/s since assignment). The mock cluster runs in
its own process; with --bootstrap, the topics go to that existing cluster
instead (a real broker: bench.py --kafka real), produced by k2mc-mock -b.
Prints a table, or with --json one object per row.

Usage: bench/template_cost.py [--before BIN] [--runs N] [--json] [--bootstrap B]
Not part of `make test`; never fails on a number."""
import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("memcached on %d did not answer" % port)


class World:
    """memcached and a k2mc-mock holding one prefilled topic (or, given
    bootstrap, a topic produced to that cluster by k2mc-mock -b)."""

    def __init__(self, tmp, parts, records, value_size, json_values, bootstrap=None):
        self.tmp = tmp
        self.port = free_port()
        args = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "2048",
                "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.mc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        self.topic = "events"
        margs = [os.path.join(ROOT, "build/k2mc-mock")]
        if bootstrap:
            # a topic of its own on a cluster that outlives this run
            self.topic = "tmpl-%d-%d-v%d%s" % (os.getpid(), int(time.time() * 1000), value_size,
                                               "-json" if json_values else "")
            margs += ["-b", bootstrap]
        margs += ["--topic", "%s:%d" % (self.topic, parts), "--produce", str(records), "--keys",
                  str(records), "--value-size", str(value_size), "-q",
                  "--exit-after-produce" if bootstrap else "--stdin-control"]
        if json_values:
            margs.append("--json-values")
        self.mock = subprocess.Popen(margs, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(tmp, "mock.err"), "w"), text=True)
        self.bootstrap = None
        end = time.time() + 120
        while time.time() < end:
            line = self.mock.stdout.readline()
            if not line:
                raise RuntimeError("k2mc-mock ended")
            if line.startswith("bootstrap="):
                self.bootstrap = line.strip().split("=", 1)[1]
            if line.startswith("produced="):
                kv = dict(t.split("=") for t in line.split())
                if int(kv["failed"]) != 0:
                    raise RuntimeError("mock: " + line)
                return
        raise RuntimeError("production did not finish")

    def close(self):
        for p in (self.mock, self.mc):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def run_k2mc(world, binary, group, extra):
    args = [binary, "-b", world.bootstrap, "-t", world.topic, "-G", group, "-m",
            "127.0.0.1:%d" % world.port, "-e", "-o", "beginning", "--stats-interval-ms", "0",
            "-q"] + extra
    err = os.path.join(world.tmp, group + ".err")
    with open(err, "w") as f:
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = open(err).read()
    m = re.search(r"summary: consumed (\d+) written (\d+).*?since assignment \(([\d.]+) records/s\)",
                  text)
    if p.returncode != 0 or m is None:
        raise RuntimeError("k2mc %s exited %d: %s" % (group, p.returncode, text[-600:]))
    written = int(m.group(2))
    return {"cpu_us": (ru.ru_utime + ru.ru_stime) * 1e6 / max(written, 1),
            "rps": float(m.group(3)), "written": written}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="another k2mc binary (default templates only)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="fewer records, 100-byte values only (make bench-quick stays under 2 min)")
    ap.add_argument("--bootstrap", help="an existing Kafka cluster for the topics (default: "
                                        "a mock cluster per topic)")
    a = ap.parse_args()
    after = os.path.join(ROOT, "build/k2mc")
    # (value bytes, partitions, records): within the mock's 5 MiB per partition
    sizes = [(100, 16, 100000)] if a.quick else [(100, 16, 400000), (1024, 32, 128000)]
    rows = []
    seq = 0
    for size, parts, records in sizes:
        for json_values in (False, True):
            cases = []
            if not json_values:
                if a.before:
                    cases.append(("before templates", a.before, []))
                cases.append(("default {key} {value}", after, []))
                cases.append(("--key 'user:{key}'", after, ["--key", "user:{key}"]))
            else:
                cases.append(("default {key} {value}", after, []))
                cases.append(("--key 'user:{json:/id}'", after, ["--key", "user:{json:/id}"]))
                cases.append(("--key 'user:{json:/id}' --value '{json:/profile}'", after,
                              ["--key", "user:{json:/id}", "--value", "{json:/profile}"]))
            tmp = tempfile.mkdtemp(prefix="k2mc-tmpl-")
            world = World(tmp, parts, records, size, json_values, a.bootstrap)
            try:
                res = {c[0]: [] for c in cases}
                for r in range(a.runs):
                    for name, binary, extra in cases:  # in turns
                        seq += 1
                        res[name].append(run_k2mc(world, binary, "g%d" % seq, extra))
                for name, _, _ in cases:
                    runs = res[name]
                    rows.append({
                        "values": "JSON" if json_values else "plain",
                        "value_bytes": size, "records": records, "case": name,
                        "cpu_us_per_record": statistics.median(x["cpu_us"] for x in runs),
                        "records_per_s": statistics.median(x["rps"] for x in runs),
                        "runs": len(runs)})
            finally:
                world.close()
    for r in rows:
        if a.json:
            print(json.dumps(r))
        else:
            print("%-6s %5d B  %-50s %6.2f us CPU/record  %8.0f records/s" %
                  (r["values"], r["value_bytes"], r["case"], r["cpu_us_per_record"],
                   r["records_per_s"]))


if __name__ == "__main__":
    sys.exit(main())
