"""The expected final state of a k2mc-mock topic (its --expect file: "S KEY
VALUE" for a key whose last record has a value, "D KEY" for a deleted one),
and the verdict every Python reader prints."""


def load(path):
    """{key: value bytes, or None for a deleted key}"""
    want = {}
    with open(path, "rb") as f:
        for line in f:
            parts = line.rstrip(b"\n").split(b" ", 2)
            want[parts[1].decode()] = parts[2] if parts[0] == b"S" else None
    return want


def check(reader, want, got):
    """got: {key: value} as the reader's client returned it; 0 if all right."""
    found = absent = missing = wrong = 0
    for k, v in want.items():
        g = got.get(k)
        if isinstance(g, str):
            g = g.encode()
        if v is None:
            absent += g is None
            wrong += g is not None
        elif g is None:
            missing += 1
        elif g == v:
            found += 1
        else:
            wrong += 1
    print(f"{reader}: found={found} absent={absent} missing={missing} wrong={wrong}")
    return 0 if found > 0 and missing == 0 and wrong == 0 else 1
