#!/usr/bin/python3
"""The confluent-kafka + pymemcache peer: what a competent Python developer
writes to copy a topic into Memcached with the same at-least-once guarantee as
k2mc (the last record of a key wins, a null value deletes). The bench runs it
on the PyPI versions pinned in bench/peers/requirements.txt (its venv under
build/peers-venv); it runs on Debian's python3-confluent-kafka and
python3-pymemcache too. Not tuned beyond that, and not a tool for production.

    build/peers-venv/bin/python bench/peers/confluent_memcached.py \
        -b BOOTSTRAP -t TOPIC -G GROUP -m HOST:PORT -c N [-X prop=val ...] [--stats-ms MS]

-X sets a librdkafka property of the consumer, as it does for k2mc and
kafka-ceiling (a benchmark gives all three the same ones). --stats-ms MS turns
on librdkafka's statistics every MS ms and reports the Fetch requests counted.

Batches of up to 1000 records from Consumer.consume(); per batch the last
operation per key wins (a value sets, a null value deletes), written with
set_many / delete_many waiting for every reply, then a synchronous commit.
Prints one JSON line once N records are written and committed:
    {"tool":"python","records":N,"seconds":S,"rps":R,"mbps":M,"failed":F,
     "librdkafka":V[,"fetch_requests":Q,"stats_rxmsgs":X]}
seconds from the first record's arrival to the end; mbps = key + value bytes
per second / 1e6; failed = keys of the batches memcached did not take (3 tries each);
fetch_requests = the Fetch requests sent to every broker (brokers[].req.Fetch)
and stats_rxmsgs the records received (rxmsgs), both from the last statistics
emitted, so their ratio is Fetch requests per record.
"""

import argparse
import json
import os
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, libversion
from pymemcache.exceptions import MemcacheError

# fetchstats.py and mcsink.py beside this file, with no __pycache__ left in the source tree
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcsink  # noqa: E402
from fetchstats import FetchStats  # noqa: E402

BATCH = 1000
TRIES = 3


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", required=True, metavar="BOOTSTRAP")
    p.add_argument("-t", required=True, metavar="TOPIC")
    p.add_argument("-G", default="confluent-memcached", metavar="GROUP")
    p.add_argument("-m", default="127.0.0.1:11211", metavar="HOST:PORT")
    p.add_argument("-c", required=True, type=int, metavar="N")
    p.add_argument("-X", action="append", default=[], metavar="PROP=VAL")
    p.add_argument("--stats-ms", type=int, default=0, metavar="MS",
                   help="librdkafka statistics every MS ms: Fetch requests counted")
    a = p.parse_args()
    if a.c <= 0:
        p.error("-c must be positive")
    for kv in a.X:
        if "=" not in kv:
            p.error("-X: expected prop=val, got %r" % kv)
    return a


def write_batch(mc, msgs):
    """Applies one batch (mcsink: the last record per key decides, set or
    delete), up to TRIES times. Returns (records, key + value bytes, failed):
    failed is the batch's keys when every try failed."""
    pairs = []
    for m in msgs:
        if m.error():
            if m.error().code() != KafkaError._PARTITION_EOF:
                print("confluent-memcached: %s" % m.error(), file=sys.stderr)
            continue
        pairs.append((m.key(), m.value()))
    sets, dels, nbytes = mcsink.last_per_key(pairs)
    for attempt in range(1, TRIES + 1):
        try:
            mcsink.write(mc, sets, dels)
            return len(pairs), nbytes, 0
        except (MemcacheError, OSError) as e:
            if attempt == TRIES:
                print("confluent-memcached: %d keys failed: %s" % (len(sets) + len(dels), e),
                      file=sys.stderr)
                return len(pairs), nbytes, len(sets) + len(dels)
            time.sleep(0.01 * attempt)


def main():
    a = parse_args()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    conf = {
        "bootstrap.servers": a.b,
        "group.id": a.G,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    conf.update(kv.split("=", 1) for kv in a.X)
    stats = FetchStats()
    if a.stats_ms > 0:
        conf.update(stats.config(a.stats_ms))
    consumer = Consumer(conf)
    consumer.subscribe([a.t])
    mc = mcsink.connect(a.m)

    got = 0
    nbytes = 0
    failed = 0
    t_first = None
    try:
        while got < a.c and not stop:
            msgs = consumer.consume(num_messages=min(BATCH, a.c - got), timeout=1.0)
            if not msgs:
                continue
            if t_first is None:
                t_first = time.monotonic()
            n, b, f = write_batch(mc, msgs)
            got += n
            nbytes += b
            failed += f
            # at-least-once: offsets only after memcached acknowledged
            if n:
                consumer.commit(asynchronous=False)
    except KeyboardInterrupt:
        pass
    secs = time.monotonic() - t_first if t_first is not None else 0.0
    print(json.dumps({
        "tool": "python",
        "records": got,
        "seconds": round(secs, 6),
        "rps": round(got / secs, 1) if secs > 0 else 0.0,
        "mbps": round(nbytes / secs / 1e6, 3) if secs > 0 else 0.0,
        "failed": failed,
        "librdkafka": libversion()[0],
        **stats.report(),
    }, separators=(",", ":")), flush=True)
    consumer.close()
    mc.close()
    return 0 if got == a.c else 1


if __name__ == "__main__":
    sys.exit(main())
