#!/usr/bin/python3
"""make interop: every --distribution proven by its readers' real client.

Starts three memcached servers and one k2mc-mock topic (loopback, free
ports), then for each case: empties the servers, runs k2mc -e over the whole
topic with that --distribution (a fresh group), and reads every key of the
mock's --expect file back with each client library that distribution names,
configured as such a reader is (tests/interop/read_*). Every key must hold
its last value and every deleted key must be absent. The --mc-eject cases
list a fourth server that is not running: k2mc ejects it, and each reader,
configured for failover, drops it too and must still find every key.

A client that cannot run (not installed, does not build) fails its case; so
does a case whose keys all landed on one server (it would prove nothing).
Stops exactly the processes it started. Exit 0 only if every case passed.
Environment: K2MC_BIN, K2MC_MOCK (default build/k2mc, build/k2mc-mock),
INTEROP_RECORDS (default 20000), INTEROP_KEYS (default 4000),
INTEROP_ONLY (comma-separated case names)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PY = "/usr/bin/python3"
SPY_JAR = "/usr/share/java/spymemcached.jar"
GO_ENV = {"GO111MODULE": "off", "GOPATH": "/usr/share/gocode"}

procs = []


def log(msg):
    print(f"interop: {msg}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv, logfile, **kw):
    p = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def mc_command(port, cmd):
    """One text-protocol command to the server on port; its reply up to END/OK."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(cmd.encode() + b"\r\n")
        buf = b""
        while not (buf.endswith(b"END\r\n") or buf.endswith(b"OK\r\n")):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return buf.decode()


def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"version\r\n")
            return s.recv(100).startswith(b"VERSION")
    except OSError:
        return False


def curr_items(port):
    for line in mc_command(port, "stats").splitlines():
        if line.startswith("STAT curr_items "):
            return int(line.split()[2])
    return -1


def run(argv, timeout, env=None):
    """(exit status, output); a client that cannot even start counts as failed."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {})),
                           cwd=HERE)
        return r.returncode, (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, f"{argv[0]}: {e}"


def main():
    k2mc = os.path.join(ROOT, os.environ.get("K2MC_BIN", "build/k2mc"))
    mock = os.path.join(ROOT, os.environ.get("K2MC_MOCK", "build/k2mc-mock"))
    records = int(os.environ.get("INTEROP_RECORDS", "20000"))
    nkeys = int(os.environ.get("INTEROP_KEYS", "4000"))
    only = [x for x in os.environ.get("INTEROP_ONLY", "").split(",") if x]
    work = tempfile.mkdtemp(prefix="k2mc-interop.")
    failures = []
    t0 = time.monotonic()

    # the compiled readers: a client that does not build is a failure
    built = {}
    rc, out = run(["go", "build", "-o", os.path.join(work, "read_gomemcache"),
                   "read_gomemcache.go"], 300, GO_ENV)
    built["go"] = rc == 0 or failures.append(f"gomemcache reader does not build: {out}")
    rc, out = run(["javac", "-d", work, "-cp", SPY_JAR, "ReadSpy.java"], 300)
    built["java"] = rc == 0 or failures.append(f"spymemcached reader does not build: {out}")

    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    ports = [free_port() for _ in range(3)]
    for port in ports:
        start(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"] + user,
              open(os.path.join(work, f"memcached-{port}.log"), "w"))
    for port in ports:
        wait_for(lambda port=port: answers(port), 10, f"memcached on {port}")
    dead = free_port()  # nothing listens there: the --mc-eject cases' down server

    expect = os.path.join(work, "expect.txt")
    mock_out = os.path.join(work, "mock.out")
    start([mock, "--topic", "interop:4", "--produce", str(records), "--keys", str(nkeys),
           "--tombstones", "5", "--expect", expect], open(mock_out, "w"))

    def mock_line(prefix):
        with open(mock_out) as f:
            return next((ln[len(prefix):].strip() for ln in f if ln.startswith(prefix)), None)

    wait_for(lambda: mock_line("expect=") is not None, 120, "k2mc-mock's --expect file")
    bootstrap = mock_line("bootstrap=")
    with open(expect) as f:
        nexp = sum(1 for _ in f)
    log(f"3 memcached on {', '.join(map(str, ports))}; k2mc-mock at {bootstrap}: "
        f"{records} records over {nexp} keys (5% tombstones)")

    def servers(weights=None, down=-1, with_weights=True):
        ps = list(ports)
        if down >= 0:
            ps[down] = dead
        w = weights if weights and with_weights else None
        return ",".join(f"127.0.0.1:{p}" + (f":{w[i]}" if w else "") for i, p in enumerate(ps))

    def pylibmc(mode):
        return ("pylibmc " + mode,
                lambda s, d: [PY, "read_pylibmc.py", mode, s, expect] + ([str(d)] if d >= 0 else []),
                True, None)

    def php(mode):
        return ("php-memcached " + mode,
                lambda s, d: ["php", "read_php.php", mode, s, expect] + ([str(d)] if d >= 0 else []),
                True, None)

    pymemcache = ("pymemcache HashClient",
                  lambda s, d: [PY, "read_pymemcache.py", s, expect] + ([str(d)] if d >= 0 else []),
                  False, None)
    gomemcache = ("gomemcache", lambda s, d: [os.path.join(work, "read_gomemcache"), s, expect],
                  False, "go")
    dalli = ("dalli",
             lambda s, d: ["ruby", "read_dalli.rb", s, expect] + ([str(d)] if d >= 0 else []),
             True, None)
    spy = ("spymemcached KetamaConnectionFactory",
           lambda s, d: ["java", "-cp", f"{SPY_JAR}:{work}", "ReadSpy", s, expect] +
           ([str(d)] if d >= 0 else []), False, "java")

    # name, --distribution, weights, down server, readers
    w123 = [1, 2, 3]
    cases = [
        ("ketama", "ketama", None, -1, [pylibmc("ketama"), php("ketama")]),
        ("libketama", "libketama", None, -1, [php("libketama"), pylibmc("libketama")]),
        ("libketama-weighted", "libketama", w123, -1, [php("libketama"), pylibmc("libketama")]),
        ("modula", "modula", None, -1, [php("modula"), pylibmc("modula")]),
        ("rendezvous", "rendezvous", None, -1, [pymemcache]),
        ("crc32", "crc32", None, -1, [gomemcache]),
        ("dalli", "dalli", None, -1, [dalli]),
        ("dalli-weighted", "dalli", w123, -1, [dalli]),
        ("spymemcached", "spymemcached", None, -1, [spy]),
        ("ketama-eject", "ketama", None, 1, [pylibmc("ketama"), php("ketama")]),
        ("libketama-eject", "libketama", w123, 1, [php("libketama"), pylibmc("libketama")]),
        ("rendezvous-eject", "rendezvous", None, 1, [pymemcache]),
        ("dalli-eject", "dalli", w123, 1, [dalli]),
        ("spymemcached-eject", "spymemcached", None, 1, [spy]),
    ]
    results = []
    for i, (name, dist, weights, down, readers) in enumerate(cases):
        if only and name not in only:
            continue
        for port in ports:
            mc_command(port, "flush_all")
        mlist = servers(weights, down)
        argv = [k2mc, "-b", bootstrap, "-t", "interop", "-G", f"interop-{i}-{name}", "-m", mlist,
                "--distribution", dist, "-o", "beginning", "-e", "--writers", "2",
                "-X", "fetch.wait.max.ms=10"] + (["--mc-eject"] if down >= 0 else [])
        t = time.monotonic()
        rc, out = run(argv, 180)
        if rc != 0:
            failures.append(f"{name}: k2mc exited {rc}: {out[-2000:]}")
            results.append((name, "k2mc", "FAILED", f"exit {rc}"))
            continue
        spread = [curr_items(p) for p in ports]
        live = [n for j, n in enumerate(spread) if j != down]
        note = "items per server " + "/".join("-" if j == down else str(n)
                                              for j, n in enumerate(spread))
        if sum(1 for n in live if n > 0) < len(live):
            failures.append(f"{name}: keys did not spread over the servers ({note})")
        log(f"{name}: k2mc --distribution {dist} -m {mlist}"
            f"{' --mc-eject' if down >= 0 else ''}: {time.monotonic() - t:.1f} s, {note}")
        for rname, cmd, takes_weights, needs in readers:
            if needs and not built[needs]:
                results.append((name, rname, "FAILED", "reader did not build"))
                continue
            rc, out = run(cmd(servers(weights, down, takes_weights), down), 120, GO_ENV)
            verdict = "ok" if rc == 0 else "FAILED"
            results.append((name, rname, verdict, out.splitlines()[-1] if out else ""))
            log(f"  {rname}: {verdict}: {out.splitlines()[-1] if out else '(no output)'}")
            if rc != 0:
                failures.append(f"{name}: {rname}: {out[-2000:]}")

    print()
    width = max(len(r[0]) for r in results) if results else 10
    rwidth = max(len(r[1]) for r in results) if results else 10
    for name, reader, verdict, detail in results:
        print(f"  {name:<{width}}  {reader:<{rwidth}}  {verdict:<6}  {detail.split(': ', 1)[-1]}")
    print()
    for f in failures:
        print(f"interop: FAILED: {f}")
    log(f"{len(results) - sum(r[2] != 'ok' for r in results)}/{len(results)} reads passed in "
        f"{time.monotonic() - t0:.0f} s" + (f"; logs in {work}" if failures else ""))
    if not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
