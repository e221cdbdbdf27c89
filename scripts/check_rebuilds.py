#!/usr/bin/env python3
"""Fail when a second cargo build recompiled what a first one built.

Usage: check_rebuilds.py FIRST.json SECOND.json, each the stdout of a cargo command run
with --message-format=json-render-diagnostics (CI: `cargo build --release`, then
`cargo test --release --workspace --no-run`). A unit is its package, target kinds,
features and optimization level: one the first build produced and the second compiled
again (not "fresh") means the two commands resolved it differently, and README command
2 would rebuild what command 1 built. Units only the second needs (dev-dependencies,
test targets, dependencies built at another optimization level) are not reported.
"""

import json
import sys


def units(path):
    """(key, fresh) for every compiler artifact in a cargo JSON message stream."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            m = json.loads(line)
            if m.get("reason") != "compiler-artifact":
                continue
            p = m["profile"]
            key = (
                m["package_id"],
                tuple(m["target"]["kind"]),
                tuple(sorted(m["features"])),
                str(p["opt_level"]),
                p["test"],
            )
            out.append((key, m["fresh"]))
    return out


def main():
    first, second = sys.argv[1], sys.argv[2]
    built = {key for key, _ in units(first)}
    rebuilt = sorted({key for key, fresh in units(second) if not fresh and key in built})
    for package, kinds, _, opt, _ in rebuilt:
        print(f"rebuilt: {package} ({', '.join(kinds)}, opt-level {opt})")
    if rebuilt:
        print(f"{len(rebuilt)} units of the first build were compiled again by the second")
        return 1
    print(f"no rebuilds: {len(built)} units of the first build were reused")
    return 0


if __name__ == "__main__":
    sys.exit(main())
