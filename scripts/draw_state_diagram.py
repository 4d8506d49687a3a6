"""
Draw the workflow machines of ``vmsnap.domain.workflow`` as pictures for the docs.

Reads each machine's own ``states`` and ``events[...].transitions`` and writes a Mermaid
``stateDiagram-v2`` (``docs/<name>.mmd``) and an SVG rendered from Graphviz DOT by ``dot``
(``docs/<name>.svg``); the VM snapshot diagram also replaces the Mermaid block in
README.md between the state-diagram markers.

    python scripts/draw_state_diagram.py           # write the pictures (needs Graphviz dot)
    python scripts/draw_state_diagram.py --check   # exit 1 if a committed picture is stale
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
README = ROOT / "README.md"
START, END = "<!-- state-diagram:start -->", "<!-- state-diagram:end -->"
MACHINES = {"state-diagram": VM_SNAPSHOT_MACHINE, "volume-state-diagram": VOLUME_SNAPSHOT_MACHINE}
DIGEST = "<!-- dot-source-sha256: {} -->"


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
    return DIGEST.format(hashlib.sha256(dot_source(machine).encode()).hexdigest())


def svg(machine: Machine) -> str:
    dot = shutil.which("dot")
    if dot is None:
        sys.exit("error: Graphviz 'dot' is not on PATH; install graphviz (apt-get install graphviz)")
    done = subprocess.run(
        [dot, "-Tsvg"], input=dot_source(machine), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"error: dot failed: {done.stderr.strip()}")
    # The digest lets --check tell a stale picture without depending on dot's version.
    return done.stdout.replace("<svg", digest_line(machine) + "\n<svg", 1)


def readme_with(text: str, block: str) -> str:
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        sys.exit(f"error: {README.name} lacks the markers {START} ... {END}")
    return f"{head}{START}\n```mermaid\n{block}```\n{END}{tail}"


def check() -> list[str]:
    """Return the committed files that differ from what the machines give."""
    stale = []
    for name, machine in MACHINES.items():
        mmd, pic = ROOT / "docs" / f"{name}.mmd", ROOT / "docs" / f"{name}.svg"
        if not mmd.is_file() or mmd.read_text() != mermaid(machine):
            stale.append(str(mmd.relative_to(ROOT)))
        if not pic.is_file() or digest_line(machine) not in pic.read_text():
            stale.append(str(pic.relative_to(ROOT)))
    text = README.read_text() if README.is_file() else ""
    if readme_with(text, mermaid(VM_SNAPSHOT_MACHINE)) != text:
        stale.append(README.name)
    return stale


def write() -> None:
    for name, machine in MACHINES.items():
        (ROOT / "docs" / f"{name}.mmd").write_text(mermaid(machine))
        (ROOT / "docs" / f"{name}.svg").write_text(svg(machine))
    README.write_text(readme_with(README.read_text(), mermaid(VM_SNAPSHOT_MACHINE)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a picture is stale")
    if not parser.parse_args().check:
        write()
        return 0
    stale = check()
    for path in stale:
        print(f"error: {path} differs from the workflow machine; run {Path(__file__).name}",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
