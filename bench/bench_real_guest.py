"""
The freeze window of a quiesced VM snapshot of a real QEMU guest (ADR 0016): from the
guest agent's answer to the freeze (``fsFreeze`` returned) to its answer to the thaw
(``fsThaw`` and ``guest-fsfreeze-status`` returned), through ``Controller.create_vm_snapshot``
on ``qemu:///system``, with the VM's volumes on 1 and on 2 qcow2 pools.

``run()`` returns a markdown section; ``python bench/bench_real_guest.py`` prints it. It
starts its own libvirtd (scripts/libvirtd.sh) and test guest, as tests/realguest does,
and needs root and the Debian packages .ci/run installs.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import median, quick, table  # noqa: E402

from tests.realguest.guest import Guest, missing, running_guest  # noqa: E402
from tests.toml_text import toml_table  # noqa: E402

CREATES = 3 if quick() else 15


class Skipped(Exception):
    """This machine cannot run a real guest."""


@contextmanager
def _guest() -> Iterator[Guest]:
    reason = missing()
    if reason is not None:
        raise Skipped(reason)
    with running_guest("bench") as guest:
        yield guest


def _config(folder: Path, guest: Guest, volumes: dict[str, str]) -> Path:
    parts = [
        toml_table("[store]", {"url": "sqlite:///vmsnap.db"}),
        toml_table("[limits]", {"max_vm_snapshots_per_vm": 1000}),
        toml_table("[[hypervisors]]", {"name": "kvm", "type": "libvirt", "uri": guest.uri}),
    ]
    for pool in sorted(set(volumes.values())):
        path = str(guest.pools[pool])
        parts.append(
            toml_table("[[pools]]", {"id": pool, "name": pool, "driver": "qcow2", "path": path})
        )
    vols = [{"id": v, "pool": p, "type": "DATADISK"} for v, p in volumes.items()]
    vm = {"id": "vm-real", "hypervisor": "kvm", "domain": guest.name, "volumes": vols}
    parts.append(toml_table("[[vms]]", vm))
    config = folder / "vmsnap.toml"
    config.write_text("\n".join(parts), encoding="utf-8")
    return config


def _windows(config: Path) -> tuple[list[float], list[float]]:
    """Freeze windows and whole creates, in seconds, of CREATES quiesced creates."""
    from vmsnap import Controller
    from vmsnap.adapters.libvirt_hypervisor import LibvirtHypervisor

    marks: dict[str, float] = {}
    freeze, thaw = LibvirtHypervisor._freeze, LibvirtHypervisor._thaw

    def timed_freeze(self: LibvirtHypervisor, vm: Any) -> Any:
        answer = freeze(self, vm)
        marks["frozen"] = time.perf_counter()
        return answer

    def timed_thaw(self: LibvirtHypervisor, vm: Any) -> str:
        answer = thaw(self, vm)
        marks["thawed"] = time.perf_counter()
        return answer

    LibvirtHypervisor._freeze = timed_freeze  # type: ignore[method-assign]
    LibvirtHypervisor._thaw = timed_thaw  # type: ignore[method-assign]
    windows, creates = [], []
    try:
        with Controller.from_config(config) as vmsnap:
            for _ in range(CREATES):
                start = time.perf_counter()
                snap = vmsnap.create_vm_snapshot("vm-real", quiesce=True)
                creates.append(time.perf_counter() - start)
                assert snap.state == "ready" and snap.quiesced, snap.error
                windows.append(marks["thawed"] - marks["frozen"])
                vmsnap.delete_vm_snapshot(snap.id)
    finally:
        LibvirtHypervisor._freeze, LibvirtHypervisor._thaw = freeze, thaw  # type: ignore[method-assign]
    return windows, creates


def run_bench() -> str:
    cases = {
        "1 pool (vol-root on pool-a)": {"vol-root": "pool-a"},
        "2 pools (vol-root on pool-a, vol-data on pool-b)": {
            "vol-root": "pool-a",
            "vol-data": "pool-b",
        },
    }
    rows = []
    with _guest() as guest:
        for label, volumes in cases.items():
            with tempfile.TemporaryDirectory() as folder:
                windows, creates = _windows(_config(Path(folder), guest, volumes))
            ms = [w * 1000 for w in windows]
            rows.append(
                (
                    label,
                    CREATES,
                    f"{median(ms):.0f}",
                    f"{min(ms):.0f}",
                    f"{max(ms):.0f}",
                    f"{median(creates) * 1000:.0f}",
                )
            )
    headers = ("VM's volumes", "creates", "freeze median ms", "min", "max", "create median ms")
    return (
        "## Real guest: the freeze window (bench/bench_real_guest.py)\n\n"
        "A quiesced `create_vm_snapshot` of a running QEMU guest (TCG, no KVM: nested KVM"
        " does not boot here) through libvirt `qemu:///system` and its guest agent, qcow2"
        " pools whose internal snapshots the running QEMU takes (QMP). Freeze window: from"
        " `fsFreeze`'s answer (after the agent's `guest-ping`) to the answers of `fsThaw`"
        " and `guest-fsfreeze-status`; both data disks are ext4 and frozen in every case.\n\n"
        + table(headers, rows)
        + "\n"
    )


def run() -> str:
    return run_bench()


if __name__ == "__main__":
    print(run())
