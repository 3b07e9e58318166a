#!/usr/bin/env python3
"""Arrows point down: no file under src/ includes a file of a higher layer.

The layers, lowest first, and every file's layer are the two tables of
docs/architecture.md ("Layers"), between the markers <!-- layers --> and
<!-- files -->: the one list a newcomer reads is the one this checks. A
file may include files of its own layer or of a lower one. It fails, naming
the file, the line and both layers, on an include that climbs; also on a
file under src/ that the table does not place, a row whose file is gone, and
an #include "..." that names no file under src/.

Before checking the tree it checks itself: a climbing include planted in
memory must be refused, so that a parser gone wrong cannot pass everything.
Run by `make lint` and `make test` (include-check). Exit 0 or 1.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = "docs/architecture.md"
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def fenced_rows(lines, marker):
    """The rows of the first fenced block after `marker`."""
    try:
        i = next(n for n, l in enumerate(lines) if l.strip() == marker)
    except StopIteration:
        sys.exit(f"include-check: {DOC} has no {marker} table")
    rows, inside = [], False
    for l in lines[i + 1:]:
        if l.startswith("```"):
            if inside:
                return rows
            inside = True
        elif inside and l.strip():
            rows.append(l.split(None, 2))
    sys.exit(f"include-check: {DOC}: the table after {marker} is not closed")


def load_tables():
    with open(os.path.join(ROOT, DOC)) as f:
        lines = f.read().splitlines()
    layers = [r[0] for r in fenced_rows(lines, "<!-- layers -->")]
    rank = {name: i for i, name in enumerate(layers)}
    files = {}
    for r in fenced_rows(lines, "<!-- files -->"):
        if len(r) < 2 or r[1] not in rank:
            sys.exit(f"include-check: {DOC}: row {' '.join(r)!r}: the second column must be "
                     f"one of the layers ({', '.join(layers)})")
        files[r[0]] = r[1]
    return rank, files


def climbs(rank, files, sources):
    """sources: {path: text}. Returns the problems, one line each."""
    bad = []
    for path in sorted(sources):
        if path not in files:
            bad.append(f"{path}: not in the layer table of {DOC}: give it a row")
            continue
        mine = files[path]
        for n, line in enumerate(sources[path].splitlines(), 1):
            m = INCLUDE.match(line)
            if m is None:
                continue
            target = "src/" + m.group(1)
            if target not in files:
                bad.append(f"{path}:{n}: includes \"{m.group(1)}\", which is no file of "
                           f"the layer table")
            elif rank[files[target]] > rank[mine]:
                bad.append(f"{path}:{n}: includes \"{m.group(1)}\": layer {mine} "
                           f"(rank {rank[mine]}) may not include layer {files[target]} "
                           f"(rank {rank[files[target]]})")
    return bad


def self_test(rank, files):
    low = min(files, key=lambda p: rank[files[p]])
    high = max(files, key=lambda p: rank[files[p]])
    if rank[files[low]] == rank[files[high]]:
        sys.exit("include-check: self-test: the table has a single layer")
    planted = {low: f'#include "{high[len("src/"):]}"\n'}
    found = climbs(rank, files, planted)
    if len(found) != 1 or f"{low}:1:" not in found[0]:
        sys.exit(f"include-check: self-test: a planted climbing include ({low} -> {high}) "
                 f"was not refused: {found}")


def main():
    rank, files = load_tables()
    self_test(rank, files)
    sources = {}
    for d, _, names in os.walk(os.path.join(ROOT, "src")):
        for name in names:
            if name.endswith((".c", ".h")):
                full = os.path.join(d, name)
                with open(full, encoding="utf-8") as f:
                    sources[os.path.relpath(full, ROOT)] = f.read()
    bad = climbs(rank, files, sources)
    bad += [f"{DOC}: row {p}: no such file" for p in sorted(files) if p not in sources]
    for b in bad:
        print(f"include-check: {b}")
    if bad:
        print(f"include-check: {len(bad)} problem(s); the rule and the table: {DOC}")
        return 1
    print(f"include-check: {len(sources)} files, {len(rank)} layers: no include climbs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
