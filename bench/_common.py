"""
Helpers the benchmarks share: timing, the benchmark world, stores filled straight
through the event log, and markdown. Not a benchmark itself (no ``bench_`` prefix).
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

QUICK = os.environ.get("VMSNAP_BENCH_QUICK") == "1"
POOLS = ("primary-1", "netapp-1")  # the default driver and a vendor simulator pool


def quick() -> bool:
    return QUICK


def timed(fn: Callable[[], Any]) -> float:
    """One call's wall time in seconds (the collector off, as timeit does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        if enabled:
            gc.enable()


def best(fn: Callable[[], Any], repeats: int) -> float:
    """The best of ``repeats`` runs: the machine is shared, noise only adds time."""
    return min(timed(fn) for _ in range(repeats))


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_config(
    folder: Path, vms: int, *, limit: int = 1_000_000, store: str = "vmsnap.db"
) -> Path:
    """
    A VMware simulator with ``vms`` VMs, each with 4 volumes on 2 drivers (2 on the
    default pool, 2 on a vendor pool advertising both caps): the storage strategy.
    """
    parts = [
        f'[store]\nurl = "sqlite:///{store}"\n',
        f"[limits]\nmax_vm_snapshots_per_vm = {limit}\nquiesce_deadline_s = 60\n",
        '[[hypervisors]]\nname = "esx1"\ntype = "simulator"\nprofile = "vmware"\n'
        'state = "sim-state.db"\n',
        '[[pools]]\nid = "primary-1"\nname = "Primary"\ndriver = "default"\n',
        '[[pools]]\nid = "netapp-1"\nname = "NetApp"\ndriver = "simulator"\n'
        'state = "sim-state.db"\nneed_unquiesce = true\ncapabilities = '
        "{ VOLUME_SNAPSHOT_QUIESCEVM = true, STORAGE_SYSTEM_SNAPSHOT = true }\n",
    ]
    for i in range(vms):
        vols = ", ".join(
            f'{{ id = "v{i}-{j}", pool = "{POOLS[j % 2]}", type = "{kind}" }}'
            for j, kind in enumerate(("ROOT", "DATADISK", "DATADISK", "DATADISK"))
        )
        parts.append(f'[[vms]]\nid = "vm-{i}"\nhypervisor = "esx1"\nvolumes = [{vols}]\n')
    path = folder / "vmsnap.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def fill_store(folder: Path, snapshots: int, per_vm: int = 10, batch: int = 500) -> Path:
    """
    A store in ``folder`` holding ``snapshots`` ready VM snapshots (hypervisor strategy:
    4 events each), ``per_vm`` per VM, written straight through the event log in
    transactions of ``batch`` snapshots, views not caught up. Returns the config path.
    """
    from vmsnap.adapters.store import StoreUrl, open_log
    from vmsnap.domain.values import DriverGroup, VolumeRef
    from vmsnap.domain.vm_snapshot import VmSnapshot

    config = write_config(folder, vms=1)
    log = open_log(StoreUrl.parse("sqlite:///vmsnap.db", folder))
    try:
        pending: list[VmSnapshot] = []
        for n in range(snapshots):
            vm = f"vm-{n // per_vm}"
            vols = [VolumeRef(f"{vm}-d{j}", POOLS[j % 2]) for j in range(4)]
            snap = VmSnapshot(
                vm_id=vm,
                name=f"snap-{n}",
                description=None,
                memory=False,
                quiesce_requested=False,
                strategy="hypervisor",
                strategy_reason="no pool advertises STORAGE_SYSTEM_SNAPSHOT",
                hypervisor="esx1",
                profile="vmware",
                volumes=vols,
                groups=[DriverGroup(p, "default", (f"{vm}-d{j}",)) for j, p in enumerate(POOLS)],
                caps={p: {"VOLUME_SNAPSHOT_QUIESCEVM": False} for p in POOLS},
                parent_id=None,
            )
            snap.start_snapshotting()
            snap.record_hypervisor_snapshot(
                f"vmsnap-{snap.id}", quiesced=False, memory=False, detail="bench"
            )
            snap.complete(quiesced=False, consistency="crash")
            pending.append(snap)
            if len(pending) == batch:
                log.save(*pending)
                pending = []
        if pending:
            log.save(*pending)
    finally:
        log.close()
    return config


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def result_line(name: str, target: str, result: str, ok: bool | None) -> str:
    """A summary row that run.py collects (``<!-- summary: ... -->``)."""
    status = "n/a" if ok is None else verdict(ok)
    return f"<!-- summary: {name} | {target} | {result} | {status} -->"


_FILLED: dict[int, tuple[Path, float, int]] = {}
_TMP: Any = None


def filled(snapshots: int) -> tuple[Path, float, int]:
    """
    A store of ``snapshots`` ready VM snapshots (10 per VM), its views caught up from
    position 0 by a Controller: (config path, seconds that catch-up took, events).
    Kept for the whole run, so the query and rebuild benchmarks share it.
    """
    global _TMP
    if snapshots not in _FILLED:
        import tempfile

        from vmsnap import Controller

        if _TMP is None:
            _TMP = tempfile.TemporaryDirectory(prefix="vmsnap-bench-")
        folder = Path(_TMP.name) / str(snapshots)
        folder.mkdir()
        config = fill_store(folder, snapshots)
        with Controller.from_config(config) as ctrl:
            events = ctrl.event_log.max_position()
            seconds = timed(ctrl._wiring.views.catch_up)
        _FILLED[snapshots] = (config, seconds, events)
    return _FILLED[snapshots]


def sizes() -> list[int]:
    """The store sizes (snapshots) the growth measurements use."""
    return [200, 1000, 3000] if QUICK else [1000, 10_000, 100_000]
