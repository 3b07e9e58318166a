#!/usr/bin/python3
"""Draws the panels of contrib/grafana/k2mc.json from a run's --stats-json, with gnuplot.

    plot.py STATS_JSON OUT.png [--title TEXT]

The same series as the dashboard's queries, computed the way Prometheus' rate() and
increase() would from the counters of consecutive JSON objects: records in/out per second,
lag per partition, ring fill and buffer bytes, the end-to-end latency heatmap (the
histogram's buckets per interval), Memcached errors per second by server and kind, and
records committed per second. For the README's picture (docs/dashboard.png) when no
Grafana is at hand; it reads nothing but the file.
"""
import json
import os
import subprocess
import sys
import tempfile


def load(path):
    objs = []
    for line in open(path):
        line = line.strip()
        if line.startswith('{'):
            objs.append(json.loads(line))
    if len(objs) < 3:
        sys.exit('plot.py: %s holds %d stats objects; need a few' % (path, len(objs)))
    return objs


def main(argv):
    src, out = argv[1], argv[2]
    title = argv[argv.index('--title') + 1] if '--title' in argv else 'k2mc'
    objs = load(src)
    t0 = objs[0]['ts_ms']
    d = tempfile.mkdtemp(prefix='k2mc-plot.')

    def secs(o):
        return (o['ts_ms'] - t0) / 1000.0

    def write(name, rows):
        with open(os.path.join(d, name), 'w') as f:
            for r in rows:
                f.write(' '.join(str(x) for x in r) + '\n')
        return os.path.join(d, name)

    pairs = list(zip(objs, objs[1:]))
    # records in / out per second: the stats line's own rates
    rates = write('rates', [(secs(o), o['in_per_s'], o['out_per_s']) for o in objs])
    # lag per partition (assigned ones), one column each
    parts = sorted({(p['topic'], p['partition']) for o in objs for p in o['parts']})
    lag_rows = []
    for o in objs:
        by = {(p['topic'], p['partition']): p for p in o['parts']}
        lag_rows.append([secs(o)] + [by[k]['lag'] if k in by and by[k]['assigned'] and by[k]['lag'] >= 0
                                     else 'NaN' for k in parts])
    lag = write('lag', lag_rows)
    buf = write('buffer', [(secs(o), 100.0 * o['ring_fill_ratio'], o['buffer_bytes'] / 2.0 ** 20,
                            o['buffer_limit_bytes'] / 2.0 ** 20) for o in objs])
    # latency heatmap: records per bucket per interval (increase() of the buckets)
    bounds = [k for k in objs[0]['latency_ms']['le'] if k != '+Inf']
    edges = [0.0] + [float(b) for b in bounds] + [2 * float(bounds[-1])]
    heat = []
    for a, b in pairs:
        prev = 0
        for i, k in enumerate(bounds + ['+Inf']):
            cum = b['latency_ms']['le'][k] - a['latency_ms']['le'][k]
            n = cum - prev
            prev = cum
            heat.append((secs(a), secs(b), i, n))
    heat_file = write('heat', [(x0, x1, i, i + 1, n) for x0, x1, i, n in heat])
    # memcached errors per second by server and kind
    series = sorted({(s['server'], k) for o in objs for s in o['servers'] for k in s['errors']})
    err_rows = []
    for a, b in pairs:
        dt = (b['ts_ms'] - a['ts_ms']) / 1000.0 or 1.0
        ea = {(s['server'], k): v for s in a['servers'] for k, v in s['errors'].items()}
        eb = {(s['server'], k): v for s in b['servers'] for k, v in s['errors'].items()}
        err_rows.append([secs(b)] + [(eb.get(k, 0) - ea.get(k, 0)) / dt for k in series])
    errs = write('errors', err_rows)
    # records committed per second (the committed offsets' movement), summed
    com_rows = []
    for a, b in pairs:
        dt = (b['ts_ms'] - a['ts_ms']) / 1000.0 or 1.0
        ca = {(p['topic'], p['partition']): p['committed'] for p in a['parts'] if p['committed'] >= 0}
        n = sum(max(0, p['committed'] - ca[(p['topic'], p['partition'])])
                for p in b['parts'] if p['committed'] >= 0 and (p['topic'], p['partition']) in ca)
        com_rows.append((secs(b), n / dt))
    com = write('commits', com_rows)

    ylabels = ', '.join('"%s" %d' % ('<=%s ms' % b if i < len(bounds) else '>%s ms' % bounds[-1], i)
                        for i, b in enumerate(bounds + [bounds[-1]]))
    # only the series that ever moved, so that the legend says something
    moving = [i for i, k in enumerate(series) if any(r[1 + i] != 0 for r in err_rows)] or [0]
    gp = '''
set terminal pngcairo size 1600,1250 font "DejaVu Sans,10"
set output "%(out)s"
set multiplot layout 3,2 title "%(title)s" font ",14"
set grid
set key top left
set xlabel "seconds"
set title "Records in / out per second"
set format y "%%.0s%%c"
plot "%(rates)s" u 1:2 w l lw 2 t "in (consumed)", "" u 1:3 w l lw 2 t "out (acknowledged)"
set title "Lag per partition"
set format y "%%.0s%%c"
plot %(lagplots)s
set title "Ring fill and buffer bytes"
set ylabel "ring fill %%"
set y2label "MiB"
set y2tics
set ytics nomirror
set format y "%%g"
plot "%(buf)s" u 1:2 w l lw 2 t "ring fill %%", "" u 1:3 axes x1y2 w l lw 2 t "buffer MiB"
unset y2tics
unset y2label
unset ylabel
set ytics mirror
set title "End-to-end latency (records per bucket per interval)"
set ytics (%(ylabels)s)
set yrange [0:%(nb)d]
set cblabel "records"
set logscale cb
set format cb "%%.0s%%c"
set palette defined (0 "#fff5eb", 1 "#fdae6b", 2 "#e6550d", 3 "#7f2704")
plot "%(heat)s" u (($1+$2)/2):(($3+$4)/2):(($2-$1)/2):(0.5):($5 > 0 ? $5 : 1/0) w boxxyerror fs solid 1 noborder lc palette notitle
unset logscale cb
set ytics auto
set autoscale y
set format y "%%g"
set title "Memcached errors per second by server and kind"
plot %(errplots)s
set title "Records committed per second"
set format y "%%.0s%%c"
plot "%(com)s" u 1:2 w l lw 2 t "committed"
unset multiplot
''' % dict(out=out, title=title, rates=rates, buf=buf, heat=heat_file, com=com,
           ylabels=ylabels, nb=len(bounds) + 1,
           lagplots=', '.join('"%s" u 1:%d w l lw 1.5 t "%s [%d]"' % (lag, i + 2, t, p)
                              for i, (t, p) in enumerate(parts)) or '0 notitle',
           errplots=', '.join('"%s" u 1:%d w l lw 2 t "%s %s"' % (errs, i + 2, series[i][0], series[i][1])
                              for i in moving))
    subprocess.run(['gnuplot'], input=gp.encode(), check=True)
    print('plot.py: %s from %d stats objects of %s' % (out, len(objs), src))


if __name__ == '__main__':
    main(sys.argv)
