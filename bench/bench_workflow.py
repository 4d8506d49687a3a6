"""
Benchmark 1, workflow throughput: quiesced VM snapshots per second through the
Controller on a SQLite store (VMware simulator, no delays, 4 volumes on 2 drivers),
against a bare eventsourcing application that stores the same number of events in the
same number of transactions, in the same run. Also: how the cost grows with the
snapshots already taken of one VM and with the number of VMs, and a cProfile.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, quick, result_line, table, timed, write_config

TARGET = 0.8


def _controller(folder: Path, vms: int) -> Any:
    from vmsnap import Controller

    return Controller.from_config(write_config(folder, vms))


def _shape(folder: Path) -> tuple[list[list[int]], float]:
    """
    Events per transaction of one quiesced create, and the mean stored event size.
    """
    ctrl = _controller(folder, 1)
    saves: list[list[int]] = []
    original = ctrl.event_log.save

    def save(*aggregates: Any, **kw: Any) -> Any:
        saves.append([len(a.pending_events) for a in aggregates])
        return original(*aggregates, **kw)

    ctrl.event_log.save = save
    try:
        ctrl.create_vm_snapshot("vm-0", quiesce=True)  # first sight of VM and pools
        saves.clear()
        before = ctrl.event_log.max_position()
        ctrl.create_vm_snapshot("vm-0", quiesce=True)
        events = ctrl.event_log.max_position() - before
        sizes = [len(n.state) for page in ctrl.event_log.pages(before + 1) for n in page]
    finally:
        ctrl.close()
    shape = [s for s in saves if sum(s) > 0]
    assert sum(map(sum, shape)) == events, (shape, events)
    return shape, sum(sizes) / len(sizes)


@contextmanager
def _without_vm_snapshots() -> Iterator[None]:
    """
    For comparison only: no eventsourcing snapshots of ``Vm`` records (as before they were
    configured), so every load replays the VM's whole history.
    """
    from vmsnap.adapters import store

    intervals = store.EventLog.snapshotting_intervals
    store.EventLog.snapshotting_intervals = {}
    try:
        yield
    finally:
        store.EventLog.snapshotting_intervals = intervals


def _vmsnap_rate(
    folder: Path, vms: int, creates: int, warm: int = 0, vm_snapshots: bool = True
) -> float:
    """Creates per second over ``creates`` quiesced creates spread over ``vms`` VMs."""
    if not vm_snapshots:
        with _without_vm_snapshots():
            return _vmsnap_rate(folder, vms, creates, warm, vm_snapshots=True)
    ctrl = _controller(folder, vms)
    try:
        for i in range(warm):
            ctrl.create_vm_snapshot(f"vm-{i % vms}", quiesce=True)

        def run() -> None:
            for i in range(creates):
                ctrl.create_vm_snapshot(f"vm-{i % vms}", quiesce=True)

        return creates / timed(run)
    finally:
        ctrl.close()


def _paired(
    root: Path, shape: list[list[int]], size: float, rounds: int, batch: int, vms: int
) -> list[tuple[float, float]]:
    """
    Rounds of ``batch`` quiesced creates through one Controller, each followed by the
    same number of "snapshots" through a bare eventsourcing application on SQLite that
    stores the same events (same counts per transaction, same mean size) on fresh
    aggregates. Returns (vmsnap creates/s, baseline /s) per round.
    """
    from _bare import Bare, bare_app

    app = bare_app(str(_mk(root / "bare") / "b.db"))
    payload = "x" * max(1, int(size) - 60)  # the stored JSON adds ~60 bytes of names

    def one() -> None:
        aggs: list[Bare] = []
        for tx in shape:
            while len(aggs) < len(tx):
                aggs.append(Bare())
            for agg, n in zip(aggs, tx, strict=False):
                for _ in range(n - len(agg.pending_events)):
                    agg.happen(payload)
            app.save(*aggs[: len(tx)])

    ctrl = _controller(_mk(root / "paired"), vms)
    counter = iter(range(10**9))

    def ours() -> None:
        for _ in range(batch):
            ctrl.create_vm_snapshot(f"vm-{next(counter) % vms}", quiesce=True)

    def base() -> None:
        for _ in range(batch):
            one()

    try:
        ours()  # warm-up: first sight of the pools and the first VMs
        base()
        return [(batch / timed(ours), batch / timed(base)) for _ in range(rounds)]
    finally:
        ctrl.close()


def _profile(folder: Path, creates: int) -> str:
    ctrl = _controller(folder, 10)
    try:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(creates):
            ctrl.create_vm_snapshot(f"vm-{i % 10}", quiesce=True)
        prof.disable()
    finally:
        ctrl.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(
        r"vmsnap|eventsourcing|sqlite3|json", 28
    )
    return _trim(out.getvalue())


def _trim(text: str) -> str:
    lines = [ln.replace(str(Path(sys.prefix)), "…") for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if "ncalls" in ln or ln.lstrip()[:1].isdigit()]
    return "\n".join(ln.replace("/build/__editable__.vmsnap-0.1.0-py3-none-any", "") for ln in keep)


def run() -> str:
    rounds, batch = (3, 10) if quick() else (15, 20)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shape, size = _shape(_mk(root / "shape"))
        pairs = _paired(root, shape, size, rounds, batch, vms=100)
        ours = [o for o, _ in pairs]
        bases = [b for _, b in pairs]
        # Shared machine: noise only slows a batch down, so compare the best batches.
        ratio = max(ours) / max(bases)
        growth_n = [10, 50, 100] if quick() else [10, 300, 1000]
        history = []
        for n in growth_n:
            # One VM with n snapshots already taken: the Vm aggregate's history grows.
            plain = _vmsnap_rate(_mk(root / f"h{n}"), 1, 20, warm=n)
            unsnapped = _vmsnap_rate(_mk(root / f"hs{n}"), 1, 20, warm=n, vm_snapshots=False)
            history.append((n, f"{plain:.0f}", f"{1000 / plain:.1f}", f"{1000 / unsnapped:.1f}"))
        spread = []
        for vms in [1, 10, 100] if quick() else [1, 10, 1000]:
            rate = _vmsnap_rate(_mk(root / f"s{vms}"), vms, max(2 * batch, vms), warm=0)
            spread.append((vms, f"{rate:.0f}"))
        profile = _profile(_mk(root / "prof"), 20 if quick() else 100)
        txs = len(shape)
        events = sum(map(sum, shape))
    ok = ratio >= TARGET
    return "\n".join(
        [
            "## 1. Workflow throughput",
            "",
            result_line(
                "1. Workflow throughput (quiesced creates/s vs bare app)",
                f"≥ {TARGET} x baseline",
                f"{ratio:.2f} x ({max(ours):.0f}/s vs {max(bases):.0f}/s, best batches)",
                ok,
            ),
            f"Method: {rounds} batches of {batch} quiesced `create_vm_snapshot` calls through "
            "one `Controller` on a "
            "SQLite file store, VMware simulator (state in its own SQLite file), no delays, "
            "100 VMs of 4 volumes on 2 drivers (default + vendor simulator: storage strategy), "
            f"after a warm-up batch. One create stores **{events} events in {txs} "
            f"transactions** ({shape}: events per aggregate per transaction, mean stored "
            f"event {size:.0f} bytes). The baseline is a bare `eventsourcing` Application on "
            "SQLite that stores the same events in the same transactions (same sizes); each "
            "vmsnap batch is followed by a baseline batch of the same count, in the same "
            "process and the same folder. The ratio compares the best batch of each (noise "
            "on this shared machine only slows batches down); the median of the per-batch "
            f"ratios is {median(o / b for o, b in pairs):.2f}.",
            "",
            table(
                ["batch", "vmsnap creates/s", "baseline /s", "ratio"],
                [
                    (i + 1, f"{o:.0f}", f"{b:.0f}", f"{o / b:.2f}")
                    for i, (o, b) in enumerate(zip(ours, bases, strict=True))
                ],
            ),
            "",
            f"**Ratio {ratio:.2f}, target ≥ {TARGET}: {'met' if ok else 'NOT met'}.**",
            "",
            "Growth with the snapshots already taken of one VM (20 creates on one VM after "
            "n; `max_vm_snapshots_per_vm` lifted so the history can grow; a VM that stays "
            "under the limit by deleting grows its history the same way). vmsnap loads `Vm` "
            "records from eventsourcing snapshots taken every 50 versions; the last column "
            "turns that off, for this measurement only, to show what it saves.",
            "",
            table(
                [
                    "snapshots of the VM before",
                    "creates/s",
                    "ms per create",
                    "ms per create without Vm snapshots (comparison)",
                ],
                history,
            ),
            "",
            "Growth with the number of VMs the creates are spread over:",
            "",
            table(["VMs", "creates/s"], spread),
            "",
            "cProfile of the creates (cumulative, vmsnap/eventsourcing/sqlite3/json only):",
            "",
            "```",
            profile,
            "```",
        ]
    )


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    print(run())
