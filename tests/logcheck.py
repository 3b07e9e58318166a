#!/usr/bin/python3
"""Checks k2mc's stderr in both --log-format modes (tests/test_log.c, tests/test_logs.c).

    logcheck.py TEXT_LOG JSON_LOG [--normalize] [--set] [--ignore-prefix P]...
                [--allow-plain P]... [--expect SUBSTRING=key,key,...]... [--replace OLD=NEW]...

- no raw control byte (other than the line end) or DEL in either file, and both are UTF-8;
- every text line is "HH:MM:SS.mmm k2mc LEVEL: msg";
- every JSON line is one object: "ts" (RFC 3339, UTC, ms), "level", "msg" first, then only
  topic, partition (int), offset (int), server, reason;
- the same events in both: the (level, msg) lists are equal (--set: as sets, for runs whose
  timing may repeat a line; --normalize: digits compared as 0, for numbers that differ
  between two runs; --replace: OLD read as NEW in both, e.g. each run's group name). Lines
  whose msg starts with an --ignore-prefix are left out of that
  comparison (they must still be well formed);
- --allow-plain P: a line of either file starting with P is not a log line (main's summary);
- --expect S=k1,k2: the JSON line whose msg contains S exists and has those keys.
Exit 0, or 1 with the reasons on stderr.
"""
import json
import re
import sys

TEXT_RE = re.compile(r'^\d\d:\d\d:\d\d\.\d{3} k2mc (ERROR|WARN|INFO|DEBUG): (.*)$')
TS_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')
LEVELS = {'ERROR': 'error', 'WARN': 'warn', 'INFO': 'info', 'DEBUG': 'debug'}
FIELDS = {'topic': str, 'partition': int, 'offset': int, 'server': str, 'reason': str}


SUMMARY = 'k2mc: summary: '


def main(argv):
    args = argv[1:]
    text_path, json_path = args[0], args[1]
    normalize = '--normalize' in args
    as_set = '--set' in args
    ignore = [args[i + 1] for i, a in enumerate(args) if a == '--ignore-prefix']
    plain = [args[i + 1] for i, a in enumerate(args) if a == '--allow-plain']
    expect = [args[i + 1] for i, a in enumerate(args) if a == '--expect']
    replace = [args[i + 1].split('=', 1) for i, a in enumerate(args) if a == '--replace']
    errors = []

    def raw_lines(path):
        data = open(path, 'rb').read()
        for n, b in enumerate(data):
            if (b < 0x20 and b != 0x0a) or b == 0x7f:
                errors.append('%s: raw control byte 0x%02x at byte %d: %r' %
                              (path, b, n, data[max(0, n - 40):n + 10]))
                break
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError as e:
            errors.append('%s: not UTF-8: %s' % (path, e))
            text = data.decode('utf-8', 'replace')
        return [l for l in text.split('\n') if l != '' and
                (l.startswith(SUMMARY) or not any(l.startswith(p) for p in plain))]

    def norm(msg):
        for old, new in replace:
            msg = msg.replace(old, new)
        return re.sub(r'\d+', '0', msg) if normalize else msg

    text_events, json_events, json_objs = [], [], []
    for line in raw_lines(text_path):
        # main's summary: a plain line in text, a log object in JSON
        if line.startswith(SUMMARY):
            text_events.append(('info', line[len('k2mc: '):]))
            continue
        m = TEXT_RE.match(line)
        if m is None:
            errors.append('%s: not a text log line: %r' % (text_path, line))
            continue
        text_events.append((LEVELS[m.group(1)], m.group(2)))
    for line in raw_lines(json_path):
        try:
            o = json.loads(line)
        except ValueError as e:
            errors.append('%s: not JSON (%s): %r' % (json_path, e, line))
            continue
        keys = list(o.keys()) if isinstance(o, dict) else []
        if keys[:3] != ['ts', 'level', 'msg']:
            errors.append('%s: keys %r, want ts, level, msg first: %r' % (json_path, keys, line))
            continue
        if not TS_RE.match(o['ts']) or o['level'] not in LEVELS.values():
            errors.append('%s: bad ts or level: %r' % (json_path, line))
        for k in keys[3:]:
            if k not in FIELDS or not isinstance(o[k], FIELDS[k]):
                errors.append('%s: unexpected field %s=%r: %r' % (json_path, k, o[k], line))
        json_objs.append(o)
        json_events.append((o['level'], o['msg']))

    def comparable(events):
        kept = [(l, norm(m)) for l, m in events if not any(m.startswith(p) for p in ignore)]
        return sorted(set(kept)) if as_set else kept

    a, b = comparable(text_events), comparable(json_events)
    if a != b:
        only_a = [e for e in a if e not in b]
        only_b = [e for e in b if e not in a]
        errors.append('the two formats differ in events:\n  only in text: %r\n  only in json: %r'
                      % (only_a[:10], only_b[:10]))
    if not text_events:
        errors.append('%s: no log line' % text_path)
    for e in expect:
        sub, keys = e.split('=', 1)
        hits = [o for o in json_objs if sub in o['msg']]
        if not hits:
            errors.append('no JSON line with %r' % sub)
        for k in keys.split(','):
            if hits and k not in hits[0]:
                errors.append('JSON line with %r lacks %s: %r' % (sub, k, hits[0]))
    for e in errors:
        print('logcheck: ' + e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
