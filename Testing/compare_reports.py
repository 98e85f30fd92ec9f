"""Compare two ``report.json`` files, ignoring what may differ between equal analyses (timings, version).

Used to show that a refactoring changes no result::

    python Testing/compare_reports.py BEFORE/report.json AFTER/report.json

prints ``identical (except timings and version)`` and exits 0, or lists every differing field (JSON path: before →
after) and exits 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: Top-level keys whose values legitimately differ between runs of the same analysis.
IGNORED = {("timings_s",), ("software", "version")}


def differences(before: Any, after: Any, path: tuple = ()) -> list[str]:
    """Every differing leaf as ``"a.b[3].c: before -> after"``; keys in :data:`IGNORED` are skipped."""
    if path in IGNORED:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                if (*path, key) not in IGNORED:
                    found.append(f"{_name(path + (key,))}: {'missing' if key not in before else before[key]!r} -> "
                                 f"{'missing' if key not in after else after[key]!r}")
                continue
            found += differences(before[key], after[key], path + (key,))
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{_name(path)}: {len(before)} items -> {len(after)} items"]
        return [d for n, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, path + (n,))]
    return [] if before == after else [f"{_name(path)}: {before!r} -> {after!r}"]


def _name(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "<root>"


def main(argv: list[str]) -> int:
    """Entry point; returns 0 when the reports agree, 1 when not, 2 on bad usage."""
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    before, after = (json.loads(Path(p).read_text(encoding="utf-8")) for p in argv)
    found = differences(before, after)
    for line in found:
        print(line)
    if not found:
        print("identical (except timings and version)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
