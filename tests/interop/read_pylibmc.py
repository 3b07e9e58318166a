#!/usr/bin/python3
"""Reads every key of a k2mc-mock --expect file back with pylibmc (Debian's
python3-pylibmc, libmemcached underneath), configured as a reader of that
distribution is: modula (no behaviors: libmemcached's default), ketama
(behaviors={"ketama": True}) or libketama ({"ketama_weighted": True}).
Usage: read_pylibmc.py MODE SERVERS EXPECT [DOWN]
SERVERS: HOST:PORT[:WEIGHT],... as pylibmc takes them. DOWN: the index of a
server that is not running: the client is also given libmemcached's
auto-eject ("remove_failed", "failure_limit": 1, a dead_timeout longer than
the read) so that it drops the server after its first failure, as a reader
configured for failover does; a first pass lets it notice, the second must find all.
Prints one line "found=N absent=N missing=N wrong=N" and exits 0 only if
every key holds its expected value and every deleted key is absent."""
import sys

import pylibmc

from expect import check, load


def main():
    mode, servers, expect = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
    down = int(sys.argv[4]) if len(sys.argv) > 4 else -1
    behaviors = {"modula": {}, "ketama": {"ketama": True},
                 "libketama": {"ketama_weighted": True}}[mode]
    if down >= 0:
        # libmemcached 1.1 ejects a server only with a dead_timeout set
        # (connect.cc, backoff_handling)
        behaviors = dict(behaviors, remove_failed=1, failure_limit=1, dead_timeout=600,
                         retry_timeout=600, connect_timeout=200)
    mc = pylibmc.Client(servers, behaviors=behaviors)
    want = load(expect)

    def get_all(keys):
        got = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            try:
                got.update(mc.get_multi(chunk))
            except pylibmc.Error:
                # a multi-get touching the dead server fails as a whole
                # while libmemcached has not dropped it yet: key by key
                for k in chunk:
                    try:
                        v = mc.get(k)
                    except pylibmc.Error:
                        continue
                    if v is not None:
                        got[k] = v
        return got

    if down >= 0:
        get_all(list(want))
    return check("pylibmc " + mode, want, get_all(list(want)))


if __name__ == "__main__":
    sys.exit(main())
