#!/usr/bin/python3
"""Placement vectors from pymemcache's HashClient (its default hasher,
RendezvousHash over murmur3_32): the server each key maps to.
Usage: vectors_pymemcache.py SERVERS [DOWN] < keys, one key a line; prints
one server index (into SERVERS) a line. SERVERS: HOST:PORT,... or unix
socket paths. DOWN: index of a server HashClient has removed from its
hasher, as it does once the server failed retry_attempts times.
HashClient connects lazily: building it and picking a node connects nowhere.
Keys are passed as str, as applications usually do (pymemcache 3.5.2 hashes
a bytes key as "b'...'", through its "%s-%s" formatting)."""
import sys

from pymemcache.client.base import normalize_server_spec
from pymemcache.client.hash import HashClient

servers = sys.argv[1].split(",")
down = int(sys.argv[2]) if len(sys.argv) > 2 else -1
hc = HashClient(servers)
names = [hc._make_client_key(normalize_server_spec(s)) for s in servers]
if down >= 0:
    hc.hasher.remove_node(names[down])
for line in sys.stdin:
    key = line.rstrip("\n")
    # the path every HashClient command takes to its server
    print(names.index(hc._make_client_key(hc._get_client(key).server)))
