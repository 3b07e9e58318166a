#!/usr/bin/python3
# e2e.py: k2mc's end-to-end change-data-capture test (issue 26): PostgreSQL ->
# Debezium (Kafka Connect standalone, pgoutput) -> one real Kafka broker ->
# k2mc --cdc debezium -> memcached, in every converter format at once.
# Asserts that the cache equals the table (every row's key holds its current
# row, compared as parsed JSON with row_to_json; every deleted row a miss)
# after the snapshot, after the changes and at the end, and that k2mc's
# committed offset reached the topic's end; measures the time from COMMIT to
# the value in memcached. Run by `make test-kafka`; not a benchmark.
#
# Servers, all on free ports of 127.0.0.1, each stopped by its PID: the broker
# (tests/kafka/kafka-broker); PostgreSQL, the registry and Connect with the
# first format's connector (tests/cdc/cdc-world, poll.interval.ms 50), the
# other formats' connectors added to the same worker through its REST API
# (one slot, publication and topic each, on the same table: every COMMIT
# reaches every format); per format, memcached (Debian's) and build/k2mc,
# running from before the snapshot arrives to the end. Every wait polls a
# condition against a deadline; none is a fixed sleep.
#
# One line per case, [PASS] or [FAIL] cdc::FORMAT/CASE (cdc::all/... for the
# servers), then the phase times, the latency figures (p50, p99 of COMMIT to
# memcached) and a count. Exit 0 when every case passed; the work directory
# (logs, cdc-world's directory) is kept when one failed.
#
# Debian's /usr/bin/python3, standard library only; needs psql and kcat.
#   e2e.py [--format json|json-schemas|avro|avro-deref ...] [--kafka-version V]
#          [--k2mc PATH] [--keep]
import argparse
import importlib.machinery
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
# the launchers' helpers: one implementation of each for every test
KB = importlib.machinery.SourceFileLoader(
    "kafka_broker", os.path.join(ROOT, "tests", "kafka", "kafka-broker")).load_module()
SMOKE = importlib.machinery.SourceFileLoader(
    "cdc_smoke", os.path.join(HERE, "smoke.py")).load_module()
CW = importlib.machinery.SourceFileLoader(
    "cdc_world", os.path.join(HERE, "cdc-world")).load_module()

FORMATS = ("json", "json-schemas", "avro", "avro-deref")
TABLE = "customers"
POLL_MS = 50            # the connector's poll.interval.ms (Debezium's default: 500)
CONVERGE_S = 60         # deadline of each wait for the cache to equal the table
LATENCY_CHANGES = 120   # single-row changes timed from COMMIT to memcached
LATENCY_SPACING_S = 0.025  # one change every 25 ms: at most a few in flight
MARKER = 5000000000     # the balances of the timed changes: MARKER + their number

SNAPSHOT_ROWS = 150
INIT_SQL = """CREATE TABLE customers (id int PRIMARY KEY, name text, balance bigint NOT NULL,
                        active boolean NOT NULL);
-- full before images in u and d events
ALTER TABLE customers REPLICA IDENTITY FULL;
INSERT INTO customers SELECT i, 'snap ' || i, i * 1000, i %% 2 = 0
  FROM generate_series(1, %d) AS i;
""" % SNAPSHOT_ROWS
# The changes after the snapshot: each string one transaction (psql runs a
# string without BEGIN as one implicit transaction per statement).
CHANGES = [
    # 150 rows in one transaction
    "INSERT INTO customers SELECT i, 'bulk ' || i, -i, true FROM generate_series(151, 300) AS i",
] + [
    # single-row inserts, one transaction each
    "INSERT INTO customers VALUES (%d, 'one by one %d', %d, false)" % (i, i, i * 7)
    for i in range(301, 311)
] + [
    "UPDATE customers SET balance = balance + 1 WHERE id BETWEEN 1 AND 40",
    "UPDATE customers SET active = NOT active, name = NULL WHERE id % 7 = 0",
    # text JSON must escape, and the extreme bigints (beyond a double's 2^53)
    "UPDATE customers SET name = E'quote \" backslash \\\\ tab \\t newline \\n', "
    "balance = 9223372036854775807 WHERE id = 11",
    "UPDATE customers SET name = 'café ünïcødé ✓ 🐘', balance = -9223372036854775808 "
    "WHERE id = 12",
    "UPDATE customers SET name = '', balance = 9007199254740993 WHERE id = 13",
    "DELETE FROM customers WHERE id BETWEEN 41 AND 60",
    "DELETE FROM customers WHERE id BETWEEN 161 AND 170",
    # a delete, then a re-insert of the same id in a later transaction
    "DELETE FROM customers WHERE id = 5",
    "INSERT INTO customers VALUES (5, 'five again', 55, true)",
    # ... and within one transaction
    "BEGIN; DELETE FROM customers WHERE id = 6; "
    "INSERT INTO customers VALUES (6, 'six again', 66, false); COMMIT",
    # several updates of one row in one transaction: the last one wins
    "BEGIN; UPDATE customers SET balance = 1 WHERE id = 7; "
    "UPDATE customers SET balance = 2, name = 'seven b' WHERE id = 7; "
    "UPDATE customers SET balance = 3, active = false WHERE id = 7; "
    "UPDATE customers SET balance = 4, name = 'seven d' WHERE id = 7; COMMIT",
    # delete, re-insert, delete: absent at the end
    "DELETE FROM customers WHERE id = 8",
    "INSERT INTO customers VALUES (8, 'eight again', 88, true)",
    "DELETE FROM customers WHERE id = 8",
    # a primary key change: Debezium sends d (and its tombstone) for 9, c for 1009
    "UPDATE customers SET id = 1009 WHERE id = 9",
    # inserted and deleted in one transaction: absent
    "BEGIN; INSERT INTO customers VALUES (311, 'gone', 0, true); "
    "DELETE FROM customers WHERE id = 311; COMMIT",
    # re-insert of a row deleted in the bulk delete above
    "INSERT INTO customers VALUES (50, 'fifty again', 5050, true)",
]
# every id that ever had a row: those not in the table must be misses
IDS = set(range(1, 312)) | {1009}


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Memcached:
    """Debian's memcached, our child, and a text-protocol client of it."""

    def __init__(self, work):
        self.port = KB.free_ports(1)[0]
        cmd = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
        if os.geteuid() == 0:
            cmd[1:1] = ["-u", "nobody"]
        parent = os.getpid()
        self.log = os.path.join(work, "memcached-%d.log" % self.port)
        with open(self.log, "ab") as lf:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf,
                                         stderr=subprocess.STDOUT,
                                         preexec_fn=lambda: KB.child_setup(True, parent))
        self.sock = None
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("memcached on port %d exited (%s): %s" % (
                    self.port, self.proc.returncode, KB.tail_of(self.log)))
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("memcached on port %d: no connection in 10 s" % self.port)
                time.sleep(0.02)  # the poll interval of the wait for its port
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("memcached closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("memcached closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def get_many(self, keys):
        """{key: value bytes} of the keys present (misses absent)."""
        got = {}
        keys = list(keys)
        for i in range(0, len(keys), 100):
            self.sock.sendall(b"get " + " ".join(keys[i:i + 100]).encode() + b"\r\n")
            while True:
                line = self._line()
                if line == b"END":
                    break
                parts = line.split()
                if parts[0] != b"VALUE" or len(parts) < 4:
                    raise RuntimeError("memcached: unexpected %r" % line)
                got[parts[1].decode()] = self._bytes(int(parts[3]))
        return got

    def stop(self):
        if self.sock is not None:
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


class Psql:
    """One psql session on a pipe: a string of SQL, then an \\echo marker
    whose line says the statements before it have completed (committed, in
    autocommit) and returned to the client."""

    def __init__(self, L):
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", L["pg_port"], "-U", L["pg_user"], "-d", L["pg_db"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.n = 0

    def run(self, sql):
        """The output lines of sql; an error stops psql (ON_ERROR_STOP)."""
        self.n += 1
        mark = "__k2mc_done_%d" % self.n
        self.proc.stdin.write(("%s;\n\\echo %s\n" % (sql.rstrip(";"), mark)).encode())
        self.proc.stdin.flush()
        out = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("psql exited (%s) at: %s\n%s" % (
                    self.proc.wait(), sql, "\n".join(out)))
            line = line.decode(errors="replace").rstrip("\n")
            if line == mark:
                return out
            out.append(line)

    def table(self):
        """{id: row as row_to_json gives it, parsed}."""
        out = self.run("SELECT coalesce(json_agg(row_to_json(c) ORDER BY id), '[]') "
                       "FROM customers c")
        return {r["id"]: r for r in json.loads("".join(out))}

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def key_of(i):
    return "%s:%d" % (TABLE, i)


def compare(mc, table):
    """[] when the cache equals the table over every id that ever had a row,
    else one line per difference."""
    got = mc.get_many(key_of(i) for i in sorted(IDS))
    diffs = []
    for i in sorted(IDS):
        v = got.get(key_of(i))
        if i not in table:
            if v is not None:
                diffs.append("%s: no such row, but cached: %r" % (key_of(i), v[:200]))
            continue
        if v is None:
            diffs.append("%s: missing, row %s" % (key_of(i), json.dumps(table[i])))
            continue
        try:
            cached = json.loads(v)
        except ValueError:
            diffs.append("%s: not JSON: %r" % (key_of(i), v[:200]))
            continue
        if cached != table[i]:
            diffs.append("%s: %s, row %s" % (key_of(i), v.decode(errors="replace")[:300],
                                               json.dumps(table[i])))
    return diffs


def end_offset(bootstrap, topic):
    """The partition's end offset (kcat -Q with -1: the latest), None unknown."""
    r = subprocess.run(["kcat", "-Q", "-b", bootstrap, "-t", "%s:0:-1" % topic],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    m = re.search(r"\[0\] offset (\d+)", r.stdout)
    return int(m.group(1)) if m else None


def metric(url, name, topic):
    """The value of /metrics' NAME{topic=..., partition="0"}, None if absent."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + "{") and 'topic="%s"' % topic in line and \
                'partition="0"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def wait_records(bootstrap, topic):
    """Until the topic holds a record (its converter has run)."""
    deadline = time.monotonic() + 60
    while (end_offset(bootstrap, topic) or 0) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("no record on %s in 60 s" % topic)
        time.sleep(0.1)  # the poll interval of the wait for a record


def topic_exists(bootstrap, topic):
    r = subprocess.run(["kcat", "-L", "-J", "-b", bootstrap, "-t", topic],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    try:
        md = json.loads(r.stdout)
    except ValueError:
        return False
    return any(t.get("topic") == topic and not t.get("error") and t.get("partitions")
               for t in md.get("topics", []))


def pct(xs, p):
    """The p-th percentile, nearest rank."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(-(-p * len(s) // 100)) - 1))]


class Pipe:
    """One format end to end: its connector and topic, its memcached, its
    k2mc, and its cases (one line each, [PASS] or [FAIL])."""

    def __init__(self, fmt):
        self.fmt = fmt
        self.prefix = "dbz_" + fmt.replace("-", "_")
        self.topic = "%s.public.%s" % (self.prefix, TABLE)
        self.ok = True
        self.mc = self.k2 = None
        self.latency = []
        self.split = ([], [])  # COMMIT to Kafka, Kafka to memcached, ms
        self.counts = {True: 0, False: 0}
        self.rows = self.records = None
        self.times = []  # (phase, seconds)

    def check(self, name, ok, detail):
        self.ok = self.ok and ok
        self.counts[ok] += 1
        log("[%s] cdc::%s/%s: %s" % ("PASS" if ok else "FAIL", self.fmt, name, detail))
        return ok

    def start(self, a, bootstrap, ccompat, work):
        self.mc = Memcached(work)
        self.mport = KB.free_ports(1)[0]
        self.murl = "http://127.0.0.1:%d" % self.mport
        kf = "avro" if self.fmt.startswith("avro") else "json"
        cmd = [a.k2mc, "-b", bootstrap, "-t", self.topic, "-G", "k2mc-cdc-" + self.fmt,
               "-m", "127.0.0.1:%d" % self.mc.port, "--cdc", "debezium",
               "--key-format", kf, "--value-format", kf, "--key", TABLE + ":{keyjson:/id}",
               # test settings: commits often, so that committed = end is
               # seen soon after the last write; /metrics shows it
               "--commit-interval-ms", "200", "--metrics-addr", "127.0.0.1:%d" % self.mport]
        if kf == "avro":
            cmd += ["--schema-registry", ccompat]
        log("k2mc %s: %s" % (self.fmt, " ".join(cmd)))
        self.log = os.path.join(work, "k2mc-%s.log" % self.fmt)
        parent = os.getpid()
        with open(self.log, "ab") as lf:
            self.k2 = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf,
                                       stderr=subprocess.STDOUT,
                                       preexec_fn=lambda: KB.child_setup(True, parent))

    def diffs(self, table):
        if self.k2.poll() is not None:
            return ["k2mc exited (%s)" % self.k2.returncode]
        return compare(self.mc, table)

    def committed(self, bootstrap):
        """(committed, end): k2mc's committed offset (/metrics) and the
        topic's end offset, polled until they are equal or the deadline."""
        deadline = time.monotonic() + CONVERGE_S
        while True:
            end = end_offset(bootstrap, self.topic)
            com = metric(self.murl, "k2mc_committed_offset", self.topic)
            if (end is not None and com == end) or time.monotonic() > deadline:
                return com, end
            time.sleep(0.1)  # the poll interval of the wait for the commit

    def stop(self):
        if self.k2 is not None:
            if self.k2.poll() is None:
                self.k2.send_signal(signal.SIGTERM)
            try:
                rc = self.k2.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.k2.kill()
                rc = self.k2.wait()
            self.check("exit", rc == 0, "k2mc exited %s on SIGTERM" % rc)
            with open(self.log, errors="replace") as f:
                summ = [x for x in f.read().splitlines() if "summary:" in x]
            log("k2mc %s %s" % (self.fmt, summ[-1].strip() if summ else "(no summary line)"))
            if not self.ok:
                log("k2mc %s's log ends:\n%s" % (self.fmt, KB.tail_of(self.log, 30)))
        if self.mc is not None:
            self.mc.stop()


def wait_all(pipes, table, what):
    """Polls every pipe's cache until it equals the table (deadline
    CONVERGE_S from now); one case line per pipe, with the time it took."""
    t0 = time.monotonic()
    left = {p.fmt: p for p in pipes}
    last = {}
    while left:
        for fmt, p in list(left.items()):
            d = p.diffs(table)
            if not d:
                p.times.append((what, time.monotonic() - t0))
                p.check(what, True, "%d rows, %d ids without a row missed: cache equal to "
                        "the table %.2f s after %s" % (len(table), len(IDS - set(table)),
                                             time.monotonic() - t0,
                                             "k2mc started" if what == "snapshot"
                                             else "the last COMMIT"))
                del left[fmt]
            else:
                last[fmt] = d
                if d[0].startswith("k2mc exited"):
                    break
        if left and (time.monotonic() - t0 > CONVERGE_S or
                     any(p.k2.poll() is not None for p in left.values())):
            for fmt, p in left.items():
                p.check(what, False, "after %.1f s, %d differences: %s" % (
                    time.monotonic() - t0, len(last[fmt]), "; ".join(last[fmt][:5])))
            return False
        if left:
            time.sleep(0.05)  # the poll interval of the wait for convergence
    return True


def is_marker(balance):
    return isinstance(balance, int) and MARKER <= balance < MARKER + LATENCY_CHANGES


def kafka_stamps(bootstrap, p, avro):
    """{balance: the Kafka timestamp in ms} of the u events on p's topic
    whose balance is a latency marker. Connect's producer stamps a record
    when it sends it (Debezium gives its records no timestamp), so this is
    when the change left Connect for the broker."""
    r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", p.topic, "-o", "beginning", "-e",
                        "-q", "-f", "%T %S\n%s"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    buf, out, i = r.stdout, {}, 0
    while i < len(buf):
        nl = buf.index(b"\n", i)
        ts, vl = (int(x) for x in buf[i:nl].split())
        v = buf[nl + 1:nl + 1 + vl] if vl >= 0 else None
        i = nl + 1 + max(vl, 0)
        if v is None:
            continue
        if p.fmt.startswith("avro"):
            ev = avro.decode("value", v)[0]
        else:
            ev = json.loads(v)
            if p.fmt == "json-schemas":
                ev = ev["payload"]
        after = ev.get("after") or {}
        if ev.get("op") == "u" and is_marker(after.get("balance")):
            out[after["balance"]] = ts
    return out


class Tail:
    """kcat following a JSON topic in a thread of ours: the wall clock at
    which each latency marker reached a plain consumer (librdkafka's
    defaults), the reference for k2mc's Kafka-to-memcached time."""

    def __init__(self, bootstrap, topic, fmt):
        self.fmt = fmt
        self.end = end_offset(bootstrap, topic)
        self.arrived = {}  # marker -> wall clock
        self.caught_up = threading.Event()
        self.proc = subprocess.Popen(["kcat", "-C", "-u", "-q", "-b", bootstrap, "-t", topic,
                                      "-o", "beginning", "-f", "%o %s\n"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()
        if not self.caught_up.wait(30):
            raise RuntimeError("kcat did not read %s to its end (%s) in 30 s" % (topic, self.end))

    def read(self):
        for line in self.proc.stdout:
            wall = time.time()
            off, _, v = line.decode(errors="replace").partition(" ")
            if int(off) + 1 >= (self.end or 0):
                self.caught_up.set()
            try:
                ev = json.loads(v)
            except ValueError:
                continue  # a tombstone: an empty value
            if self.fmt == "json-schemas":
                ev = ev["payload"]
            after = ev.get("after") or {}
            if ev.get("op") == "u" and is_marker(after.get("balance")):
                self.arrived[after["balance"]] = wall

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.thread.join(30)


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def latency(pipes, psql, ids, bootstrap, ccompat):
    """Single-row updates, one every LATENCY_SPACING_S, each on a row of its
    own: per format, the time from psql's return of the COMMIT to the first
    get that shows the new balance. Every change in flight is asked of each
    memcached in one request, about every 2 ms. Then the same split at the
    records' Kafka timestamps: COMMIT to Kafka (PostgreSQL, Debezium,
    Connect) and Kafka to memcached (the broker, k2mc, memcached), on the
    wall clock that both sides share here."""
    pending = {p.fmt: {} for p in pipes}  # fmt -> key -> (marker, commit time)
    committed = {}  # marker -> wall clock of the COMMIT's return
    seen = {p.fmt: {} for p in pipes}  # fmt -> marker -> wall clock of the get
    nxt = 0
    last = 0.0
    ref = next((p for p in pipes if p.fmt.startswith("json")), None)
    tail = Tail(bootstrap, ref.topic, ref.fmt) if ref is not None else None
    load0 = loadavg()
    deadline = time.monotonic() + CONVERGE_S
    while nxt < len(ids) or any(pending.values()):
        now = time.monotonic()
        if now > deadline:
            for p in pipes:
                if pending[p.fmt]:
                    p.check("latency", False, "%d of %d changes not in memcached after %d s: "
                            "%s" % (len(pending[p.fmt]), len(ids), CONVERGE_S,
                                    sorted(pending[p.fmt])[:10]))
            break
        if nxt < len(ids) and now - last >= LATENCY_SPACING_S:
            i = ids[nxt]
            marker = MARKER + nxt
            psql.run("UPDATE customers SET balance = %d WHERE id = %d" % (marker, i))
            last = time.monotonic()
            committed[marker] = time.time()
            for p in pipes:
                pending[p.fmt][key_of(i)] = (marker, last)
            nxt += 1
        for p in pipes:
            pend = pending[p.fmt]
            if not pend:
                continue
            got = p.mc.get_many(pend)
            t, wall = time.monotonic(), time.time()
            for k, v in got.items():
                try:
                    bal = json.loads(v).get("balance")
                except (ValueError, AttributeError):
                    continue
                if bal == pend[k][0]:
                    p.latency.append((t - pend[k][1]) * 1000)
                    seen[p.fmt][bal] = wall
                    del pend[k]
        time.sleep(0.002)  # the poll interval of the gets
    if tail is not None:
        tail.stop()
    if any(pending.values()):
        return
    load1 = loadavg()
    avro = SMOKE.Avro(ccompat) if ccompat else None
    for p in pipes:
        lat = p.latency
        stamps = kafka_stamps(bootstrap, p, avro)
        to_kafka = [stamps[m] - committed[m] * 1000 for m in committed if m in stamps]
        to_mc = [(seen[p.fmt][m] - stamps[m] / 1000) * 1000 for m in seen[p.fmt]
                 if m in stamps]
        p.split = (to_kafka, to_mc)
        p.check("latency", len(to_kafka) == len(committed),
                "%d single-row changes, COMMIT to memcached: p50 %.0f ms, p99 %.0f ms (min %.0f, "
                "max %.0f); of which COMMIT to Kafka p50 %.0f p99 %.0f, Kafka to memcached "
                "p50 %.0f p99 %.0f (%d of %d records found); poll.interval.ms=%d, load "
                "average %s then %s" % (
                    len(lat), pct(lat, 50), pct(lat, 99), min(lat), max(lat),
                    pct(to_kafka, 50), pct(to_kafka, 99), pct(to_mc, 50), pct(to_mc, 99),
                    len(to_kafka), len(committed), POLL_MS, load0, load1))
    if tail is not None:
        stamps = kafka_stamps(bootstrap, ref, None)
        kc = [(tail.arrived[m] - stamps[m] / 1000) * 1000 for m in tail.arrived if m in stamps]
        log("reference: kcat (a plain librdkafka consumer) read the %d timed changes of %s "
            "p50 %.0f ms, p99 %.0f ms after their Kafka timestamps" % (
                len(kc), ref.topic, pct(kc, 50), pct(kc, 99)))
        ref.kcat = kc


def add_connector(cw, cwdir, fmt, registry_url, pipe):
    """A second connector on cdc-world's worker, through Connect's REST API:
    cdc-world's own connector properties with this format's converters (as
    cdc-world writes them), topic prefix, slot and publication."""
    conf = {}
    with open(os.path.join(cwdir, "connect", "connector.properties")) as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                k, v = line.split("=", 1)
                if not k.startswith(("key.converter", "value.converter")):
                    conf[k] = v
    w = types.SimpleNamespace(a=types.SimpleNamespace(format=fmt),
                              registry=types.SimpleNamespace(url=registry_url))
    conf.update(CW.World.converter(w))
    slot = pipe.prefix
    conf.update({"name": "k2mc-cdc-" + fmt, "topic.prefix": pipe.prefix,
                 "slot.name": slot + "_slot", "publication.name": slot + "_pub"})
    req = urllib.request.Request("%s/connectors/%s/config" % (cw.lines["connect_url"],
                                                              conf["name"]),
                                 data=json.dumps(conf).encode(), method="PUT",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if r.status not in (200, 201):
            raise RuntimeError("PUT connector %s: HTTP %d" % (conf["name"], r.status))
    return conf["name"]


def wait_running(url, names):
    """Every connector of names and its task RUNNING (Connect's REST API)."""
    deadline = time.monotonic() + 120
    for name in names:
        while True:
            st, body = CW.http_get("%s/connectors/%s/status" % (url, name))
            if st == 200:
                s = json.loads(body)
                states = [s.get("connector", {}).get("state")] + \
                    [t.get("state") for t in s.get("tasks", [])]
                if "FAILED" in states:
                    raise RuntimeError("connector %s FAILED: %s" % (name, body[-3000:]))
                if len(states) > 1 and all(x == "RUNNING" for x in states):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("connector %s not RUNNING in 120 s: %s %s" % (name, st, body))
            time.sleep(0.1)  # the poll interval of the wait for RUNNING


def run(a, pipes, bootstrap, work, phases, world):
    """Every format at once on one PostgreSQL and one Connect worker: one
    connector per format (slot, publication and topic of its own) over the
    same table, so that every COMMIT reaches every format."""
    # cdc-world starts the registry with an Avro format: its connector is
    # the first Avro pipe's, the others are added to its worker
    first = next((p for p in pipes if p.fmt.startswith("avro")), pipes[0])
    sql_path = os.path.join(work, "init.sql")
    with open(sql_path, "w") as f:
        f.write(INIT_SQL)
    os.chmod(sql_path, 0o644)
    t0 = time.monotonic()
    cw = SMOKE.Launcher("cdc-world", [
        "tests/cdc/cdc-world", "--connect", bootstrap, "--format", first.fmt,
        "--table", "public." + TABLE, "--topic-prefix", first.prefix, "--init-sql", sql_path,
        "--poll-ms", str(POLL_MS), "--timeout", "120",
        # under the work directory: kept with it when a case fails
        "--dir", os.path.join(work, "cdc-world")])
    psql = None
    try:
        cw.wait_ready()
        L = cw.lines
        phases += [("PostgreSQL initdb + start", (int(L["pg_initdb_ms"]) +
                                                  int(L["pg_start_ms"])) / 1000)]
        if "registry_start_ms" in L:
            phases.append(("registry", int(L["registry_start_ms"]) / 1000))
        phases.append(("Connect RUNNING (%s)" % first.fmt, int(L["connect_start_ms"]) / 1000))
        t1 = time.monotonic()
        names = []
        prev = first
        for p in sorted((p for p in pipes if p is not first),
                        key=lambda p: p.fmt.startswith("avro")):
            if p.fmt.startswith("avro"):
                # one Avro connector registers its schemas at a time: the
                # registry's in-memory storage (Apicurio 2.4.2, H2) let two
                # converters registering at once collide on a content id
                # (a unique-key violation killed the connector's task)
                wait_records(bootstrap, prev.topic)
                prev = p
            names.append(add_connector(cw, L["dir"], p.fmt, L.get("registry_url"), p))
        wait_running(L["connect_url"], names)
        if names:
            phases.append(("%d more connectors RUNNING" % len(names), time.monotonic() - t1))
        psql = Psql(L)
        snapshot = psql.table()
        t1 = time.monotonic()
        for p in pipes:
            # k2mc subscribes to a topic that exists: Connect creates it with
            # the snapshot's first record
            deadline = time.monotonic() + 60
            while not topic_exists(bootstrap, p.topic):
                if time.monotonic() > deadline:
                    raise RuntimeError("topic %s not created in 60 s" % p.topic)
                time.sleep(0.1)  # the poll interval of the wait for the topic
            p.start(a, bootstrap, L.get("ccompat_url"), work)
        if not wait_all(pipes, snapshot, "snapshot"):
            raise RuntimeError("the snapshot did not reach every cache")
        phases.append(("snapshot (op r) in every cache", time.monotonic() - t1))
        t1 = time.monotonic()
        for sql in CHANGES:
            psql.run(sql)
        phases.append(("%d transactions of changes" % len(CHANGES), time.monotonic() - t1))
        table = psql.table()
        t1 = time.monotonic()
        wait_all(pipes, table, "changes")
        phases.append(("convergence", time.monotonic() - t1))
        t1 = time.monotonic()
        latency(pipes, psql, sorted(table)[:LATENCY_CHANGES], bootstrap, L.get("ccompat_url"))
        phases.append(("%d timed changes" % LATENCY_CHANGES, time.monotonic() - t1))
        table = psql.table()
        t1 = time.monotonic()
        wait_all(pipes, table, "final")
        for p in pipes:
            com, end = p.committed(bootstrap)
            p.check("committed", end is not None and com == end,
                    "committed %s, end offset %s of %s" % (com, end, p.topic))
            p.rows, p.records = len(table), end
        phases.append(("final convergence, committed = end", time.monotonic() - t1))
    except (RuntimeError, KeyError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        world.check("run", False, "%s: %s" % (type(e).__name__, e))
    finally:
        t1 = time.monotonic()
        for p in pipes:
            p.stop()
        if psql is not None:
            psql.close()
        pids = [int(cw.lines[k]) for k in ("pg_pid", "registry_pid", "connect_pid")
                if k in cw.lines]
        rc = cw.stop()
        left = [x for x in pids if SMOKE.alive(x)]
        world.check("stop", rc == 0 and not left, "cdc-world (PostgreSQL, registry, "
                       "Connect) exit %s, servers left: %s" % (rc, left or "none"))
        phases.append(("stop", time.monotonic() - t1))
    phases.append(("cdc-world's launch to its stop", time.monotonic() - t0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", action="append", choices=FORMATS)
    ap.add_argument("--kafka-version", default=os.environ.get("K2MC_KAFKA_VERSION",
                                                              KB.DEFAULT_VERSION))
    ap.add_argument("--k2mc", default=os.environ.get("K2MC_BIN",
                                                     os.path.join(ROOT, "build", "k2mc")))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    formats = a.format or list(FORMATS)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (a CI timeout, make's caller) unwinds like ^C: the finally
    # blocks stop the launchers, which stop their servers; memcached and
    # k2mc die with us (PR_SET_PDEATHSIG)
    signal.signal(signal.SIGTERM, on_sigterm)
    t_all = time.monotonic()
    work = tempfile.mkdtemp(prefix="k2mc-cdc-e2e.")
    os.chmod(work, 0o755)  # cdc-world's psql -f runs as postgres when we are root
    kb = SMOKE.Launcher("kafka-broker", ["tests/kafka/kafka-broker", "--version",
                                         a.kafka_version, "--timeout", "120"])
    phases = []
    pipes = []
    # the cases that are no one format's: cdc::all/run, cdc::all/stop
    world = Pipe("all")
    try:
        try:
            kb.wait_ready()
        except RuntimeError as e:
            world.check("broker", False, str(e))
            return 1
        phases.append(("broker (Kafka %s)" % a.kafka_version, int(kb.lines["start_ms"]) / 1000))
        pipes = [Pipe(f) for f in formats]
        run(a, pipes, kb.lines["bootstrap"], work, phases, world)
    except KeyboardInterrupt:
        world.check("run", False, "interrupted (SIGINT or SIGTERM); servers stopped")
    finally:
        rc = kb.stop()
        world.check("broker", rc == 0, "kafka-broker (pid %d) exited %s" % (kb.proc.pid, rc))
    ok = world.ok and all(p.ok for p in pipes)
    log("\n== cdc end to end: %d snapshot rows, %d transactions of changes, %d timed "
        "single-row changes; %.0f s in all" % (SNAPSHOT_ROWS, len(CHANGES), LATENCY_CHANGES,
                                               time.monotonic() - t_all))
    log("phases: " + ", ".join("%s %.1f s" % (n, s) for n, s in phases))
    for p in pipes:
        lat, (tk, tm) = p.latency, p.split
        verdict = ("passed" if p.counts[True] else "not run") if p.ok else "FAILED"
        log("cdc %-12s %-7s rows %s, records %s, COMMIT to memcached p50 %.0f ms p99 %.0f ms "
            "(to Kafka p50 %.0f p99 %.0f, Kafka to memcached p50 %.0f p99 %.0f); %s" % (
                p.fmt, verdict, p.rows, p.records, pct(lat, 50),
                pct(lat, 99), pct(tk, 50), pct(tk, 99), pct(tm, 50), pct(tm, 99),
                ", ".join("%s %.2f s" % t for t in p.times)))
    every = pipes + [world]
    log("== cdc: %d passed, %d failed" % (sum(p.counts[True] for p in every),
                                          sum(p.counts[False] for p in every)))
    if ok and not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log("logs in %s" % work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
