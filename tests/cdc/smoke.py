#!/usr/bin/python3
# smoke.py: the CDC test's servers end to end, once per converter format
# (issue 26), before k2mc reads any of it: a real broker
# (tests/kafka/kafka-broker), then per format PostgreSQL, the registry and
# Kafka Connect with Debezium (tests/cdc/cdc-world); inserts, updates and
# deletes rows (a delete then a re-insert of the same id among them), reads
# the topic with kcat and checks the change events: snapshot rows as r, then
# c, u, d, the tombstone after each d, c again; in Avro the Confluent wire
# format (magic 0, a 4-byte id the registry's /apis/ccompat/v7 serves) and,
# without dereference-schema, an Envelope schema with references. Prints
# each server's start-up time and RSS. Stops everything by the PIDs the
# launchers printed. Not part of `make test`: `make cdc-smoke` runs it.
#
# Debian's /usr/bin/python3, standard library only; needs kcat and psql.
#   smoke.py [--format F ...]   (default: json, avro, avro-deref)
import argparse
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TIMEOUT_S = 180

INIT_SQL = """CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int);
-- full before images in u and d events
ALTER TABLE items REPLICA IDENTITY FULL;
INSERT INTO items VALUES (1, 'one', 10), (2, 'two', 20);
"""
# one statement a transaction (psql autocommits each); the events each
# should give, by key id: (id, op), op None for a tombstone
CHANGES = [
    ("INSERT INTO items VALUES (100, 'hundred', 1)", [(100, "c")]),
    ("UPDATE items SET qty = 2 WHERE id = 100", [(100, "u")]),
    ("DELETE FROM items WHERE id = 100", [(100, "d"), (100, None)]),
    ("INSERT INTO items VALUES (100, 'hundred again', 3)", [(100, "c")]),
    ("UPDATE items SET name = 'uno' WHERE id = 1", [(1, "u")]),
    ("DELETE FROM items WHERE id = 2", [(2, "d"), (2, None)]),
]
SNAPSHOT = [(1, "r"), (2, "r")]


def log(msg):
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Launcher:
    """A launcher (kafka-broker or cdc-world) run attached: its key=value
    lines up to "ready" are parsed; stop() is SIGTERM to its PID, and it
    stops its servers."""

    def __init__(self, name, cmd):
        self.name = name
        self.lines = {}
        self.all = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     cwd=ROOT)
        self.buf = b""

    def wait_ready(self):
        """Reads the raw pipe, not a buffered reader: select() knows nothing
        of lines a reader has already taken in."""
        deadline = time.monotonic() + TIMEOUT_S
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                line = raw.decode(errors="replace")
                self.all.append(line)
                if line == "ready":
                    return
                if "=" in line:
                    k, v = line.split("=", 1)
                    self.lines.setdefault(k, v)
            r, _, _ = select.select([fd], [], [], max(0.1, deadline - time.monotonic()))
            if not r:
                raise RuntimeError("%s: not ready after %d s" % (self.name, TIMEOUT_S))
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("%s exited (%s) before ready" % (self.name, self.proc.wait()))
            self.buf += chunk

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def rss_line(name, pid, with_children=False):
    pids = [pid] + (children(pid) if with_children else [])
    rss = sum(status_kb(p, "VmRSS") for p in pids)
    hwm = status_kb(pid, "VmHWM")
    extra = " (with its %d children)" % (len(pids) - 1) if with_children else ""
    return "%-9s pid %-7d RSS %4d MiB%s, peak %d MiB" % (name, pid, rss // 1024, extra,
                                                        hwm // 1024)


def read_topic(bootstrap, topic):
    """Every record of the topic as (offset, key bytes or None, value bytes
    or None), read with kcat in binary: a header line with the lengths, then
    the bytes (-1 is a null)."""
    r = subprocess.run(["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
                        "-q", "-f", "%o %K %S\n%k%s"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        return None
    buf, recs, i = r.stdout, [], 0
    while i < len(buf):
        nl = buf.index(b"\n", i)
        off, kl, vl = (int(x) for x in buf[i:nl].split())
        i = nl + 1
        k = buf[i:i + kl] if kl >= 0 else None
        i += max(kl, 0)
        v = buf[i:i + vl] if vl >= 0 else None
        i += max(vl, 0)
        recs.append((off, k, v))
    return recs


def zigzag_int(b, i):
    """An Avro int/long at b[i:], and the index after it."""
    shift = n = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return (n >> 1) ^ -(n & 1), i


def http_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Avro:
    """A small Avro binary decoder for this smoke's display and checks (the
    decoder proper is k2mc's): named types, including those a schema's
    references bring from the registry (by subject and version)."""

    def __init__(self, ccompat):
        self.ccompat = ccompat
        self.by_id = {}  # id -> (parsed schema, number of references)

    def schema(self, sid):
        if sid not in self.by_id:
            d = http_json("%s/schemas/ids/%d" % (self.ccompat, sid))
            names = {}
            for ref in d.get("references") or []:
                r = http_json("%s/subjects/%s/versions/%s" % (
                    self.ccompat, urllib.parse.quote(ref["subject"], safe=""), ref["version"]))
                self.names(json.loads(r["schema"]), None, names)
            s = json.loads(d["schema"])
            self.names(s, None, names)
            self.by_id[sid] = (s, names, len(d.get("references") or []))
        return self.by_id[sid]

    def names(self, s, ns, names):
        if isinstance(s, list):
            for x in s:
                self.names(x, ns, names)
        elif isinstance(s, dict):
            t = s.get("type")
            if t in ("record", "enum", "fixed"):
                ns = s.get("namespace", ns)
                full = s["name"] if "." in s["name"] or not ns else ns + "." + s["name"]
                names[full] = s
                names[s["name"]] = s
            for f in s.get("fields", []):
                self.names(f["type"], ns, names)
            for k in ("items", "values"):
                if k in s:
                    self.names(s[k], ns, names)
            if isinstance(t, (dict, list)):
                self.names(t, ns, names)

    def read(self, s, b, i, names):
        if isinstance(s, list):
            n, i = zigzag_int(b, i)
            return self.read(s[n], b, i, names)
        if isinstance(s, str) and s in names:
            s = names[s]
        t = s["type"] if isinstance(s, dict) else s
        if isinstance(t, (dict, list)):
            return self.read(t, b, i, names)
        if t == "null":
            return None, i
        if t == "boolean":
            return b[i] != 0, i + 1
        if t in ("int", "long"):
            return zigzag_int(b, i)
        if t in ("float", "double"):
            w = 4 if t == "float" else 8
            return struct.unpack("<f" if w == 4 else "<d", b[i:i + w])[0], i + w
        if t in ("bytes", "string"):
            n, i = zigzag_int(b, i)
            raw = b[i:i + n]
            return (raw.decode() if t == "string" else raw.hex()), i + n
        if t == "fixed":
            return b[i:i + s["size"]].hex(), i + s["size"]
        if t == "enum":
            n, i = zigzag_int(b, i)
            return s["symbols"][n], i
        if t == "record":
            out = {}
            for f in s["fields"]:
                out[f["name"]], i = self.read(f["type"], b, i, names)
            return out, i
        if t in ("array", "map"):
            out = [] if t == "array" else {}
            while True:
                n, i = zigzag_int(b, i)
                if n == 0:
                    return out, i
                if n < 0:
                    n = -n
                    _, i = zigzag_int(b, i)  # the block's size in bytes
                for _ in range(n):
                    if t == "map":
                        k, i = self.read("string", b, i, names)
                        out[k], i = self.read(s["values"], b, i, names)
                    else:
                        x, i = self.read(s["items"], b, i, names)
                        out.append(x)
        raise RuntimeError("Avro type %r not handled" % (t,))

    def decode(self, what, b):
        """Confluent wire format: 0x00, a big-endian 4-byte id, Avro binary."""
        if len(b) < 5 or b[0] != 0:
            raise RuntimeError("%s does not start with magic 0: %s" % (what, b[:8].hex()))
        sid = int.from_bytes(b[1:5], "big")
        s, names, nrefs = self.schema(sid)
        val, end = self.read(s, b, 5, names)
        if end != len(b):
            raise RuntimeError("%s id %d: %d bytes left after the record" % (
                what, sid, len(b) - end))
        return val, "%s %s|%s id %d (%s, %d refs, %d B)" % (
            what, b[:1].hex(), b[1:5].hex(), sid, s.get("name"), nrefs, len(b))


def decode(fmt, k, v, avro):
    """(key id, op or None for a tombstone, a description) of a record."""
    if fmt.startswith("json"):
        key = json.loads(k)
        val = json.loads(v) if v is not None else None
        if fmt == "json-schemas":
            key = key["payload"]
            val = val["payload"] if val is not None else None
        desc = "key " + json.dumps(key, separators=(",", ":"))
    else:
        key, kdesc = avro.decode("key", k)
        val, vdesc = avro.decode("value", v) if v is not None else (None, "value null")
        desc = "%s %s; %s" % (kdesc, json.dumps(key, separators=(",", ":")), vdesc)
    if val is None:
        return key["id"], None, desc + ": tombstone"
    return key["id"], val["op"], "%s; before %s after %s" % (
        desc, json.dumps(val["before"], separators=(",", ":")),
        json.dumps(val["after"], separators=(",", ":")))


def run_format(fmt, bootstrap, sql_path, work):
    prefix = "k2mc_" + fmt.replace("-", "_")
    log("\n== format %s" % fmt)
    t0 = time.monotonic()
    cw = Launcher("cdc-world", ["tests/cdc/cdc-world", "--connect", bootstrap, "--format", fmt,
                                "--topic-prefix", prefix, "--init-sql", sql_path,
                                "--poll-ms", "50", "--timeout", str(TIMEOUT_S)])
    ok = True
    try:
        cw.wait_ready()
        L = cw.lines
        log("ready %.1f s after the launch: postgres %s ms (initdb %s ms), registry %s ms, "
            "connect %s ms (connector and its task RUNNING)" % (
                time.monotonic() - t0, L.get("pg_start_ms"), L.get("pg_initdb_ms"),
                L.get("registry_start_ms", "-"), L.get("connect_start_ms")))
        log(rss_line("postgres", int(L["pg_pid"]), with_children=True))
        if "registry_pid" in L:
            log(rss_line("registry", int(L["registry_pid"])))
        log(rss_line("connect", int(L["connect_pid"])))
        topic = L["topic"]
        for sql, _ in CHANGES:
            r = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                                "-p", L["pg_port"], "-U", L["pg_user"], "-d", L["pg_db"],
                                "-c", sql], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise RuntimeError("psql: %s: %s" % (sql, r.stderr.strip()))
        t_sql = time.monotonic()
        want = SNAPSHOT + [e for _, evs in CHANGES for e in evs]
        deadline = time.monotonic() + 60
        recs = []
        while True:
            recs = read_topic(bootstrap, topic) or []
            if len(recs) >= len(want) or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the poll interval of the wait for the records
        log("%d records on %s, all read %.2f s after the last commit (kcat polled)" % (
            len(recs), topic, time.monotonic() - t_sql))
        avro = Avro(cw.lines.get("ccompat_url"))
        got = []
        for off, k, v in recs:
            kid, op, desc = decode(fmt, k, v, avro)
            got.append((kid, op))
            log("  %2d %-4s %s" % (off, op or "tomb", desc))
        if got != want:
            log("MISMATCH: want %s\n          got  %s" % (want, got))
            ok = False
        if fmt.startswith("avro"):
            env = [x for x in avro.by_id.values() if x[0].get("name") == "Envelope"]
            refs = [x[2] for x in env]
            log("Envelope schemas: %d, references %s" % (len(env), refs))
            if not env or (fmt == "avro" and not all(refs)) or \
                    (fmt == "avro-deref" and any(refs)):
                log("MISMATCH: references of the Envelope schema in %s" % fmt)
                ok = False
        with open(os.path.join(work, fmt + ".lines"), "w") as f:
            f.write("\n".join(cw.all) + "\n")
    finally:
        pids = [int(cw.lines[k]) for k in ("pg_pid", "registry_pid", "connect_pid")
                if k in cw.lines]
        t = time.monotonic()
        rc = cw.stop()
        left = [p for p in pids if alive(p)]
        log("stopped cdc-world (pid %d, exit %s) in %.1f s; servers left: %s" % (
            cw.proc.pid, rc, time.monotonic() - t, left or "none"))
        if left or rc != 0:
            ok = False
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", action="append",
                    choices=("json", "json-schemas", "avro", "avro-deref"))
    a = ap.parse_args()
    formats = a.format or ["json", "avro", "avro-deref"]
    work = tempfile.mkdtemp(prefix="k2mc-cdc-smoke.")
    sql_path = os.path.join(work, "init.sql")
    with open(sql_path, "w") as f:
        f.write(INIT_SQL)
    os.chmod(work, 0o755)
    os.chmod(sql_path, 0o644)
    kb = Launcher("kafka-broker", ["tests/kafka/kafka-broker", "--timeout", str(TIMEOUT_S)])
    ok = True
    try:
        try:
            kb.wait_ready()
        except RuntimeError as e:
            log("FAILED: %s" % e)
            return 1
        bpid = int(kb.lines["pid"].split()[0])  # "pid=PID node=1 port=P"
        log("broker %s ready, start %s ms" % (kb.lines["bootstrap"], kb.lines["start_ms"]))
        log(rss_line("broker", bpid))
        for fmt in formats:
            try:
                ok = run_format(fmt, kb.lines["bootstrap"], sql_path, work) and ok
            except (RuntimeError, KeyError, ValueError, OSError) as e:
                log("FAILED %s: %s" % (fmt, e))
                ok = False
    finally:
        rc = kb.stop()
        log("\nstopped kafka-broker (pid %d, exit %s)" % (kb.proc.pid, rc))
    if ok:
        shutil.rmtree(work, ignore_errors=True)
        log("smoke passed")
    else:
        log("smoke FAILED (the launchers' lines are in %s)" % work)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
