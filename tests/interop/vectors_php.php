<?php
// Placement vectors from PHP's memcached extension (libmemcached underneath):
// the server each key maps to, as Memcached::getServerByKey reports it.
// Usage: php vectors_php.php MODE SERVERS [DOWN] < keys, one key a line;
// prints one server index (into SERVERS) a line.
// MODE: modula (no options: libmemcached's default), ketama
// (OPT_DISTRIBUTION = DISTRIBUTION_CONSISTENT, what pylibmc's "ketama"
// also sets up), libketama (OPT_LIBKETAMA_COMPATIBLE). SERVERS:
// HOST:PORT[:WEIGHT],... DOWN: index of a server to leave out, as
// libmemcached's auto-eject leaves it out of the rebuilt continuum.
// Nothing is connected: getServerByKey only computes.
if ($argc < 3) { fwrite(STDERR, "usage: vectors_php.php MODE SERVERS [DOWN]\n"); exit(2); }
list(, $mode, $list) = $argv;
$down = $argc > 3 ? (int)$argv[3] : -1;
$servers = [];
foreach (explode(',', $list) as $i => $s) {
    $p = explode(':', $s);
    $servers[] = [$p[0], (int)$p[1], isset($p[2]) ? (int)$p[2] : 1, $i];
}
$m = new Memcached();
if ($mode === 'ketama')
    $m->setOption(Memcached::OPT_DISTRIBUTION, Memcached::DISTRIBUTION_CONSISTENT);
elseif ($mode === 'libketama')
    $m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
elseif ($mode !== 'modula') { fwrite(STDERR, "unknown mode $mode\n"); exit(2); }
$index = [];
foreach ($servers as $s) {
    if ($s[3] === $down) continue;
    $m->addServer($s[0], $s[1], $s[2]);
    $index[$s[0] . ':' . $s[1]] = $s[3];
}
while (($line = fgets(STDIN)) !== false) {
    $key = rtrim($line, "\n");
    $srv = $m->getServerByKey($key);
    if ($srv === false) { fwrite(STDERR, "getServerByKey($key) failed\n"); exit(1); }
    echo $index[$srv['host'] . ':' . $srv['port']], "\n";
}
