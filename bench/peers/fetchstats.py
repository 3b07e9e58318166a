"""Fetch requests counted from librdkafka's statistics, for the Python peers
(confluent_memcached.py, quix_memcached.py): the stats_cb that confluent-kafka
calls with each statistics JSON, and what the peers print of it. Not a
statistics client: it keeps the last emission's totals and nothing else.

The totals come from one emission, so they agree with each other: the Fetch
requests sent to every broker (brokers[].req.Fetch, bootstrap and coordinator
connections included, where they are 0) and the records received (rxmsgs).
Records received after the last emission are in neither.

Read with two searches rather than json.loads: at 64 partitions an emission is
tens of KiB, and its parsing is CPU the peer would be charged for. librdkafka
writes each broker's request counters as `"req": { "Fetch": N, ...}` and the
client's totals last, after the brokers and topics (rd_kafka_stats_emit_all),
so the last "rxmsgs" is the total.
"""

import re

FETCH = re.compile(r'"Fetch":\s*(\d+)')


class FetchStats:
    def __init__(self):
        self.fetch_requests = None
        self.rxmsgs = None
        self.emissions = 0

    def on_stats(self, text):
        at = text.rfind('"rxmsgs":')
        if at < 0:
            return
        self.fetch_requests = sum(int(n) for n in FETCH.findall(text, 0, at))
        self.rxmsgs = int(re.match(r"\s*(\d+)", text[at + len('"rxmsgs":'):]).group(1))
        self.emissions += 1

    def config(self, interval_ms):
        """librdkafka properties (and confluent-kafka's stats_cb) to merge into a consumer's."""
        return {"statistics.interval.ms": int(interval_ms), "stats_cb": self.on_stats}

    def report(self):
        """Fields for the peer's JSON line ({} when no statistics arrived)."""
        if not self.emissions:
            return {}
        return {"fetch_requests": self.fetch_requests, "stats_rxmsgs": self.rxmsgs}
