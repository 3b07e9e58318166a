#!/usr/bin/python3
"""The Quix Streams peer: a topic copied into Memcached the way Quix's docs
say to write a sink ("Creating a Custom Sink"): an Application, a
StreamingDataFrame and a BatchingSink subclass whose write() sends each
checkpoint's batch with pymemcache set_many / delete_many and checks every
reply. Quix's defaults otherwise: at-least-once processing guarantee, a
checkpoint (sink flush, then commit) every 5 s. The last record of a key wins
(a batch holds one partition's records in offset order, written in order) and
a null value deletes. Not tuned beyond what a Quix user writes, and not a tool
for production.

    build/peers-venv/bin/python bench/peers/quix_memcached.py \\
        -b BOOTSTRAP -t TOPIC -G GROUP -m HOST:PORT -c N [-X prop=val ...] [--stats-ms MS]

Stops the way Quix documents for a bounded run: Application.run(count=N) stops
after N records went through the dataframe, then commits the last checkpoint
(the sink's flush, then the offsets) before it returns; the process exits
after that, as k2mc -c N and the confluent-kafka peer do.

A write that memcached does not acknowledge (a key not stored, an error, a
broken connection) raises SinkBackpressureError: Quix then drops the batch,
pauses the partitions for retry_after seconds and reads them again from the
last commit (its documented retry). -X sets a librdkafka property of the
consumer (consumer_extra_config); --stats-ms MS turns on librdkafka's
statistics and reports the Fetch requests counted.

--no-describe-configs is for librdkafka's mock cluster, which serves no
DescribeConfigs request: Quix inspects every topic with one before it starts
(TopicAdmin.inspect_topics), and would time out. With the flag that start-up
inspection is answered from the topic's metadata alone (partitions, replicas,
no configs). Nothing a record goes through changes; a real broker never needs it.

Prints one JSON line at the end:
    {"tool":"quix","records":N,"seconds":S,"rps":R,"mbps":M,"retries":T,
     "librdkafka":V[,"fetch_requests":Q,"stats_rxmsgs":X]}
records: records the sink wrote (a batch written twice after a retry counts
twice); seconds from the first write to the end.
"""

import argparse
import json
import os
import sys
import tempfile
import time

# fetchstats.py and mcsink.py beside this file, with no __pycache__ left in the source tree
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from confluent_kafka import libversion  # noqa: E402
from pymemcache.exceptions import MemcacheError  # noqa: E402
from quixstreams import Application  # noqa: E402
from quixstreams.sinks import BatchingSink, SinkBackpressureError, SinkBatch  # noqa: E402

import mcsink  # noqa: E402
from fetchstats import FetchStats  # noqa: E402

# keys per set_many / delete_many call: one round trip each
CHUNK = 1000
RETRY_AFTER_S = 1.0


class MemcachedSink(BatchingSink):
    """Writes each checkpoint's batch to one memcached server."""

    def __init__(self, hostport):
        super().__init__()
        self.hostport = hostport
        self.client = None
        self.records = 0
        self.nbytes = 0
        self.retries = 0
        self.t_first = None

    def setup(self):
        self.client = mcsink.connect(self.hostport)

    def write(self, batch: SinkBatch):
        if self.t_first is None:
            self.t_first = time.monotonic()
        n = nbytes = 0
        try:
            for chunk in batch.iter_chunks(n=CHUNK):
                sets, dels, b = mcsink.last_per_key((item.key, item.value) for item in chunk)
                mcsink.write(self.client, sets, dels)
                n += len(chunk)
                nbytes += b
        except (MemcacheError, OSError) as e:
            self.retries += 1
            print(f"quix-memcached: {batch.topic}[{batch.partition}] from offset "
                  f"{batch.start_offset}: {e}; retrying in {RETRY_AFTER_S} s", file=sys.stderr)
            self.client.close()  # pymemcache reconnects on the next call
            raise SinkBackpressureError(retry_after=RETRY_AFTER_S) from e
        self.records += n
        self.nbytes += nbytes


def inspect_from_metadata():
    """--no-describe-configs: TopicAdmin.inspect_topics from the metadata alone."""
    from quixstreams.models.topics.admin import TopicAdmin
    from quixstreams.models.topics.topic import TopicConfig

    def inspect_topics(self, topic_names, timeout=30):
        cluster = self.list_topics(timeout=timeout)
        return {t: TopicConfig(num_partitions=len(cluster[t].partitions),
                               replication_factor=len(cluster[t].partitions[0].replicas),
                               extra_config={}) if t in cluster else None
                for t in topic_names}
    TopicAdmin.inspect_topics = inspect_topics


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-b", required=True, metavar="BOOTSTRAP")
    p.add_argument("-t", required=True, metavar="TOPIC")
    p.add_argument("-G", default="quix-memcached", metavar="GROUP")
    p.add_argument("-m", default="127.0.0.1:11211", metavar="HOST:PORT")
    p.add_argument("-c", required=True, type=int, metavar="N")
    p.add_argument("-X", action="append", default=[], metavar="PROP=VAL")
    p.add_argument("--stats-ms", type=int, default=0, metavar="MS",
                   help="librdkafka statistics every MS ms: Fetch requests counted")
    p.add_argument("--no-describe-configs", action="store_true",
                   help="inspect topics from their metadata (librdkafka's mock cluster)")
    a = p.parse_args()
    if a.c <= 0:
        p.error("-c must be positive")
    for kv in a.X:
        if "=" not in kv:
            p.error("-X: expected prop=val, got %r" % kv)
    return a


def main():
    a = parse_args()
    if a.no_describe_configs:
        inspect_from_metadata()
    extra = dict(kv.split("=", 1) for kv in a.X)
    stats = FetchStats()
    if a.stats_ms > 0:
        extra.update(stats.config(a.stats_ms))
    # the state directory Quix creates: a temporary one, not the working directory
    with tempfile.TemporaryDirectory(prefix="quix-state.") as state_dir:
        app = Application(broker_address=a.b, consumer_group=a.G,
                          auto_offset_reset="earliest", consumer_extra_config=extra,
                          state_dir=state_dir)
        topic = app.topic(a.t, key_deserializer="bytes", value_deserializer="bytes")
        sink = MemcachedSink(a.m)
        app.dataframe(topic).sink(sink)
        app.run(count=a.c, collect=False)
    secs = time.monotonic() - sink.t_first if sink.t_first is not None else 0.0
    print(json.dumps({
        "tool": "quix",
        "records": sink.records,
        "seconds": round(secs, 6),
        "rps": round(sink.records / secs, 1) if secs > 0 else 0.0,
        "mbps": round(sink.nbytes / secs / 1e6, 3) if secs > 0 else 0.0,
        "retries": sink.retries,
        "librdkafka": libversion()[0],
        **stats.report(),
    }, separators=(",", ":")), flush=True)
    return 0 if sink.records >= a.c else 1


if __name__ == "__main__":
    sys.exit(main())
