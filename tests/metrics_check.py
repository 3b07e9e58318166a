#!/usr/bin/python3
"""Checks a scrape of k2mc's /metrics (tests/test_metrics.c), with Prometheus' own parser
(python3-prometheus-client).

    metrics_check.py parse METRICS_TXT [--readme docs/metrics.md]
        the text parses; every family is declared once (no name collides in the exposition
        format, e.g. a family X and another family's X_total); the process_* metrics of
        Prometheus' client libraries and k2mc_build_info are there with their types and
        labels; k2mc_memcached_errors_total has {server,kind} on every sample;
        --readme: every family is named in that file (its metrics table is complete).
    metrics_check.py dashboard DASHBOARD_JSON METRICS_TXT
        every metric name that a query of the Grafana dashboard uses is exported (a sample
        name of the scrape), and every panel has a query.
Exit 0, or 1 with the reasons on stderr.
"""
import json
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

PROCESS = {
    'process_cpu_seconds': 'counter',
    'process_resident_memory_bytes': 'gauge',
    'process_virtual_memory_bytes': 'gauge',
    'process_open_fds': 'gauge',
    'process_max_fds': 'gauge',
    'process_start_time_seconds': 'gauge',
}
PROMQL_WORDS = {'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and',
                'or', 'unless', 'offset', 'inf', 'nan'}


def fail(errors):
    for e in errors:
        print('metrics_check: ' + e, file=sys.stderr)
    return 1 if errors else 0


def families(path):
    text = open(path).read()
    return text, list(text_string_to_metric_families(text))


def check_parse(path, readme):
    errors = []
    text, fams = families(path)
    names = [f.name for f in fams]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        errors.append('families declared more than once: %r' % dup)
    # every "# TYPE" line declares a family of its own, and no sample name is claimed by two
    types = re.findall(r'^# TYPE (\S+) (\S+)$', text, re.M)
    if len(types) != len({t[0] for t in types}):
        errors.append('a # TYPE line repeats')
    owner = {}
    for f in fams:
        for s in f.samples:
            if s.name in owner and owner[s.name] != f.name:
                errors.append('sample %s in families %s and %s' % (s.name, owner[s.name], f.name))
            owner[s.name] = f.name
    by = {f.name: f for f in fams}
    for name, typ in PROCESS.items():
        f = by.get(name)
        if f is None:
            errors.append('no %s' % name)
        elif f.type != typ or len(f.samples) != 1 or not f.samples[0].value >= 0:
            errors.append('%s: type %s, samples %r' % (name, f.type, f.samples))
    if 'process_resident_memory_bytes' in by and by['process_resident_memory_bytes'].samples[0].value < 1 << 20:
        errors.append('resident memory under 1 MiB: %r' % by['process_resident_memory_bytes'].samples)
    if 'process_open_fds' in by and 'process_max_fds' in by:
        if not 0 < by['process_open_fds'].samples[0].value <= by['process_max_fds'].samples[0].value:
            errors.append('open fds not within max fds')
    f = by.get('k2mc_build_info')
    if f is None:
        errors.append('no k2mc_build_info')
    else:
        s = f.samples[0]
        want = {'version', 'librdkafka', 'libmemcached', 'memcached_dialects'}
        if f.type != 'gauge' or s.value != 1 or set(s.labels) != want or not all(s.labels.values()):
            errors.append('k2mc_build_info: %s %r' % (f.type, s))
    f = by.get('k2mc_memcached_errors')
    if f is None or f.type != 'counter':
        errors.append('no counter k2mc_memcached_errors_total')
    else:
        for s in f.samples:
            if s.name.endswith('_total') and set(s.labels) != {'server', 'kind'}:
                errors.append('k2mc_memcached_errors_total sample without server and kind: %r' % (s,))
    if readme:
        doc = open(readme).read()
        for t in types:
            if t[0] not in doc:
                errors.append('%s (in /metrics) is not in %s' % (t[0], readme))
    return fail(errors)


def promql_metrics(expr):
    """The metric names a PromQL expression reads."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)     # strings (label values)
    e = re.sub(r'\{[^}]*\}', '', e)                  # label matchers
    e = re.sub(r'\[[^\]]*\]', '', e)                 # ranges, subqueries
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', ' ', e)
    e = re.sub(r'\$\{?\w+\}?', ' ', e)               # dashboard variables
    names = []
    for m in re.finditer(r'[A-Za-z_:][A-Za-z0-9_:]*', e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if rest.startswith('(') or word.lower() in PROMQL_WORDS:
            continue                                  # a function, an aggregation, a keyword
        if re.match(r'^\d', word) or re.fullmatch(r'\d+(ms|s|m|h|d|w|y)', word):
            continue
        names.append(word)
    return names


def check_dashboard(dash_path, metrics_path):
    errors = []
    _, fams = families(metrics_path)
    exported = {s.name for f in fams for s in f.samples}
    dash = json.load(open(dash_path))
    panels = []

    def walk(ps):
        for p in ps:
            if p.get('type') == 'row':
                walk(p.get('panels', []))
            else:
                panels.append(p)
    walk(dash.get('panels', []))
    if not panels:
        errors.append('no panels')
    used = set()
    for p in panels:
        targets = [t for t in p.get('targets', []) if t.get('expr')]
        if not targets:
            errors.append('panel %r has no query' % p.get('title'))
        for t in targets:
            names = promql_metrics(t['expr'])
            if not names:
                errors.append('panel %r: no metric in %r' % (p.get('title'), t['expr']))
            for n in names:
                used.add(n)
                if n not in exported:
                    errors.append('panel %r: %s is not exported (query %r)' %
                                  (p.get('title'), n, t['expr']))
    for v in dash.get('templating', {}).get('list', []):
        q = v.get('query')
        q = q.get('query') if isinstance(q, dict) else q
        for n in re.findall(r'label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)', q or ''):
            used.add(n)
            if n not in exported:
                errors.append('variable %r: %s is not exported' % (v.get('name'), n))
    print('metrics_check: the dashboard reads %d metrics: %s' % (len(used), ' '.join(sorted(used))))
    return fail(errors)


def main(argv):
    if len(argv) >= 3 and argv[1] == 'parse':
        readme = argv[argv.index('--readme') + 1] if '--readme' in argv else None
        return check_parse(argv[2], readme)
    if len(argv) == 4 and argv[1] == 'dashboard':
        return check_dashboard(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
