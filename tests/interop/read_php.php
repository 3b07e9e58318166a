<?php
// Reads every key of a k2mc-mock --expect file back with PHP's memcached
// extension (Debian's php-memcached, libmemcached underneath), configured as
// a reader of that distribution is: modula (no options), ketama
// (OPT_DISTRIBUTION = DISTRIBUTION_CONSISTENT) or libketama
// (OPT_LIBKETAMA_COMPATIBLE, the usual PHP setting).
// Usage: php read_php.php MODE SERVERS EXPECT [DOWN]
// SERVERS: HOST:PORT[:WEIGHT],... (weights through addServer). DOWN: the
// index of a server that is not running: the client is also given
// OPT_REMOVE_FAILED_SERVERS (with a retry timeout longer than the read) so
// that it drops the server after its first failure; a first pass lets it
// notice, the second must find every key.
// Prints "found=N absent=N missing=N wrong=N"; exit 0 only if all is right.
list(, $mode, $list, $expect) = $argv;
$down = $argc > 4 ? (int)$argv[4] : -1;
$m = new Memcached();
if ($mode === 'ketama')
    $m->setOption(Memcached::OPT_DISTRIBUTION, Memcached::DISTRIBUTION_CONSISTENT);
elseif ($mode === 'libketama')
    $m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
elseif ($mode !== 'modula') { fwrite(STDERR, "unknown mode $mode\n"); exit(2); }
if ($down >= 0) {
    $m->setOption(Memcached::OPT_REMOVE_FAILED_SERVERS, true);
    $m->setOption(Memcached::OPT_SERVER_FAILURE_LIMIT, 1);
    $m->setOption(Memcached::OPT_RETRY_TIMEOUT, 600);
    $m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 200);
}
foreach (explode(',', $list) as $s) {
    $p = explode(':', $s);
    $m->addServer($p[0], (int)$p[1], isset($p[2]) ? (int)$p[2] : 0);
}
$want = [];
foreach (file($expect, FILE_IGNORE_NEW_LINES) as $line) {
    $f = explode(' ', $line, 3);
    $want[$f[1]] = $f[0] === 'S' ? $f[2] : null;
}
function get_all($m, $keys) {
    $got = [];
    foreach ($keys as $k) {
        $v = $m->get($k);
        if ($m->getResultCode() === Memcached::RES_SUCCESS)
            $got[$k] = $v;
    }
    return $got;
}
if ($down >= 0)
    get_all($m, array_keys($want));
$got = get_all($m, array_keys($want));
$found = $absent = $missing = $wrong = 0;
foreach ($want as $k => $v) {
    $has = array_key_exists($k, $got);
    if ($v === null) { $has ? $wrong++ : $absent++; }
    elseif (!$has) $missing++;
    elseif ($got[$k] === $v) $found++;
    else $wrong++;
}
echo "php memcached $mode: found=$found absent=$absent missing=$missing wrong=$wrong\n";
exit($found > 0 && $missing == 0 && $wrong == 0 ? 0 : 1);
