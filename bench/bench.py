#!/usr/bin/python3
"""k2mc benchmark harness (`make bench`, `make bench-quick`): the Memcached
ceiling, the Kafka ceiling, the Python baseline and k2mc side by side, in one
run, on the same generated records.

Every server runs in its own process on loopback, started here and stopped
here by PID: k2mc-mock (librdkafka's mock cluster, fed while the consumer
reads, paced by the consumer's group) and memcached (a fresh one per run).
With --kafka real (`make bench KAFKA=real`), one Apache Kafka broker serves
the whole run instead (class Kafka), and the broker's own CPU per record
served is recorded beside the reader's.
CPU and peak RSS come from os.wait4() of the measured process alone.
The cost section also runs the peers users would run instead (bench/peers/:
Quix Streams and confluent-kafka with pymemcache, from PyPI into a venv under
build/peers-venv, made once by setup_peers) and the floor (a librdkafka
consumer that discards, plus the Memcached ceiling's client), on both
backends in full mode (issue 25).
Writes latest.{json,md} and writers.png into build/bench/ (with --kafka real,
build/bench/real-MODE/), so that a run leaves the tree clean; --out bench/results
(make bench BENCH_OUT=bench/results) records a run in the tree.

Not a pass/fail test: the exit status is 1 only when a tool crashes or a run
comes up short (fewer records than asked, a non-zero exit), never because of
a number. Standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = "/usr/bin/python3"
TOPIC = "bench"
# generated keys are "key-%08u" (bench/gen.h, GEN_KEY_LEN); MB/s counts key + value bytes
KEY_LEN = 12
MIB = 1024 * 1024
# librdkafka's mock keeps 5 MiB per partition; a v2 record costs about 12 bytes
# besides key and value (length, attributes, deltas, header count varints)
MOCK_RETENTION = 5 * MIB
RECORD_OVERHEAD = 12
# --pace-lead: at most 30000 records per partition past the group's commit, and
# never more than 4 MiB of them, so that retention drops nothing unread
PACE_LEAD_MAX = 30000
PACE_BUDGET = 4 * MIB
K2MC_COMMIT_MS = 100
# records mc-ceiling --sweep tries each batch/conns setting with
SWEEP_RECORDS = 500_000

MODES = {
    # records, runs, writers swept, latency load seconds, bytes budget for large values
    # quick: 1M rather than fewer, so that the ~240k records the mock produces ahead while
    # the group joins (8 partitions x --pace-lead) are not most of the run
    "quick": dict(records=1_000_000, runs=1, writers=[2], latency_s=3.0, value_bytes=0,
                  cost_cap=1_000_000),
    "full": dict(records=2_000_000, runs=3, writers=[1, 2, 4, 8], latency_s=10.0,
                 value_bytes=500_000_000, cost_cap=10_000_000),
}
# Applied to every Kafka reader on the mock only (Kafka.fetch_props). The mock
# holds each fetch for the whole fetch.wait.max.ms (500 ms by default) even when
# records are there. A real broker answers as soon as fetch.min.bytes (1 byte)
# is there and holds a fetch only while a partition has nothing new; there 10 ms
# would only turn each caught-up reader's idle wait into about 100 empty fetch
# round trips a second per broker connection, a load no deployment puts on its
# broker, counted in the broker's CPU per record served (which this bench
# reports on a real broker) and in the reader's. Readers of a real broker keep
# librdkafka's default, what users run.
MOCK_FETCH_PROPS = ["fetch.wait.max.ms=10"]
KAFKA_LAUNCHER = os.path.join(ROOT, "tests", "kafka", "kafka-broker")
KAFKA_DEFAULT_VERSION = "4.1.1"
# records produced and read once before any measurement on a real broker: the
# group coordinator's topic is created, and the JVM's produce and fetch paths
# compiled, before the first measured reader rather than during it
KAFKA_WARMUP_RECORDS = 200_000
# issue 25: the peers (bench/peers/), their venv and the floor on the wheel's librdkafka
PEERS_DIR = os.path.join(ROOT, "bench", "peers")
PEERS_REQUIREMENTS = os.path.join(PEERS_DIR, "requirements.txt")
# librdkafka statistics interval of every reader that can report its Fetch
# requests (the floor, the Python peers): short enough that the last emission
# falls late in a run of a few seconds; an emission costs the reader well
# under 1% of its CPU at 64 partitions
PEERS_STATS_MS = 100
# k2mc has no statistics callback: its Fetch requests are counted in one more
# run, untimed, with librdkafka's fetch debug context (-v -X debug=fetch), one
# line per Fetch request built: "Fetch SENT/ACTIVE/ASSIGNED toppar(s)" (SENT 0:
# no request; rdkafka_fetcher.c, rd_kafka_broker_fetch_toppars). The floor is
# counted the same way, so the two compare by one method.
FETCH_DEBUG_LINE = re.compile(r"Fetch [1-9][0-9]*/[0-9]+/[0-9]+ toppar")
SECTIONS = ["mc-ceiling", "kafka-ceiling", "python", "writers", "partitions", "values",
            "keys", "rss", "latency", "placement"]
QUICK_SECTIONS = ["mc-ceiling", "kafka-ceiling", "python", "writers", "latency", "placement"]
# issue 9: TCP, unix socket and TLS side by side (transport_costs)
SECTIONS.append("transports")
QUICK_SECTIONS.append("transports")
# issue 14: the cost section (prefilled topics, memcached-counter rates, CPU per
# record) is the headline; allocators, librdkafka settings and CPU placement are
# full-mode variants of it. Quick mode runs the cost section instead of the
# issue-3 matrix, to stay under 2 minutes.
SECTIONS[:0] = ["cost"]
SECTIONS += ["allocators", "rdkafka", "cpus"]
QUICK_SECTIONS = ["cost", "transports", "placement"]
# issue 12: the refill's speed beside the live rate, in one run (refill_costs)
SECTIONS.append("refill")
QUICK_SECTIONS.append("refill")

# The issue's targets (at 100-byte values, 8 partitions).
TARGET_CEILING_FRACTION = 0.8
TARGET_PYTHON_SPEEDUP = 5.0
TARGET_PYTHON_CPU_FRACTION = 0.1
# "bounded by configuration": RSS at 10M records within 10% (or 8 MiB) of 1M
RSS_TOLERANCE = 0.10
RSS_SLACK_KIB = 8 * 1024
# "grows with --writers until the ceiling": no step down by more than this
WRITERS_NOISE = 0.05


class BenchError(Exception):
    """A tool crashed or a run came up short: recorded; the exit status becomes 1."""


class Skip(Exception):
    """A measurement this checkout cannot make (a tool or a feature is missing)."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Processes. LIVE holds every child started and not yet reaped: the only
# processes this harness ever signals, by PID (through a pidfd where the
# kernel has them, so a reaped PID is never reused under us).

LIVE = set()


class Child:
    def __init__(self, name, argv, logdir, *, stdin=False, stdout_lines=False):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.out_path = os.path.join(logdir, name + ".out")
        self.err_path = os.path.join(logdir, name + ".err")
        self.rc = None
        self.rusage = None
        self.t_end = None
        self.pidfd = None
        self.lines = []  # (monotonic time, line) read from stdout when stdout_lines
        self._eof = False
        self._cond = threading.Condition()
        self._reader = None
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            try:
                self.t0 = time.monotonic()
                self.popen = subprocess.Popen(
                    self.argv, cwd=ROOT,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE if stdout_lines else out, stderr=err)
            except OSError as e:
                raise BenchError(f"cannot start {self.argv[0]}: {e}") from e
        LIVE.add(self)
        self.pid = self.popen.pid
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        if stdout_lines:
            self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
            self._reader.start()

    def _read(self):
        with open(self.out_path, "w") as copy:
            for raw in self.popen.stdout:
                line = raw.decode(errors="replace").rstrip("\r\n")
                copy.write(line + "\n")
                copy.flush()
                with self._cond:
                    self.lines.append((time.monotonic(), line))
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, pred, timeout, start=0):
        """First stdout line from index start that pred accepts: (time, line) or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    if pred(self.lines[i][1]):
                        return self.lines[i]
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    return None
                self._cond.wait(left)

    def send(self, line):
        self.popen.stdin.write((line + "\n").encode())
        self.popen.stdin.flush()

    def wait(self, timeout=None):
        """Reaps the child with wait4 (keeping its rusage); False on timeout."""
        if self.rc is not None:
            return True
        if self.pidfd is not None:
            poller = select.poll()
            poller.register(self.pidfd, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                return False
            pid, status, ru = os.wait4(self.pid, 0)
        else:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                pid, status, ru = os.wait4(self.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
        self.t_end = time.monotonic()
        self.rc = os.waitstatus_to_exitcode(status)
        self.rusage = ru
        self.popen.returncode = self.rc  # subprocess must never waitpid() it again
        LIVE.discard(self)
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        if self.popen.stdin:
            try:
                self.popen.stdin.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(5)
        return True

    def signal(self, sig):
        if self.rc is not None:
            return
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace=10.0):
        """SIGTERM, then SIGKILL after grace seconds; reaps. Returns the exit code."""
        if self.rc is None:
            self.signal(signal.SIGTERM)
            if not self.wait(grace):
                self.signal(signal.SIGKILL)
                self.wait()
        return self.rc

    def stats(self):
        ru = self.rusage
        return {
            "exit": self.rc,
            "wall_s": round(self.t_end - self.t0, 4),
            "cpu_user": ru.ru_utime,
            "cpu_sys": ru.ru_stime,
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 4),
            "maxrss_kib": ru.ru_maxrss,
            "minflt": ru.ru_minflt,
            "majflt": ru.ru_majflt,
            "nvcsw": ru.ru_nvcsw,
            "nivcsw": ru.ru_nivcsw,
        }

    def stderr_text(self):
        try:
            with open(self.err_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stdout_text(self):
        try:
            with open(self.out_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""


def stop_all():
    for c in list(LIVE):
        c.signal(signal.SIGTERM)
    for c in list(LIVE):
        try:
            if not c.wait(5):
                c.signal(signal.SIGKILL)
                c.wait(5)
        except ChildProcessError:
            LIVE.discard(c)


class Terminated(Exception):
    """SIGTERM: unwinds like Ctrl-C, so every finally stops what it started."""


def on_sigterm(signum, _frame):
    raise Terminated(signum)


# ---------------------------------------------------------------------------
# Servers

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memcached_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"version\r\n")
            return s.recv(64).startswith(b"VERSION")
    except OSError:
        return False


def start_memcached(logdir):
    """A fresh memcached on a free loopback port, once it answers."""
    for attempt in range(5):
        port = free_port()
        argv = ["memcached"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        argv += ["-l", "127.0.0.1", "-p", port, "-U", "0", "-m", "4096", "-t", "2"]
        mc = Child(f"memcached{attempt or ''}", argv, logdir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if mc.wait(0):
                break  # the port was taken between free_port() and bind: try another
            if memcached_answers(port):
                return mc, port
            time.sleep(0.02)
        else:
            mc.stop()
            raise BenchError("memcached did not accept connections within 10 s")
    raise BenchError(f"memcached exited at start five times (last exit {mc.rc}): "
                     f"{excerpt(mc.stderr_text())}")


def excerpt(text, limit=300):
    """The lines of a tool's stderr that say what went wrong, else its last line."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    bad = [x for x in lines if re.search(r"error|fail|invalid|unrecognized|unknown|fatal|"
                                         r"abort|sanitizer|usage", x, re.I)]
    return " | ".join(bad[:3] or lines[-1:])[:limit]


def json_or_none(line):
    try:
        v = json.loads(line)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def kv_tokens(line):
    return dict(t.split("=", 1) for t in line.split() if "=" in t)


def pace_lead(value_size):
    return min(PACE_LEAD_MAX, PACE_BUDGET // (value_size + KEY_LEN + RECORD_OVERHEAD))


def proc_cpu_s(pid):
    """utime + stime of a running process, in seconds: fields 14 and 15 of
    /proc/PID/stat (counted after the ')' that ends the command name, which
    may itself hold spaces)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Kafka:
    """The Kafka backend of a bench run (--kafka).

    mock: every run starts its own k2mc-mock, librdkafka's mock cluster in a
    process of its own, fed before or while the consumer reads (Bench.feed_for).

    real: one Apache Kafka broker (tests/kafka/kafka-broker, single-node KRaft,
    from the jars of `make kafka`) serves the whole bench run. Its 5 MiB-free
    retention lets every topic be produced before the run, once, by k2mc-mock -b
    (prefilled()), and read by every reader of the same records with a fresh
    group each: the same records in the same page cache for all of them.
    Readers keep librdkafka's fetch defaults (see MOCK_FETCH_PROPS). The broker
    JVM's own CPU is read from /proc (cpu_s()) around each reader's run.
    Stopped by stopping its launcher (by PID), which stops the JVM and removes
    its log directory."""

    def __init__(self, kind, version, logroot, mock_bin):
        self.kind = kind
        self.real = kind == "real"
        self.version = version
        self.logroot = logroot
        self.mock_bin = mock_bin
        self.launcher = None
        self.pid = None
        self.bootstrap = None
        self.info = {"backend": kind}
        self.topics = {}  # (partitions, keys, value_size, records, expect, json) -> topic info
        self.seq = 0

    @property
    def fetch_props(self):
        return [] if self.real else list(MOCK_FETCH_PROPS)

    @property
    def label(self):
        return f"Apache Kafka {self.version}" if self.real else "librdkafka's mock cluster"

    def missing(self):
        """Why a real broker cannot start here, or None."""
        jars = os.path.join(ROOT, "build", "kafka", self.version)
        if not os.path.isdir(jars) or not any(f.endswith(".jar") for f in os.listdir(jars)):
            return f"no jars in {os.path.relpath(jars, ROOT)}: run make kafka"
        for tool in ("java", "kcat"):
            if not shutil.which(tool):
                return f"{tool} is not installed: run make kafka"
        if not os.access(self.mock_bin, os.X_OK):
            return f"{os.path.relpath(self.mock_bin, ROOT)} is missing (it produces the topics)"
        return None

    def start(self):
        if not self.real:
            return
        why = self.missing()
        if why:
            raise BenchError(f"--kafka real: {why}")
        logdir = os.path.join(self.logroot, "kafka")
        os.makedirs(logdir, exist_ok=True)
        t0 = time.monotonic()
        self.launcher = Child("kafka-broker", [PYTHON, KAFKA_LAUNCHER, "--version", self.version],
                              logdir, stdout_lines=True)
        got = self.launcher.wait_line(lambda s: s == "ready", 180)
        if not got:
            self.launcher.stop(30)
            raise BenchError(f"the Kafka broker was not ready within 180 s (launcher exit "
                             f"{self.launcher.rc}): {excerpt(self.launcher.stderr_text())}")
        tok = {}
        for _, line in self.launcher.lines:
            tok.update(kv_tokens(line))
        self.pid = int(tok["pid"])
        self.bootstrap = tok["bootstrap"]
        self.info.update({"version": tok.get("version", self.version), "broker_pid": self.pid,
                          "bootstrap": self.bootstrap,
                          "format_ms": int(tok.get("format_ms", 0)) or None,
                          "start_ms": int(tok.get("start_ms", 0)) or None,
                          "launcher_to_ready_s": round(got[0] - t0, 2),
                          "java": (subprocess.run(["java", "-version"], capture_output=True,
                                                  text=True).stderr.splitlines() or [""])[0]})
        log(f"kafka: {self.label} broker pid {self.pid} at {self.bootstrap}, ready "
            f"{self.info['start_ms']} ms after its launch ({self.info['launcher_to_ready_s']} s "
            "with the storage format)")
        t0 = time.monotonic()
        self.warm_up(logdir)
        self.info["warmup_s"] = round(time.monotonic() - t0, 2)

    def warm_up(self, logdir):
        t = self.prefilled(logdir, 8, 100_000, 100, KAFKA_WARMUP_RECORDS)
        kc = os.path.join(os.path.dirname(self.mock_bin), "kafka-ceiling")
        if not os.access(kc, os.X_OK):
            return
        tool = Child("warmup-read", [kc, "-b", self.bootstrap, "-t", t["topic"], "-G",
                                     f"warmup-{os.getpid()}", "-c", KAFKA_WARMUP_RECORDS],
                     logdir)
        if not tool.wait(60) or tool.rc != 0:
            tool.stop()
            raise BenchError(f"the warm-up read of the Kafka broker failed (exit {tool.rc}): "
                             f"{excerpt(tool.stderr_text())}")

    def stop(self):
        if self.launcher:
            self.launcher.stop(30)
            self.info["launcher_exit"] = self.launcher.rc

    def cpu_s(self):
        """The broker JVM's CPU seconds so far (None on the mock)."""
        return proc_cpu_s(self.pid) if self.real else None

    def prefilled(self, logdir, partitions, keys, value_size, records, *, expect=False,
                  json_values=False):
        """A topic on the real broker holding `records` generated records
        (seed 1, like the mock's), produced once by k2mc-mock -b and shared by
        every caller asking for the same records: {"topic", "expect" (FILE or
        None), "produced" (k2mc-mock's counts), "produce_s",
        "broker_cpu_us_per_record_produced"}."""
        key = (partitions, keys, value_size, records, expect, json_values)
        if key in self.topics:
            return self.topics[key]
        self.seq += 1
        topic = f"bench{self.seq}-p{partitions}-v{value_size}-k{keys}-n{records}" + (
            "-json" if json_values else "")
        exp = os.path.join(self.logroot, f"{topic}.expect") if expect else None
        argv = [self.mock_bin, "-b", self.bootstrap, "--topic", f"{topic}:{partitions}",
                "--keys", keys, "--value-size", value_size, "--seed", 1, "-q",
                "--produce", records, "--exit-after-produce"]
        if exp:
            argv += ["--expect", exp]
        if json_values:
            argv.append("--json-values")
        c0 = self.cpu_s()
        t0 = time.monotonic()
        prod = Child(f"produce-{topic}", argv, logdir, stdout_lines=True)
        timeout = 120 + records / 20000
        if not prod.wait(timeout):
            prod.stop()
            raise BenchError(f"k2mc-mock -b did not produce {records} records in {timeout:.0f} s")
        got = prod.wait_line(lambda s: s.startswith("produced="), 1)
        tok = kv_tokens(got[1]) if got else {}
        if prod.rc != 0 or not got or tok.get("failed", "0") != "0" or \
                int(tok.get("acked", 0)) < records:
            raise BenchError(f"k2mc-mock -b did not produce topic {topic} (exit {prod.rc}): "
                             f"{got and got[1]} {excerpt(prod.stderr_text())}")
        info = {"topic": topic, "expect": exp,
                "produced": {k: int(v) for k, v in tok.items() if v.isdigit()},
                "produce_s": round(time.monotonic() - t0, 2),
                "broker_cpu_us_per_record_produced": round((self.cpu_s() - c0) / records * 1e6,
                                                           4)}
        self.topics[key] = info
        log(f"  kafka: topic {topic} produced ({fmt_count(records)} records in "
            f"{info['produce_s']:.1f} s, broker {info['broker_cpu_us_per_record_produced']:.2f}"
            " CPU-µs per record produced)")
        return info

    def fresh_topic(self, partitions):
        self.seq += 1
        return f"bench{self.seq}-p{partitions}-live"

    def to_json(self):
        return dict(self.info, topics=[dict(v, params=dict(zip(
            ("partitions", "keys", "value_size", "records", "expect", "json_values"), k)))
            for k, v in self.topics.items()])


# ---------------------------------------------------------------------------
# Cases: one measured configuration each, shared between the tables that show it

class Case:
    def __init__(self, tool, *, partitions=8, value_size=100, keys=1_000_000, records,
                 writers=None, rate=None):
        self.tool = tool
        self.partitions = partitions
        self.value_size = value_size
        self.keys = keys
        self.records = records
        self.writers = writers
        self.rate = rate
        self.runs = []
        self.sweep = None
        self.skipped = None
        self.median = {}

    @property
    def key(self):
        return (self.tool, self.partitions, self.value_size, self.keys, self.records,
                self.writers, self.rate)

    @property
    def slug(self):
        s = f"{self.tool}-p{self.partitions}-v{self.value_size}-k{self.keys}-n{self.records}"
        if self.writers:
            s += f"-w{self.writers}"
        if self.rate:
            s += f"-r{int(self.rate)}"
        return s

    @property
    def label(self):
        if self.tool == "mc-ceiling":
            s = "Memcached ceiling"
        elif self.tool == "kafka-ceiling":
            s = "Kafka ceiling"
        elif self.tool == "python":
            s = "Python baseline"
        else:
            s = f"k2mc --writers {self.writers}"
        parts = "" if self.tool == "mc-ceiling" else f", {self.partitions} part."
        if self.rate:
            s += f" at {self.rate:,.0f}/s"
        return f"{s} ({fmt_bytes(self.value_size)}{parts}, {fmt_count(self.keys)} keys)"

    def ok_runs(self):
        return [r for r in self.runs if r.get("ok")]

    def summarize(self):
        ok = self.ok_runs()
        self.median = {}
        for k in ("rps", "mbps", "rps_wall", "seconds", "wall_s", "cpu_s", "cpu_per_m",
                  "maxrss_kib", "lat_p50", "lat_p99", "lat_p999", "offered_rps",
                  "memcached_cpu_per_m", "feeder_cpu_s", "broker_cpu_per_m"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            if vals:
                self.median[k] = statistics.median(vals)
        vals = [r["rps"] for r in ok if r.get("rps") is not None]
        if vals:
            self.median["rps_min"] = min(vals)
            self.median["rps_max"] = max(vals)

    def to_json(self):
        return {
            "id": self.slug, "label": self.label, "tool": self.tool,
            "params": {"partitions": self.partitions, "value_size": self.value_size,
                       "keys": self.keys, "records": self.records, "writers": self.writers,
                       "rate": self.rate},
            "skipped": self.skipped, "sweep": self.sweep, "runs": self.runs,
            "median": self.median,
        }


class Tools:
    def __init__(self, build):
        b = lambda n: os.path.join(ROOT, build, n)  # noqa: E731
        self.k2mc = b("k2mc")
        self.mock = b("k2mc-mock")
        self.mc_ceiling = b("mc-ceiling")
        self.kafka_ceiling = b("kafka-ceiling")
        # one script, two interpreters: Debian's for the issue-3 matrix ("python"
        # cases of Bench.run_case), the peers venv's (PyPI) in the cost section
        self.python_baseline = os.path.join(PEERS_DIR, "confluent_memcached.py")
        self.quix_peer = os.path.join(PEERS_DIR, "quix_memcached.py")
        self.peers_venv = b("peers-venv")
        self.peers_python = os.path.join(self.peers_venv, "bin", "python")
        self.kafka_ceiling_wheel = b("peers/kafka-ceiling-wheel")
        # set by setup_peers: the wheel's librdkafka directory and versions, or why not
        self.wheel_libdir = None
        self.peer_versions = {}
        self.peers_why = "the peers' venv was not set up (setup_peers)"
        self.verify = b("k2mc-verify") if os.access(b("k2mc-verify"), os.X_OK) else None
        self.k2mc_glibc = b("k2mc-glibc")
        self.mock_paces = False
        if os.access(self.mock, os.X_OK):
            help_text = subprocess.run([self.mock, "-h"], capture_output=True, text=True,
                                       timeout=10)
            self.mock_paces = "--pace-group" in help_text.stdout + help_text.stderr

    def missing(self, tool):
        """Why tool cannot run here, or None."""
        need = {"mc-ceiling": [self.mc_ceiling],
                "kafka-ceiling": [self.mock, self.kafka_ceiling],
                "python": [self.mock, self.python_baseline, PYTHON],
                "quix": [self.mock, self.quix_peer, self.peers_python],
                "k2mc": [self.mock, self.k2mc]}[tool]
        for path in need:
            ok = os.path.isfile(path) and (path.endswith(".py") or os.access(path, os.X_OK))
            if not ok:
                rel = os.path.relpath(path, ROOT)
                return f"{rel} is missing" + ("" if rel.startswith("..") or rel.endswith(".py")
                                              else f" (make {rel})")
        if tool != "kafka-ceiling" and not shutil.which("memcached"):
            return "memcached is not installed"
        return None

    def rdkafka_version(self):
        """The librdkafka k2mc and the ceilings link (k2mc -V), or '?'."""
        if not os.access(self.k2mc, os.X_OK):
            return "?"
        m = re.search(r"librdkafka ([^ ,;)]+)", sh([self.k2mc, "-V"]))
        return m.group(1) if m else "?"


# ---------------------------------------------------------------------------
# One run of each kind

class Bench:
    def __init__(self, args, tools, logroot, kafka):
        self.args = args
        self.tools = tools
        self.logroot = logroot
        self.kafka = kafka
        self.failures = []
        self.skips = []
        self.seq = 0

    def rundir(self, case, idx):
        self.seq += 1
        d = os.path.join(self.logroot, f"{self.seq:03d}-{case.slug}-run{idx}")
        os.makedirs(d)
        return d

    def feed_for(self, case):
        if self.kafka.real:
            return "prefill"  # no 5 MiB retention (parse_args refuses --feed paced)
        per_part = case.records / case.partitions * (case.value_size + KEY_LEN + RECORD_OVERHEAD)
        fits = per_part <= 0.9 * MOCK_RETENTION
        feed = self.args.feed
        if feed == "auto":
            feed = "paced" if self.tools.mock_paces else "prefill"
        if feed == "paced" and not self.tools.mock_paces:
            raise Skip("k2mc-mock has no --pace-group (yet): cannot feed while consuming")
        if feed == "prefill" and not fits:
            raise Skip(f"{per_part / MIB:.1f} MiB per partition exceeds the mock's 5 MiB "
                       f"retention and k2mc-mock cannot pace (--pace-group)")
        return feed

    def start_mock(self, logdir, case, group, *, produce=True, stdin_control=False, rate=None):
        """The records case reads: (k2mc-mock Child or None, bootstrap, feed, topic). On
        the mock, a k2mc-mock holding the cluster; on a real broker, a topic
        produced before the run (no process), or with produce=False a fresh
        empty topic and a k2mc-mock -b producing on command."""
        topic = TOPIC
        argv = [self.tools.mock, "--keys", case.keys, "--value-size", case.value_size,
                "--seed", 1, "-q"]
        if self.kafka.real:
            if produce:
                t = self.kafka.prefilled(logdir, case.partitions, case.keys, case.value_size,
                                         case.records)
                return None, self.kafka.bootstrap, "prefill", t["topic"]
            topic = self.kafka.fresh_topic(case.partitions)
            argv += ["-b", self.kafka.bootstrap]
        argv += ["--topic", f"{topic}:{case.partitions}"]
        feed = None
        if produce:
            feed = self.feed_for(case)
            argv += ["--produce", case.records]
            if feed == "paced":
                argv += ["--pace-group", group, "--pace-lead", pace_lead(case.value_size)]
        if rate:
            argv += ["--rate", f"{rate:.0f}"]
        if stdin_control:
            argv.append("--stdin-control")
        mock = Child("k2mc-mock", argv, logdir, stdin=stdin_control, stdout_lines=True)
        got = mock.wait_line(lambda s: s.startswith("bootstrap="), 30)
        if not got:
            mock.stop()
            raise BenchError(f"k2mc-mock printed no bootstrap= line (exit {mock.rc}): "
                             f"{excerpt(mock.stderr_text())}")
        bootstrap = got[1].split("=", 1)[1].strip()
        if feed == "prefill":
            got = mock.wait_line(lambda s: s.startswith("produced=") or s.startswith("error"),
                                 60 + case.records / 20000)
            if not got or kv_tokens(got[1]).get("failed", "0") != "0":
                mock.stop()
                raise BenchError(f"k2mc-mock did not produce the topic: {got and got[1]}")
        return mock, bootstrap, feed, topic

    def consumer_argv(self, case, bootstrap, group, port, topic):
        n = case.records
        # The mock broker holds every fetch for the full fetch.wait.max.ms
        # (default 500 ms) even when data arrives; a real broker answers as
        # soon as fetch.min.bytes is there. The same setting for every
        # Kafka reader keeps the comparison fair and latency meaningful
        # (on the mock only: see MOCK_FETCH_PROPS).
        fx = [f"-X{p}" for p in self.kafka.fetch_props]
        if case.tool == "kafka-ceiling":
            return [self.tools.kafka_ceiling, "-b", bootstrap, "-t", topic, "-G", group,
                    "-c", n] + fx
        if case.tool == "python":
            return [PYTHON, self.tools.python_baseline, "-b", bootstrap, "-t", topic, "-G", group,
                    "-m", f"127.0.0.1:{port}", "-c", n] + fx
        argv = [self.tools.k2mc, "-b", bootstrap, "-t", topic, "-G", group,
                "-m", f"127.0.0.1:{port}", "-c", n, "--writers", case.writers,
                "--commit-interval-ms", K2MC_COMMIT_MS] + fx
        if case.rate is None:
            argv.append("-q")  # the latency run reads the "assigned" line at the default level
        return argv + self.args.k2mc_arg

    def run_case(self, case, runs):
        why = self.tools.missing(case.tool)
        if why:
            case.skipped = why
            self.skips.append(f"{case.label}: {why}")
            log(f"SKIPPED {case.label}: {why}")
            return
        if case.tool == "mc-ceiling" and case.sweep is None and not self.args.no_sweep:
            self.one(case, "sweep", self.run_mc_ceiling)
            if case.skipped:
                return
        fn = {"mc-ceiling": self.run_mc_ceiling, "kafka-ceiling": self.run_consumer,
              "python": self.run_consumer, "k2mc": self.run_consumer}[case.tool]
        if case.rate is not None:
            fn = self.run_latency
        for i in range(len(case.runs) + 1, runs + 1):
            self.one(case, i, fn)
            if case.skipped:
                return
        case.summarize()

    def one(self, case, idx, fn):
        t = time.monotonic()
        res = {"run": idx, "ok": False}
        logdir = self.rundir(case, idx)
        res["logdir"] = logdir
        try:
            fn(case, idx, logdir, res)
            res["ok"] = True
        except Skip as e:
            case.skipped = str(e)
            self.skips.append(f"{case.label}: {e}")
            log(f"SKIPPED {case.label}: {e}")
            return
        except BenchError as e:
            res["error"] = str(e)
            self.failures.append(f"{case.label} run {idx}: {e}")
            log(f"FAILED {case.label} run {idx}: {e} (logs in {logdir})")
            for name in sorted(os.listdir(logdir)):
                with open(os.path.join(logdir, name), errors="replace") as f:
                    text = f.read().strip()
                if text:
                    tail = "\n    ".join(text.splitlines()[-8:])
                    log(f"  {name}:\n    {tail}")
        res["harness_s"] = round(time.monotonic() - t, 2)
        if idx == "sweep":
            case.sweep = res
        else:
            case.runs.append(res)
        if res["ok"]:
            log(f"  {case.label} run {idx}: {progress_line(res)} [{res['harness_s']:.1f} s]")

    # -- Memcached ceiling: the same records straight from memory
    def run_mc_ceiling(self, case, idx, logdir, res):
        mc, port = start_memcached(logdir)
        try:
            # the sweep only picks --batch/--conns: a share of the records is enough
            records = min(case.records, SWEEP_RECORDS) if idx == "sweep" else case.records
            argv = [self.tools.mc_ceiling, "-m", f"127.0.0.1:{port}", "--records", records,
                    "--keys", case.keys, "--value-size", case.value_size]
            if idx == "sweep":
                argv.append("--sweep")
            elif case.sweep and case.sweep.get("ok") and case.sweep.get("batch"):
                argv += ["--batch", case.sweep["batch"], "--conns", case.sweep["conns"]]
            tool = Child("mc-ceiling", argv, logdir)
            if not tool.wait(120 + case.records / 20000):
                tool.stop()
                raise BenchError("mc-ceiling timed out")
            res.update(tool.stats())
            res["argv"] = tool.argv
            self.take_json(case, tool, res, seconds_key="seconds", expect=records)
            for k in ("batch", "conns"):
                if k in res["tool_json"]:
                    res[k] = res["tool_json"][k]
            if idx == "sweep":  # each trial's line, on stderr
                res["trials"] = [t for t in map(json_or_none, tool.stderr_text().splitlines())
                                 if t and "trial" in t]
        finally:
            mc.stop()
            self.server_stats(res, "memcached", mc)

    # -- consumers reading a topic fed by a fresh mock paced by their group
    def run_consumer(self, case, idx, logdir, res):
        group = f"bench-{case.slug}-{idx}-{os.getpid()}-{int(time.time() * 1000)}"
        res["group"] = group
        mc = port = mock = tool = None
        try:
            if case.tool != "kafka-ceiling":
                mc, port = start_memcached(logdir)
            mock, bootstrap, feed, topic = self.start_mock(logdir, case, group)
            res["feed"] = feed
            res["topic"] = topic
            if feed == "paced":
                res["pace_lead"] = pace_lead(case.value_size)
            res["started_unix_ms"] = int(time.time() * 1000)
            # the broker's CPU while it serves this reader alone: a prefilled
            # topic (a paced mock also produces meanwhile)
            broker = self.broker_cpu(mock) if feed == "prefill" else None
            b0 = broker() if broker else None
            tool = Child(case.tool, self.consumer_argv(case, bootstrap, group, port, topic),
                         logdir)
            res["argv"] = tool.argv
            timeout = 30 + case.records / 10000
            if not tool.wait(timeout):
                tool.stop()
                raise BenchError(f"{case.tool} did not finish {case.records} records in "
                                 f"{timeout:.0f} s")
            if broker:
                res["broker_cpu_s"] = round(broker() - b0, 3)
            res.update(tool.stats())
            if case.tool == "k2mc":
                self.take_k2mc(case, tool, res)
            else:
                self.take_json(case, tool, res, seconds_key="seconds")
            if mock:
                self.check_mock(mock, res, case.records)
            else:  # checked when it was produced; the cache answers
                res["produced"] = self.kafka.prefilled(logdir, case.partitions, case.keys,
                                                       case.value_size,
                                                       case.records)["produced"]
            if res.get("broker_cpu_s") is not None and res.get("records"):
                res["broker_cpu_per_m"] = round(res["broker_cpu_s"] / res["records"] * 1e6, 4)
        finally:
            if tool:
                tool.stop(5)  # only when interrupted: a finished tool is reaped already
            if mock:
                mock.stop()
                self.server_stats(res, "feeder", mock)
            if mc:
                mc.stop()
                self.server_stats(res, "memcached", mc)

    # -- k2mc end-to-end latency at a fixed offered load
    def run_latency(self, case, idx, logdir, res):
        group = f"bench-{case.slug}-{idx}-{os.getpid()}-{int(time.time() * 1000)}"
        res["group"] = group
        mc = mock = tool = None
        try:
            mc, port = start_memcached(logdir)
            # an empty topic and a producer that waits for a command: the records
            # are produced once k2mc is assigned, so none waits for the group join
            mock, bootstrap, _, topic = self.start_mock(logdir, case, group, produce=False,
                                                        stdin_control=True, rate=case.rate)
            tool = Child("k2mc", self.consumer_argv(case, bootstrap, group, port, topic), logdir)
            res["argv"] = tool.argv
            deadline = time.monotonic() + 60
            while not re.search(r"assigned \d+ partition", tool.stderr_text()):
                if tool.wait(0):
                    raise BenchError(f"k2mc exited {tool.rc} before its assignment")
                if time.monotonic() > deadline:
                    tool.stop()
                    raise BenchError("k2mc logged no 'assigned N partition(s)' within 60 s")
                time.sleep(0.02)
            t_produce = time.monotonic()
            nlines = len(mock.lines)
            mock.send(f"produce {case.records}")
            timeout = 30 + case.records / case.rate * 2
            if not tool.wait(timeout):
                tool.stop()
                raise BenchError(f"k2mc did not finish {case.records} records in {timeout:.0f} s")
            res.update(tool.stats())
            self.take_k2mc(case, tool, res)
            got = mock.wait_line(lambda s: s.startswith("ok produce") or s.startswith("error"),
                                 30, start=nlines)
            if not got or not got[1].startswith("ok"):
                raise BenchError(f"k2mc-mock: produce {case.records} answered {got and got[1]}")
            res["offered_rps"] = round(case.records / (got[0] - t_produce), 1)
            if mock.wait(0):
                raise BenchError(f"k2mc-mock exited {mock.rc} during the run")
        finally:
            if tool:
                tool.stop(5)  # only when interrupted: a finished tool is reaped already
            if mock:
                mock.stop()
                self.server_stats(res, "feeder", mock)
            if mc:
                mc.stop()
                self.server_stats(res, "memcached", mc)

    # -- what the tools print
    def take_json(self, case, tool, res, seconds_key, expect=None):
        data = None
        for line in reversed(tool.stdout_text().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    data = json.loads(line)
                    break
                except ValueError:
                    continue
        if tool.rc != 0:
            raise BenchError(f"{case.tool} exited {tool.rc}: "
                             f"{excerpt(tool.stderr_text())}")
        if data is None:
            raise BenchError(f"{case.tool} printed no JSON line")
        res["tool_json"] = data
        records = int(data.get("records", 0))
        seconds = float(data.get(seconds_key) or 0)
        expect = case.records if expect is None else expect
        if records < expect:
            raise BenchError(f"{case.tool} handled {records} of {expect} records")
        if int(data.get("failed", 0) or 0) > 0:
            raise BenchError(f"{case.tool} reports {data['failed']} failed records")
        rps = float(data.get("rps") or (records / seconds if seconds > 0 else 0))
        self.derive(case, res, records, rps)

    def take_k2mc(self, case, tool, res):
        text = tool.stderr_text()
        lines = [s for s in text.splitlines() if "k2mc: summary:" in s]
        if tool.rc != 0:
            raise BenchError(f"k2mc exited {tool.rc}: {excerpt(text)}")
        if not lines:
            raise BenchError("k2mc printed no summary line")
        s = lines[-1]
        res["summary"] = s
        num = lambda pat: (lambda m: float(m.group(1)) if m else None)(re.search(pat, s))  # noqa: E731
        consumed = num(r"consumed (\d+)")
        written = num(r"written (\d+)") or 0
        deleted = num(r"deleted (\d+)") or 0
        # records a later record of the same key replaced in their batch (issue 14)
        written += num(r"coalesced (\d+)") or 0
        unwritten = num(r"unwritten (\d+)")
        m = re.search(r"([\d.]+)s since assignment \(([\d.]+) records/s\)", s)
        if consumed is None or not m:
            raise BenchError(f"k2mc summary not understood: {s}")
        consumed = int(consumed)
        if consumed < case.records:
            raise BenchError(f"k2mc consumed {consumed} of {case.records} records")
        if unwritten:
            raise BenchError(f"k2mc left {int(unwritten)} records unwritten")
        if written + deleted < case.records:
            raise BenchError(f"k2mc wrote {int(written + deleted)} of {case.records} records")
        since = float(m.group(1))
        rps = float(m.group(2)) or (consumed / since if since > 0 else 0)
        res["since_assignment_s"] = since
        m = re.search(r"latency ms p50 ([\d.]+) p99 ([\d.]+) p999 ([\d.]+)", s)
        if m:
            res["lat_p50"], res["lat_p99"], res["lat_p999"] = (float(x) for x in m.groups())
        self.derive(case, res, consumed, rps)

    @staticmethod
    def derive(case, res, records, rps):
        res["records"] = records
        res["rps"] = round(rps, 1)
        res["seconds"] = round(records / rps, 4) if rps > 0 else None
        # MB/s over key + value bytes, the same for every tool (MB = 10^6 bytes)
        res["mbps"] = round(rps * (KEY_LEN + case.value_size) / 1e6, 2)
        res["rps_wall"] = round(records / res["wall_s"], 1) if res.get("wall_s") else None
        res["cpu_per_m"] = round(res["cpu_s"] / records * 1e6, 4) if records else None

    def broker_cpu(self, mock):
        """A function returning the CPU seconds of the process that serves
        the records: the real broker's JVM, or the mock's k2mc-mock."""
        if self.kafka.real:
            return self.kafka.cpu_s
        return lambda: proc_cpu_s(mock.pid)

    @staticmethod
    def check_mock(mock, res, records):
        if mock.wait(0):
            raise BenchError(f"k2mc-mock exited {mock.rc} during the run: "
                             f"{excerpt(mock.stderr_text())}")
        got = mock.wait_line(lambda s: s.startswith("produced="), 15)
        if not got:
            res["warning"] = "k2mc-mock printed no produced= line"
            return
        tok = kv_tokens(got[1])
        res["produced"] = {k: int(v) for k, v in tok.items() if v.isdigit()}
        if int(tok.get("failed", "0")) > 0 or int(tok.get("acked", records)) < records:
            raise BenchError(f"k2mc-mock: {got[1]}")
        for _, line in mock.lines:
            if line.startswith("produce_start_ms="):
                res["produce_start_unix_ms"] = int(line.split("=", 1)[1])

    @staticmethod
    def server_stats(res, name, child):
        if child.rusage is None:
            return
        st = child.stats()
        res[name] = {k: st[k] for k in ("exit", "cpu_s", "maxrss_kib")}
        if name == "feeder":
            res["feeder_cpu_s"] = st["cpu_s"]
        if name == "memcached" and res.get("records"):
            res["memcached_cpu_per_m"] = round(st["cpu_s"] / res["records"] * 1e6, 4)


def progress_line(r):
    parts = [f"{r['rps']:,.0f} rec/s" if r.get("rps") else None,
             f"{r['mbps']:.1f} MB/s" if r.get("mbps") else None,
             f"cpu {r['cpu_per_m']:.2f} s/M" if r.get("cpu_per_m") is not None else None,
             f"rss {r['maxrss_kib'] / 1024:.1f} MiB" if r.get("maxrss_kib") else None,
             f"wall {r['wall_s']:.2f} s" if r.get("wall_s") else None]
    if r.get("lat_p50") is not None and r.get("offered_rps"):
        parts.append(f"latency p50/p99/p999 {r['lat_p50']:g}/{r['lat_p99']:g}/{r['lat_p999']:g} ms")
    if r.get("batch"):
        parts.append(f"batch {r['batch']} conns {r.get('conns')}")
    return ", ".join(p for p in parts if p)


# ---------------------------------------------------------------------------
# Formatting

def fmt_count(n):
    for div, suf in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suf}"
    return f"{n:,}"


def fmt_bytes(n):
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def f_rps(v):
    return "-" if v is None else f"{v:,.0f}"


def f_num(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def f_us(v):
    return "-" if v is None else f"{v:.3f} µs"


def f_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def vs(c, ceiling):
    """'0.71x of 417,668': c's median records/s against a ceiling case's."""
    a = c.median.get("rps")
    b = ceiling.median.get("rps") if ceiling is not None and not ceiling.skipped else None
    if c.tool in ("mc-ceiling", "kafka-ceiling") or not a or not b:
        return "-"
    return f"{a / b:.2f}x of {b:,.0f}"


def case_row(c, name=None, ceilings=(None, None)):
    m = c.median
    if c.skipped:
        return [name or c.label, fmt_count(c.records), "skipped"] + ["-"] * 8
    okn, n = len(c.ok_runs()), len(c.runs)
    spread = ""
    if okn > 1 and m.get("rps"):
        spread = f" ±{(m['rps_max'] - m['rps_min']) / 2 / m['rps'] * 100:.0f}%"
    return [name or c.label, fmt_count(c.records), f"{okn}/{n}",
            f_rps(m.get("rps")) + spread, f_num(m.get("mbps")), f_rps(m.get("rps_wall")),
            f_num(m.get("cpu_per_m"), 2), f_num(m.get("broker_cpu_per_m"), 2),
            f_num(m["maxrss_kib"] / 1024 if "maxrss_kib" in m else None),
            vs(c, ceilings[0]), vs(c, ceilings[1])]


THROUGHPUT_HEAD = ["configuration", "records", "runs ok", "records/s (median)", "MB/s",
                   "records/s wall", "CPU s / M records", "broker CPU s / M", "peak RSS MiB",
                   "vs Kafka ceiling", "vs Memcached ceiling"]
LATENCY_HEAD = ["configuration", "records", "runs ok", "offered records/s", "p50 ms", "p99 ms",
                "p999 ms", "CPU s / M records", "peak RSS MiB"]


def latency_row(c):
    m = c.median
    if c.skipped:
        return [c.label, fmt_count(c.records), "skipped"] + ["-"] * 6
    return [c.label, fmt_count(c.records), f"{len(c.ok_runs())}/{len(c.runs)}",
            f_rps(m.get("offered_rps")), f_num(m.get("lat_p50"), 0), f_num(m.get("lat_p99"), 0),
            f_num(m.get("lat_p999"), 0), f_num(m.get("cpu_per_m"), 2),
            f_num(m["maxrss_kib"] / 1024 if "maxrss_kib" in m else None)]


def table_text(head, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    out = ["  ".join(str(h).ljust(w) for h, w in zip(head, widths)),
           "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append("  ".join((str(x).ljust(w) if i == 0 else str(x).rjust(w))
                             for i, (x, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def table_md(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Environment

def sh(argv, **kw):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT, **kw)
        return p.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def environment(tools):
    env = {"nproc": os.cpu_count(), "cpus_allowed": len(os.sched_getaffinity(0)),
           "kernel": platform.release(), "uname": " ".join(os.uname()),
           "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu_model"] = next((s.split(":", 1)[1].strip() for s in f
                                     if s.startswith("model name")), None)
        with open("/proc/meminfo") as f:
            env["mem_total_kib"] = int(next(s for s in f if s.startswith("MemTotal")).split()[1])
    except (OSError, StopIteration):
        pass
    pkgs = ["librdkafka1", "librdkafka-dev", "libmemcached11", "libmemcached-dev", "memcached",
            "liburcu8", "liburcu-dev", "libxxhash0", "python3", "python3-confluent-kafka",
            "python3-pymemcache", "gnuplot-nox", "gcc", "clang"]
    out = sh(["dpkg-query", "-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"] + pkgs)
    env["packages"] = {p: v for p, v, st in (s.split("\t") for s in out.splitlines()
                                             if s.count("\t") == 2) if st.startswith("ii")}
    env["git"] = {"rev": sh(["git", "rev-parse", "HEAD"]),
                  "describe": sh(["git", "describe", "--always", "--dirty"]),
                  "dirty_files": len(sh(["git", "status", "--porcelain"]).splitlines())}
    env["k2mc_version"] = sh([tools.k2mc, "-V"]) if os.access(tools.k2mc, os.X_OK) else None
    env["mock_paces"] = tools.mock_paces
    return env


# ---------------------------------------------------------------------------
# Report

VARIANT_NOTES = {
    "partitions": "Each row has its own Kafka ceiling (same partitions, same records).",
    "values": "Each row has its own Kafka and Memcached ceilings (same value size, same "
              "records); fewer records for large values.",
    "keys": "Each row has its own Memcached ceiling (same key space); the Kafka ceiling does "
            "not depend on the keys.",
    "rss": "Same configuration, 10x the records: the peak RSS should not grow with them.",
}


class Report:
    def __init__(self, mode, cases, sections, registry, real=False):
        self.mode = mode
        self.real = real
        self.c = cases
        self.registry = registry
        self.sections = sections
        self.tables = []  # (title, head, rows, note)
        self.ratios = {}
        self.targets = []
        self.cost_tables, self.cost_ratios, self.cost_targets = [], {}, []

    def ceilings(self, case):
        """The Kafka and Memcached ceilings measured on case's records, where they were."""
        kc = mc = None
        for x in self.registry.values():
            if x.tool == "kafka-ceiling" and (x.partitions, x.value_size, x.records) == (
                    case.partitions, case.value_size, case.records):
                kc = x
            if x.tool == "mc-ceiling" and (x.value_size, x.keys, x.records) == (
                    case.value_size, case.keys, case.records):
                mc = x
        return kc, mc

    def row(self, case, name=None):
        return case_row(case, name, self.ceilings(case))

    def rps(self, case):
        return case.median.get("rps") if case and not case.skipped else None

    def build(self):
        c = self.c
        head = c.get("headline")
        mc, kc, py = c.get("mc"), c.get("kc"), c.get("py")
        rows = [self.row(x) for x in (mc, kc, py) if x]
        shown = head or next(iter(c.get("writers", [])), None)
        if shown:
            rows.append(self.row(shown, shown.label + (" [headline]" if head else "")))
        if rows:
            self.tables.append(("Side by side (100 B values, 8 partitions)", THROUGHPUT_HEAD, rows,
                                "records/s: the tools' own clock (k2mc: since its group assignment); "
                                "records/s wall: spawn to exit, group join included. " +
                                ("Every topic is produced before its readers start; broker CPU: "
                                 "the broker JVM's while it serves the reader. " if self.real else
                                 "The Kafka ceiling includes the feed: k2mc-mock produces on the "
                                 "same CPUs while the consumer reads, as it does for every Kafka "
                                 "reader here. ") +
                                "'vs ... ceiling': median records/s over the ceiling's, measured on "
                                "the same records in this run."))
        for title, key in (("k2mc vs --writers (8 partitions, 100 B)", "writers"),
                           ("k2mc vs partitions (--writers 2, 100 B)", "partitions"),
                           ("k2mc vs value size (--writers 2, 8 partitions)", "values"),
                           ("k2mc vs key space (--writers 2, 8 partitions, 100 B)", "keys"),
                           ("k2mc peak RSS vs topic size (--writers 2, 8 partitions, 100 B)",
                            "rss")):
            if c.get(key):
                self.tables.append((title, THROUGHPUT_HEAD, [self.row(x) for x in c[key]],
                                    VARIANT_NOTES.get(key)))
        if c.get("latency"):
            self.tables.append(("k2mc end-to-end latency (Kafka timestamp to Memcached ack) at "
                                "a fixed offered load", LATENCY_HEAD,
                                [latency_row(x) for x in c["latency"]],
                                "offered load ~50% of the headline k2mc rate; records produced "
                                "only after k2mc's assignment; percentiles from k2mc's summary "
                                "(whole milliseconds)."))
        k = self.rps(head)
        m, q, p = self.rps(mc), self.rps(kc), self.rps(py)
        div = lambda a, b: a / b if a is not None and b else None  # noqa: E731
        ceil = min(x for x in (m, q) if x) if (m or q) else None
        kcpu = head.median.get("cpu_per_m") if head and not head.skipped else None
        pcpu = py.median.get("cpu_per_m") if py and not py.skipped else None
        self.ratios = {
            "k2mc_over_memcached_ceiling": div(k, m),
            "k2mc_over_kafka_ceiling": div(k, q),
            "k2mc_over_min_ceiling": div(k, ceil),
            "k2mc_over_python": div(k, p),
            "python_cpu_per_m_over_k2mc": div(pcpu, kcpu),
        }
        self.headline_label = head.label if head else None

        def target(name, value, threshold, met, detail):
            self.targets.append({"target": name, "value": value, "threshold": threshold,
                                 "status": ("not measured" if met is None else
                                            "met" if met else "NOT met"), "detail": detail})

        r = self.ratios["k2mc_over_min_ceiling"]
        target("k2mc records/s >= 0.8 x min(Memcached ceiling, Kafka ceiling)", r,
               TARGET_CEILING_FRACTION, None if r is None else r >= TARGET_CEILING_FRACTION,
               None if r is None else f"{f_rps(k)} vs {f_rps(ceil)} ({r:.2f}x)")
        r = self.ratios["k2mc_over_python"]
        target("k2mc records/s >= 5 x Python baseline", r, TARGET_PYTHON_SPEEDUP,
               None if r is None else r >= TARGET_PYTHON_SPEEDUP,
               None if r is None else f"{f_rps(k)} vs {f_rps(p)} ({r:.2f}x)")
        r = div(kcpu, pcpu)
        target("k2mc CPU-seconds per M records <= 1/10 of the Python baseline", r,
               TARGET_PYTHON_CPU_FRACTION, None if r is None else r <= TARGET_PYTHON_CPU_FRACTION,
               None if r is None else f"{kcpu:.2f} vs {pcpu:.2f} s/M ({r:.3f} of Python's)")
        rss = [x for x in c.get("rss", []) if not x.skipped and x.median.get("maxrss_kib")]
        if len(rss) == 2:
            a, b = rss[0].median["maxrss_kib"], rss[1].median["maxrss_kib"]
            lim = max(a * (1 + RSS_TOLERANCE), a + RSS_SLACK_KIB)
            target("peak RSS bounded by configuration (same at 1M and 10M records)", b / a,
                   lim / a, b <= lim,
                   f"{a / 1024:.1f} MiB at {fmt_count(rss[0].records)}, {b / 1024:.1f} MiB at "
                   f"{fmt_count(rss[1].records)} (allowed: +10% or +8 MiB)")
        else:
            target("peak RSS bounded by configuration (same at 1M and 10M records)", None, None,
                   None, "needs the full mode")
        ws = [x for x in c.get("writers", []) if not x.skipped and x.median.get("rps")]
        if len(ws) >= 2 and ceil:
            met, notes = True, []
            for a, b in zip(ws, ws[1:]):
                ra, rb = a.median["rps"], b.median["rps"]
                notes.append(f"{a.writers}->{b.writers}: {rb / ra:.2f}x")
                if rb < ra * (1 - WRITERS_NOISE) and ra < TARGET_CEILING_FRACTION * ceil:
                    met = False
            best = max(ws, key=lambda x: x.median["rps"])
            if best is ws[0] and ws[0].median["rps"] < TARGET_CEILING_FRACTION * ceil:
                met = False  # no growth at all below the ceiling
            target("records/s grows with --writers until the ceiling", None, None, met,
                   "; ".join(notes) + f"; best --writers {best.writers}")
        else:
            target("records/s grows with --writers until the ceiling", None, None, None,
                   "needs the full mode (--writers 1, 2, 4, 8)")

    def ratio_lines(self):
        r = self.ratios
        lab = self.headline_label or "none measured"
        return [f"k2mc / Memcached ceiling: {f_ratio(r['k2mc_over_memcached_ceiling'])}",
                f"k2mc / Kafka ceiling: {f_ratio(r['k2mc_over_kafka_ceiling'])}",
                f"k2mc / min(ceilings): {f_ratio(r['k2mc_over_min_ceiling'])}",
                f"k2mc / Python records/s: {f_ratio(r['k2mc_over_python'])}",
                f"Python CPU per M / k2mc CPU per M: {f_ratio(r['python_cpu_per_m_over_k2mc'])}",
                f"(k2mc = {lab})"]

    def target_lines(self):
        return [f"[{t['status']}] {t['target']}" + (f": {t['detail']}" if t["detail"] else "")
                for t in self.targets]

    def cost_lines(self):
        return ([f"[{t['status']}] {t['target']}" + (f": {t['detail']}" if t["detail"] else "")
                 for t in self.cost_targets])

    def text(self):
        out = []
        for title, head, rows, note in self.cost_tables:
            out += ["", f"== {title}", table_text(head, rows)]
            if note:
                out.append(note)
        if self.cost_ratios or self.cost_targets:
            out += ["", "== Headline ratios (issue 14)"]
            out += ["  " + s for s in cost_ratio_lines(self.cost_ratios)]
            out += ["", "== Targets (issue 14)"] + ["  " + s for s in self.cost_lines()]
        for title, head, rows, note in self.tables:
            out += ["", f"== {title}", table_text(head, rows)]
            if note:
                out.append(note)
        if any(self.c.get(k) for k in ("mc", "kc", "py", "writers")):
            out += ["", "== Headline ratios (issue 3)"] + ["  " + s for s in self.ratio_lines()]
            out += ["", "== Targets (issue 3)"] + ["  " + s for s in self.target_lines()]
        return "\n".join(out)

    def markdown(self, meta, env, plot_msg):
        g = env.get("git", {})
        kf = meta.get("kafka", {})
        real = kf.get("backend") == "real"
        out = [f"# k2mc benchmark ({self.mode} mode" +
               (f", Apache Kafka {kf.get('version')})" if real else ")"), "",
               f"{meta['finished']} · git {g.get('describe', '?')} · {env.get('nproc')} CPUs "
               f"({env.get('cpu_model') or '?'}) · kernel {env.get('kernel')} · "
               f"{meta['duration_s']:.0f} s", ""]
        if real:
            out += [f"Kafka: one Apache Kafka {kf.get('version')} broker for the whole run "
                    "(tests/kafka/kafka-broker: single-node KRaft, broker and controller in one "
                    f"JVM, {kf.get('java') or 'java'}), on the same 2 cores as everything "
                    f"else; ready {kf.get('start_ms')} ms after its launch (storage format "
                    f"{kf.get('format_ms')} ms before that), then warmed up by "
                    f"{fmt_count(KAFKA_WARMUP_RECORDS)} records produced and read once "
                    f"({kf.get('warmup_s')} s). Every consumer reads a topic of it "
                    f"({meta['feed_note']}) with a fresh group and writes to a fresh memcached; "
                    f"median of {meta['runs']} run(s).", ""]
        else:
            out += [f"Every consumer reads a fresh k2mc-mock topic ({meta['feed_note']}) with a "
                    f"fresh group and writes to a fresh memcached; median of {meta['runs']} "
                    "run(s).", ""]
        out += ["CPU = user + sys of the measured process alone (os.wait4), peak RSS = "
                "ru_maxrss. MB/s counts key + value bytes (MB = 10^6).", ""]
        fetch = (f"- every Kafka reader (ceiling, Python, k2mc) gets "
                 f"{' '.join('-X ' + p for p in MOCK_FETCH_PROPS)}: the mock broker holds each "
                 "fetch for the whole wait even when data is there (a real broker does not).")
        if real:
            fetch = ("- every Kafka reader keeps librdkafka's fetch defaults (no -X "
                     "fetch.wait.max.ms=10, which the mock runs get): a real broker answers a "
                     "fetch as soon as records are there, and 10 ms would only add empty fetch "
                     "round trips to an idle reader, on the broker's CPU.")
        out += ["How measured:", "", fetch,
                "- broker CPU per record: utime + stime of the process that serves the topic "
                "(the broker JVM on a real broker, k2mc-mock on the mock) from /proc/PID/stat "
                "fields 14 and 15, from the reader's spawn to its exit (the group's join, "
                "commits and leave included), over the records it read; only where the topic "
                "was produced before the reader started.",
                "- records/s: each tool's own clock; k2mc's is its summary line's records/s "
                "since the group assignment, the ceilings and Python report theirs in JSON. "
                "'records/s wall' is spawn to exit (the group join included" +
                (")." if real else ": about 3 s on the mock)."),
                (f"- feed: k2mc-mock --pace-group <the run's group> --pace-lead "
                 f"{', '.join(f'{v} ({fmt_bytes(b)})' for b, v in meta['pace_lead'].items())}; "
                 if not real else
                 "- feed: each topic produced once, before its first reader, by k2mc-mock -b "
                 "(the mock runs' generator and seed), with the record counts of the mock runs "
                 "(sized for its 5 MiB per partition) so that the two backends' tables compare "
                 "row by row; ") +
                f"k2mc: --commit-interval-ms {K2MC_COMMIT_MS} -q "
                f"{' '.join(meta['k2mc_args'])}".rstrip(),
                "- Memcached ceiling: mc-ceiling --sweep on up to "
                f"{fmt_count(SWEEP_RECORDS)} records picks --batch/--conns, then the measured "
                "runs use them on all the records.",
                "- latency: k2mc joins an empty topic; once it logs its assignment k2mc-mock "
                "produces at the offered rate (--rate); p50/p99/p999 from k2mc's summary, "
                "Kafka record timestamp to Memcached acknowledgement."]
        if self.mode == "quick" and not real:
            out.append("- quick mode: one run each; the mock produces up to --pace-lead records "
                       "per partition ahead while the group joins (about 240k at 8 partitions), "
                       "so part of a short run reads a backlog: indicative, noisier than the "
                       "full mode.")
        if self.cost_ratios or self.cost_targets:
            out += ["", "## Headline (issue 14: cost per record, topic produced before the run)",
                    ""] + [f"- {s}" for s in cost_ratio_lines(self.cost_ratios)] + [""]
            out += ["## Targets (issue 14)", ""] + [f"- {s}" for s in self.cost_lines()] + [""]
            out += ["Sustained records/s: memcached's own counters (cmd_set + delete_hits + "
                    "delete_misses, polled every 5 ms) between 10% and 90% of the run's writes; "
                    "CPU: user + sys of the measured process alone; peak RSS: VmHWM polled "
                    "from /proc. The Memcached ceiling is mc-ceiling --blast (quiet meta sets "
                    "formatted before the clock starts, 2 connections) on a fresh memcached "
                    "-t 2; its CPU is the client's. Floor = Kafka ceiling + Memcached ceiling "
                    "client CPU per record. Python's and the Kafka ceiling's rates: see the "
                    "tables (the Kafka ceiling writes nothing: its own clock, in parentheses).",
                    ""]
            for title, head, rows, note in self.cost_tables:
                out += [f"## {title}", "", table_md(head, rows), ""]
                if note:
                    out += [note, ""]
        if any(self.c.get(k) for k in ("mc", "kc", "py", "writers")):
            out += ["", "## Headline (issue 3)", ""] + [f"- {s}" for s in self.ratio_lines()]
            out += ["", "## Targets (issue 3)", ""] + [f"- {s}" for s in self.target_lines()]
            out += [""]
        for title, head, rows, note in self.tables:
            out += [f"## {title}", "", table_md(head, rows), ""]
            if note:
                out += [note, ""]
        if plot_msg:
            out += ["## Plot", "", plot_msg, ""]
        if meta["skipped"] or meta["failures"]:
            out += ["## Skipped and failed", ""]
            out += [f"- skipped: {s}" for s in meta["skipped"]]
            out += [f"- FAILED: {s}" for s in meta["failures"]]
            out.append("")
        pk = env.get("packages", {})
        out += ["## Environment", "",
                "- " + ", ".join(f"{p} {v}" for p, v in sorted(pk.items())),
                f"- {env.get('uname')}",
                "- load average at start / end: "
                f"{' '.join(f'{x:.2f}' for x in env.get('loadavg_at_start', []))} / "
                f"{' '.join(f'{x:.2f}' for x in env.get('loadavg_at_end', []))} "
                "(other work on the machine shows up here)", ""]
        return "\n".join(out)


# issue 10: what --key/--value templates and JSON cost (template_costs)
SECTIONS.append("templates")
QUICK_SECTIONS.append("templates")
TEMPLATES_HEAD = ["engine", "templates", "value bytes", "CPU ns/record", "records/s"]
TEMPLATES_E2E_HEAD = ["values", "value bytes", "k2mc settings", "CPU us/record", "records/s"]
FORMATS_HEAD = ["--value-format", "templates", "record bytes", "CPU ns/record", "records/s"]


def template_costs(build, bench, quick):
    """The templates section: build/json-bench (the mapping alone, k2mc's JSON
    extractor against jansson and json-c) and bench/template_cost.py (k2mc end
    to end per --key/--value on one prefilled topic, in turns). (tables, JSON
    rows); no tables when a tool is missing."""
    tool = os.path.join(ROOT, build, "json-bench")
    tables, rows = [], {"mapping": [], "formats": [], "end_to_end": []}
    if not os.access(tool, os.X_OK):
        bench.skips.append(f"templates: {os.path.relpath(tool, ROOT)} is missing "
                           "(make build/json-bench)")
        return tables, rows
    log("templates: the mapping's CPU per record per template and JSON engine")
    try:
        out = subprocess.run([tool, "--json", "--records", "200000" if quick else "1000000"],
                             capture_output=True, text=True, timeout=600, check=True)
        rows["mapping"] = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        tables.append(("Templates: CPU per record of the mapping alone (json-bench)",
                       TEMPLATES_HEAD,
                       [[r["engine"], r["templates"], str(r["value_bytes"]),
                         f"{r['cpu_ns_per_record']:.0f}", f_rps(r["records_per_s"])]
                        for r in rows["mapping"]],
                       "one thread; jansson and json-c do what the templates "
                       "'user:{json:/id}' + '{json:/profile}' do, their outputs checked equal "
                       "to k2mc's; 'keymap (before)': what the hot path did before templates"))
        formats = os.path.join(ROOT, build, "avro-bench")
        if os.access(formats, os.X_OK):
            log("templates: CPU per record per format, raw, json, avro (avro-bench)")
            out = subprocess.run([formats], capture_output=True, text=True, timeout=600,
                                 check=True)
            rows["formats"] = [json.loads(x) for x in out.stdout.splitlines()
                               if x.startswith("{")]
            tables.append(("Formats: CPU per record to read and map it (avro-bench)",
                           FORMATS_HEAD,
                           [[r["format"], r["case"], str(r["record_bytes"]),
                             f"{r['cpu_ns_per_record']:.0f}", f_rps(r["records_per_s"])]
                            for r in rows["formats"]],
                           "one thread, the writer's work per record (decode into its "
                           "context, copy into the batch's arena, k2mc_mapping_map); the "
                           "same row in every format (Avro from libavro, JSON the "
                           "decoder's output); the schema compiled once, as the registry "
                           "client does per id; best of 5 passes over 4096 records"))
        else:
            bench.skips.append(f"templates: {os.path.relpath(formats, ROOT)} is missing "
                               "(make build/avro-bench)")
        log("templates: k2mc end to end per --key/--value (template_cost.py)")
        cmd = [sys.executable, os.path.join(ROOT, "bench", "template_cost.py"), "--json"]
        if quick:
            cmd += ["--quick", "--runs", "1"]
        if bench.kafka.real:
            cmd += ["--bootstrap", bench.kafka.bootstrap]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=True)
        rows["end_to_end"] = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
        tables.append(("Templates: k2mc end to end per --key/--value (template_cost.py)",
                       TEMPLATES_E2E_HEAD,
                       [[r["values"], str(r["value_bytes"]), r["case"],
                         f"{r['cpu_us_per_record']:.2f}", f_rps(r["records_per_s"])]
                        for r in rows["end_to_end"]],
                       "one prefilled topic per value size, every setting read by a new group "
                       "in turns (median of the runs); CPU is k2mc's own user+sys"))
    except (subprocess.SubprocessError, OSError, ValueError) as e:
        bench.failures.append(f"templates: {e}")
    return tables, rows


PLACEMENT_HEAD = ["--distribution", "3 servers", "16 servers", "16, one ejected"]


def placement_costs(build, bench):
    """The placement section: build/placement-bench's CPU ns per key for each
    --distribution (12-byte keys, one thread); (table, JSON rows) or (None, [])."""
    tool = os.path.join(ROOT, build, "placement-bench")
    if not os.access(tool, os.X_OK):
        bench.skips.append(f"placement: {os.path.relpath(tool, ROOT)} is missing "
                           "(make build/placement-bench)")
        return None, []
    log("placement: CPU per key for each --distribution at 3 and 16 servers")
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=300, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        bench.failures.append(f"placement-bench: {e}")
        return None, []
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    ns = lambda v: "refused" if v < 0 else f"{v:.0f} ns"  # noqa: E731
    table = [[r["distribution"], ns(r["ns_per_key_3"]), ns(r["ns_per_key_16"]),
              ns(r["ns_per_key_16_one_ejected"])] for r in rows]
    return (("Placement: CPU per key to choose its server (placement-bench)", PLACEMENT_HEAD,
             table, "best of 5 passes over 262,144 keys of 12 bytes, one thread; 'one "
             "ejected': --mc-eject with one of 16 servers out (failover rehashing for dalli "
             "and spymemcached); 'refused': the distribution refuses --mc-eject"), rows)



TRANSPORTS_HEAD = ["transport", "sets/s", "client CPU per set", "memcached CPU per set"]
TRANSPORT_RECORDS = 500_000
TRANSPORT_ROUNDS = 3


def transport_costs(build, bench):
    """The transports section: mc-ceiling (k2mc's own connection code) writing
    the same records to memcached over loopback TCP, a unix socket and TLS,
    in turns, TRANSPORT_ROUNDS rounds, the median of each; client and server
    CPU per set. (table, JSON rows) or (None, [])."""
    tool = os.path.join(ROOT, build, "mc-ceiling")
    if not os.access(tool, os.X_OK) or not shutil.which("openssl"):
        bench.skips.append("transports: build/mc-ceiling or openssl is missing")
        return None, []
    log("transports: mc-ceiling over TCP, a unix socket and TLS, in turns")
    tmp = tempfile.mkdtemp(prefix="k2mc-bench-tls-")
    os.chmod(tmp, 0o777)  # memcached runs as nobody: its socket and the key
    procs, rows = [], []
    try:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *a: subprocess.run(a, cwd=tmp, check=True, capture_output=True)  # noqa: E731
        run("openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days",
            "2", "-subj", "/CN=k2mc bench CA")
        run("openssl", "req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj",
            "/CN=localhost")
        with open(os.path.join(tmp, "srv.ext"), "w") as f:
            f.write("subjectAltName=IP:127.0.0.1\n")
        run("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "srv.ext")
        os.chmod(os.path.join(tmp, "srv.key"), 0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        base = ["memcached", *user, "-U", "0", "-m", "1024", "-t", "2"]
        sock = os.path.join(tmp, "mc.sock")
        tcp_port, tls_port = free_port(), free_port()
        servers = {
            "tcp": (base + ["-l", "127.0.0.1", "-p", str(tcp_port)], ["-m", f"127.0.0.1:{tcp_port}"]),
            "unix": (base + ["-s", sock, "-a", "0777"], ["-m", sock]),
            "tls": (base + ["-l", "127.0.0.1", "-p", str(tls_port), "-Z", "-o",
                            f"ssl_chain_cert={tmp}/srv.crt,ssl_key={tmp}/srv.key"],
                    ["-m", f"127.0.0.1:{tls_port}", "--tls", "--tls-ca", f"{tmp}/ca.crt"]),
        }
        started = {}
        for name, (argv, target) in servers.items():
            p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append(p)
            started[name] = (p, target)
        runs = {name: [] for name in servers}
        for rnd in range(TRANSPORT_ROUNDS):
            for name, (p, target) in started.items():
                argv = [tool, *target, "--records", str(TRANSPORT_RECORDS), "--keys",
                        "100000", "--value-size", "100", "--batch", "1000"]
                deadline = time.monotonic() + 10
                while True:  # until the server listens
                    c0 = proc_cpu_s(p.pid)
                    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
                    if out.returncode == 0 or time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                if out.returncode != 0:
                    raise BenchError(f"mc-ceiling over {name}: {out.stderr.strip()}")
                j = json.loads(out.stdout.strip().splitlines()[-1])
                j["server_cpu_s"] = proc_cpu_s(p.pid) - c0
                runs[name].append(j)
        for name, rs in runs.items():
            med = sorted(rs, key=lambda r: r["rps"])[len(rs) // 2]
            n = med["records"]
            rows.append({"transport": name, "rps": med["rps"], "records": n,
                         "client_us_per_set": (med["cpu_user"] + med["cpu_sys"]) / n * 1e6,
                         "server_us_per_set": med["server_cpu_s"] / n * 1e6,
                         "rounds": rs})
    except (subprocess.SubprocessError, OSError, ValueError, BenchError) as e:
        bench.failures.append(f"transports: {e}")
        return None, []
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    tcp = next(r for r in rows if r["transport"] == "tcp")
    table = [[r["transport"], f"{r['rps']:,.0f} ({r['rps'] / tcp['rps']:.2f}x TCP)",
              f"{r['client_us_per_set']:.3f} µs", f"{r['server_us_per_set']:.3f} µs"]
             for r in rows]
    return (("Transports: the same sets over loopback TCP, a unix socket and TLS (mc-ceiling)",
             TRANSPORTS_HEAD, table,
             f"{TRANSPORT_RECORDS:,} sets of 100 bytes over 100,000 keys, batches of 1000, one "
             f"connection; median of {TRANSPORT_ROUNDS} rounds taken in turns; client CPU is "
             "mc-ceiling's (k2mc's own connection code: src/workers/mcconn.c, transport.c), "
             "memcached's from /proc; TLS 1.3 with an ECDSA P-256 certificate"), rows)


REFILL_HEAD = ["phase", "records", "records/s", "how measured"]


def refill_costs(build, bench, quick, k2mc=None):
    """The refill section (issue 12): k2mc --refill loads a topic produced
    before the run into 3 memcached servers (the live rate: cmd_set of all three,
    between 10% and 90% of the writes); then one server is flushed and k2mc
    refills it (records rewritten per second from refill_records, the number
    /metrics shows as k2mc_refill_records_total, sampled every 100 ms through
    --stats-json, between 10% and 90% of the final count; and k2mc's own figure
    from its end-of-refill line). (table, JSON) or (None, {})."""
    tools = bench.tools
    k2mc = k2mc or tools.k2mc
    if tools.missing("k2mc"):
        bench.skips.append(f"refill: {tools.missing('k2mc')}")
        return None, {}
    parts = 8 if quick else 32
    # quick mode stays under 2 minutes in all
    n = prefill_records(parts, 100, 150_000 if quick else 2_000_000)
    logdir = os.path.join(bench.logroot, f"refill-{os.getpid()}")
    os.makedirs(logdir, exist_ok=True)
    log(f"refill: {fmt_count(n)} records over {parts} partitions into 3 memcached servers, "
        "then flush_all of one and its refill")
    procs, counters, res = [], [], {}
    try:
        ports = []
        for _ in range(3):
            mc, port = start_memcached(logdir)
            procs.append(mc)
            ports.append(port)
        topic = TOPIC
        if bench.kafka.real:
            bootstrap = bench.kafka.bootstrap
            topic = bench.kafka.prefilled(logdir, parts, n, 100, n)["topic"]
        else:
            mock = Child("k2mc-mock-refill", [tools.mock, "--topic", f"{TOPIC}:{parts}", "--keys",
                                              n, "--value-size", 100, "--seed", 1, "-q",
                                              "--produce", n], logdir, stdout_lines=True)
            procs.append(mock)
            got = mock.wait_line(lambda x: x.startswith("bootstrap="), 30)
            if not got:
                raise BenchError("k2mc-mock printed no bootstrap= line: "
                                 f"{excerpt(mock.stderr_text())}")
            bootstrap = got[1].split("=", 1)[1].strip()
            got = mock.wait_line(lambda x: x.startswith("produced="), 60 + n / 20000)
            if not got or kv_tokens(got[1]).get("failed", "0") != "0":
                raise BenchError(f"k2mc-mock did not produce the topic: {got and got[1]}")
        counters = [McCounter(p) for p in ports]
        js = os.path.join(logdir, "refill-stats.json")
        argv = [k2mc, "-b", bootstrap, "-t", topic, "-G", f"refill-{os.getpid()}", "-m",
                ",".join(f"127.0.0.1:{p}" for p in ports), "-o", "beginning", "--refill",
                "--stats-interval-ms", "100", "--stats-json", js, "-v"]
        argv += [f"-X{p}" for p in bench.kafka.fetch_props]
        k = Child("k2mc-refill", argv, logdir)
        procs.append(k)

        def last_json():
            try:
                with open(js) as f:
                    lines = f.read().splitlines()
            except OSError:
                return None
            return next((json_or_none(x) for x in reversed(lines) if x.startswith("{")), None)

        deadline = time.monotonic() + 60 + n / 20000
        while True:  # loaded: every record acknowledged
            j = last_json()
            if j and j.get("consumed", 0) >= n and j.get("lag", 1) == 0 and j.get("partitions"):
                break
            if time.monotonic() > deadline or k.wait(0):
                raise BenchError(f"k2mc did not load {n} records: {excerpt(k.stderr_text())}")
            time.sleep(0.1)
        writes = [c.finish() for c in counters]
        live = sum(c.sustained() or 0 for c in counters)
        counters = []
        res["live_rps"] = round(live, 1)
        res["live_writes"] = sum(writes)
        # the sentinels are set on the first look at each partition, within
        # 100 ms of its assignment: long done once the topic is loaded
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", ports[2]), timeout=5) as sk:
            sk.sendall(b"flush_all\r\n")
            if not sk.recv(64).startswith(b"OK"):
                raise BenchError("flush_all was not answered OK")
        t_flush = time.monotonic()
        samples = []  # (monotonic, refill_records)
        line = None
        deadline = t_flush + 60 + n / 5000
        while line is None:
            j = last_json()
            if j is not None:
                samples.append((time.monotonic(), j.get("refill_records", 0)))
            line = next((x for x in k.stderr_text().splitlines()
                         if re.search(r"refill of memcached .*partition\(s\) done", x)), None)
            if time.monotonic() > deadline or k.wait(0):
                raise BenchError(f"no end of refill from k2mc: {excerpt(k.stderr_text())}")
            time.sleep(0.05)
        time.sleep(0.3)
        j = last_json()
        samples.append((time.monotonic(), j.get("refill_records", 0) if j else 0))
        total = samples[-1][1]
        m = re.search(r"(\d+) records written .*?, ([\d.]+) records/s over ([\d.]+) s", line)
        res.update({"refill_records": total, "refill_line": line.strip()[-300:],
                    "refill_own_rps": float(m.group(2)) if m else None,
                    "refill_own_s": float(m.group(3)) if m else None})

        def at(frac):
            want = frac * total
            prev = samples[0]
            for t, c in samples:
                if c >= want:
                    return t if c == prev[1] else prev[0] + (t - prev[0]) * (want - prev[1]) / (
                        c - prev[1])
                prev = (t, c)
            return None
        t_lo, t_hi = at(COST_LO), at(COST_HI)
        res["refill_rps"] = (round((COST_HI - COST_LO) * total / (t_hi - t_lo), 1)
                             if total and t_lo is not None and t_hi and t_hi > t_lo else None)
        res.update({"records": n, "partitions": parts, "k2mc": k2mc})
        k.stop()
    except (BenchError, OSError, ValueError) as e:
        bench.failures.append(f"refill: {e}")
        log(f"FAILED refill: {e} (logs in {logdir})")
        return None, res
    finally:
        for c in counters:
            c.finish()
        for c in reversed(procs):
            c.stop()
    log(f"refill: live {f_rps(res['live_rps'])}, refill {f_rps(res['refill_rps'])} "
        f"({res['refill_records']:,} records rewritten; k2mc: {res['refill_own_rps']} records/s "
        f"over {res['refill_own_s']} s)")
    table = [["live (load of the topic)", f"{res['live_writes']:,}", f_rps(res["live_rps"]),
              "memcached cmd_set of the 3 servers, 10%-90% of the writes"],
             ["refill (after flush_all of one)", f"{res['refill_records']:,}",
              f_rps(res["refill_rps"]),
              "refill_records (k2mc_refill_records_total) every 100 ms, 10%-90%"],
             ["refill, whole (k2mc's end line)", f"{res['refill_records']:,}",
              f_rps(res["refill_own_rps"]), "loss seen to last partition done, both passes"]]
    return (("Refill (issue 12): records rewritten per second beside the live rate, same run",
             REFILL_HEAD, table,
             f"{n:,} records of 100 bytes, as many keys, {parts} partitions produced before the "
             "run, 3 memcached servers (ketama); --refill at --refill-rate 0; the refill reads each "
             "partition twice and rewrites only the keys placed on the flushed server"), res)


def plot_writers(cases, outdir):
    """writers.png: k2mc records/s vs --writers with the ceilings and Python as lines."""
    gp = shutil.which("gnuplot")
    if not gp:
        return None, "gnuplot is missing (apt-get install gnuplot-nox): no plot"
    ws = [x for x in cases.get("writers", []) if not x.skipped and x.median.get("rps")]
    if not ws:
        return None, "no k2mc --writers measurements: no plot"
    tmp = tempfile.mkdtemp(prefix="k2mc-plot.")
    try:
        dat = os.path.join(tmp, "writers.dat")
        with open(dat, "w") as f:
            f.write("# writers median min max\n")
            for x in ws:
                m = x.median
                f.write(f"{x.writers} {m['rps']} {m['rps_min']} {m['rps_max']}\n")
        out = os.path.join(outdir, "writers.png")
        lines = []
        for key, title, style in (("mc", "Memcached ceiling", "dt 2 lc rgb '#1f77b4'"),
                                  ("kc", "Kafka ceiling", "dt 3 lc rgb '#2ca02c'"),
                                  ("py", "Python baseline", "dt 4 lc rgb '#d62728'")):
            c = cases.get(key)
            if c and not c.skipped and c.median.get("rps"):
                v = c.median["rps"]
                lines.append(f"{v} with lines lw 2 {style} title '{title} ({v:,.0f}/s)'")
        maxw = max(x.writers for x in ws)
        script = "\n".join([
            "set terminal {term} size 1200,600",
            f"set output '{out}'",
            "set title 'k2mc records/s vs --writers (8 partitions, 100 B values, median, "
            "min-max bars)' noenhanced",
            "set xlabel '--writers' noenhanced", "set ylabel 'records/s'",
            "set logscale x 2", f"set xrange [0.8:{maxw * 1.25}]",
            "set xtics (" + ", ".join(str(x.writers) for x in ws) + ")",
            "set yrange [0:*]", "set format y '%.0f'", "set grid",
            "set key outside right top vertical Left reverse noenhanced",
            "plot '" + dat + "' using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb 'black' "
            "title 'k2mc'" + "".join(", " + s for s in lines), ""])
        err = ""
        for term in ("pngcairo", "png"):
            p = subprocess.run([gp], input=script.replace("{term}", term), capture_output=True,
                               text=True, timeout=60)
            if p.returncode == 0 and os.path.exists(out):
                return out, f"![records/s vs --writers](writers.png)"
            err = p.stderr.strip()[-300:]
        return None, f"gnuplot failed: {err}"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Issue 14: what a record costs. Every topic is produced before the consumer
# starts (the mock's 5 MiB per partition bounds how many records fit), the
# sustained rate is read off memcached's own counters (cmd_set + delete_hits
# + delete_misses, polled while the run goes) between 10% and 90% of the
# writes, so start-up and the group join are left out the same way for every
# client, and CPU per record is the rusage (user + sys) of the measured
# process alone. The Memcached ceiling is mc-ceiling --blast (pre-formatted
# quiet meta sets over COST_CEILING_CONNS connections, client cost about
# zero) on a fresh memcached with the same settings, measured the same way.

COST_PARTITIONS = (8, 64)
COST_CEILING_CONNS = 2
COST_POLL_S = 0.005
COST_LO, COST_HI = 0.10, 0.90
# targets (issue 14)
TARGET_COST_CEILING = 0.9
TARGET_COST_PYTHON_RATE = 4.0
TARGET_COST_PYTHON_CPU = 1 / 6
STRETCH_COST_PYTHON_CPU = 1 / 7
TARGET_COST_RSS_MIB = 150
TARGET_HOTKEY_WRITES = 0.5
HOTKEY = dict(keys=100, records=400_000, partitions=16)


def prefill_records(partitions, value_size, cap):
    """The most records that fit the mock's retention (90% of it) when produced before the run."""
    per = int(0.9 * MOCK_RETENTION / (value_size + KEY_LEN + RECORD_OVERHEAD))
    return min(cap, per * partitions // 10_000 * 10_000)


class McCounter:
    """Polls a memcached's `stats`: (monotonic time, cmd_set + delete_hits + delete_misses)."""

    FIELDS = (b"cmd_set", b"delete_hits", b"delete_misses")

    def __init__(self, port):
        self.port = port
        self.samples = []
        self.stats = {}
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._thread = threading.Thread(target=self._run, name="mc-counter", daemon=True)
        self._thread.start()

    def _ask(self):
        self._sock.sendall(b"stats\r\n")
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = self._sock.recv(65536)
            if not chunk:
                raise OSError("memcached closed the stats connection")
            buf += chunk
        st = {}
        for line in buf.split(b"\r\n"):
            p = line.split()
            if len(p) == 3 and p[0] == b"STAT":
                st[p[1].decode()] = p[2].decode()
        return st

    def _run(self):
        while not self._stop.is_set():
            try:
                st = self._ask()
            except OSError:
                return
            self.samples.append((time.monotonic(),
                                 sum(int(st.get(f.decode(), 0)) for f in self.FIELDS)))
            self.stats = st
            self._stop.wait(COST_POLL_S)

    def finish(self):
        """One last sample; the final count."""
        self._stop.set()
        self._thread.join(5)
        try:
            st = self._ask()
            self.samples.append((time.monotonic(),
                                 sum(int(st.get(f.decode(), 0)) for f in self.FIELDS)))
            self.stats = st
        except OSError:
            pass
        self._sock.close()
        return self.samples[-1][1] if self.samples else 0

    def sustained(self, lo=COST_LO, hi=COST_HI):
        """Writes per second between lo and hi of the final count, interpolated."""
        if len(self.samples) < 2:
            return None
        total = self.samples[-1][1]

        def at(frac):
            want = frac * total
            prev = self.samples[0]
            for t, c in self.samples:
                if c >= want:
                    if c == prev[1]:
                        return t
                    return prev[0] + (t - prev[0]) * (want - prev[1]) / (c - prev[1])
                prev = (t, c)
            return None
        t_lo, t_hi = at(lo), at(hi)
        if t_lo is None or t_hi is None or t_hi <= t_lo:
            return None
        return (hi - lo) * total / (t_hi - t_lo)


class HwmPoller:
    """Peak RSS of a running child from /proc/PID/status VmHWM (ru_maxrss of a
    child Python spawned can be the parent's size: see shared/NOTES.md)."""

    def __init__(self, pid):
        self.pid = pid
        self.kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hwm", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.kib = max(self.kib, int(line.split()[1]))
            except (OSError, ValueError):
                return
            self._stop.wait(0.02)

    def finish(self):
        self._stop.set()
        self._thread.join(5)
        return self.kib


def setup_peers(tools, logroot):
    """The peers' venv (build/peers-venv: python3 -m venv, then pip install -r
    bench/peers/requirements.txt from PyPI), made once: its stamp holds the
    requirements' text, and a change of them makes it again. Then
    build/peers/kafka-ceiling-wheel: bench/kafka_ceiling.c linked against the
    librdkafka inside the confluent-kafka wheel, found at run time through
    LD_LIBRARY_PATH (the measurement only; k2mc and build/kafka-ceiling link
    the vendored librdkafka statically). Sets tools.peers_why (None when the
    venv works), tools.wheel_libdir and tools.peer_versions."""
    venv, py = tools.peers_venv, tools.peers_python
    stamp = os.path.join(venv, ".k2mc-requirements")
    with open(PEERS_REQUIREMENTS) as f:
        want = f.read()
    have = None
    if os.path.exists(stamp):
        with open(stamp) as f:
            have = f.read()
    if have != want or not os.access(py, os.X_OK):
        log(f"peers: making {os.path.relpath(venv, ROOT)} (pip install -r "
            f"{os.path.relpath(PEERS_REQUIREMENTS, ROOT)}; once)")
        shutil.rmtree(venv, ignore_errors=True)
        for argv in ([PYTHON, "-m", "venv", venv],
                     [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                      PEERS_REQUIREMENTS]):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                tools.peers_why = (f"{' '.join(argv[:4])} failed: "
                                   f"{excerpt(r.stdout + r.stderr)}")
                log(f"peers: {tools.peers_why}")
                return
        with open(stamp, "w") as f:
            f.write(want)
    r = subprocess.run([py, "-c", "import confluent_kafka, quixstreams, pymemcache, os; "
                        "from importlib.metadata import version as v; "
                        "print(v('confluent-kafka'), confluent_kafka.libversion()[0], "
                        "v('quixstreams'), v('pymemcache'), "
                        "os.path.dirname(confluent_kafka.__file__))"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        tools.peers_why = f"the peers' venv does not import: {excerpt(r.stderr)}"
        log(f"peers: {tools.peers_why}")
        return
    ck, lib, quix, pymc, ckdir = r.stdout.split()
    tools.peer_versions = {"confluent-kafka": ck, "librdkafka (wheel)": lib,
                           "quixstreams": quix, "pymemcache": pymc}
    tools.peers_why = None
    libs = sorted(x for x in (os.listdir(ckdir + ".libs") if os.path.isdir(ckdir + ".libs")
                              else []) if x.startswith("librdkafka"))
    if not libs:
        log("peers: no librdkafka in the confluent-kafka wheel: no floor on it")
        return
    lib_path = os.path.join(ckdir + ".libs", libs[0])
    out = tools.kafka_ceiling_wheel
    src = os.path.join(ROOT, "bench", "kafka_ceiling.c")
    inc = os.path.join(ROOT, "build", "rdkafka", "include")
    if not (os.path.exists(out) and os.path.getmtime(out) >= max(os.path.getmtime(src),
                                                                 os.path.getmtime(lib_path))):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        # the wheel ships no headers: the vendored librdkafka's (or the system's);
        # kafka_ceiling.c calls nothing newer than the wheel's version
        argv = ["cc", "-std=c11", "-D_GNU_SOURCE", "-O2", "-g", "-Wall", "-Wextra", "-Werror"]
        if os.path.isdir(inc):
            argv += ["-isystem", inc]
        r = subprocess.run(argv + [src, "-o", out, lib_path], capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            log(f"peers: building {os.path.relpath(out, ROOT)} failed: "
                f"{excerpt(r.stdout + r.stderr)}")
            return
    tools.wheel_libdir = os.path.dirname(lib_path)


class CostCase:
    """One configuration of the cost section: tool in mc-ceiling, kafka-ceiling,
    python (the confluent-kafka peer, on the interpreter `python`), quix, k2mc;
    for k2mc a variant (its own binary, LD_PRELOAD, arguments, CPU placement);
    for kafka-ceiling its own binary (bin) and environment (env)."""

    def __init__(self, tool, name, *, partitions, records, keys=1_000_000, value_size=100,
                 k2mc=None, preload=None, args=(), taskset=None, expect=False, python=None,
                 bin=None, env=None, peer=None, count_fetches=False):
        self.tool, self.name = tool, name
        self.partitions, self.records, self.keys, self.value_size = (partitions, records, keys,
                                                                     value_size)
        self.k2mc, self.preload, self.args, self.taskset = k2mc, preload, list(args), taskset
        self.expect = expect
        self.python, self.bin, self.env = python, bin, dict(env or {})
        # the row's name in the peers table (issue 25), when it is one of its rows
        self.peer = peer
        # one more run, untimed, counting Fetch requests (FETCH_DEBUG_LINE)
        self.count_fetches = count_fetches
        self.fetch_run = None
        self.runs = []
        self.skipped = None
        self.median = {}

    @property
    def slug(self):
        return re.sub(r"[^A-Za-z0-9.-]+", "_", f"cost-{self.name}-p{self.partitions}"
                                               f"-v{self.value_size}-k{self.keys}"
                                               f"-n{self.records}")[:120]

    def summarize(self):
        ok = [r for r in self.runs if r.get("ok")]
        self.median = {}
        for k in ("sustained_rps", "own_rps", "cpu_s", "cpu_us_per_record", "hwm_kib",
                  "writes_per_record", "memcached_cpu_us_per_write", "coalesced",
                  "broker_cpu_us_per_record", "fetch_per_1000", "wall_s"):
            vals = [r[k] for r in ok if r.get(k) is not None]
            if vals:
                self.median[k] = statistics.median(vals)
                self.median[k + "_spread"] = ((max(vals) - min(vals)) / 2 /
                                              statistics.median(vals)
                                              if len(vals) > 1 and statistics.median(vals) else 0)
        self.median["ok"] = len(ok)
        if self.fetch_run and self.fetch_run.get("ok"):
            self.median["fetch_per_1000_counted"] = self.fetch_run["fetch_per_1000_counted"]

    def to_json(self):
        return {"id": self.slug, "name": self.name, "tool": self.tool,
                "params": {"partitions": self.partitions, "records": self.records,
                           "keys": self.keys, "value_size": self.value_size,
                           "k2mc": self.k2mc, "preload": self.preload, "args": self.args,
                           "taskset": self.taskset, "python": self.python, "bin": self.bin,
                           "env": self.env},
                "skipped": self.skipped, "runs": self.runs, "fetch_run": self.fetch_run,
                "median": self.median}


def run_cost(bench, c, idx, fetch_debug=False):
    """One run of a cost case; appends its result to c.runs. fetch_debug: the
    untimed run that counts Fetch requests (FETCH_DEBUG_LINE), kept in
    c.fetch_run instead."""
    tools = bench.tools
    res = {"run": idx, "ok": False}
    logdir = bench.rundir(c, idx)
    res["logdir"] = logdir
    mc = mock = tool = counter = hwm = broker = None
    kafka = bench.kafka
    pinned = False
    t_start = time.monotonic()
    try:
        if c.tool != "kafka-ceiling":
            mc, port = start_memcached(logdir)
        group = f"cost-{c.slug}-{idx}-{os.getpid()}-{int(time.time() * 1000)}"
        topic = TOPIC
        if c.tool == "mc-ceiling":
            argv = [tools.mc_ceiling, "-m", f"127.0.0.1:{port}", "--records", c.records,
                    "--keys", c.keys, "--value-size", c.value_size, "--blast",
                    "--conns", COST_CEILING_CONNS]
        elif kafka.real:
            # produced once for every case and run that reads the same records
            t = kafka.prefilled(logdir, c.partitions, c.keys, c.value_size, c.records,
                                expect=c.expect)
            bootstrap, topic = kafka.bootstrap, t["topic"]
            res["topic"] = topic
            if c.expect:
                res["expect_file"] = t["expect"]
            broker = kafka.cpu_s
        else:
            margv = [tools.mock, "--topic", f"{TOPIC}:{c.partitions}", "--keys", c.keys,
                     "--value-size", c.value_size, "--seed", 1, "-q", "--produce", c.records]
            if c.expect:
                res["expect_file"] = os.path.join(logdir, "expect.txt")
                margv += ["--expect", res["expect_file"]]
            mock = Child("k2mc-mock", margv, logdir, stdout_lines=True)
            got = mock.wait_line(lambda s: s.startswith("bootstrap="), 30)
            if not got:
                raise BenchError(f"k2mc-mock printed no bootstrap= line: "
                                 f"{excerpt(mock.stderr_text())}")
            bootstrap = got[1].split("=", 1)[1].strip()
            got = mock.wait_line(lambda s: s.startswith("produced=") or s.startswith("error"),
                                 60 + c.records / 20000)
            if not got or kv_tokens(got[1]).get("failed", "0") != "0":
                raise BenchError(f"k2mc-mock did not produce the topic: {got and got[1]}")
            if c.expect:
                mock.wait_line(lambda s: s.startswith("expect="), 60)
            # the topic is produced: from here on the mock's CPU is serving
            broker = bench.broker_cpu(mock)
        if c.tool != "mc-ceiling":
            fx = [f"-X{p}" for p in kafka.fetch_props]
            # the readers that can count their Fetch requests (librdkafka's
            # statistics) do; k2mc installs no statistics callback
            if c.tool == "kafka-ceiling":
                argv = [c.bin or tools.kafka_ceiling, "-b", bootstrap, "-t", topic, "-G", group,
                        "-c", c.records, "-S", PEERS_STATS_MS] + fx + c.args
            elif c.tool in ("python", "quix"):
                script = tools.python_baseline if c.tool == "python" else tools.quix_peer
                argv = [c.python or tools.peers_python, script, "-b", bootstrap, "-t", topic,
                        "-G", group, "-m", f"127.0.0.1:{port}", "-c", c.records,
                        "--stats-ms", PEERS_STATS_MS] + fx
                if c.tool == "quix" and not kafka.real:
                    argv.append("--no-describe-configs")  # the mock serves none
            else:
                argv = [c.k2mc or tools.k2mc, "-b", bootstrap, "-t", topic, "-G", group,
                        "-m", f"127.0.0.1:{port}", "-c", c.records, "-q"] + fx + c.args
            if fetch_debug:
                # k2mc logs librdkafka's debug lines at -v (its debug level)
                argv += (["-v"] if c.tool == "k2mc" else []) + ["-Xdebug=fetch"]
        if c.taskset:
            argv = ["taskset", "-c", c.taskset["tool"]] + [str(a) for a in argv]
            pids = [srv.pid for srv in (mc, mock) if srv]
            if kafka.real and c.tool != "mc-ceiling":
                pids.append(kafka.pid)  # every thread of the JVM; restored below
                pinned = True
            for pid in pids:
                subprocess.run(["taskset", "-a", "-p", "-c", c.taskset["servers"],
                                str(pid)], capture_output=True, check=False)
        if mc:
            counter = McCounter(port)
        b0 = broker() if broker else None
        env = dict(c.env, **({"LD_PRELOAD": c.preload} if c.preload else {}))
        env_pre = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            tool = Child(c.tool, argv, logdir)
        finally:
            for k, v in env_pre.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v
        res["argv"] = tool.argv
        hwm = HwmPoller(tool.pid)
        timeout = 60 + c.records / 20000
        if not tool.wait(timeout):
            tool.stop()
            raise BenchError(f"{c.tool} did not finish {c.records} records in {timeout:.0f} s")
        if broker:
            # from the reader's spawn to its exit: serving, the group's join,
            # commits and leave; divided by the records it was asked for
            res["broker_cpu_s"] = round(broker() - b0, 3)
            res["broker_cpu_us_per_record"] = round(res["broker_cpu_s"] / c.records * 1e6, 4)
        res["hwm_kib"] = hwm.finish() or None
        hwm = None
        st = tool.stats()
        res.update({k: st[k] for k in ("exit", "wall_s", "cpu_user", "cpu_sys", "cpu_s",
                                       "minflt", "nvcsw", "nivcsw")})
        if tool.rc != 0:
            raise BenchError(f"{c.tool} exited {tool.rc}: {excerpt(tool.stderr_text())}")
        if counter:
            writes = counter.finish()
            res["writes"] = writes
            res["writes_per_record"] = round(writes / c.records, 4)
            w = counter.sustained()
            # records/s: the write rate scaled by records per write (1 unless coalesced)
            res["sustained_rps"] = round(w * c.records / writes, 1) if w and writes else None
            res["mc_stats"] = {k: counter.stats.get(k) for k in (
                "cmd_set", "delete_hits", "delete_misses", "curr_items", "evictions")}
            counter = None
        out = tool.stdout_text()
        j = next((json_or_none(s) for s in reversed(out.splitlines()) if s.startswith("{")),
                 None)
        if j:
            res["tool_json"] = j
            res["own_rps"] = j.get("rps")
            res["librdkafka"] = j.get("librdkafka")
            if j.get("stats_rxmsgs"):
                # Fetch requests per record received, both from one statistics emission
                res["fetch_requests"], res["stats_rxmsgs"] = (j["fetch_requests"],
                                                              j["stats_rxmsgs"])
                res["fetch_per_1000"] = round(j["fetch_requests"] / j["stats_rxmsgs"] * 1000, 3)
            if c.tool == "mc-ceiling":
                # mc-ceiling times (and measures CPU over) the writing alone; the
                # records are formatted first
                res["cpu_s"] = round(j["cpu_user"] + j["cpu_sys"], 4)
        if fetch_debug:
            with open(tool.err_path, errors="replace") as f:
                n = sum(1 for line in f if FETCH_DEBUG_LINE.search(line))
            res["fetch_requests_counted"] = n
            res["fetch_per_1000_counted"] = round(n / c.records * 1000, 3)
        if c.tool == "k2mc":
            s = next((x for x in tool.stderr_text().splitlines() if "k2mc: summary:" in x), "")
            res["summary"] = s
            m = re.search(r"consumed (\d+)", s)
            if not m or int(m.group(1)) < c.records:
                raise BenchError(f"k2mc consumed {m and m.group(1)} of {c.records}: {s}")
            m = re.search(r"coalesced (\d+)", s)
            res["coalesced"] = int(m.group(1)) if m else None
            m = re.search(r"([\d.]+) records/s\)", s)
            res["own_rps"] = float(m.group(1)) if m else None
        res["cpu_us_per_record"] = round(res["cpu_s"] / c.records * 1e6, 4)
        if c.expect and tools.verify:
            v = subprocess.run([tools.verify, "-m", f"127.0.0.1:{port}", "--expect",
                                res["expect_file"]], capture_output=True, text=True, timeout=300)
            res["verify"] = (v.stdout + v.stderr).strip()[-300:]
            res["exact"] = v.returncode == 0
        res["ok"] = True
    except BenchError as e:
        res["error"] = str(e)
        bench.failures.append(f"{c.name} ({c.partitions} part.) run {idx}: {e}")
        log(f"FAILED {c.name} run {idx}: {e} (logs in {logdir})")
    finally:
        if hwm:
            hwm.finish()
        if counter:
            counter.finish()
        if tool:
            tool.stop(5)
        if pinned:
            subprocess.run(["taskset", "-a", "-p", "-c", ",".join(
                map(str, sorted(os.sched_getaffinity(0)))), str(kafka.pid)],
                capture_output=True, check=False)
        if mock:
            mock.stop()
            res["feeder_cpu_s"] = mock.stats()["cpu_s"] if mock.rusage else None
        if mc:
            mc.stop()
            if mc.rusage and res.get("writes"):
                res["memcached_cpu_us_per_write"] = round(
                    mc.stats()["cpu_s"] / res["writes"] * 1e6, 4)
    res["harness_s"] = round(time.monotonic() - t_start, 1)
    if fetch_debug:
        c.fetch_run = res
        if res["ok"]:
            log(f"  {c.name} ({c.partitions} part.): {res['fetch_requests_counted']} Fetch "
                f"requests counted (-X debug=fetch, untimed), "
                f"{res['fetch_per_1000_counted']:.3f} per 1000 records")
        return
    c.runs.append(res)
    if res["ok"]:
        parts = [f"sustained {res['sustained_rps']:,.0f} rec/s" if res.get("sustained_rps")
                 else None,
                 f"own clock {res['own_rps']:,.0f} rec/s" if res.get("own_rps") else None,
                 f"cpu {res['cpu_us_per_record']:.3f} µs/rec",
                 f"broker {res['broker_cpu_us_per_record']:.3f} µs/rec"
                 if res.get("broker_cpu_us_per_record") is not None else None,
                 f"hwm {res['hwm_kib'] / 1024:.0f} MiB" if res.get("hwm_kib") else None,
                 f"{res['fetch_per_1000']:.2f} Fetch/1000 rec" if res.get("fetch_per_1000")
                 is not None else None,
                 f"writes/rec {res['writes_per_record']:.3f}" if res.get("writes") else None]
        log(f"  {c.name} ({c.partitions} part.) run {idx}: "
            f"{', '.join(p for p in parts if p)} [{res['harness_s']:.0f} s]")


def run_cost_cases(bench, cases, runs):
    """Runs every case `runs` times, in turns (case 1, 2, ..., 1, 2, ...), so that
    a slow minute of the machine falls on all of them rather than on one."""
    for c in cases:
        why = bench.tools.missing(c.tool)
        if c.tool == "quix" or (c.tool == "python" and c.python != PYTHON):
            why = why or bench.tools.peers_why
        for path in (c.k2mc, c.bin, c.python):
            if path and not os.access(path, os.X_OK):
                why = why or f"{os.path.relpath(path, ROOT)} is missing"
        if c.preload and not os.path.exists(c.preload):
            why = f"{c.preload} is missing"
        if why:
            c.skipped = why
            bench.skips.append(f"{c.name}: {why}")
    for i in range(1, runs + 1):
        for c in cases:
            if not c.skipped:
                run_cost(bench, c, i)
    for c in cases:
        if c.count_fetches and not c.skipped:
            run_cost(bench, c, "fetch", fetch_debug=True)
    for c in cases:
        c.summarize()


COST_HEAD = ["configuration", "partitions", "records", "runs ok", "sustained records/s",
             "CPU µs / record", "broker CPU µs / record", "Fetch requests / 1,000 records",
             "peak RSS MiB", "writes / record", "vs Memcached ceiling"]


def cost_row(c, ceiling):
    m = c.median
    if c.skipped:
        return [c.name, c.partitions, fmt_count(c.records), "skipped"] + ["-"] * 7
    sp = lambda k: f" ±{m[k + '_spread'] * 100:.0f}%" if m.get(k + "_spread") else ""  # noqa
    rate = m.get("sustained_rps")
    rate_s = (f_rps(rate) + sp("sustained_rps") if rate else
              (f"({f_rps(m.get('own_rps'))} own clock)" if m.get("own_rps") else "-"))
    cr = ceiling.median.get("sustained_rps") if ceiling and not ceiling.skipped else None
    return [c.name, c.partitions, fmt_count(c.records), f"{m.get('ok', 0)}/{len(c.runs)}",
            rate_s, f_num(m.get("cpu_us_per_record"), 3) + sp("cpu_us_per_record"),
            f_num(m.get("broker_cpu_us_per_record"), 3) + sp("broker_cpu_us_per_record"),
            (f_num(m["fetch_per_1000_counted"], 3) + " *" if "fetch_per_1000_counted" in m
             else f_num(m.get("fetch_per_1000"), 3)),
            f_num(m["hwm_kib"] / 1024 if m.get("hwm_kib") else None),
            f_num(m.get("writes_per_record"), 3),
            f"{rate / cr:.2f}x" if rate and cr and c.tool != "mc-ceiling" else "-"]


def cost_section(bench, mode, runs, n_cap):
    """The issue-14 cost section: (tables, ratios, targets, JSON)."""
    tools = bench.tools
    tables, targets, ratios, allc = [], [], {}, []

    def target(name, value, threshold, met, detail):
        targets.append({"target": name, "value": value, "threshold": threshold,
                        "status": "not measured" if met is None else "met" if met else "NOT met",
                        "detail": detail})

    per_p = {}
    peers = {}  # (partitions, value size) -> cases, for the peers table
    for p, v in peer_combos(mode):
        n = prefill_records(p, v, n_cap)
        cs = cost_cases(tools, p, v, n, mode, with_peers=(p, v) in peer_combos(mode, True))
        if v == 100:
            per_p[p] = cs
        peers[(p, v)] = cs
        log(f"cost: {p} partitions, {fmt_bytes(v)} values, {fmt_count(n)} records produced "
            f"before the run, x {runs} in turns")
        run_cost_cases(bench, list(cs.values()), runs)
        allc += cs.values()
        tables.append((f"Cost per record: {p} partitions, {fmt_bytes(v)} values, 1M keys, "
                       "topic produced before the run", COST_HEAD,
                       [cost_row(x, cs["mc"]) for x in cs.values()], None))
    peer_table = peers_table(bench.kafka.label, peers)
    tables.insert(0, peer_table[0])
    ratios["peers"] = {bench.kafka.kind: peer_table[1]}
    get = lambda c, k: c.median.get(k) if c and not c.skipped else None  # noqa: E731
    div = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    for p, cs in per_p.items():
        if not {"mc", "kc", "py", "k2"} <= cs.keys():
            continue
        k_rate, m_rate = get(cs["k2"], "sustained_rps"), get(cs["mc"], "sustained_rps")
        p_rate = get(cs["py"], "sustained_rps")
        k_cpu, p_cpu = get(cs["k2"], "cpu_us_per_record"), get(cs["py"], "cpu_us_per_record")
        kc_cpu, mc_cpu = get(cs["kc"], "cpu_us_per_record"), get(cs["mc"], "cpu_us_per_record")
        brk = {k: get(cs[k], "broker_cpu_us_per_record") for k in ("kc", "py", "k2")}
        floor = kc_cpu + mc_cpu if kc_cpu is not None and mc_cpu is not None else None
        ratios[p] = {"k2mc_over_mc_ceiling": div(k_rate, m_rate),
                     "k2mc_over_python_rate": div(k_rate, p_rate),
                     "python_cpu_over_k2mc_cpu": div(p_cpu, k_cpu),
                     "k2mc_cpu_over_floor": div(k_cpu, floor),
                     "floor_us": floor, "k2mc_us": k_cpu, "python_us": p_cpu,
                     "k2mc_rps": k_rate, "mc_ceiling_rps": m_rate, "python_rps": p_rate,
                     "k2mc_hwm_mib": (get(cs["k2"], "hwm_kib") or 0) / 1024 or None,
                     "broker_us_k2mc": brk["k2"], "broker_us_kafka_ceiling": brk["kc"],
                     "broker_us_python": brk["py"]}
        r = ratios[p]
        x = r["k2mc_over_mc_ceiling"]
        target(f"{p} partitions: sustained rate >= {TARGET_COST_CEILING} x Memcached ceiling", x,
               TARGET_COST_CEILING, None if x is None else x >= TARGET_COST_CEILING,
               None if x is None else f"{f_rps(k_rate)} vs {f_rps(m_rate)} ({x:.2f}x)")
        x = r["k2mc_over_python_rate"]
        target(f"{p} partitions: sustained rate >= {TARGET_COST_PYTHON_RATE:g} x Python", x,
               TARGET_COST_PYTHON_RATE, None if x is None else x >= TARGET_COST_PYTHON_RATE,
               None if x is None else f"{f_rps(k_rate)} vs {f_rps(p_rate)} ({x:.2f}x)")
        x = div(k_cpu, p_cpu)
        target(f"{p} partitions: CPU per record <= 1/6 of Python's (stretch 1/7)", x,
               TARGET_COST_PYTHON_CPU, None if x is None else x <= TARGET_COST_PYTHON_CPU,
               None if x is None else f"{k_cpu:.3f} vs {p_cpu:.3f} µs (1/{1 / x:.1f}"
               f"{'; 1/7 met' if x <= STRETCH_COST_PYTHON_CPU else '; 1/7 not met'})")
        x = r["k2mc_cpu_over_floor"]
        target(f"{p} partitions: CPU per record <= Kafka ceiling + Memcached ceiling client", x,
               1.0, None if x is None else x <= 1.0,
               None if x is None else f"{k_cpu:.3f} vs {kc_cpu:.3f} + {mc_cpu:.3f} = "
               f"{floor:.3f} µs ({x:.2f}x)")
    hw = ratios.get(64, {}).get("k2mc_hwm_mib")
    target(f"64 partitions: peak RSS <= {TARGET_COST_RSS_MIB} MiB with default settings", hw,
           TARGET_COST_RSS_MIB, None if hw is None else hw <= TARGET_COST_RSS_MIB,
           None if hw is None else f"{hw:.0f} MiB (VmHWM)")
    hot = CostCase("k2mc", "k2mc hot keys (defaults)", partitions=HOTKEY["partitions"],
                   records=HOTKEY["records"], keys=HOTKEY["keys"], expect=True)
    log(f"cost: hot keys ({HOTKEY['keys']} keys, {fmt_count(HOTKEY['records'])} records)")
    run_cost_cases(bench, [hot], 1 if mode == "quick" else runs)
    allc.append(hot)
    wpr = get(hot, "writes_per_record")
    exact = all(r.get("exact") for r in hot.runs if r.get("ok")) if hot.median.get("ok") else None
    target(f"hot keys ({HOTKEY['keys']} keys, {fmt_count(HOTKEY['records'])} records): < "
           f"{TARGET_HOTKEY_WRITES} memcached writes per record, final state exact", wpr,
           TARGET_HOTKEY_WRITES, None if wpr is None else (wpr < TARGET_HOTKEY_WRITES and
                                                            bool(exact)),
           None if wpr is None else f"{wpr:.3f} writes per record (cmd_set + deletes), "
           f"coalesced {get(hot, 'coalesced')}, final state "
           f"{'exact' if exact else 'NOT exact' if exact is not None else 'not checked'}")
    tables.append(("Hot keys: coalescing", ["configuration", "partitions", "records", "keys",
                                            "writes per record", "records/s (k2mc's clock)",
                                            "CPU µs / record", "broker CPU µs / record",
                                            "final state"],
                   [[hot.name, hot.partitions, fmt_count(hot.records), hot.keys,
                     f_num(wpr, 3), f_rps(get(hot, "own_rps")),
                     f_num(get(hot, "cpu_us_per_record"), 3),
                     f_num(get(hot, "broker_cpu_us_per_record"), 3),
                     "exact" if exact else "-" if exact is None else "NOT exact"]], None))
    return tables, ratios, targets, allc


# issue 25: the peers a user would run instead of k2mc, and the floor, in the
# cost section. Full mode: 8 and 64 partitions x 100 B and 1 KiB values, on
# the run's backend and then on the other one (peers_elsewhere). Quick mode:
# the cost section's two cases at 100 B, the peers in the 8-partition one.
PEER_COMBOS_FULL = [(8, 100), (64, 100), (8, 1024), (64, 1024)]
PEER_COMBOS_QUICK = [(8, 100), (64, 100)]
PEERS_QUICK = [(8, 100)]
PEERS_HEAD = ["peer", "partitions", "value", "records", "records/s", "wall s", "CPU µs / record",
              "broker CPU µs / record", "Fetch requests / 1,000 records", "peak RSS MiB",
              "vs ceiling", "CPU vs floor"]


def peer_combos(mode, peers_only=False):
    """(partitions, value size) of the cost section's cases; peers_only: those with the peers."""
    if mode == "quick":
        return PEERS_QUICK if peers_only else PEER_COMBOS_QUICK
    return PEER_COMBOS_FULL


def cost_cases(tools, p, v, n, mode, *, with_peers=True, only_peers=False):
    """The cost cases of one topic: the ceilings and k2mc, with_peers the floor
    on the wheel's librdkafka and the Python peers too; only_peers: the rows of
    the peers table alone (peers_elsewhere)."""
    rdk = tools.rdkafka_version()
    pv = tools.peer_versions
    kw = dict(partitions=p, records=n, value_size=v)
    cs = {"mc": CostCase("mc-ceiling", "Memcached ceiling (blast, 2 conns)", peer="Memcached "
                         "ceiling (mc-ceiling, 2 conns)", **kw),
          "kc": CostCase("kafka-ceiling", "Kafka ceiling", peer=f"Kafka floor: librdkafka {rdk}, "
                         "discards", **kw)}
    if with_peers and tools.wheel_libdir:
        cs["kw"] = CostCase("kafka-ceiling", f"Kafka ceiling on the wheel's librdkafka "
                            f"{pv.get('librdkafka (wheel)')}", bin=tools.kafka_ceiling_wheel,
                            env={"LD_LIBRARY_PATH": tools.wheel_libdir},
                            peer=f"Kafka floor: librdkafka {pv.get('librdkafka (wheel)')} "
                                 "(wheel), discards", **kw)
    if tools.peers_why is None:
        cs["py"] = CostCase("python", f"confluent-kafka {pv.get('confluent-kafka')} + pymemcache "
                            "(PyPI)", peer=f"confluent-kafka {pv.get('confluent-kafka')} + "
                            f"pymemcache {pv.get('pymemcache')} (PyPI)", **kw)
    else:
        # no venv (no PyPI here): the same script on Debian's packages
        cs["py"] = CostCase("python", "Python baseline (Debian's confluent-kafka)", python=PYTHON,
                            peer="confluent-kafka + pymemcache (Debian)", **kw)
    if with_peers:
        if mode == "full" and tools.peers_why is None:
            cs["pd"] = CostCase("python", "confluent-kafka + pymemcache (Debian)", python=PYTHON,
                                peer="confluent-kafka 1.7 + pymemcache (Debian)", **kw)
        cs["qx"] = CostCase("quix", f"Quix Streams {pv.get('quixstreams', '')}",
                            peer=f"Quix Streams {pv.get('quixstreams', '')} (BatchingSink + "
                                 "pymemcache)", **kw)
    cs["k2"] = CostCase("k2mc", "k2mc (defaults)", peer="k2mc (defaults)", **kw)
    if not with_peers and not only_peers:
        for x in cs.values():
            x.peer = None
    else:
        cs["kc"].count_fetches = cs["k2"].count_fetches = True
    return cs


def peers_table(label, peers):
    """The issue-25 table of one backend: (table, ratios). Rows per topic: the
    Memcached ceiling, the Kafka floor(s), the floor (Kafka floor + the Memcached
    ceiling's client CPU), each peer. "vs ceiling": sustained rate over the
    Memcached ceiling's; "CPU vs floor": CPU per record over the floor's."""
    rows, ratios = [], {}
    get = lambda c, k: c.median.get(k) if c and not c.skipped else None  # noqa: E731
    for (p, v), cs in peers.items():
        if not any(c.peer for k, c in cs.items() if k not in ("mc", "kc", "k2")):
            continue
        mc, kc = cs.get("mc"), cs.get("kc")
        m_rate = get(mc, "sustained_rps")
        kc_cpu, mc_cpu = get(kc, "cpu_us_per_record"), get(mc, "cpu_us_per_record")
        floor = kc_cpu + mc_cpu if kc_cpu is not None and mc_cpu is not None else None
        r = ratios[f"{p}x{v}"] = {"floor_us": floor, "mc_ceiling_rps": m_rate}

        def row(name, c, cpu=None, rate=None, vs_floor=True):
            if c is not None and c.skipped:
                return [name, p, fmt_bytes(v), fmt_count(c.records), "skipped: " + c.skipped] + \
                    ["-"] * 7
            cpu = get(c, "cpu_us_per_record") if cpu is None else cpu
            rate = get(c, "sustained_rps") if rate is None and c is not None else rate
            if rate is None and c is not None and get(c, "own_rps"):
                rate_s = f"({f_rps(get(c, 'own_rps'))} own clock)"
            else:
                rate_s = f_rps(rate) if rate else "-"
            # the count of the untimed debug run where there is one (k2mc and the
            # floor: one method for both), else librdkafka's statistics
            fc = get(c, "fetch_per_1000_counted")
            fetch = f_num(fc, 3) + " *" if fc is not None else f_num(get(c, "fetch_per_1000"), 3)
            return [name, p, fmt_bytes(v), fmt_count((c or mc).records), rate_s,
                    f_num(get(c, "wall_s"), 1), f_num(cpu, 3), f_num(get(c, "broker_cpu_us_per_record"), 3), fetch,
                    f_num(get(c, "hwm_kib") / 1024 if get(c, "hwm_kib") else None),
                    f"{rate / m_rate:.2f}x" if rate and m_rate and c is not mc else "-",
                    f"{cpu / floor:.2f}x" if vs_floor and cpu is not None and floor else "-"]
        rows.append(row(mc.peer, mc, vs_floor=False))
        rows.append(row(kc.peer, kc, vs_floor=False))
        if "kw" in cs:
            kw = cs["kw"]
            rows.append(row(kw.peer, kw, vs_floor=False))
            w = get(kw, "cpu_us_per_record")
            r["floor_wheel_us"] = w + mc_cpu if w is not None and mc_cpu is not None else None
        rows.append(["floor: Kafka floor + Memcached ceiling's client", p, fmt_bytes(v),
                     fmt_count(mc.records), "-", "-", f_num(floor, 3), "-", "-", "-", "-", "1.00x"
                     if floor else "-"])
        for k in ("k2", "qx", "py", "pd"):
            c = cs.get(k)
            if c is None or not c.peer:
                continue
            rows.append(row(c.peer, c))
            r[k] = {m: get(c, m) for m in ("sustained_rps", "cpu_us_per_record",
                                           "broker_cpu_us_per_record", "fetch_per_1000",
                                           "fetch_per_1000_counted", "hwm_kib")}
            r[k]["name"] = c.peer
        k2 = r.get("k2", {}).get("cpu_us_per_record")
        for k in ("qx", "py", "pd"):
            if k in r and k2 and r[k]["cpu_us_per_record"]:
                r[k]["cpu_over_k2mc"] = round(r[k]["cpu_us_per_record"] / k2, 2)
        kb, k2b = get(kc, "broker_cpu_us_per_record"), r.get("k2", {}).get(
            "broker_cpu_us_per_record")
        r["k2mc_broker_over_floor_broker"] = round(k2b / kb, 2) if kb and k2b else None
        r["floor_fetch_per_1000_counted"] = get(kc, "fetch_per_1000_counted")
    note = ("records/s: memcached's counters, 10%-90% of the run's writes (the Kafka floors "
            "write nothing: their own clock, in parentheses); Quix writes a checkpoint's "
            "records at once (every 5 s by default), so its rate is its bursts', and its wall "
            "time says more. wall s: spawn to exit. vs ceiling: records/s over the Memcached "
            "ceiling's. CPU vs floor: over the floor's, the Kafka floor (librdkafka "
            "linked as k2mc links it) plus the Memcached ceiling's client. CPU: user + sys of the process "
            "alone, start to exit (start-up, group join, commits and close included, as a user "
            "runs it). Broker CPU: the process serving the records over the records read. "
            f"Fetch requests: librdkafka's statistics (every {PEERS_STATS_MS} ms; "
            "brokers[].req.Fetch over rxmsgs of the last emission); * counted instead in one "
            "more run, untimed, with -X debug=fetch (one 'Fetch N/A/B toppar(s)' line per "
            "request): k2mc installs no statistics callback, and the floor is counted the same "
            "way to compare with it.")
    title = (f"Peers on {label}: the same topic, produced before the run, 1M keys, "
             "written into a fresh memcached")
    return (title, PEERS_HEAD, rows, note), ratios


def peers_elsewhere(bench, args, mode, runs, n_cap):
    """Full mode: the peers table on the backend this run does not use (the real
    broker when it runs on the mock and the reverse): (tables, ratios)."""
    tools = bench.tools
    other = "mock" if bench.kafka.real else "real"
    kafka = Kafka(other, args.kafka_version, bench.logroot, tools.mock)
    if kafka.real and kafka.missing():
        why = f"peers on the real broker: {kafka.missing()}"
        bench.skips.append(why)
        log(f"SKIPPED {why}")
        return [], {}
    own = bench.kafka
    peers = {}
    try:
        kafka.start()
        bench.kafka = kafka
        for p, v in peer_combos(mode, True):
            n = prefill_records(p, v, n_cap)
            cs = cost_cases(tools, p, v, n, mode, only_peers=True)
            log(f"peers on {kafka.label}: {p} partitions, {fmt_bytes(v)} values, "
                f"{fmt_count(n)} records, x {runs} in turns")
            run_cost_cases(bench, list(cs.values()), runs)
            peers[(p, v)] = cs
    except BenchError as e:
        bench.failures.append(f"peers on {kafka.label}: {e}")
        log(f"FAILED peers on {kafka.label}: {e}")
    finally:
        bench.kafka = own
        kafka.stop()
    table, ratios = peers_table(kafka.label, peers)
    return [table], {other: ratios}


def cost_ratio_lines(ratios):
    out = []
    for p, r in ratios.items():
        if p == "peers":
            for kind, per in r.items():
                for combo, x in per.items():
                    parts = [f"{x[k]['name']} {x[k]['cpu_over_k2mc']:.1f}x k2mc's CPU per "
                             "record" for k in ("qx", "py", "pd") if x.get(k, {}).get(
                                 "cpu_over_k2mc")]
                    b = x.get("k2mc_broker_over_floor_broker")
                    out.append(f"peers ({kind}, {combo.replace('x', ' partitions, ')} B): "
                               + "; ".join(parts + ([f"broker CPU per record served to k2mc "
                                                     f"{b:.2f}x the Kafka floor's"] if b else
                                                    [])))
            continue
        out.append(f"{p} partitions: k2mc {f_us(r.get('k2mc_us'))} CPU per record; "
                   f"k2mc / Memcached ceiling {f_ratio(r['k2mc_over_mc_ceiling'])}"
                   f"; k2mc / Python rate {f_ratio(r['k2mc_over_python_rate'])}; Python CPU / "
                   f"k2mc CPU {f_ratio(r['python_cpu_over_k2mc_cpu'])}; k2mc CPU / floor "
                   f"(Kafka ceiling + Memcached ceiling client) "
                   f"{f_ratio(r['k2mc_cpu_over_floor'])}; broker CPU per record served to "
                   f"k2mc {f_us(r.get('broker_us_k2mc'))} (Kafka ceiling "
                   f"{f_us(r.get('broker_us_kafka_ceiling'))}, Python "
                   f"{f_us(r.get('broker_us_python'))})")
    return out


LIBDIR = "/usr/lib/x86_64-linux-gnu"
ALLOCATOR_LIBS = {"jemalloc": f"{LIBDIR}/libjemalloc.so.2", "mimalloc": f"{LIBDIR}/libmimalloc.so.2"}
# librdkafka settings measured against k2mc's defaults (-X wins over them)
RDKAFKA_VARIANTS = [
    ("the defaults before 72da1ff (--max-buffer-bytes 256m, prefetch budget / 64: "
     "-X queued.max.messages.kbytes=4096 -X queued.min.messages=65536)",
     ["--max-buffer-bytes", "256m", "-Xqueued.max.messages.kbytes=4096",
      "-Xqueued.min.messages=65536"]),
    ("--max-buffer-bytes 32m (prefetch 128 KiB per partition)", ["--max-buffer-bytes", "32m"]),
    ("--max-buffer-bytes 256m (prefetch 1 MiB per partition)", ["--max-buffer-bytes", "256m"]),
    ("-X queued.max.messages.kbytes=256 (a larger prefetch per partition)",
     ["-Xqueued.max.messages.kbytes=256", "-Xqueued.min.messages=4096"]),
    ("-X queued.max.messages.kbytes=1 -X queued.min.messages=1 (one response per "
     "partition; a caught-up partition can wait up to 1 s)",
     ["-Xqueued.max.messages.kbytes=1", "-Xqueued.min.messages=1"]),
    ("librdkafka's prefetch default (-X queued.max.messages.kbytes=65536 "
     "-X queued.min.messages=100000)",
     ["-Xqueued.max.messages.kbytes=65536", "-Xqueued.min.messages=100000"]),
    ("-X fetch.max.bytes=8388608 (8 MiB responses)", ["-Xfetch.max.bytes=8388608"]),
    ("-X check.crcs=true", ["-Xcheck.crcs=true"]),
]


def linked_allocator(k2mc):
    """Which allocator a k2mc binary links (ldd), or 'glibc'."""
    out = sh(["ldd", k2mc])
    for name in ("mimalloc", "jemalloc", "tcmalloc"):
        if f"lib{name}" in out:
            return name
    return "glibc"


def cost_variants(bench, sections, runs, n_cap):
    """Full-mode variants of the cost section at 64 partitions: allocators,
    librdkafka settings, --writers with and without CPU placement. Tables."""
    tools, out = bench.tools, []
    n = prefill_records(64, 100, n_cap)

    def table(title, cases, note):
        run_cost_cases(bench, cases, runs)
        base = cases[0]
        rows = []
        for c in cases:
            r = cost_row(c, None)[:-1]
            a, b = c.median.get("cpu_us_per_record"), base.median.get("cpu_us_per_record")
            ra, rb = c.median.get("sustained_rps"), base.median.get("sustained_rps")
            rows.append(r + [f"{a / b:.2f}x" if a and b else "-",
                             f"{ra / rb:.2f}x" if ra and rb else "-"])
        out.append((title, COST_HEAD[:-1] + ["CPU vs first row", "rate vs first row"], rows,
                    note))
        return cases

    if "allocators" in sections:
        log("allocators: k2mc with glibc (mallopt), jemalloc and mimalloc, in turns")
        g = tools.k2mc_glibc
        cs = [CostCase("k2mc", "glibc + k2mc's mallopt (build/k2mc-glibc)", partitions=64,
                       records=n, k2mc=g)]
        cs += [CostCase("k2mc", f"build/k2mc-glibc + LD_PRELOAD {name}", partitions=64,
                        records=n, k2mc=g, preload=lib) for name, lib in ALLOCATOR_LIBS.items()]
        cs.append(CostCase("k2mc", f"build/k2mc (links {linked_allocator(tools.k2mc)})",
                           partitions=64, records=n))
        table("Allocators (k2mc, 64 partitions, topic produced before the run)", cs,
              "same records, same settings; only the allocator differs")
    if "rdkafka" in sections:
        log("rdkafka: librdkafka settings against k2mc's defaults, in turns")
        for p in COST_PARTITIONS:
            np_ = prefill_records(p, 100, n_cap)
            cs = [CostCase("k2mc", "k2mc defaults", partitions=p, records=np_)]
            cs += [CostCase("k2mc", name, partitions=p, records=np_, args=a)
                   for name, a in RDKAFKA_VARIANTS]
            table(f"librdkafka settings (k2mc, {p} partitions)", cs,
                  "each row: k2mc's defaults with the flags shown; k2mc's defaults are "
                  "--max-buffer-bytes 16m, queued.max.messages.kbytes=64 and "
                  "queued.min.messages=1024 (budget / 256), with the consumer's wake-up of "
                  "the broker thread when it empties a queue that may have been over them; "
                  "librdkafka then caps fetch.max.bytes at 1,000,000")
    if "cpus" in sections and shutil.which("taskset") and os.cpu_count() >= 2:
        log("cpus: --writers with memcached sharing the cores, and with taskset")
        cs = [CostCase("k2mc", f"--writers {w}, shared cores", partitions=64, records=n,
                       args=["--writers", w]) for w in (1, 2, 4)]
        cs += [CostCase("k2mc", f"--writers {w}, k2mc on CPU 0, servers on CPU 1",
                        partitions=64, records=n, args=["--writers", w],
                        taskset={"tool": "0", "servers": "1"}) for w in (1, 2, 4)]
        table("--writers and CPU placement (k2mc, 64 partitions)", cs,
              "taskset: k2mc on CPU 0; memcached and the mock broker on CPU 1")
    return out


# ---------------------------------------------------------------------------
# The matrix

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="k2mc benchmark: ceilings, Python baseline and k2mc side by side "
                    "(issue 3). Writes build/bench/latest.{json,md} and writers.png.")
    ap.add_argument("--mode", choices=sorted(MODES), default="quick",
                    help="quick: 1 run of each headline measurement, small N (< 2 min); "
                         "full: the whole matrix, median of 3 (default quick)")
    ap.add_argument("--runs", type=int, help="runs per configuration (default: 1 quick, 3 full)")
    ap.add_argument("--records", type=int,
                    help="records per run (default: 1000000 quick, 2000000 full); "
                         "fewer for 1 KiB and 10 KiB values (full mode); the RSS pair "
                         "is always 1M and 10M")
    ap.add_argument("--only", help="comma-separated sections to run: " + ",".join(SECTIONS))
    ap.add_argument("--feed", choices=["auto", "paced", "prefill"], default="auto",
                    help="paced: k2mc-mock produces while the consumer reads, at most "
                         "--pace-lead records ahead of its group; prefill: the topic is "
                         "written before the consumer starts (only where it fits the mock's "
                         "5 MiB per partition); auto: paced when k2mc-mock supports it")
    ap.add_argument("--latency-rate", type=float,
                    help="offered records/s for the latency runs (default: 50%% of the "
                         "headline k2mc rate measured in this run)")
    ap.add_argument("--k2mc-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for every k2mc run, repeatable "
                         "(e.g. --k2mc-arg=-Xfetch.wait.max.ms=10); recorded in the results")
    ap.add_argument("--no-sweep", action="store_true",
                    help="run mc-ceiling with its default batch/conns instead of --sweep first")
    ap.add_argument("--build", default="build", help="directory with the tools (default build)")
    ap.add_argument("--kafka", choices=["mock", "real"], default="mock",
                    help="mock: librdkafka's mock cluster, a k2mc-mock process per run "
                         "(default); real: one Apache Kafka broker for the whole run "
                         "(tests/kafka/kafka-broker; `make kafka` fetches it), every topic "
                         "produced before its readers, the broker's CPU per record served "
                         "recorded")
    ap.add_argument("--kafka-version",
                    default=os.environ.get("K2MC_KAFKA_VERSION") or KAFKA_DEFAULT_VERSION,
                    help="the broker's version with --kafka real, from build/kafka/VERSION "
                         f"(default $K2MC_KAFKA_VERSION or {KAFKA_DEFAULT_VERSION})")
    ap.add_argument("--peers-elsewhere", choices=["auto", "yes", "no"], default="auto",
                    help="also run the cost section's peers table (issue 25) on the other "
                         "backend (the real broker when --kafka mock, the mock when real); "
                         "auto: in full mode")
    ap.add_argument("--out", help="results directory (default build/bench; with --kafka "
                                  "real, build/bench/real-MODE); bench/results to record "
                                  "a run in the tree")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep every process's stdout/stderr (kept anyway when a run fails)")
    args = ap.parse_args(argv)
    if args.kafka == "real" and args.feed == "paced":
        ap.error("--feed paced is for the mock's retention; a real broker's topics are "
                 "produced before the run")
    if args.out is None:
        args.out = os.path.join(ROOT, "build", "bench")
        if args.kafka == "real":
            args.out = os.path.join(args.out, f"real-{args.mode}")
    if args.runs is not None and args.runs < 1:
        ap.error("--runs must be >= 1")
    if args.records is not None and args.records < 1000:
        ap.error("--records must be >= 1000")
    default = QUICK_SECTIONS if args.mode == "quick" else SECTIONS
    args.sections = default
    if args.only:
        args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
        bad = [s for s in args.sections if s not in SECTIONS]
        if bad:
            ap.error(f"unknown section(s) {', '.join(bad)}; known: {', '.join(SECTIONS)}")
    return args


def main(argv):
    args = parse_args(argv)
    mode = MODES[args.mode]
    n = args.records or mode["records"]
    runs = args.runs or mode["runs"]
    tools = Tools(args.build)
    started = time.time()
    t_start = time.monotonic()
    logroot = tempfile.mkdtemp(prefix="k2mc-bench.")
    env = environment(tools)
    log(f"k2mc bench, {args.mode} mode: {fmt_count(n)} records, {runs} run(s) per configuration, "
        f"sections {','.join(args.sections)}; Kafka: {args.kafka}; logs in {logroot}")
    kafka = Kafka(args.kafka, args.kafka_version, logroot, tools.mock)
    try:
        kafka.start()
    except BenchError as e:
        log(f"FAILED: {e}")
        log(f"logs kept in {logroot}")
        return 1
    if not tools.mock_paces and not kafka.real:
        log("note: k2mc-mock has no --pace-group: topics are written before the consumer starts "
            "where they fit the mock's 5 MiB per partition, skipped where they do not")
    bench = Bench(args, tools, logroot, kafka)
    registry = {}

    def case(tool, **kw):
        c = Case(tool, **kw)
        return registry.setdefault(c.key, c)

    S = set(args.sections)
    cases = {}
    plan = []  # (case, runs) in order; shared cases run once
    if "mc-ceiling" in S:
        cases["mc"] = case("mc-ceiling", records=n)
        plan.append(cases["mc"])
    if "kafka-ceiling" in S:
        cases["kc"] = case("kafka-ceiling", records=n)
        plan.append(cases["kc"])
    if "python" in S:
        cases["py"] = case("python", records=n)
        plan.append(cases["py"])
    if "writers" in S:
        cases["writers"] = [case("k2mc", writers=w, records=n) for w in mode["writers"]]
        plan += cases["writers"]
    # each variant also gets the ceilings measured on its own records (when those sections run)
    ceil_kc = "kafka-ceiling" in S
    ceil_mc = "mc-ceiling" in S
    if "partitions" in S:
        cases["partitions"] = [case("k2mc", writers=2, partitions=p, records=n)
                               for p in (1, 8, 64)]
        for x in cases["partitions"]:
            if ceil_kc:
                plan.append(case("kafka-ceiling", partitions=x.partitions, records=n))
            plan.append(x)
    if "values" in S:
        vals = []
        for b in (100, 1024, 10240):
            nb = n
            if mode["value_bytes"]:
                nb = min(n, max(10_000, int(mode["value_bytes"] / (b + KEY_LEN)) // 1000 * 1000))
            if ceil_mc:
                plan.append(case("mc-ceiling", value_size=b, records=nb))
            if ceil_kc:
                plan.append(case("kafka-ceiling", value_size=b, records=nb))
            vals.append(case("k2mc", writers=2, value_size=b, records=nb))
            plan.append(vals[-1])
        cases["values"] = vals
    if "keys" in S:
        cases["keys"] = [case("k2mc", writers=2, keys=k, records=n) for k in (1000, 1_000_000)]
        for x in cases["keys"]:
            if ceil_mc:
                plan.append(case("mc-ceiling", keys=x.keys, records=n))
            plan.append(x)
    if "rss" in S:
        cases["rss"] = [case("k2mc", writers=2, records=r) for r in (1_000_000, 10_000_000)]
        plan += cases["rss"]

    cost = ([], {}, [], [])
    if "cost" in S:
        setup_peers(tools, logroot)
        env["peers"] = dict(tools.peer_versions)
        if tools.peers_why:
            bench.skips.append(f"the PyPI peers: {tools.peers_why}")
        cost = cost_section(bench, args.mode, runs, args.records or mode["cost_cap"])
        if args.peers_elsewhere == "yes" or (args.peers_elsewhere == "auto" and
                                             args.mode == "full"):
            t, r = peers_elsewhere(bench, args, args.mode, runs,
                                   args.records or mode["cost_cap"])
            cost[0][1:1] = t
            cost[1].setdefault("peers", {}).update(r)
        cost[0].extend(cost_variants(bench, S, runs, args.records or mode["cost_cap"]))
    elif S & {"allocators", "rdkafka", "cpus"}:
        cost = ([], {}, [], [])
        cost[0].extend(cost_variants(bench, S, runs, args.records or mode["cost_cap"]))

    seen = set()
    total = len({c.key for c in plan}) + ("latency" in S)
    step = 0
    for c in plan:
        if c.key in seen:
            continue
        seen.add(c.key)
        step += 1
        log(f"[{step}/{total}] {c.label}, {fmt_count(c.records)} records x {runs} "
            f"[{time.monotonic() - t_start:.0f} s]")
        bench.run_case(c, runs)

    # the headline k2mc: the best --writers at 8 partitions, 100 B (w=2 when not swept)
    ws = [x for x in cases.get("writers", []) if not x.skipped and x.median.get("rps")]
    if ws:
        cases["headline"] = max(ws, key=lambda x: x.median["rps"])

    if "latency" in S:
        step += 1
        rate = args.latency_rate
        head = cases.get("headline")
        if rate is None and head:
            rate = round(head.median["rps"] * 0.5, -3) or head.median["rps"] * 0.5
        if rate is None:
            bench.skips.append("latency: no k2mc rate measured in this run (run the writers "
                               "section or give --latency-rate)")
            log("SKIPPED latency: no k2mc rate measured (run 'writers' or give --latency-rate)")
        else:
            wr = head.writers if head else 2
            nl = max(1000, int(rate * mode["latency_s"]))
            lc = case("k2mc", writers=wr, records=nl, rate=rate)
            cases["latency"] = [lc]
            log(f"[{step}/{total}] {lc.label}, {fmt_count(nl)} records x {runs} "
                f"[{time.monotonic() - t_start:.0f} s]")
            bench.run_case(lc, runs)

    report = Report(args.mode, cases, args.sections, registry, kafka.real)
    report.build()
    report.cost_tables, report.cost_ratios, report.cost_targets = cost[0], cost[1], cost[2]
    transports = (transport_costs(args.build, bench) if "transports" in args.sections
                  else (None, []))
    if transports[0]:
        report.tables.append(transports[0])
    placement = placement_costs(args.build, bench) if "placement" in args.sections else (None, [])
    if placement[0]:
        report.tables.append(placement[0])
    templates = (template_costs(args.build, bench, args.mode == "quick")
                 if "templates" in args.sections else ([], {}))
    report.tables.extend(templates[0])
    refill = (refill_costs(args.build, bench, args.mode == "quick")
              if "refill" in args.sections else (None, {}))
    if refill[0]:
        report.tables.append(refill[0])
    kafka.stop()
    # every section counted, the ones measured after the report's cases too
    finished = time.time()
    duration = time.monotonic() - t_start
    env["loadavg_at_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    png, plot_msg = plot_writers(cases, args.out)
    feed_note = ("fed while it is read, at most --pace-lead records per partition ahead of the "
                 "group's commits" if tools.mock_paces and args.feed != "prefill" else
                 "written before the consumer starts")
    if kafka.real:
        feed_note = ("produced before the run by k2mc-mock -b, once for every reader of the "
                     "same records")
    meta = {"mode": args.mode, "records": n, "runs": runs, "sections": args.sections,
            "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
            "finished": datetime.datetime.fromtimestamp(finished).isoformat(timespec="seconds"),
            "duration_s": round(duration, 1), "feed": args.feed, "feed_note": feed_note,
            "skipped": bench.skips, "failures": bench.failures, "plot": png,
            "pace_lead": {b: pace_lead(b) for b in (100, 1024, 10240)},
            "k2mc_args": args.k2mc_arg, "kafka": kafka.to_json(),
            "fetch_props": kafka.fetch_props,
            "argv": sys.argv}
    result = {
        "schema": 1, "meta": meta, "environment": env,
        "method": {"key_len": KEY_LEN, "mb": 1e6, "k2mc_commit_interval_ms": K2MC_COMMIT_MS,
                   "pace_lead": {b: pace_lead(b) for b in (100, 1024, 10240)},
                   "rps": "tool's own clock: k2mc since its group assignment (summary line), "
                          "others their JSON 'rps'; rps_wall: spawn to exit",
                   "cpu": "ru_utime + ru_stime of the measured process (os.wait4)",
                   "broker_cpu": "utime + stime of the process serving the records (the real "
                                 "broker's JVM, or the mock's k2mc-mock) from /proc/PID/stat "
                                 "fields 14 and 15, from the reader's spawn to its exit, over "
                                 "the records it read; only where the topic was produced "
                                 "before the reader started",
                   "median": "per metric over the runs that succeeded"},
        "cases": [c.to_json() for c in registry.values()],
        "tables": {k: ([x.slug for x in v] if isinstance(v, list) else v.slug)
                   for k, v in cases.items()},
        "cost": {"ratios": cost[1], "targets": cost[2], "cases": [c.to_json() for c in cost[3]]},
        "ratios": report.ratios, "targets": report.targets, "transports": transports[1],
        "placement": placement[1],
        "templates": templates[1],
        "refill": refill[1],
    }
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
        f.write("\n")
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(report.markdown(meta, env, plot_msg))
    print(report.text())
    print()
    if plot_msg and not png:
        print(f"plot: {plot_msg}")
    print(f"wrote {os.path.relpath(os.path.join(args.out, 'latest.json'), os.getcwd())}, "
          f"latest.md{', writers.png' if png else ''} in {duration:.0f} s")
    for s in bench.skips:
        print(f"skipped: {s}")
    for s in bench.failures:
        print(f"FAILED: {s}")
    if bench.failures or args.keep_logs:
        print(f"logs kept in {logroot}")
    else:
        shutil.rmtree(logroot, ignore_errors=True)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_sigterm)
    rc = 130
    try:
        rc = main(sys.argv[1:])
    except (KeyboardInterrupt, Terminated) as e:
        log("interrupted: stopping the processes this run started")
        if isinstance(e, Terminated):
            rc = 128 + e.args[0]
    finally:
        stop_all()
    sys.exit(rc)
