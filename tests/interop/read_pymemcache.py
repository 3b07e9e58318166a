#!/usr/bin/python3
"""Reads every key of a k2mc-mock --expect file back with pymemcache's
HashClient (Debian's python3-pymemcache; its default hasher,
RendezvousHash), keys passed as str as applications do.
Usage: read_pymemcache.py SERVERS EXPECT [DOWN]
DOWN: the index of a server that is not running: HashClient drops it from
its hasher after retry_attempts failures (here 1, and a dead_timeout longer
than the read); a first pass lets it notice, the second must find all.
Prints "found=N absent=N missing=N wrong=N"; exit 0 only if all is right."""
import sys

from pymemcache.client.hash import HashClient

from expect import check, load


def main():
    servers, expect = sys.argv[1].split(","), sys.argv[2]
    down = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    hc = HashClient(servers, connect_timeout=1, timeout=5, retry_attempts=1,
                    retry_timeout=0, dead_timeout=600, ignore_exc=down >= 0)
    want = load(expect)

    def get_all(keys):
        got = {}
        for k in keys:
            v = hc.get(k)
            if v is not None:
                got[k] = v
        return got

    if down >= 0:
        get_all(list(want))
    return check("pymemcache HashClient", want, get_all(list(want)))


if __name__ == "__main__":
    sys.exit(main())
