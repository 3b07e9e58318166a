"""The Memcached side the Python peers share (confluent_memcached.py,
quix_memcached.py): one pymemcache connection, and a batch written with the
guarantee k2mc gives: within the batch the last record of a key wins, a value
sets it and a null value deletes it, and every reply is waited for and
checked. What happens on a failure is each peer's own (the confluent-kafka
peer retries, the Quix sink raises SinkBackpressureError), so that stays in
the peers.
"""

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError


class NotStored(MemcacheError):
    """set_many reported keys that memcached did not store."""


def connect(hostport):
    """A pymemcache client of HOST:PORT (no Nagle: every batch waits for its replies)."""
    host, _, port = hostport.rpartition(":")
    return Client((host, int(port)), no_delay=True, connect_timeout=5, timeout=30)


def last_per_key(pairs):
    """(sets, dels, key + value bytes) of (key, value) pairs in offset order:
    sets maps each key whose last value is not None to it, dels lists the
    keys whose last value is None."""
    last = {}
    nbytes = 0
    for k, v in pairs:
        last[k] = v
        nbytes += len(k) + (len(v) if v is not None else 0)
    sets = {k: v for k, v in last.items() if v is not None}
    dels = [k for k, v in last.items() if v is None]
    return sets, dels, nbytes


def write(client, sets, dels):
    """Writes one batch and waits for every reply. The keys of sets and dels
    are distinct (last_per_key), so their order does not matter. Raises
    NotStored, another MemcacheError (an error reply) or OSError (the
    connection; pymemcache reconnects on the next call)."""
    if sets:
        failed = client.set_many(sets, noreply=False)
        if failed:
            raise NotStored(f"{len(failed)} of {len(sets)} keys not stored")
    if dels:
        # DELETED and NOT_FOUND alike leave the key absent; errors raise
        client.delete_many(dels, noreply=False)
