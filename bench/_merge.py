"""
``run.py --only NAME``: the benchmarks run alone replace their own sections and summary
rows in an existing document; every other section, and the analysis, stay. Not a
benchmark itself (no ``bench_`` prefix).
"""

from __future__ import annotations

import re

_HEADING = re.compile(r"^## ", re.MULTILINE)
ANALYSIS = "## Analysis"


def blocks(doc: str) -> list[str]:
    """The document cut before each ``## `` heading: the preamble, then one per section."""
    starts = [0, *(m.start() for m in _HEADING.finditer(doc) if m.start() > 0)]
    return [doc[a:b] for a, b in zip(starts, [*starts[1:], len(doc)], strict=True)]


def title(block: str) -> str:
    return block.split("\n", 1)[0].strip()


def _key(row: str) -> str:
    # A numbered benchmark keeps its number when its wording changes ("3. Audit read ...").
    name = row.split(" | ", 1)[0].strip()
    first = name.split(" ", 1)[0]
    return first if first[:1].isdigit() else name


def merge(old: str, sections: list[str], summary: list[str], analysis: str | None) -> str:
    """``old`` with ``sections`` and ``summary`` rows in place of theirs."""
    parts = blocks(old)
    new = {title(s): s.rstrip() + "\n\n" for s in sections}
    keys = {_key(r) for r in summary}
    out: list[str] = []
    for part in parts:
        name = title(part)
        if name == "## Summary":
            rows = [ln[2:-2] for ln in part.splitlines() if ln.startswith("| ") and "---" not in ln]
            kept = [r for r in rows[1:] if _key(r) not in keys]  # rows[0]: the header
            merged = sorted([*kept, *summary], key=lambda r: (not r[:1].isdigit(), r))
            table = ["| benchmark | target | result | status |", "|---|---|---|---|"]
            out.append("\n".join(["## Summary", "", *table, *[f"| {r} |" for r in merged]]))
            out.append("\n\n")
        elif name in new:
            out.append(new.pop(name))
        elif name.startswith(ANALYSIS) and analysis is not None:
            out.extend(new.pop(t) for t in list(new))  # new sections go before the analysis
            out.append(analysis.rstrip() + "\n")
        else:
            out.append(part)
    out.extend(new.values())
    return "".join(out).rstrip() + "\n"
