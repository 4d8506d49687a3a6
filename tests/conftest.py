"""
Shared fixtures: a simulated world described by a config file in a temp folder, and an
open Controller on a SQLite file store beside it.

The world (see :func:`write_config`):

- hypervisors ``esx1`` (vmware), ``xen1`` (xenserver), ``kvm1`` (kvm);
- pools ``primary-1`` (default driver, advertises nothing), ``netapp-1`` and ``pure-1``
  (vendor simulator pools, configurable), ``plain-1`` (a simulator pool advertising nothing);
- VMs ``vm-vmware`` and ``vm-kvm`` (volumes on primary-1, netapp-1 and pure-1: three
  drivers), ``vm-xen`` (primary-1 and netapp-1), ``vm-san`` (netapp-1 and pure-1 only, so
  every driver may answer True), ``vm-plain`` (primary-1 and plain-1: the hypervisor
  strategy) and ``vm-stopped`` (Stopped, primary-1 and netapp-1).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import attrs
import pytest

from tests.toml_text import toml_table
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

STATE_FILE = "sim-state.db"
STORE_FILE = "vmsnap.db"
WAIT_S = 30.0  # the longest any test waits for another thread

ALL_CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": True, "STORAGE_SYSTEM_SNAPSHOT": True}
NO_CAPS = {"VOLUME_SNAPSHOT_QUIESCEVM": False, "STORAGE_SYSTEM_SNAPSHOT": False}

HYPERVISORS = {"esx1": "vmware", "xen1": "xenserver", "kvm1": "kvm"}

# vm id -> (hypervisor, power state, [(volume id, pool id, type)])
VMS: dict[str, tuple[str, str, list[tuple[str, str, str]]]] = {
    "vm-vmware": (
        "esx1",
        "Running",
        [
            ("vmw-root", "primary-1", "ROOT"),
            ("vmw-data", "netapp-1", "DATADISK"),
            ("vmw-log", "netapp-1", "DATADISK"),
            ("vmw-db", "pure-1", "DATADISK"),
        ],
    ),
    "vm-xen": (
        "xen1",
        "Running",
        [("xen-root", "primary-1", "ROOT"), ("xen-data", "netapp-1", "DATADISK")],
    ),
    "vm-kvm": (
        "kvm1",
        "Running",
        [
            ("kvm-root", "primary-1", "ROOT"),
            ("kvm-data", "netapp-1", "DATADISK"),
            ("kvm-db", "pure-1", "DATADISK"),
        ],
    ),
    "vm-san": (
        "esx1",
        "Running",
        [("san-data", "netapp-1", "ROOT"), ("san-db", "pure-1", "DATADISK")],
    ),
    "vm-plain": (
        "esx1",
        "Running",
        [("plain-root", "primary-1", "ROOT"), ("plain-data", "plain-1", "DATADISK")],
    ),
    "vm-stopped": (
        "esx1",
        "Stopped",
        [("stop-root", "primary-1", "ROOT"), ("stop-data", "netapp-1", "DATADISK")],
    ),
}


@attrs.frozen
class VendorPool:
    """
    How a vendor simulator pool behaves: what it advertises and answers, what fails or waits.
    """

    caps: Mapping[str, bool] = attrs.field(factory=lambda: dict(ALL_CAPS))
    need_unquiesce: bool = True
    faults: Mapping[str, str] = attrs.field(factory=dict)
    delay_s: Mapping[str, float] = attrs.field(factory=dict)


def write_config(
    folder: Path,
    *,
    netapp: VendorPool | None = None,
    pure: VendorPool | None = None,
    hypervisor_faults: Mapping[str, Mapping[str, str]] | None = None,
    hypervisor_delays: Mapping[str, Mapping[str, float]] | None = None,
    max_vm_snapshots_per_vm: int = 10,
    filename: str = "vmsnap.toml",
    store: str = STORE_FILE,
) -> Path:
    """
    Write a simulator config into ``folder`` and return its path.

    Several configs written into one folder (different ``filename``) share the store and
    the simulated world, so Controllers opened on them see each other's work.
    """
    netapp = netapp or VendorPool()
    pure = pure or VendorPool()
    hv_faults = hypervisor_faults or {}
    hv_delays = hypervisor_delays or {}
    parts = [
        toml_table("[store]", {"url": f"sqlite:///{store}"}),
        toml_table(
            "[limits]",
            {"max_vm_snapshots_per_vm": max_vm_snapshots_per_vm, "quiesce_deadline_s": 60},
        ),
    ]
    for name, profile in HYPERVISORS.items():
        parts.append(
            toml_table(
                "[[hypervisors]]",
                {
                    "name": name,
                    "type": "simulator",
                    "profile": profile,
                    "state": STATE_FILE,
                    "faults": dict(hv_faults.get(name, {})),
                    "delay_s": dict(hv_delays.get(name, {})),
                },
            )
        )
    parts.append(
        toml_table("[[pools]]", {"id": "primary-1", "name": "Primary NFS", "driver": "default"})
    )
    for pool_id, name, vendor in (
        ("netapp-1", "NetApp 1", netapp),
        ("pure-1", "Pure 1", pure),
        ("plain-1", "Plain 1", VendorPool(caps=dict(NO_CAPS))),
    ):
        parts.append(
            toml_table(
                "[[pools]]",
                {
                    "id": pool_id,
                    "name": name,
                    "driver": "simulator",
                    "state": STATE_FILE,
                    "capabilities": dict(vendor.caps),
                    "need_unquiesce": vendor.need_unquiesce,
                    "faults": dict(vendor.faults),
                    "delay_s": dict(vendor.delay_s),
                },
            )
        )
    for vm_id, (hv, power, volumes) in VMS.items():
        parts.append(
            toml_table(
                "[[vms]]",
                {
                    "id": vm_id,
                    "hypervisor": hv,
                    "power_state": power,
                    "volumes": [{"id": v, "pool": p, "type": t} for v, p, t in volumes],
                },
            )
        )
    path = folder / filename
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def volumes_of(vm_id: str, pool_id: str | None = None) -> list[str]:
    """The ids of the volumes of ``vm_id`` (on ``pool_id`` only, if given), as configured."""
    return [v for v, p, _ in VMS[vm_id][2] if pool_id is None or p == pool_id]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail the test after :data:`WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def controller(config_path: Path) -> Iterator[Controller]:
    with Controller.from_config(config_path) as ctrl:
        yield ctrl


@pytest.fixture
def world(tmp_path: Path, controller: Controller) -> Iterator[SimulatorWorld]:
    """The simulated world the ``controller`` fixture acts on (its own connection)."""
    with SimulatorWorld(tmp_path / STATE_FILE) as w:
        yield w


# PostgreSQL fixtures (postgres_server, pg_url) for every tier.
from tests.pg_fixtures import pg_url, postgres_server  # noqa: E402, F401
