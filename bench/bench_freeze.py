"""
The freeze window (issue #18, ADR 0024): how long a quiesced VM snapshot keeps a KVM
guest frozen when its volumes are on 1 to 16 pools whose drivers each take 0.2 s to take
their snapshot, with the driver groups called one after another
(``max_parallel_driver_calls = 1``) and together (the default 8, and one call per pool).

``frozen_ms`` is read from the snapshot's view: from the hypervisor's answer that it froze
the guest to its answer that it thawed it. The physical floor is the slowest driver.

``run()`` returns a markdown section; ``python bench/bench_freeze.py`` prints it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _common import median, quick, result_line, table  # noqa: E402

from tests.toml_text import toml_table  # noqa: E402

DELAY_S = 0.02 if quick() else 0.2  # each driver's take_vm_snapshot
MARGIN_MS = 25.0
POOL_COUNTS = (1, 2, 4) if quick() else (1, 2, 4, 8, 16)
CREATES = 1 if quick() else 5
SEQUENTIAL, DEFAULT = 1, 8


def _config(folder: Path, pools: int, limit: int) -> Path:
    parts = [
        toml_table("[store]", {"url": "sqlite:///vmsnap.db"}),
        toml_table(
            "[limits]", {"max_vm_snapshots_per_vm": 1000, "max_parallel_driver_calls": limit}
        ),
        toml_table(
            "[[hypervisors]]",
            {"name": "kvm1", "type": "simulator", "profile": "kvm", "state": "sim-state.db"},
        ),
    ]
    for i in range(pools):
        pool = {
            "id": f"pool-{i}",
            "name": f"Pool {i}",
            "driver": "simulator",
            "state": "sim-state.db",
            "capabilities": {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True},
            "delay_s": {"take_vm_snapshot": DELAY_S},
        }
        parts.append(toml_table("[[pools]]", pool))
    vols = [{"id": f"vol-{i}", "pool": f"pool-{i}", "type": "DATADISK"} for i in range(pools)]
    parts.append(toml_table("[[vms]]", {"id": "vm-kvm", "hypervisor": "kvm1", "volumes": vols}))
    config = folder / "vmsnap.toml"
    config.write_text("\n".join(parts), encoding="utf-8")
    return config


def frozen_ms(pools: int, limit: int) -> float:
    """The median ``frozen_ms`` of CREATES quiesced creates (each deleted after)."""
    from vmsnap import Controller

    windows = []
    with (
        tempfile.TemporaryDirectory(prefix="vmsnap-bench-freeze-") as folder,
        Controller.from_config(_config(Path(folder), pools, limit)) as ctrl,
    ):
        for _ in range(CREATES):
            snap = ctrl.create_vm_snapshot("vm-kvm", quiesce=True)
            assert snap.state == "ready" and snap.frozen_ms is not None, snap.error
            windows.append(snap.frozen_ms)
            ctrl.delete_vm_snapshot(snap.id)
    return median(windows)


def run() -> str:
    target_ms = DELAY_S * 1000 + MARGIN_MS
    rows, together = [], []
    for pools in POOL_COUNTS:
        sequential = frozen_ms(pools, SEQUENTIAL)
        default = frozen_ms(pools, DEFAULT)
        per_pool = frozen_ms(pools, pools) if pools > DEFAULT else default
        together.append(per_pool)
        rows.append(
            (
                pools,
                f"{sequential:.0f}",
                f"{default:.0f}",
                f"{per_pool:.0f}",
                f"{per_pool - DELAY_S * 1000:+.0f}",
                "met" if per_pool <= target_ms else "NOT met",
            )
        )
    worst = max(together)
    ok = worst <= target_ms
    headers = (
        "pools",
        "sequential (limit 1) ms",
        "together (limit 8) ms",
        "together (limit = pools) ms",
        "over the slowest driver, ms",
        f"<= {target_ms:.0f} ms",
    )
    summary = result_line(
        f"7. Freeze window (KVM simulator, {POOL_COUNTS[0]}-{POOL_COUNTS[-1]} pools, "
        f"each driver {DELAY_S:g} s)",
        f"<= {DELAY_S:g} s + {MARGIN_MS:.0f} ms for every pool count",
        f"together: at most {worst:.0f} ms; one after another: up to "
        f"{float(rows[-1][1]):.0f} ms ({POOL_COUNTS[-1]} pools)",
        ok,
    )
    return (
        "## 7. The freeze window (bench/bench_freeze.py)\n\n"
        + summary
        + "\n\n"
        + f"A quiesced `create_vm_snapshot` of a KVM-profile simulator VM (a frozen guest)"
        f" with one volume on each of N simulator pools, each pool's driver taking"
        f" {DELAY_S:g} s (`delay_s = {{ take_vm_snapshot = {DELAY_S:g} }}`); SQLite file"
        f" store. `frozen_ms` from the snapshot's view (the hypervisor's freeze answer to its"
        f" thaw answer), median of {CREATES} creates. Sequential is the loop before ADR 0024"
        " (`max_parallel_driver_calls = 1`); the default limit of 8 calls 16 pools in two"
        " rounds, so the target for 16 pools needs a limit of at least 16.\n\n"
        + table(headers, rows)
        + "\n"
    )


if __name__ == "__main__":
    print(run())
