#!/usr/bin/env python3
"""
Draw the workflow machines of vmsnap.domain.workflow from their own states and transitions:
docs/<name>.mmd (Mermaid), docs/<name>.svg (Graphviz dot) and the README's Mermaid block.
With --check, write nothing and exit 1 if a committed picture differs from the machines.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from transitions import Machine

from vmsnap.domain.workflow import VM_SNAPSHOT_MACHINE, VOLUME_SNAPSHOT_MACHINE

ROOT = Path(__file__).resolve().parent.parent
README, DOCS = ROOT / "README.md", ROOT / "docs"
START, END = "<!-- state-diagram:start -->", "<!-- state-diagram:end -->"
MACHINES = {"state-diagram": VM_SNAPSHOT_MACHINE, "volume-state-diagram": VOLUME_SNAPSHOT_MACHINE}
DIGEST = "<!-- dot-source-sha256: {} -->"
SELF = Path(__file__).name


def edges(machine: Machine) -> list[tuple[str, str, str]]:
    """Return ``(source, dest, trigger)`` for every transition, in definition order."""
    return [
        (source, t.dest or source, trigger)
        for trigger, event in machine.events.items()
        for source, transitions in event.transitions.items()
        for t in transitions
    ]


def finals(machine: Machine) -> list[str]:
    sources = {source for source, _, _ in edges(machine)}
    return [state for state in machine.states if state not in sources]


def mermaid(machine: Machine) -> str:
    lines = ["stateDiagram-v2", f"    [*] --> {machine.initial}"]
    lines += [f"    {s} --> {d}: {t}" for s, d, t in edges(machine)]
    lines += [f"    {state} --> [*]" for state in finals(machine)]
    return "\n".join(lines) + "\n"


def dot_source(machine: Machine) -> str:
    lines = [
        f'digraph "{machine.name.rstrip(": ")}" {{',
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        "    start [shape=point, width=0.15];",
        f'    start -> "{machine.initial}";',
    ]
    lines += [f'    "{state}" [peripheries=2];' for state in finals(machine)]
    lines += [f'    "{s}" -> "{d}" [label="{t}"];' for s, d, t in edges(machine)]
    return "\n".join([*lines, "}"]) + "\n"


def digest_line(machine: Machine) -> str:
    # Lets --check tell a stale SVG without depending on the version of dot.
    return DIGEST.format(hashlib.sha256(dot_source(machine).encode()).hexdigest())


def svg(machine: Machine) -> str:
    dot = shutil.which("dot")
    if dot is None:
        sys.exit("error: Graphviz 'dot' is not on PATH; install graphviz (apt install graphviz)")
    done = subprocess.run(
        [dot, "-Tsvg"], input=dot_source(machine), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"error: dot failed: {done.stderr.strip()}")
    return done.stdout.replace("<svg", digest_line(machine) + "\n<svg", 1)


def readme_with(text: str, block: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        sys.exit(f"error: {README.name} lacks the markers {START} ... {END}")
    return f"{head}{START}\n```mermaid\n{block}```\n{END}{tail}"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""


def texts() -> dict[Path, str]:
    """Return the Mermaid files and the README as the machines give them."""
    files = {DOCS / f"{name}.mmd": mermaid(machine) for name, machine in MACHINES.items()}
    files[README] = readme_with(read(README), mermaid(VM_SNAPSHOT_MACHINE))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a picture is stale")
    check, files = parser.parse_args().check, texts()
    if not check:
        files |= {DOCS / f"{name}.svg": svg(machine) for name, machine in MACHINES.items()}
        for path, text in files.items():
            path.write_text(text, encoding="utf-8")
        return 0
    stale = [path for path, text in files.items() if read(path) != text]
    svgs = {DOCS / f"{name}.svg": digest_line(machine) for name, machine in MACHINES.items()}
    stale += [path for path, digest in svgs.items() if digest not in read(path)]
    for path in stale:
        print(f"error: {path.relative_to(ROOT)} is stale; run scripts/{SELF}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
