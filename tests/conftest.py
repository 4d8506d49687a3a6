"""
Shared fixtures: a simulated world described by a config file in a temp folder, and an
open Controller on a SQLite file store beside it.

The world (see :func:`world_config`; write it with :func:`tests.support.write_config`):

- hypervisors ``esx1`` (vmware), ``xen1`` (xenserver), ``kvm1`` (kvm);
- pools ``primary-1`` (default driver, advertises nothing), ``netapp-1`` and ``pure-1``
  (vendor simulator pools, configurable), ``plain-1`` (a simulator pool advertising nothing);
- VMs ``vm-vmware`` and ``vm-kvm`` (volumes on primary-1, netapp-1 and pure-1: three
  drivers), ``vm-xen`` (primary-1 and netapp-1), ``vm-san`` (netapp-1 and pure-1 only, so
  every driver may answer True), ``vm-plain`` (primary-1 and plain-1: the hypervisor
  strategy) and ``vm-stopped`` (Stopped, primary-1 and netapp-1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs
import pytest

from tests.support import Config, vm_tables, write_config
from vmsnap import Controller
from vmsnap.adapters.simulator import SimulatorWorld

STATE_FILE = "sim-state.db"
STORE_FILE = "vmsnap.db"

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


def world_config(
    *,
    netapp: VendorPool | None = None,
    pure: VendorPool | None = None,
    hypervisor_faults: Mapping[str, Mapping[str, str]] | None = None,
    hypervisor_delays: Mapping[str, Mapping[str, float]] | None = None,
    max_vm_snapshots_per_vm: int = 10,
    quiesce_deadline_s: float = 60,
    store: str = STORE_FILE,
) -> Config:
    """
    The simulated world above as a config (``store``: the SQLite file it names), with what
    the vendor pools and the hypervisors (name -> op -> fault or delay) are told to do.
    """
    netapp = netapp or VendorPool()
    pure = pure or VendorPool()
    hv_faults = hypervisor_faults or {}
    hv_delays = hypervisor_delays or {}
    hypervisors = [
        {
            "name": name,
            "type": "simulator",
            "profile": profile,
            "state": STATE_FILE,
            "faults": dict(hv_faults.get(name, {})),
            "delay_s": dict(hv_delays.get(name, {})),
        }
        for name, profile in HYPERVISORS.items()
    ]
    pools: list[Mapping[str, object]] = [
        {"id": "primary-1", "name": "Primary NFS", "driver": "default"}
    ]
    for pool_id, name, vendor in (
        ("netapp-1", "NetApp 1", netapp),
        ("pure-1", "Pure 1", pure),
        ("plain-1", "Plain 1", VendorPool(caps=dict(NO_CAPS))),
    ):
        pools.append(
            {
                "id": pool_id,
                "name": name,
                "driver": "simulator",
                "state": STATE_FILE,
                "capabilities": dict(vendor.caps),
                "need_unquiesce": vendor.need_unquiesce,
                "faults": dict(vendor.faults),
                "delay_s": dict(vendor.delay_s),
            }
        )
    vms = vm_tables(VMS)
    return Config(
        hypervisors=hypervisors,
        pools=pools,
        vms=vms,
        store=f"sqlite:///{store}",
        limits={
            "max_vm_snapshots_per_vm": max_vm_snapshots_per_vm,
            "quiesce_deadline_s": quiesce_deadline_s,
        },
    )


def volumes_of(vm_id: str, pool_id: str | None = None) -> list[str]:
    """The ids of the volumes of ``vm_id`` (on ``pool_id`` only, if given), as configured."""
    return [v for v, p, _ in VMS[vm_id][2] if pool_id is None or p == pool_id]


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path, world_config())


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
